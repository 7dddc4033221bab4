"""The kopf handlers, called the way kopf calls them, on an in-memory API server."""

from __future__ import annotations

import copy
import logging
from typing import Any, cast

import kopf
import pytest
from fake_kube import FakeKube
from op_helpers import tts_body, unschedulable_pod
from tts_operator.handlers import register
from tts_operator.reconcile import Context
from tts_operator.settings import OperatorSettings

NS = "speech"
LOG = logging.getLogger("test")


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    k.add({"kind": "PersistentVolumeClaim", "metadata": {"name": "voices", "namespace": NS}})
    k.add(tts_body({"model": {"uri": "pvc://voices/en"}}, namespace=NS))
    return k


@pytest.fixture
def handlers(kube: FakeKube) -> dict[str, Any]:
    registry = kopf.OperatorRegistry()
    settings = OperatorSettings()
    register(settings, registry, lambda s: Context(kube=kube, settings=s, events=lambda *a: None))
    found: dict[str, Any] = {h.id: h.fn for h in registry._changing.get_all_handlers()}
    found.update({h.id: h.fn for h in registry._watching.get_all_handlers()})
    found.update({h.id: h.fn for h in registry._spawning.get_all_handlers()})
    return found


def body_of(kube: FakeKube, kind: str, name: str) -> kopf.Body:
    found = kube.find(kind, NS, name)
    assert found is not None
    return kopf.Body(cast(kopf.RawBody, copy.deepcopy(found)))


def test_create_builds_the_children(handlers: dict[str, Any], kube: FakeKube) -> None:
    handlers["create"](body=body_of(kube, "TTSService", "voice"), logger=LOG)
    assert kube.find("Deployment", NS, "voice") is not None
    assert kube.find("ConfigMap", NS, "voice-runtime") is not None


def test_child_deletion_event_restores_it(handlers: dict[str, Any], kube: FakeKube) -> None:
    handlers["create"](body=body_of(kube, "TTSService", "voice"), logger=LOG)
    gone = body_of(kube, "Service", "voice")
    kube.delete("v1", "Service", NS, "voice")
    handlers["child-services"](event={"type": None}, body=gone, logger=LOG)
    assert kube.find("Service", NS, "voice") is None  # initial listings are ignored
    handlers["child-services"](event={"type": "DELETED"}, body=gone, logger=LOG)
    assert kube.find("Service", NS, "voice") is not None


def test_child_of_a_deleted_owner_is_left_to_the_garbage_collector(
    handlers: dict[str, Any], kube: FakeKube
) -> None:
    handlers["create"](body=body_of(kube, "TTSService", "voice"), logger=LOG)
    orphan = body_of(kube, "Service", "voice")
    kube.delete("ttsoperator.io/v1alpha1", "TTSService", NS, "voice")
    kube.delete("v1", "Service", NS, "voice")
    handlers["child-services"](event={"type": "DELETED"}, body=orphan, logger=LOG)
    assert kube.find("Service", NS, "voice") is None


def test_pod_event_refreshes_status_only(handlers: dict[str, Any], kube: FakeKube) -> None:
    handlers["create"](body=body_of(kube, "TTSService", "voice"), logger=LOG)
    changes = kube.changes
    pod = unschedulable_pod("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    kube.add(pod)
    handlers["pods"](event={"type": "ADDED"}, body=kopf.Body(cast(kopf.RawBody, pod)), logger=LOG)
    assert kube.changes == changes
    owner = kube.find("TTSService", NS, "voice")
    assert owner is not None
    reasons = {c["type"]: c["reason"] for c in owner["status"]["conditions"]}
    assert reasons["Degraded"] == "InsufficientGPU"


def test_child_event_swallows_retryable_problems(handlers: dict[str, Any], kube: FakeKube) -> None:
    handlers["create"](body=body_of(kube, "TTSService", "voice"), logger=LOG)
    service = body_of(kube, "Service", "voice")
    kube.delete("v1", "PersistentVolumeClaim", NS, "voices")
    handlers["child-services"](event={"type": "MODIFIED"}, body=service, logger=LOG)
    with pytest.raises(kopf.TemporaryError):
        handlers["update"](body=body_of(kube, "TTSService", "voice"), logger=LOG)


def test_a_taken_child_name_makes_create_retry_without_writing(
    handlers: dict[str, Any], kube: FakeKube
) -> None:
    victim = {"kind": "Service", "metadata": {"name": "voice", "namespace": NS, "uid": "v-1"}}
    kube.add(victim)
    with pytest.raises(kopf.TemporaryError, match="Service/voice"):
        handlers["create"](body=body_of(kube, "TTSService", "voice"), logger=LOG)
    assert kube.applied == [] and kube.find("Service", NS, "voice") == victim
    owner = kube.find("TTSService", NS, "voice")
    assert owner is not None
    reasons = {c["type"]: c["reason"] for c in owner["status"]["conditions"]}
    assert reasons["Degraded"] == "ChildConflict"
