"""reconcile(): idempotent, level-based, degrading clearly when the spec cannot work."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest
from fake_kube import FakeKube
from kubernetes.client.exceptions import ApiException
from op_helpers import tts_body, unschedulable_pod
from tts_operator.policy import Policy
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


def stored(kube: FakeKube) -> dict[str, Any]:
    body = kube.find("TTSService", NS, "voice")
    assert body is not None
    return copy.deepcopy(body)


def run(ctx: Context, kube: FakeKube) -> dict[str, Any]:
    """A full pass, and for a new TTSService the status refresh it leaves to later (which
    handlers.Passes asks for)."""
    status = reconcile(ctx, stored(kube)) or refresh_status(ctx, stored(kube))
    assert status is not None
    return status


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


def test_a_new_tts_services_first_status_is_left_to_one_refresh(
    ctx: Context, kube: FakeKube
) -> None:
    """Not written twice within a second: the refresh after the first rollout step writes it."""
    stored_tts(kube, SPEC)
    assert reconcile(ctx, stored(kube)) is None
    assert kube.find("Deployment", NS, "voice") is not None and kube.status_patches == []
    status = refresh_status(ctx, stored(kube))
    assert status is not None and kube.status_patches == [status]
    # A TTSService that has a status has it reported by the pass itself, e.g. when its
    # Deployment was deleted (a ChildConflict standing there only a full pass may clear).
    kube.delete("apps/v1", "Deployment", NS, "voice")
    assert reconcile(ctx, stored(kube)) == status


def test_second_run_changes_nothing(ctx: Context, kube: FakeKube) -> None:
    stored_tts(kube, SPEC)
    run(ctx, kube)
    changes, patches = kube.changes, len(kube.status_patches)
    run(ctx, kube)
    assert kube.changes == changes
    assert len(kube.status_patches) == patches


def test_second_run_applies_nothing(ctx: Context, kube: FakeKube) -> None:
    stored_tts(kube, SPEC)
    run(ctx, kube)
    kube.applied.clear()
    run(ctx, kube)  # every child carries what would be applied: no write at all
    assert kube.applied == []


def test_a_spec_change_applies_only_the_children_it_changes(ctx: Context, kube: FakeKube) -> None:
    body = stored_tts(kube, SPEC)
    run(ctx, kube)
    kube.applied.clear()
    body["spec"] = {**SPEC, "service": {"port": 9000}}
    run(ctx, kube)
    assert kube.applied == [("Service", NS, "voice")]


def test_a_field_dropped_from_the_spec_is_applied_away(ctx: Context, kube: FakeKube) -> None:
    body = stored_tts(kube, {**SPEC, "scheduling": {"nodeSelector": {"pool": "gpu"}}})
    run(ctx, kube)
    kube.applied.clear()
    body["spec"] = SPEC  # the live Deployment still holds every field the new one asks for
    run(ctx, kube)
    assert kube.applied == [("Deployment", NS, "voice")]
    dep = kube.find("Deployment", NS, "voice")
    assert dep is not None and "nodeSelector" not in dep["spec"]["template"]["spec"]


def test_deleted_or_edited_child_is_restored(ctx: Context, kube: FakeKube) -> None:
    stored_tts(kube, SPEC)
    run(ctx, kube)
    kube.delete("v1", "Service", NS, "voice")
    cm = kube.find("ConfigMap", NS, "voice-runtime")
    assert cm is not None
    cm["data"]["TTS_MAX_BATCH_SIZE"] = "999"
    kube.applied.clear()
    run(ctx, kube)
    assert kube.find("Service", NS, "voice") is not None
    restored = kube.find("ConfigMap", NS, "voice-runtime")
    assert restored is not None and restored["data"]["TTS_MAX_BATCH_SIZE"] == "8"
    assert sorted(kube.applied) == [("ConfigMap", NS, "voice-runtime"), ("Service", NS, "voice")]


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


KEDA_SPEC: dict[str, Any] = {
    "model": SPEC["model"],
    "autoscaling": {"enabled": True, "provider": "keda"},
}


def test_keda_provider_without_keda_says_so(ctx: Context, kube: FakeKube, events: Events) -> None:
    stored_tts(kube, KEDA_SPEC)
    kube.unserved_kinds.add("ScaledObject")
    with pytest.raises(kopf.TemporaryError, match="install KEDA"):
        run(ctx, kube)
    assert events.posted[0][1] == "KedaNotInstalled"
    assert kube.find("Deployment", NS, "voice") is not None  # the rest was applied


def test_switching_provider_swaps_the_autoscaler(ctx: Context, kube: FakeKube) -> None:
    stored_tts(kube, AUTOSCALED)
    run(ctx, kube)
    assert kube.find("HorizontalPodAutoscaler", NS, "voice") is not None
    stored_tts(kube, KEDA_SPEC)
    run(ctx, kube)
    assert kube.find("HorizontalPodAutoscaler", NS, "voice") is None
    so = kube.find("ScaledObject", NS, "voice")
    assert so is not None and so["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    stored_tts(kube, SPEC)
    run(ctx, kube)
    assert kube.find("ScaledObject", NS, "voice") is None


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


def test_the_pass_that_creates_the_deployment_lists_no_pods(ctx: Context, kube: FakeKube) -> None:
    stored_tts(kube, SPEC)
    assert reconcile(ctx, stored(kube)) is None
    assert kube.listed == []  # a Deployment created a moment ago has no pods yet
    kube.add(unschedulable_pod("0/2 nodes are available: 2 Insufficient nvidia.com/gpu."))
    status = run(ctx, kube)  # the Deployment exists now: its pods count
    assert [kind for kind, _, _ in kube.listed] == ["Pod"]
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Degraded"] == "InsufficientGPU"


def test_a_status_refresh_lists_pods_only_while_some_are_not_ready(
    ctx: Context, kube: FakeKube
) -> None:
    stored_tts(kube, SPEC)
    assert reconcile(ctx, stored(kube)) is None  # creates the Deployment, lists nothing
    dep = kube.find("Deployment", NS, "voice")
    assert dep is not None
    dep["metadata"]["generation"] = 1
    dep["status"] = {"observedGeneration": 1, "replicas": 3, "readyReplicas": 2}
    dep["status"]["updatedReplicas"] = 3
    kube.add(unschedulable_pod("0/2 nodes are available: 2 Insufficient nvidia.com/gpu."))
    body = kube.find("TTSService", NS, "voice")
    assert body is not None
    status = refresh_status(ctx, copy.deepcopy(body))
    assert status is not None and len(kube.listed) == 1  # one not Ready: look at them
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Degraded"] == "InsufficientGPU"
    dep["status"]["readyReplicas"] = 3
    assert refresh_status(ctx, copy.deepcopy(body)) is not None
    assert len(kube.listed) == 1  # all Ready by the Deployment's own count: no LIST


def test_owner_name_from_owner_reference_or_pod_label() -> None:
    child = {
        "kind": "Service",
        "metadata": {"ownerReferences": [{"kind": "TTSService", "name": "a", "controller": True}]},
    }
    assert owner_name(child) == "a"
    pod = {"kind": "Pod", "metadata": {"labels": {"app.kubernetes.io/instance": "b"}}}
    assert owner_name(pod) == "b"
    assert owner_name({"kind": "Service", "metadata": {}}) is None


# -- Children whose names are taken by objects this TTSService does not control (issue 11) --

OTHER_UID = "uid-other"


def foreign(kind: str, name: str, owner_refs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Someone else's object at a child's name (a Service `payments`, say)."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": "victim-uid",
        "labels": {"app": "payments"},
        "annotations": {"team": "payments"},
    }
    if owner_refs is not None:
        meta["ownerReferences"] = owner_refs
    return {"kind": kind, "metadata": meta, "spec": {"selector": {"app": "payments"}}}


def conditions_of(kube: FakeKube) -> dict[str, dict[str, Any]]:
    body = kube.find("TTSService", NS, "voice")
    assert body is not None
    return {c["type"]: c for c in body["status"]["conditions"]}


AUTOSCALED: dict[str, Any] = {"model": {"uri": "pvc://voices/en"}, "autoscaling": {"enabled": True}}
# (kind, name, spec that wants that child)
CHILDREN = [
    ("Service", "voice", SPEC),
    ("ConfigMap", "voice-runtime", SPEC),
    ("Deployment", "voice", SPEC),
    ("PodDisruptionBudget", "voice", SPEC),
    ("HorizontalPodAutoscaler", "voice", AUTOSCALED),
]
# ownerReferences that do not make an object ours: none, another controller (a former
# TTSService of the same name: another uid), our uid but not as controller.
NOT_OURS: dict[str, list[dict[str, Any]] | None] = {
    "no-owner": None,
    "other-controller": [
        {"kind": "TTSService", "name": "voice", "uid": OTHER_UID, "controller": True}
    ],
    "ours-not-controller": [
        {"kind": "TTSService", "name": "voice", "uid": "uid-1234", "controller": False}
    ],
}


@pytest.mark.parametrize("refs", NOT_OURS.values(), ids=NOT_OURS.keys())
@pytest.mark.parametrize(("kind", "name", "spec"), CHILDREN, ids=[c[0] for c in CHILDREN])
def test_object_not_controlled_by_us_is_left_alone(
    ctx: Context,
    kube: FakeKube,
    events: Events,
    kind: str,
    name: str,
    spec: dict[str, Any],
    refs: list[dict[str, Any]] | None,
) -> None:
    stored_tts(kube, spec)
    victim = foreign(kind, name, refs)
    kube.add(victim)
    with pytest.raises(kopf.TemporaryError, match=f"{kind}/{name}"):
        run(ctx, kube)
    assert kube.find(kind, NS, name) == victim  # byte for byte
    # The whole pass is refused: no apply reached any object, nothing was deleted.
    assert kube.applied == [] and kube.deleted == []
    c = conditions_of(kube)
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "ChildConflict")
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "ChildConflict")
    assert c["Progressing"]["status"] == "False"
    message = c["Degraded"]["message"]
    assert f"{kind}/{name} (" in message and 'namespace "speech"' in message
    assert "Rename the TTSService, or delete or rename the other object" in message
    if refs and refs[0]["controller"]:
        assert f"controlled by TTSService/voice, uid {OTHER_UID}" in message
    else:
        assert "(no controller)" in message
    assert events.posted == [("Warning", "ChildConflict", message)]
    body = kube.find("TTSService", NS, "voice")
    assert body is not None and body["status"].get("endpoint") is None


def test_conflict_is_stable_then_clears_once_the_other_object_goes(
    ctx: Context, kube: FakeKube, events: Events
) -> None:
    stored_tts(kube, SPEC)
    kube.add(foreign("Service", "voice"))
    with pytest.raises(kopf.TemporaryError):
        run(ctx, kube)
    patches = len(kube.status_patches)
    with pytest.raises(kopf.TemporaryError):
        run(ctx, kube)  # the retry: no write, no status patch, no second event
    assert kube.applied == [] and len(kube.status_patches) == patches
    assert [r for _, r, _ in events.posted] == ["ChildConflict"]

    kube.delete("v1", "Service", NS, "voice")  # its owner renames it away
    status = run(ctx, kube)
    service = kube.find("Service", NS, "voice")
    assert service is not None and service["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
    assert kube.find("Deployment", NS, "voice") is not None
    c = conditions_of(kube)
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("False", "AsExpected")
    assert c["Ready"]["reason"] != "ChildConflict"
    assert status["endpoint"] == "http://voice.speech.svc.cluster.local:8000"
    assert [r for _, r, _ in events.posted] == ["ChildConflict"]


def test_our_children_are_applied_when_nothing_conflicts(ctx: Context, kube: FakeKube) -> None:
    stored_tts(kube, SPEC)
    run(ctx, kube)
    for (kind, _, _), obj in kube.objects.items():
        if kind not in ("TTSService", "PersistentVolumeClaim"):  # a label of ours, by hand
            obj["metadata"]["labels"]["app.kubernetes.io/part-of"] = "someone-else"
    kube.applied.clear()
    run(ctx, kube)  # every child exists, is ours and was edited: all applied again
    assert sorted(k for k, _, _ in kube.applied) == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ]


def test_a_taken_name_freezes_our_existing_children(
    ctx: Context, kube: FakeKube, events: Events
) -> None:
    """Our Service deleted and a stranger's created at its name: nothing of ours is written
    (not even the Deployment), pod events do not clear the condition, and the message
    names every conflicting object."""
    body = stored_tts(kube, SPEC)
    run(ctx, kube)
    kube.delete("v1", "Service", NS, "voice")
    kube.add(foreign("Service", "voice"))
    body["spec"] = {**SPEC, "replicas": 5}
    kube.applied.clear()
    with pytest.raises(kopf.TemporaryError):
        run(ctx, kube)
    assert kube.applied == []
    dep = kube.find("Deployment", NS, "voice")
    assert dep is not None and dep["spec"]["replicas"] == 3
    assert conditions_of(kube)["Degraded"]["reason"] == "ChildConflict"

    kube.add(unschedulable_pod("0/2 nodes are available: 2 Insufficient nvidia.com/gpu."))
    stored = kube.find("TTSService", NS, "voice")
    assert stored is not None
    assert refresh_status(ctx, copy.deepcopy(stored)) is None
    assert conditions_of(kube)["Degraded"]["reason"] == "ChildConflict"

    kube.add(foreign("ConfigMap", "voice-runtime"))  # a second one: a new event names both
    with pytest.raises(kopf.TemporaryError):
        run(ctx, kube)
    assert len(events.posted) == 2
    assert "ConfigMap/voice-runtime" in events.posted[1][2]
    assert "Service/voice" in events.posted[1][2]


def test_prune_needs_our_controller_reference(ctx: Context, kube: FakeKube) -> None:
    stored_tts(kube, SPEC)  # autoscaling off: an HPA named voice is unwanted
    labels = {"app.kubernetes.io/managed-by": "tts-operator"}
    for refs in NOT_OURS.values():
        hpa = foreign("HorizontalPodAutoscaler", "voice", refs)
        hpa["metadata"]["labels"] = labels
        kube.add(hpa)
        kube.deleted.clear()
        run(ctx, kube)
        assert kube.deleted == [] and kube.find("HorizontalPodAutoscaler", NS, "voice") == hpa


# ---------------------------------------------------------------- the operator's policy

SECRET_ENV = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
REFUSED: dict[str, Any] = {
    **SPEC,
    "runtime": {"image": "docker.io/attacker/tools:1", "env": [SECRET_ENV]},
}


def test_a_spec_the_policy_refuses_writes_nothing_and_says_why(
    ctx: Context, kube: FakeKube, events: Events
) -> None:
    stored_tts(kube, REFUSED)
    for _ in range(2):  # a second pass (a child event, a resume) repeats nothing
        with pytest.raises(kopf.PermanentError, match=r"spec\.runtime\.image"):
            run(ctx, kube)
    assert kube.applied == [] and kube.deleted == []
    assert [k for k, _, _ in kube.objects] == ["PersistentVolumeClaim", "TTSService"]
    c = conditions_of(kube)
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "PolicyViolation")
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "PolicyViolation")
    assert c["Progressing"]["status"] == "False"
    message = c["Degraded"]["message"]
    for named in (
        "spec.runtime.image",
        "policy.allowedImagePrefixes",
        # the allowed rule: the default runtime image's repository (rt:1), parsed
        "(docker.io/library/rt)",
        "spec.runtime.env[0].valueFrom.secretKeyRef",
        "policy.allowedEnvValueFrom",
    ):
        assert named in message, (named, message)
    assert events.posted == [("Warning", "PolicyViolation", message)]
    assert len(kube.status_patches) == 1


def test_a_refused_update_leaves_the_running_children_as_they_are(
    ctx: Context, kube: FakeKube, events: Events
) -> None:
    body = stored_tts(kube, SPEC)
    run(ctx, kube)
    before = copy.deepcopy(kube.objects)
    kube.applied.clear()
    body["spec"] = {**SPEC, "service": {"type": "LoadBalancer"}}
    with pytest.raises(kopf.PermanentError, match=r"spec.service.type.*policy.allowedServiceTypes"):
        run(ctx, kube)
    assert kube.applied == [] and kube.deleted == []
    after = {k: v for k, v in kube.objects.items() if k[0] != "TTSService"}
    assert after == {k: v for k, v in before.items() if k[0] != "TTSService"}
    assert conditions_of(kube)["Degraded"]["reason"] == "PolicyViolation"
    # A pod event recomputes nothing over the refusal.
    refreshed = kube.find("TTSService", NS, "voice")
    assert refreshed is not None and refresh_status(ctx, copy.deepcopy(refreshed)) is None

    # Another refused field is a new problem: a new event names it.
    body["spec"] = {**SPEC, "scheduling": {"priorityClassName": "system-node-critical"}}
    with pytest.raises(kopf.PermanentError):
        run(ctx, kube)
    assert [r for _, r, _ in events.posted] == ["PolicyViolation", "PolicyViolation"]
    assert "policy.allowedPriorityClasses" in events.posted[-1][2]

    body["spec"] = SPEC  # fixed: reconciled again, the condition clears
    run(ctx, kube)
    assert conditions_of(kube)["Degraded"]["reason"] == "AsExpected"


def test_settings_that_allow_it_let_the_spec_through(kube: FakeKube, events: Events) -> None:
    policy = Policy(
        allowed_image_prefixes=["docker.io/attacker/"],
        allowed_env_value_from=["secretKeyRef"],
        allowed_env_names=["TOKEN"],
    )
    ctx = Context(
        kube=kube, settings=OperatorSettings(runtime_image="rt:1", policy=policy), events=events
    )
    stored_tts(kube, REFUSED)
    run(ctx, kube)
    dep = kube.find("Deployment", NS, "voice")
    assert dep is not None
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "docker.io/attacker/tools:1"
    assert SECRET_ENV in container["env"]
    assert events.posted == []
