"""The kopf handlers, called the way kopf calls them, on an in-memory API server; the
put-off passes (status refreshes, retries) on an injected sleep."""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, cast

import kopf
import pytest
import urllib3
from fake_kube import FakeKube
from kubernetes.client.exceptions import ApiException
from op_helpers import tts_body, unschedulable_pod
from tts_operator.handlers import Passes, register
from tts_operator.metrics import REGISTRY
from tts_operator.reconcile import Context
from tts_operator.settings import OperatorSettings

NS = "speech"
LOG = logging.getLogger("test")
KEY = (NS, "voice")


class Sleeps:
    """An injected sleep: records each delay, runs `then` (what happens meanwhile), and
    returns at once (or, with `hold`, once `gate` is set)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.then: Callable[[int], None] = lambda n: None
        self.hold = False
        self.gate = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.then(len(self.delays))
        if self.hold:
            await self.gate.wait()
        await asyncio.sleep(0)


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    k.add({"kind": "PersistentVolumeClaim", "metadata": {"name": "voices", "namespace": NS}})
    k.add(tts_body({"model": {"uri": "pvc://voices/en"}}, namespace=NS))
    return k


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def passes(kube: FakeKube, sleeps: Sleeps) -> Passes:
    settings = OperatorSettings(retry_seconds=4)
    return Passes(
        settings,
        lambda s: Context(kube=kube, settings=s, events=lambda *a: None),
        sleep=sleeps,
        rand=lambda: 0.5,
        clock=lambda: 0.0,
    )


@pytest.fixture
def handlers(passes: Passes) -> dict[str, Any]:
    registry = kopf.OperatorRegistry()
    register(OperatorSettings(), registry, passes=passes)
    found: dict[str, Any] = {h.id: h.fn for h in registry._changing.get_all_handlers()}
    found.update({h.id: h.fn for h in registry._watching.get_all_handlers()})
    found.update({h.id: h.fn for h in registry._spawning.get_all_handlers()})
    return found


def run(*steps: Awaitable[Any]) -> None:
    """Await the handler calls in order, in one event loop (put-off passes included)."""

    async def main() -> None:
        for step in steps:
            await step

    asyncio.run(main())


def body_of(kube: FakeKube, kind: str, name: str) -> kopf.Body:
    found = kube.find(kind, NS, name)
    assert found is not None
    return kopf.Body(cast(kopf.RawBody, copy.deepcopy(found)))


def owner_event(handlers: dict[str, Any], kube: FakeKube, event: str | None) -> Awaitable[None]:
    """The TTSService's own watch event, as kopf hands it over (type None: first listed)."""
    return cast(
        Awaitable[None],
        handlers["ttsservices"](
            event={"type": event}, body=body_of(kube, "TTSService", "voice"), logger=LOG
        ),
    )


Create = Callable[[], Awaitable[None]]


@pytest.fixture
def create(handlers: dict[str, Any], kube: FakeKube, passes: Passes, sleeps: Sleeps) -> Create:
    """The TTSService's ADDED event, then the status refresh its first pass leaves to later:
    where most tests start (with no delay recorded yet)."""

    async def created() -> None:
        await owner_event(handlers, kube, "ADDED")
        await passes.deferred.drain()
        sleeps.delays.clear()

    return created


def edit_spec(kube: FakeKube, **changes: Any) -> None:
    """A spec change, as the API server stores it: a new generation."""
    owner = kube.find("TTSService", NS, "voice")
    assert owner is not None
    owner["spec"].update(changes)
    owner["metadata"]["generation"] += 1


def passes_run(handler: str, result: str = "ok") -> float:
    found = REGISTRY.get_sample_value(
        "tts_operator_reconciles_total", {"handler": handler, "result": result}
    )
    return found or 0.0


def reasons(kube: FakeKube) -> dict[str, str]:
    owner = kube.find("TTSService", NS, "voice")
    assert owner is not None
    return {c["type"]: c["reason"] for c in owner["status"]["conditions"]}


def test_create_builds_the_children(
    handlers: dict[str, Any], kube: FakeKube, create: Create
) -> None:
    run(create())
    assert kube.find("Deployment", NS, "voice") is not None
    assert kube.find("ConfigMap", NS, "voice-runtime") is not None


def test_child_deletion_event_restores_it(
    handlers: dict[str, Any], kube: FakeKube, create: Create
) -> None:
    run(create())
    gone = body_of(kube, "Service", "voice")
    kube.delete("v1", "Service", NS, "voice")
    run(handlers["child-services"](event={"type": None}, body=gone, logger=LOG))
    assert kube.find("Service", NS, "voice") is None  # initial listings are ignored
    run(handlers["child-services"](event={"type": "DELETED"}, body=gone, logger=LOG))
    assert kube.find("Service", NS, "voice") is not None


def test_child_events_that_change_nothing_run_no_pass(
    handlers: dict[str, Any], kube: FakeKube, create: Create
) -> None:
    run(create())
    before = passes_run("child")
    kube.applied.clear()
    for kind, plural, name in (
        ("Service", "services", "voice"),
        ("ConfigMap", "configmaps", "voice-runtime"),
        ("PodDisruptionBudget", "poddisruptionbudgets", "voice"),
    ):
        for event in ("ADDED", "MODIFIED"):
            run(
                handlers[f"child-{plural}"](
                    event={"type": event}, body=body_of(kube, kind, name), logger=LOG
                )
            )
    assert passes_run("child") == before and kube.applied == []


def test_hand_edited_child_is_put_back_by_its_event(
    handlers: dict[str, Any], kube: FakeKube, create: Create
) -> None:
    run(create())
    cm = kube.find("ConfigMap", NS, "voice-runtime")
    assert cm is not None
    cm["data"]["TTS_MAX_BATCH_SIZE"] = "999"
    kube.applied.clear()
    run(
        handlers["child-configmaps"](
            event={"type": "MODIFIED"}, body=body_of(kube, "ConfigMap", "voice-runtime"), logger=LOG
        )
    )
    assert kube.applied == [("ConfigMap", NS, "voice-runtime")]  # only the edited child
    restored = kube.find("ConfigMap", NS, "voice-runtime")
    assert restored is not None and restored["data"]["TTS_MAX_BATCH_SIZE"] == "8"


def test_child_of_a_deleted_owner_is_left_to_the_garbage_collector(
    handlers: dict[str, Any], kube: FakeKube, create: Create
) -> None:
    run(create())
    orphan = body_of(kube, "Service", "voice")
    kube.delete("ttsoperator.io/v1alpha1", "TTSService", NS, "voice")
    kube.delete("v1", "Service", NS, "voice")
    run(handlers["child-services"](event={"type": "DELETED"}, body=orphan, logger=LOG))
    assert kube.find("Service", NS, "voice") is None


def test_pod_events_refresh_status_once_after_a_delay(
    handlers: dict[str, Any], kube: FakeKube, passes: Passes, sleeps: Sleeps, create: Create
) -> None:
    run(create())
    changes, refreshes = kube.changes, passes_run("status")
    pod = unschedulable_pod("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    kube.add(pod)
    event = handlers["pods"](
        event={"type": "ADDED"}, body=kopf.Body(cast(kopf.RawBody, pod)), logger=LOG
    )
    again = handlers["pods"](
        event={"type": "MODIFIED"}, body=kopf.Body(cast(kopf.RawBody, pod)), logger=LOG
    )
    run(event, again, passes.deferred.drain())
    assert kube.changes == changes  # no applies
    assert reasons(kube)["Degraded"] == "InsufficientGPU"
    assert passes_run("status") == refreshes + 1  # the two events shared one refresh
    assert sleeps.delays == [1.0]  # status_delay_seconds
    # The same pod again: the status already says so, nothing to do.
    run(
        handlers["pods"](
            event={"type": "MODIFIED"}, body=kopf.Body(cast(kopf.RawBody, pod)), logger=LOG
        )
    )
    assert passes_run("status") == refreshes + 1


def test_healthy_pod_events_run_no_pass(
    handlers: dict[str, Any], kube: FakeKube, create: Create
) -> None:
    run(create())
    before = passes_run("status") + passes_run("pod")
    pod = unschedulable_pod("")
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    for event in ("ADDED", "MODIFIED"):
        run(
            handlers["pods"](
                event={"type": event}, body=kopf.Body(cast(kopf.RawBody, pod)), logger=LOG
            )
        )
    assert passes_run("status") + passes_run("pod") == before


def edit_service(kube: FakeKube) -> kopf.Body:
    """A hand edit of a field the operator sets: the Service's event asks for a pass."""
    service = kube.find("Service", NS, "voice")
    assert service is not None
    service["spec"]["sessionAffinity"] = "None"
    return body_of(kube, "Service", "voice")


def service_restored(kube: FakeKube) -> bool:
    restored = kube.find("Service", NS, "voice")
    return restored is not None and restored["spec"]["sessionAffinity"] == "ClientIP"


def test_failed_child_pass_is_retried_with_backoff_until_it_succeeds(
    handlers: dict[str, Any], kube: FakeKube, passes: Passes, sleeps: Sleeps, create: Create
) -> None:
    run(create())
    failures: list[Exception] = [
        ApiException(status=503, reason="Service Unavailable"),
        urllib3.exceptions.TimeoutError("read timed out"),
        ApiException(status=409, reason="Conflict"),
        ApiException(status=500, reason="Internal Server Error"),
        ApiException(status=429, reason="Too Many Requests"),
    ]
    kube.fail_next_apply = failures.pop(0)

    def meanwhile(n: int) -> None:  # the API server keeps failing for the next retries
        kube.fail_next_apply = failures.pop(0) if failures else None

    sleeps.then = meanwhile
    service = edit_service(kube)
    run(
        handlers["child-services"](event={"type": "MODIFIED"}, body=service, logger=LOG),
        passes.deferred.drain(),
    )
    assert service_restored(kube)
    # Equal jitter (rand 0.5: three quarters of each step), doubling from 0.5 s, capped at
    # retry_seconds (4 s).
    assert sleeps.delays == [0.375, 0.75, 1.5, 3.0, 3.0]
    assert passes_run("retry") >= 1


def test_retries_of_one_tts_service_coalesce(
    handlers: dict[str, Any], kube: FakeKube, passes: Passes, sleeps: Sleeps, create: Create
) -> None:
    run(create())
    service = edit_service(kube)

    sleeps.hold = True  # the retry waits until both failures are in

    async def two_failures() -> None:
        for _ in range(2):
            kube.fail_next_apply = ApiException(status=503, reason="Service Unavailable")
            await handlers["child-services"](event={"type": "MODIFIED"}, body=service, logger=LOG)
        assert passes.deferred.waiting(KEY, True) is not None
        sleeps.gate.set()
        await passes.deferred.drain()

    run(two_failures())
    assert len(sleeps.delays) == 1  # one retry for both failures
    assert service_restored(kube)


def test_a_later_successful_pass_cancels_the_retry(
    handlers: dict[str, Any], kube: FakeKube, passes: Passes, sleeps: Sleeps, create: Create
) -> None:
    run(create())
    service = edit_service(kube)
    kube.fail_next_apply = ApiException(status=500, reason="Internal Server Error")
    sleeps.hold = True

    async def scenario() -> None:
        await handlers["child-services"](event={"type": "MODIFIED"}, body=service, logger=LOG)
        assert passes.deferred.waiting(KEY, True) is not None
        edit_spec(kube, replicas=2)
        await owner_event(handlers, kube, "MODIFIED")
        assert passes.deferred.waiting(KEY, True) is None
        await passes.deferred.drain()  # the cancelled retry ends without a pass

    retries = passes_run("retry")
    run(scenario())
    assert passes_run("retry") == retries
    assert service_restored(kube)


def test_retries_end_when_the_tts_service_is_gone(
    handlers: dict[str, Any], kube: FakeKube, passes: Passes, sleeps: Sleeps, create: Create
) -> None:
    run(create())
    service = edit_service(kube)
    kube.fail_next_apply = ApiException(status=503, reason="Service Unavailable")

    def deleted(n: int) -> None:
        kube.delete("ttsoperator.io/v1alpha1", "TTSService", NS, "voice")

    sleeps.then = deleted
    run(
        handlers["child-services"](event={"type": "MODIFIED"}, body=service, logger=LOG),
        passes.deferred.drain(),
    )
    assert len(sleeps.delays) == 1  # the retry found nothing to do, and stopped
    assert passes.ctx.triage.unknown(NS, "voice")


def test_not_yet_problems_are_retried_too(
    handlers: dict[str, Any], kube: FakeKube, passes: Passes, sleeps: Sleeps, create: Create
) -> None:
    run(create())
    kube.delete("v1", "PersistentVolumeClaim", NS, "voices")

    def claim_back(n: int) -> None:
        if n == 3:
            kube.add(
                {"kind": "PersistentVolumeClaim", "metadata": {"name": "voices", "namespace": NS}}
            )

    sleeps.then = claim_back
    service = edit_service(kube)
    run(
        handlers["child-services"](event={"type": "MODIFIED"}, body=service, logger=LOG),
        passes.deferred.drain(),
    )
    assert len(sleeps.delays) == 3
    assert service_restored(kube)
    # A spec change whose pass meets one: the same retries.
    kube.delete("v1", "PersistentVolumeClaim", NS, "voices")
    sleeps.delays.clear()
    edit_spec(kube, replicas=2)
    run(owner_event(handlers, kube, "MODIFIED"), passes.deferred.drain())
    assert len(sleeps.delays) == 3
    deployment = kube.find("Deployment", NS, "voice")
    assert deployment is not None and deployment["spec"]["replicas"] == 2


def test_a_refused_spec_is_not_retried(
    handlers: dict[str, Any], kube: FakeKube, passes: Passes, sleeps: Sleeps, create: Create
) -> None:
    run(create())
    owner = kube.find("TTSService", NS, "voice")
    assert owner is not None
    owner["spec"]["model"]["uri"] = "file:///etc"  # the default policy refuses host paths
    service = edit_service(kube)
    run(
        handlers["child-services"](event={"type": "MODIFIED"}, body=service, logger=LOG),
        passes.deferred.drain(),
    )
    assert sleeps.delays == []
    assert reasons(kube)["Degraded"] == "PolicyViolation"


def test_a_timeout_in_create_is_retried_with_backoff(
    handlers: dict[str, Any], kube: FakeKube, passes: Passes, sleeps: Sleeps, create: Create
) -> None:
    kube.fail_next_apply = urllib3.exceptions.TimeoutError("read timed out")
    run(owner_event(handlers, kube, "ADDED"), passes.deferred.drain())
    # The retry after 0.375 s (step 0.5 s, three quarters of it) made the children; the
    # new TTSService's first status came status_delay_seconds later.
    assert sleeps.delays == [0.375, 1.0]
    assert kube.find("Deployment", NS, "voice") is not None
    assert "Ready" in reasons(kube)
    assert passes_run("create", "error") >= 1 and passes_run("retry") >= 1


def test_a_taken_child_name_makes_create_retry_without_writing(
    handlers: dict[str, Any], kube: FakeKube, passes: Passes, sleeps: Sleeps, create: Create
) -> None:
    victim = {"kind": "Service", "metadata": {"name": "voice", "namespace": NS, "uid": "v-1"}}
    kube.add(victim)
    sleeps.hold = True

    async def scenario() -> None:
        await owner_event(handlers, kube, "ADDED")
        assert passes.deferred.waiting(KEY, True) is not None  # retried: the name may free up
        assert kube.applied == [] and kube.find("Service", NS, "voice") == victim
        assert reasons(kube)["Degraded"] == "ChildConflict"
        kube.delete("v1", "Service", NS, "voice")
        sleeps.gate.set()
        await passes.deferred.drain()

    run(scenario())
    assert service_restored(kube)  # the retry after the other object went built ours


def test_only_a_new_spec_or_first_listing_runs_a_pass(
    handlers: dict[str, Any], kube: FakeKube, passes: Passes
) -> None:
    """Status patches, label edits and re-lists keep the generation: no pass, no request."""
    counts = {h: passes_run(h) for h in ("create", "update", "resume")}

    def ran() -> dict[str, float]:
        return {h: passes_run(h) - counts[h] for h in counts}

    # First listed after the operator started; then the refresh writes its first status.
    run(owner_event(handlers, kube, None), passes.deferred.drain())
    assert ran() == {"create": 0, "update": 0, "resume": 1}
    changes = kube.changes
    for event in ("MODIFIED", None, "MODIFIED"):  # its own status patch, a re-list, a label
        run(owner_event(handlers, kube, event))
    assert ran()["resume"] == 1 and ran()["update"] == 0 and kube.changes == changes
    edit_spec(kube, replicas=2)
    run(owner_event(handlers, kube, "MODIFIED"), owner_event(handlers, kube, "MODIFIED"))
    assert ran()["update"] == 1
    deployment = kube.find("Deployment", NS, "voice")
    assert deployment is not None and deployment["spec"]["replicas"] == 2


def test_a_tts_service_made_anew_under_its_old_name_is_reconciled(
    handlers: dict[str, Any], kube: FakeKube, create: Create
) -> None:
    """Its generation starts over; the uid tells it apart, even if the deletion was missed."""
    run(create())
    before = passes_run("create")
    owner = kube.find("TTSService", NS, "voice")
    assert owner is not None
    owner["metadata"]["uid"] = "uid-5678"
    del owner["status"]
    for kind, name in [("ConfigMap", "voice-runtime"), ("Deployment", "voice"),
                       ("Service", "voice"), ("PodDisruptionBudget", "voice")]:  # fmt: skip
        kube.delete("", kind, NS, name)  # the garbage collector took the old one's children
    run(create())
    assert passes_run("create") == before + 1
    made = kube.find("Deployment", NS, "voice")
    assert made is not None
    assert made["metadata"]["ownerReferences"][0]["uid"] == "uid-5678"


class MeetingKube(FakeKube):
    """Each read of a TTSService waits (up to a second) until `parties` passes read at once."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.meeting = threading.Barrier(parties, timeout=1.0)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "TTSService":
            self.meeting.wait()
        return super().get(api_version, kind, namespace, name)


@pytest.mark.parametrize(("workers", "all_done"), [(4, True), (3, False)])
def test_passes_run_side_by_side_in_pass_workers_threads(workers: int, all_done: bool) -> None:
    """Four creates at once meet only with four workers: a pass waits on the API server, so a
    burst of new TTSServices must not queue behind a pool sized for the CPUs."""
    kube = MeetingKube(parties=4)
    kube.add({"kind": "PersistentVolumeClaim", "metadata": {"name": "voices", "namespace": NS}})
    for i in range(4):
        kube.add(tts_body({"model": {"uri": "pvc://voices/en"}}, name=f"voice-{i}", namespace=NS))
    settings = OperatorSettings(pass_workers=workers)
    passes = Passes(settings, lambda s: Context(kube=kube, settings=s, events=lambda *a: None))

    async def creates() -> list[Any]:
        bodies = [body_of(kube, "TTSService", f"voice-{i}") for i in range(4)]
        calls = [passes.owner_event({"type": "ADDED"}, b, LOG) for b in bodies]
        return await asyncio.gather(*calls)

    asyncio.run(creates())
    created = [kube.find("Deployment", NS, f"voice-{i}") is not None for i in range(4)]
    assert all(created) is all_done
