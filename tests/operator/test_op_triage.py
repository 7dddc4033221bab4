"""triage.py: which watch events need a full pass, a status refresh, or nothing."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from op_helpers import unschedulable_pod
from tts_operator.builders import Children, build_children
from tts_operator.drift import stamp
from tts_operator.models import TTSServiceSpec
from tts_operator.status import Observed
from tts_operator.triage import Need, Triage

NS = "speech"


def built(spec: dict[str, Any] | None = None) -> Children:
    kids = build_children(
        "voice", NS, TTSServiceSpec.model_validate(spec or {"model": {"uri": "pvc://v/en"}}), "rt:1"
    )
    for manifest in kids.desired:
        stamp(manifest)
    return kids


def child(kids: Children, kind: str) -> dict[str, Any]:
    """The child as its watch event carries it: what was applied, plus the server's bits."""
    [found] = [m for m in kids.desired if m["kind"] == kind]
    live = copy.deepcopy(found)
    live["metadata"].update(uid=f"{kind}-uid", resourceVersion="7")
    live["status"] = {}
    return live


def deployment_status(dep: dict[str, Any], ready: int) -> dict[str, Any]:
    out = copy.deepcopy(dep)
    out["metadata"]["generation"] = 1
    out["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": ready,
        "conditions": [{"type": "Available", "status": "True" if ready else "False"}],
    }
    return out


@pytest.fixture
def kids() -> Children:
    return built()


@pytest.fixture
def triage(kids: Children) -> Triage:
    t = Triage()
    t.built(NS, "voice", kids.desired, kids.unwanted)
    t.observed(NS, "voice", Observed(deployment=child(kids, "Deployment"), pods=[]))
    return t


def test_events_of_children_as_applied_need_nothing(triage: Triage, kids: Children) -> None:
    for kind in ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget"):
        obj = child(kids, kind)
        obj["metadata"].setdefault("annotations", {})["someone/else"] = "by hand"
        for event in ("ADDED", "MODIFIED"):
            assert triage.need(kind, event, obj, "voice") is Need.NONE, (kind, event)


def test_a_deleted_or_edited_child_needs_a_full_pass(triage: Triage, kids: Children) -> None:
    service = child(kids, "Service")
    assert triage.need("Service", "DELETED", service, "voice") is Need.FULL
    service["spec"]["sessionAffinity"] = "None"
    assert triage.need("Service", "MODIFIED", service, "voice") is Need.FULL


def test_nothing_known_means_a_pass(kids: Children) -> None:
    fresh = Triage()
    assert fresh.need("Service", "MODIFIED", child(kids, "Service"), "voice") is Need.FULL
    assert fresh.need("Pod", "MODIFIED", unschedulable_pod(""), "voice") is Need.STATUS


def test_forget_drops_what_was_known(triage: Triage, kids: Children) -> None:
    triage.forget(NS, "voice")
    assert triage.unknown(NS, "voice")
    assert triage.need("Service", "MODIFIED", child(kids, "Service"), "voice") is Need.FULL


def test_a_new_spec_replaces_the_expected_children(triage: Triage, kids: Children) -> None:
    old_service = child(kids, "Service")
    new = built({"model": {"uri": "pvc://v/en"}, "service": {"port": 9000}})
    triage.built(NS, "voice", new.desired, new.unwanted)
    assert triage.need("Service", "MODIFIED", old_service, "voice") is Need.FULL
    assert triage.need("Service", "MODIFIED", child(new, "Service"), "voice") is Need.NONE


def test_children_the_spec_does_not_want(triage: Triage) -> None:
    hpa = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "voice", "namespace": NS}}
    assert triage.need("HorizontalPodAutoscaler", "ADDED", hpa, "voice") is Need.FULL  # prune
    assert triage.need("HorizontalPodAutoscaler", "DELETED", hpa, "voice") is Need.NONE


def test_a_rollout_step_needs_a_status_refresh(triage: Triage, kids: Children) -> None:
    rolling = deployment_status(child(kids, "Deployment"), ready=0)
    assert triage.need("Deployment", "MODIFIED", rolling, "voice") is Need.STATUS
    triage.observed(NS, "voice", Observed(deployment=rolling, pods=[]))
    assert triage.need("Deployment", "MODIFIED", rolling, "voice") is Need.NONE
    # A controller's annotation or a condition's timestamp alone changes nothing.
    touched = copy.deepcopy(rolling)
    touched["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    touched["status"]["conditions"].append({"type": "Progressing", "lastUpdateTime": "now"})
    assert triage.need("Deployment", "MODIFIED", touched, "voice") is Need.NONE
    ready = deployment_status(child(kids, "Deployment"), ready=1)
    assert triage.need("Deployment", "MODIFIED", ready, "voice") is Need.STATUS
    # Drift and a rollout step at once: the full pass covers the status.
    ready["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    assert triage.need("Deployment", "MODIFIED", ready, "voice") is Need.FULL


def test_pods_matter_only_when_their_problems_change(triage: Triage) -> None:
    healthy = unschedulable_pod("")
    healthy["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    for event in ("ADDED", "MODIFIED", "DELETED"):
        assert triage.need("Pod", event, healthy, "voice") is Need.NONE
    stuck = unschedulable_pod("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
    assert triage.need("Pod", "ADDED", stuck, "voice") is Need.STATUS
    triage.observed(NS, "voice", Observed(deployment=None, pods=[stuck]))
    assert triage.need("Pod", "MODIFIED", stuck, "voice") is Need.NONE
    other = unschedulable_pod("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    assert triage.need("Pod", "MODIFIED", other, "voice") is Need.STATUS  # a new message
    assert triage.need("Pod", "MODIFIED", healthy, "voice") is Need.STATUS  # it cleared
    assert triage.need("Pod", "DELETED", stuck, "voice") is Need.STATUS  # it went


def test_a_rollout_step_that_changes_no_status_needs_nothing(
    triage: Triage, kids: Children
) -> None:
    applied = child(kids, "Deployment")
    applied["metadata"]["generation"] = 1
    triage.observed(NS, "voice", Observed(deployment=applied, pods=[]))
    seen = copy.deepcopy(applied)
    seen["status"] = {"observedGeneration": 1}  # seen by the controller, no pod yet
    assert triage.need("Deployment", "MODIFIED", seen, "voice") is Need.NONE


def test_the_deployment_a_pass_reports_from_needs_no_refresh(kids: Children) -> None:
    fresh = Triage()
    fresh.built(NS, "voice", kids.desired, kids.unwanted)
    applied = deployment_status(child(kids, "Deployment"), ready=0)
    # Its event can arrive while the pass that applied it is still reporting.
    assert fresh.need("Deployment", "ADDED", applied, "voice") is Need.STATUS
    fresh.reporting_from(NS, "voice", applied)
    assert fresh.need("Deployment", "ADDED", applied, "voice") is Need.NONE
