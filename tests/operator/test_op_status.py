"""Status computed from the children: conditions, counts, endpoint, selector."""

from __future__ import annotations

from typing import Any

import pytest
from op_helpers import unschedulable_pod
from tts_operator.models import TTSServiceSpec
from tts_operator.status import (
    Observed,
    Problem,
    compute_status,
    degraded_status,
    every_pod_ready,
    pod_problem,
)

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def spec_of(**fields: Any) -> TTSServiceSpec:
    return TTSServiceSpec.model_validate({"model": {"uri": "pvc://voices/en"}, **fields})


def deployment(
    desired: int = 2, ready: int = 2, updated: int = 2, total: int = 2, available: bool = True
) -> dict[str, Any]:
    return {
        "metadata": {"generation": 4},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": 4,
            "replicas": total,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "conditions": [
                {"type": "Available", "status": "True" if available else "False"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        },
    }


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def status_of(observed: Observed, spec: TTSServiceSpec | None = None, **kw: Any) -> dict[str, Any]:
    return compute_status("voice", "speech", 7, spec or spec_of(), observed, now=T0, **kw)


def test_healthy_service_is_ready_and_done() -> None:
    status = status_of(Observed(deployment(), pods=[]))
    c = conditions(status)
    assert (c["Ready"]["status"], c["Progressing"]["status"], c["Degraded"]["status"]) == (
        "True",
        "False",
        "False",
    )
    assert c["Progressing"]["reason"] == "Complete"
    assert status["observedGeneration"] == 7
    assert status["replicas"] == 2 and status["readyReplicas"] == 2
    assert status["endpoint"] == "http://voice.speech.svc.cluster.local:8000"
    assert (
        status["selector"] == "app.kubernetes.io/name=tts-runtime,app.kubernetes.io/instance=voice"
    )
    assert all(x["lastTransitionTime"] == T0 for x in status["conditions"])


def test_missing_deployment_is_not_ready_but_progressing() -> None:
    c = conditions(status_of(Observed(None, pods=[])))
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "DeploymentMissing"
    assert c["Progressing"]["status"] == "True"


def test_rollout_in_progress() -> None:
    c = conditions(status_of(Observed(deployment(desired=3, ready=2, updated=1, total=3), pods=[])))
    assert c["Progressing"]["status"] == "True" and c["Progressing"]["reason"] == "RollingOut"
    assert c["Ready"]["status"] == "True"


def test_pending_gpu_pods_are_insufficient_gpu_naming_the_resource() -> None:
    pods = [unschedulable_pod("0/3 nodes are available: 3 Insufficient nvidia.com/mig-1g.10gb.")]
    spec = spec_of(runtime={"gpu": {"resourceName": "nvidia.com/mig-1g.10gb"}})
    c = conditions(status_of(Observed(deployment(ready=0, available=False), pods), spec))
    assert c["Degraded"]["status"] == "True"
    assert c["Degraded"]["reason"] == "InsufficientGPU"
    assert "nvidia.com/mig-1g.10gb" in c["Degraded"]["message"]
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "InsufficientGPU"


def test_other_unschedulable_reasons_are_not_called_gpu() -> None:
    problem = pod_problem(
        [unschedulable_pod("0/1 nodes are available: 1 Insufficient cpu.")], "nvidia.com/gpu"
    )
    assert problem is not None and problem.reason == "Unschedulable"


def test_crash_looping_pods_and_failed_downloads() -> None:
    crash = {
        "status": {"containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
    }
    assert pod_problem([crash, crash], "nvidia.com/gpu") == Problem(
        "CrashLoopBackOff", "2 pod(s) in CrashLoopBackOff"
    )
    fetch = {
        "status": {
            "initContainerStatuses": [
                {"name": "model-fetch", "state": {"terminated": {"exitCode": 1}}}
            ]
        }
    }
    found = pod_problem([fetch], "nvidia.com/gpu")
    assert found is not None and found.reason == "ModelDownloadFailed"
    assert pod_problem([{"metadata": {"name": "ok"}, "status": {"phase": "Running"}}], "x") is None


FAILED_LOG = (
    "fetching http://models.local/v/en.onnx\n"
    "model download failed: HTTP 404 Not Found for http://models.local/v/en.onnx\n"
)


def fetch_pod(status: dict[str, Any]) -> dict[str, Any]:
    return {"status": {"initContainerStatuses": [{"name": "model-fetch", **status}]}}


@pytest.mark.parametrize(
    "fetch_status",
    [
        # Init:Error: the failed run is the current state.
        {"state": {"terminated": {"exitCode": 1, "reason": "Error", "message": FAILED_LOG}}},
        # Init:CrashLoopBackOff: waiting now, the failed run is in lastState.
        {
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": 1, "message": FAILED_LOG}},
        },
    ],
    ids=["terminated", "crash-loop"],
)
def test_failed_download_says_what_went_wrong(fetch_status: dict[str, Any]) -> None:
    found = pod_problem([fetch_pod(fetch_status)] * 2, "nvidia.com/gpu")
    assert found == Problem(
        "ModelDownloadFailed",
        "2 pod(s) failed to download the model: HTTP 404 Not Found for "
        "http://models.local/v/en.onnx (see the model-fetch init container's logs)",
    )
    status = status_of(Observed(deployment(ready=0), [fetch_pod(fetch_status)]))
    degraded = conditions(status)["Degraded"]
    assert degraded["reason"] == "ModelDownloadFailed"
    assert "HTTP 404 Not Found for http://models.local/v/en.onnx" in degraded["message"]


def test_failed_download_message_is_the_last_line_cut_short() -> None:
    long = "x" * 1000
    found = pod_problem(
        [
            fetch_pod(
                {"state": {"terminated": {"exitCode": 2, "message": f"Traceback\n{long}\n\n"}}}
            )
        ],
        "nvidia.com/gpu",
    )
    assert found is not None and found.reason == "ModelDownloadFailed"
    assert f": {'x' * 297}... (see the model-fetch" in found.message
    assert "Traceback" not in found.message


def test_failed_download_without_a_message_points_at_the_logs() -> None:
    found = pod_problem(
        [fetch_pod({"state": {"waiting": {"reason": "CrashLoopBackOff"}}})], "nvidia.com/gpu"
    )
    assert found == Problem(
        "ModelDownloadFailed",
        "1 pod(s) failed to download the model (see the model-fetch init container's logs)",
    )


def test_reconcile_problem_wins_and_is_degraded() -> None:
    problem = Problem("ModelClaimNotFound", 'PersistentVolumeClaim "voices" not found')
    c = conditions(status_of(Observed(None, pods=[], problem=problem)))
    assert c["Degraded"]["status"] == "True" and c["Degraded"]["reason"] == "ModelClaimNotFound"
    assert c["Ready"]["reason"] == "ModelClaimNotFound"


def test_refused_reconcile_is_not_ready_even_with_a_healthy_deployment() -> None:
    """ChildConflict: nothing was applied, so whatever runs is not the product as specified,
    and the Service at the endpoint's name is not ours: no endpoint (null removes it)."""
    problem = Problem("ChildConflict", "Service/voice (no controller) already exists", True)
    status = status_of(Observed(deployment(), pods=[], problem=problem))
    c = conditions(status)
    for ctype, want in (("Ready", "False"), ("Progressing", "False"), ("Degraded", "True")):
        assert (c[ctype]["status"], c[ctype]["reason"]) == (want, "ChildConflict")
        assert c[ctype]["message"] == problem.message
    assert status["endpoint"] is None
    assert status["replicas"] == 2  # the counts of what runs stay honest


def test_progress_deadline_is_degraded() -> None:
    dep = deployment(ready=0, available=False)
    dep["status"]["conditions"][1] = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": "ReplicaSet has timed out progressing.",
    }
    c = conditions(status_of(Observed(dep, pods=[])))
    assert c["Degraded"]["reason"] == "ProgressDeadlineExceeded"
    assert c["Progressing"]["status"] == "False"


def test_scaled_to_zero() -> None:
    c = conditions(status_of(Observed(deployment(desired=0, ready=0, total=0, updated=0), pods=[])))
    assert c["Ready"]["reason"] == "ScaledToZero"


def test_transition_time_kept_while_status_unchanged() -> None:
    first = status_of(Observed(deployment(), pods=[]))
    again = compute_status(
        "voice", "speech", 7, spec_of(), Observed(deployment(), []), first, now=T1
    )
    assert again == first  # level-based: nothing changed, nothing to patch
    broken = compute_status(
        "voice",
        "speech",
        7,
        spec_of(),
        Observed(deployment(ready=0, available=False), []),
        first,
        now=T1,
    )
    c = conditions(broken)
    assert c["Ready"]["lastTransitionTime"] == T1  # flipped
    assert c["Degraded"]["lastTransitionTime"] == T0  # still False


@pytest.mark.parametrize("previous", [None, {"replicas": 2, "selector": "x=y"}])
def test_degraded_status_keeps_counts(previous: dict[str, Any] | None) -> None:
    status = degraded_status("voice", 8, Problem("InvalidSpec", "bad"), previous, now=T0)
    c = conditions(status)
    assert c["Degraded"]["status"] == "True" and c["Ready"]["status"] == "False"
    assert status["observedGeneration"] == 8
    if previous:
        assert status["replicas"] == 2 and status["selector"] == "x=y"


def test_every_pod_ready_only_when_the_current_status_counts_all_pods_ready() -> None:
    assert every_pod_ready(deployment())
    assert every_pod_ready(deployment(desired=0, ready=0, updated=0, total=0))
    assert not every_pod_ready(None)
    assert not every_pod_ready(deployment(ready=1))  # one pod not Ready: it may be stuck
    assert not every_pod_ready(deployment(total=3, ready=3))  # a surge pod beside them
    assert not every_pod_ready(deployment(updated=1))  # a rollout under way
    assert not every_pod_ready(deployment(desired=3))  # one pod still missing
    stale = deployment()
    stale["metadata"]["generation"] = 5  # the controller has not seen the new spec yet
    assert not every_pod_ready(stale)
    unavailable = deployment()
    unavailable["status"]["unavailableReplicas"] = 1
    assert not every_pod_ready(unavailable)
    assert not every_pod_ready({"metadata": {"generation": 1}, "spec": {"replicas": 1}})
