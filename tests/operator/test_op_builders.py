"""build_children: which children a spec wants, their names and labels."""

from __future__ import annotations

from builder_helpers import IMAGE, children, kind, spec_of
from tts_operator.builders import build_children
from tts_operator.builders.common import labels, selector_string
from tts_operator.models import TTSServiceSpec


def test_minimal_spec_builds_all_children_with_standard_labels(
    minimal_spec: TTSServiceSpec,
) -> None:
    kids = build_children("en", "ns", minimal_spec, IMAGE)
    kinds = sorted(m["kind"] for m in kids.desired)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    assert [r.kind for r in kids.unwanted] == ["HorizontalPodAutoscaler", "ScaledObject"]
    for m in kids.desired:
        assert m["metadata"]["namespace"] == "ns"
        assert m["metadata"]["labels"] == labels("en")
        assert m["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tts-operator"
    names = {m["kind"]: m["metadata"]["name"] for m in kids.desired}
    assert names["ConfigMap"] == "en-runtime" and names["Deployment"] == "en"
    assert (
        selector_string("en") == "app.kubernetes.io/name=tts-runtime,app.kubernetes.io/instance=en"
    )


def test_pdb_and_its_removal() -> None:
    pdb = kind(children(spec_of(disruption={"maxUnavailable": "25%"})), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == "25%"
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "voice"
    kids = children(spec_of(disruption={"enabled": False}))
    assert "PodDisruptionBudget" in [r.kind for r in kids.unwanted]
    assert all(m["kind"] != "PodDisruptionBudget" for m in kids.desired)
