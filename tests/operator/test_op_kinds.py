"""The kinds table (kinds.py): what the builders make, the handlers watch and the client
addresses all come from it, so they cannot drift apart."""

from __future__ import annotations

import kopf
from builder_helpers import children, spec_of
from tts_operator.handlers import register
from tts_operator.kinds import BY_KIND, CHILDREN, KINDS, TTSSERVICE
from tts_operator.kube import resource_path
from tts_operator.settings import OperatorSettings


def test_the_children_are_exactly_what_the_builders_make() -> None:
    everything = children(spec_of(autoscaling={"enabled": True}))
    keda = children(spec_of(autoscaling={"enabled": True, "provider": "keda"}))
    nothing_optional = children(spec_of(disruption={"enabled": False}))
    made = {
        (m["apiVersion"], m["kind"])
        for m in everything.desired + keda.desired + nothing_optional.desired
    }
    assert made == {(k.api_version, k.kind) for k in CHILDREN}


def test_children_are_applied_and_watched_and_pruned_ones_deleted() -> None:
    for k in CHILDREN:
        assert {"get", "list", "watch", "create", "patch"} <= k.verbs, k.kind
    pruned = (
        children(spec_of()).unwanted + children(spec_of(disruption={"enabled": False})).unwanted
    )
    assert {r.kind for r in pruned} == {
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "PodDisruptionBudget",
    }
    for ref in pruned:
        assert "delete" in BY_KIND[ref.kind].verbs
        assert ref.type.api_version == ref.api_version


def test_paths_use_the_table() -> None:
    assert len(BY_KIND) == len(KINDS)
    assert TTSSERVICE.group == "ttsoperator.io" and TTSSERVICE.version == "v1alpha1"
    assert resource_path("autoscaling/v2", "HorizontalPodAutoscaler", "ns", "a") == (
        "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/a"
    )
    assert resource_path("v1", "Pod", "ns") == "/api/v1/namespaces/ns/pods"


def test_the_handlers_watch_every_child_kind_and_the_pods() -> None:
    registry = kopf.OperatorRegistry()
    register(OperatorSettings(), registry)
    watched = {
        (h.selector.group, h.selector.version, h.selector.any_name): h.id
        for h in registry._watching.get_all_handlers()
        if h.selector is not None
    }
    expected = {(k.group, k.version, k.plural): f"child-{k.plural}" for k in CHILDREN}
    owners = {(TTSSERVICE.group, TTSSERVICE.version, TTSSERVICE.plural): "ttsservices"}
    assert watched == expected | {("", "v1", "pods"): "pods"} | owners
