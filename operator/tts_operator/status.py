"""TTSService status as a pure function of its children (and of problems the reconcile saw).

Conditions follow Kubernetes conventions: Ready, Progressing and Degraded, each with a
reason a person can act on; lastTransitionTime only moves when a condition's status does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tts_operator.builders.common import selector_string
from tts_operator.builders.model import FETCH_CONTAINER
from tts_operator.builders.service import endpoint
from tts_operator.models import Condition, TTSServiceSpec, TTSServiceStatus

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
_BAD_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
}
# A child's name is taken by an object this TTSService does not control: nothing is applied.
CHILD_CONFLICT = "ChildConflict"
# The API server accepted a spec the operator's models refuse.
INVALID_SPEC = "InvalidSpec"
# The most of a container's termination message a condition repeats.
MESSAGE_LIMIT = 300
# How the model-fetch script's last line starts (builders/model.py); the condition says it already.
_FETCH_PREFIX = "model download failed: "


@dataclass(frozen=True)
class Problem:
    """Why the service cannot work as specified (a condition reason and a message)."""

    reason: str
    message: str
    refused: bool = False
    """The reconcile refused to apply anything (e.g. ChildConflict): Ready and Progressing
    are False with this reason too, and no endpoint is advertised (the Service at that name
    may not be ours)."""


@dataclass(frozen=True)
class Observed:
    """What the operator saw of one TTSService's children."""

    deployment: dict[str, Any] | None
    pods: list[dict[str, Any]]
    problem: Problem | None = None


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _get(obj: dict[str, Any] | None, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return obj


def condition(status: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    """The condition of type `ctype` in a status (a TTSService's, a Deployment's), else {}."""
    for cond in (status or {}).get("conditions", []) or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return {}


def _failure_line(cs: dict[str, Any]) -> str:
    """The last non-empty line of a failed container's termination message, if it has one.

    The current state holds it while the pod shows Init:Error; in CrashLoopBackOff the current
    state is `waiting` and the failed run is in lastState.
    """
    for state in ("state", "lastState"):
        terminated = _get(cs, state, "terminated")
        if isinstance(terminated, dict) and terminated.get("exitCode", 0) != 0:
            lines = [ln.strip() for ln in str(terminated.get("message") or "").splitlines()]
            lines = [ln for ln in lines if ln]
            if lines:
                last = lines[-1].removeprefix(_FETCH_PREFIX)
                return last if len(last) <= MESSAGE_LIMIT else last[: MESSAGE_LIMIT - 3] + "..."
    return ""


@dataclass(frozen=True)
class PodFacts:
    """What `pod_problem` reads from one pod (hashable: a watch event of a pod whose facts
    are the ones the last status was computed from cannot change that status)."""

    unschedulable: str | None
    """The scheduler's message when it could not place the pod."""
    fetch_failures: int
    fetch_why: str
    waiting: tuple[str, ...]
    """Bad waiting reasons of the containers (CrashLoopBackOff ...)."""


def pod_facts(pod: dict[str, Any]) -> PodFacts | None:
    """The pod's problem facts; None when it shows none (or is being deleted)."""
    if _get(pod, "metadata", "deletionTimestamp"):
        return None
    scheduled = condition(_get(pod, "status"), "PodScheduled")
    unschedulable = None
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        unschedulable = str(scheduled.get("message", ""))
    fetch_failures, fetch_why = 0, ""
    for cs in _get(pod, "status", "initContainerStatuses", default=[]) or []:
        state = cs.get("state", {})
        failed = (
            _get(state, "terminated", "exitCode", default=0) != 0
            or _get(state, "waiting", "reason") in _BAD_WAITING
        )
        if cs.get("name") == FETCH_CONTAINER and failed:
            fetch_failures += 1
            fetch_why = fetch_why or _failure_line(cs)
    waiting = tuple(
        str(reason)
        for cs in _get(pod, "status", "containerStatuses", default=[]) or []
        if (reason := _get(cs, "state", "waiting", "reason")) in _BAD_WAITING
    )
    if unschedulable is None and not fetch_failures and not waiting:
        return None
    return PodFacts(unschedulable, fetch_failures, fetch_why, waiting)


def every_pod_ready(dep: dict[str, Any] | None) -> bool:
    """Whether the Deployment's current status says every pod it has is Ready. Then no pod
    can show a problem (pod_facts needs a pending, waiting or failed-download pod, and none
    of those is Ready), so a status pass need not list them. When a pod goes wrong, its
    Deployment's ready count drops, and that event brings a pass that lists."""
    r = _Rollout.of(dep, default_replicas=1)
    return (
        r.present
        and r.current
        and r.total == r.ready == r.updated == r.desired
        and not _get(dep, "status", "unavailableReplicas")
    )


def pod_problem(pods: list[dict[str, Any]], gpu_resource: str) -> Problem | None:
    """The most actionable problem among the pods: GPUs the scheduler cannot find first."""
    facts = [f for f in map(pod_facts, pods) if f is not None]
    unschedulable = [f.unschedulable for f in facts if f.unschedulable is not None]
    waiting = Counter(reason for f in facts for reason in f.waiting)
    fetch_failures = sum(f.fetch_failures for f in facts)
    fetch_why = next((f.fetch_why for f in facts if f.fetch_why), "")
    gpu_short = [m for m in unschedulable if f"Insufficient {gpu_resource}" in m]
    if gpu_short:
        return Problem(
            "InsufficientGPU",
            f"{len(gpu_short)} pod(s) cannot be scheduled: no node has a free {gpu_resource} "
            f"(scheduler: {gpu_short[0]})",
        )
    if unschedulable:
        return Problem(
            "Unschedulable",
            f"{len(unschedulable)} pod(s) cannot be scheduled (scheduler: {unschedulable[0]})",
        )
    if fetch_failures:
        why = f": {fetch_why}" if fetch_why else ""
        return Problem(
            "ModelDownloadFailed",
            f"{fetch_failures} pod(s) failed to download the model{why} (see the "
            f"{FETCH_CONTAINER} init container's logs)",
        )
    if waiting:
        reason, count = waiting.most_common(1)[0]
        return Problem(reason, f"{count} pod(s) in {reason}")
    return None


def _condition(
    ctype: str, ok: bool, reason: str, message: str, generation: int | None
) -> Condition:
    return Condition(
        type=ctype,
        status="True" if ok else "False",
        reason=reason,
        message=message,
        observed_generation=generation,
    )


def _refused(problem: Problem, generation: int | None) -> list[Condition]:
    """Ready and Progressing False, Degraded True, all with the problem's reason."""
    why, detail = problem.reason, problem.message
    return [
        _condition(READY, False, why, detail, generation),
        _condition(PROGRESSING, False, why, detail, generation),
        _condition(DEGRADED, True, why, detail, generation),
    ]


@dataclass(frozen=True)
class _Rollout:
    """The Deployment's numbers and conditions the TTSService's conditions are made of."""

    present: bool
    ready: int
    desired: int
    updated: int
    total: int
    available: bool
    current: bool
    progress: dict[str, Any]

    @classmethod
    def of(cls, dep: dict[str, Any] | None, default_replicas: int) -> _Rollout:
        """`default_replicas`: the spec's, for a Deployment without spec.replicas."""
        return cls(
            present=dep is not None,
            ready=int(_get(dep, "status", "readyReplicas", default=0) or 0),
            desired=int(_get(dep, "spec", "replicas", default=default_replicas) or 0),
            updated=int(_get(dep, "status", "updatedReplicas", default=0) or 0),
            total=int(_get(dep, "status", "replicas", default=0) or 0),
            available=condition(_get(dep, "status"), "Available").get("status") == "True",
            current=_get(dep, "status", "observedGeneration", default=0)
            >= _get(dep, "metadata", "generation", default=0),
            progress=condition(_get(dep, "status"), "Progressing"),
        )

    @property
    def deadline_exceeded(self) -> bool:
        return self.progress.get("reason") == "ProgressDeadlineExceeded"

    @property
    def rolling(self) -> bool:
        return self.present and (
            not self.current
            or self.updated < self.desired
            or self.total > self.updated
            or self.ready < self.desired
        )


def rollout_signal(dep: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What the status makes of the Deployment (None: no Deployment). A watch event of the
    Deployment with the signal the last status was computed from cannot change that status
    (a stored Deployment always has spec.replicas: the default below never counts)."""
    if dep is None:
        return None
    r = _Rollout.of(dep, default_replicas=1)
    deadline = r.progress.get("message") if r.deadline_exceeded else None
    return (
        r.ready,
        r.desired,
        r.updated,
        r.total,
        r.available,
        r.rolling,
        r.deadline_exceeded,
        deadline,
    )


def _ready(r: _Rollout, problem: Problem | None, generation: int | None) -> Condition:
    if not r.present:
        why, detail = (
            (problem.reason, problem.message)
            if problem
            else ("DeploymentMissing", "the Deployment is not there yet")
        )
        return _condition(READY, False, why, detail, generation)
    if r.desired == 0:
        return _condition(READY, False, "ScaledToZero", "replicas is 0", generation)
    counts = f"{r.ready}/{r.desired} pods ready"
    if r.ready > 0 and r.available:
        return _condition(READY, True, "MinimumReplicasAvailable", counts, generation)
    return _condition(
        READY, False, problem.reason if problem else "PodsNotReady", counts, generation
    )


def _progressing(r: _Rollout, generation: int | None) -> Condition:
    if not r.present:
        return _condition(PROGRESSING, True, "Creating", "creating the children", generation)
    if r.deadline_exceeded:
        message = str(r.progress.get("message", ""))
        return _condition(PROGRESSING, False, "ProgressDeadlineExceeded", message, generation)
    if r.rolling:
        counts = f"{r.updated}/{r.desired} pods updated, {r.ready} ready, {r.total} total"
        return _condition(PROGRESSING, True, "RollingOut", counts, generation)
    return _condition(PROGRESSING, False, "Complete", "all pods updated and ready", generation)


def _degraded(r: _Rollout, problem: Problem | None, generation: int | None) -> Condition:
    if problem is None and r.deadline_exceeded:
        problem = Problem("ProgressDeadlineExceeded", str(r.progress.get("message", "")))
    if problem:
        return _condition(DEGRADED, True, problem.reason, problem.message, generation)
    return _condition(DEGRADED, False, "AsExpected", "no problems seen", generation)


def _conditions(
    spec: TTSServiceSpec, generation: int | None, observed: Observed
) -> list[Condition]:
    if observed.problem is not None and observed.problem.refused:
        return _refused(observed.problem, generation)
    problem = observed.problem or pod_problem(observed.pods, spec.runtime.gpu.resource_name)
    rollout = _Rollout.of(observed.deployment, spec.effective_replicas)
    return [
        _ready(rollout, problem, generation),
        _progressing(rollout, generation),
        _degraded(rollout, problem, generation),
    ]


def _keep_transition_times(
    conditions: list[Condition], previous: dict[str, Any] | None, now: str
) -> list[Condition]:
    """`conditions` with the lastTransitionTime of the `previous` status's condition of the
    same type where the status did not change, else `now`."""
    out = []
    for cond in conditions:
        old = condition(previous, cond.type)
        same = old.get("status") == cond.status and old.get("lastTransitionTime")
        out.append(
            cond.model_copy(
                update={"last_transition_time": old["lastTransitionTime"] if same else now}
            )
        )
    return out


def compute_status(
    name: str,
    namespace: str,
    generation: int | None,
    spec: TTSServiceSpec,
    observed: Observed,
    previous: dict[str, Any] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """The status subresource (camelCase) for one TTSService. A refused reconcile reports
    `endpoint: null`, so the merge patch removes an endpoint advertised before."""
    dep = observed.deployment
    refused = observed.problem is not None and observed.problem.refused
    conditions = _keep_transition_times(
        _conditions(spec, generation, observed),
        previous,
        now or now_rfc3339(),
    )
    status = TTSServiceStatus(
        observed_generation=generation,
        conditions=conditions,
        replicas=int(_get(dep, "status", "replicas", default=0) or 0),
        ready_replicas=int(_get(dep, "status", "readyReplicas", default=0) or 0),
        updated_replicas=int(_get(dep, "status", "updatedReplicas", default=0) or 0),
        endpoint=None if refused else endpoint(name, namespace, spec),
        selector=selector_string(name),
    )
    out = status.model_dump(by_alias=True, exclude_none=True)
    if refused:
        out["endpoint"] = None
    return out


def degraded_status(
    name: str,
    generation: int | None,
    problem: Problem,
    previous: dict[str, Any] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """Status for a spec that could not even be parsed: only the conditions say why."""
    conditions = _keep_transition_times(
        _refused(problem, generation),
        previous,
        now or now_rfc3339(),
    )
    status = {k: v for k, v in (previous or {}).items() if k not in ("conditions", "kopf")}
    status["observedGeneration"] = generation
    status["conditions"] = [c.model_dump(by_alias=True, exclude_none=True) for c in conditions]
    status.setdefault("selector", selector_string(name))
    return status
