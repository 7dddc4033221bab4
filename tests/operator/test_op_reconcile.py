"""reconcile(): idempotent, level-based, degrading clearly when the spec cannot work."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest
from fake_kube import FakeKube
from kubernetes.client.exceptions import ApiException
from op_helpers import tts_body, unschedulable_pod
from tts_operator.reconcile import HANDOVER_MANAGER, Context, owner_name, reconcile, refresh_status
from tts_operator.settings import OperatorSettings

NS = "speech"


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    def __call__(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.posted.append((type_, reason, message))


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    k.add({"kind": "PersistentVolumeClaim", "metadata": {"name": "voices", "namespace": NS}})
    return k


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def ctx(kube: FakeKube, events: Events) -> Context:
    return Context(kube=kube, settings=OperatorSettings(runtime_image="rt:1"), events=events)


def stored_tts(kube: FakeKube, spec: dict[str, Any]) -> dict[str, Any]:
    """Put the TTSService in the fake store (status patches land on it) and return it."""
    body = tts_body(spec, namespace=NS)
    kube.add(body)
    found = kube.find("TTSService", NS, "voice")
    assert found is not None
    return found


def run(ctx: Context, kube: FakeKube) -> dict[str, Any]:
    body = kube.find("TTSService", NS, "voice")
    assert body is not None
    return reconcile(ctx, copy.deepcopy(body))


SPEC: dict[str, Any] = {"model": {"uri": "pvc://voices/en"}, "replicas": 3}


def test_first_run_creates_owned_children_and_reports_status(ctx: Context, kube: FakeKube) -> None:
    stored_tts(kube, SPEC)
    status = run(ctx, kube)
    kinds = sorted(
        k for k, ns, name in kube.objects if k not in ("TTSService", "PersistentVolumeClaim")
    )
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    dep = kube.find("Deployment", NS, "voice")
    assert dep is not None and dep["spec"]["replicas"] == 3
    [ref] = dep["metadata"]["ownerReferences"]
    assert ref["kind"] == "TTSService" and ref["uid"] == "uid-1234" and ref["controller"] is True
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "rt:1"
    assert kube.status_patches == [status]
    assert status["endpoint"] == "http://voice.speech.svc.cluster.local:8000"


def test_second_run_changes_nothing(ctx: Context, kube: FakeKube) -> None:
    stored_tts(kube, SPEC)
    run(ctx, kube)
    changes, patches = kube.changes, len(kube.status_patches)
    run(ctx, kube)
    assert kube.changes == changes
    assert len(kube.status_patches) == patches


def test_deleted_or_edited_child_is_restored(ctx: Context, kube: FakeKube) -> None:
    stored_tts(kube, SPEC)
    run(ctx, kube)
    kube.delete("v1", "Service", NS, "voice")
    cm = kube.find("ConfigMap", NS, "voice-runtime")
    assert cm is not None
    cm["data"]["TTS_MAX_BATCH_SIZE"] = "999"
    run(ctx, kube)
    assert kube.find("Service", NS, "voice") is not None
    restored = kube.find("ConfigMap", NS, "voice-runtime")
    assert restored is not None and restored["data"]["TTS_MAX_BATCH_SIZE"] == "8"


def test_missing_claim_degrades_retries_and_warns_once(
    ctx: Context, kube: FakeKube, events: Events
) -> None:
    stored_tts(kube, {"model": {"uri": "pvc://absent/en"}})
    for _ in range(2):
        with pytest.raises(kopf.TemporaryError, match='PersistentVolumeClaim "absent"'):
            run(ctx, kube)
    assert kube.find("Deployment", NS, "voice") is None
    assert [(t, r) for t, r, _ in events.posted] == [("Warning", "ModelClaimNotFound")]
    body = kube.find("TTSService", NS, "voice")
    assert body is not None
    degraded = {c["type"]: c for c in body["status"]["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "ModelClaimNotFound"
    kube.add({"kind": "PersistentVolumeClaim", "metadata": {"name": "absent", "namespace": NS}})
    run(ctx, kube)  # the claim appeared: the retry succeeds
    assert kube.find("Deployment", NS, "voice") is not None


def test_switching_autoscaling_on_keeps_replicas_and_off_takes_them_back(
    ctx: Context, kube: FakeKube
) -> None:
    body = stored_tts(kube, SPEC)
    run(ctx, kube)
    body["spec"] = {"model": SPEC["model"], "autoscaling": {"enabled": True, "maxReplicas": 6}}
    run(ctx, kube)
    dep = kube.find("Deployment", NS, "voice")
    assert dep is not None
    assert dep["spec"]["replicas"] == 3  # not reset to 1 while the HPA takes over
    managers = {m["manager"] for m in dep["metadata"]["managedFields"]}
    assert managers == {HANDOVER_MANAGER}  # the operator no longer owns replicas
    assert kube.find("HorizontalPodAutoscaler", NS, "voice") is not None
    body["spec"] = {"model": SPEC["model"], "replicas": 2}
    run(ctx, kube)
    dep = kube.find("Deployment", NS, "voice")
    assert dep is not None and dep["spec"]["replicas"] == 2
    assert kube.find("HorizontalPodAutoscaler", NS, "voice") is None


def test_prune_leaves_objects_it_does_not_own(ctx: Context, kube: FakeKube) -> None:
    stored_tts(kube, SPEC)
    foreign = {
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "voice", "namespace": NS, "labels": {}},
    }
    kube.add(foreign)
    run(ctx, kube)
    assert kube.find("HorizontalPodAutoscaler", NS, "voice") is not None


def test_invalid_spec_is_permanent_with_a_condition(
    ctx: Context, kube: FakeKube, events: Events
) -> None:
    stored_tts(
        kube, {"model": {"uri": "pvc://voices/en"}, "replicas": 2, "autoscaling": {"enabled": True}}
    )
    with pytest.raises(kopf.PermanentError, match="mutually exclusive"):
        run(ctx, kube)
    assert events.posted[0][1] == "InvalidSpec"
    assert kube.find("Deployment", NS, "voice") is None


@pytest.mark.parametrize(
    ("code", "error"), [(422, kopf.PermanentError), (503, kopf.TemporaryError)]
)
def test_refused_apply_degrades(
    ctx: Context, kube: FakeKube, events: Events, code: int, error: type[Exception]
) -> None:
    stored_tts(kube, SPEC)
    kube.fail_next_apply = ApiException(status=code, reason="nope")
    with pytest.raises(error):
        run(ctx, kube)
    assert events.posted[0][1] == "ApplyFailed"


def test_status_follows_pods_without_applying(ctx: Context, kube: FakeKube) -> None:
    stored_tts(kube, SPEC)
    run(ctx, kube)
    changes = kube.changes
    kube.add(unschedulable_pod("0/2 nodes are available: 2 Insufficient nvidia.com/gpu."))
    body = kube.find("TTSService", NS, "voice")
    assert body is not None
    status = refresh_status(ctx, copy.deepcopy(body))
    assert status is not None
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["reason"] == "InsufficientGPU"
    assert kube.changes == changes  # status only: no child was written


def test_owner_name_from_owner_reference_or_pod_label() -> None:
    child = {
        "kind": "Service",
        "metadata": {"ownerReferences": [{"kind": "TTSService", "name": "a", "controller": True}]},
    }
    assert owner_name(child) == "a"
    pod = {"kind": "Pod", "metadata": {"labels": {"app.kubernetes.io/instance": "b"}}}
    assert owner_name(pod) == "b"
    assert owner_name({"kind": "Service", "metadata": {}}) is None
