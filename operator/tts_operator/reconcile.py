"""One level-based pass for one TTSService: check, build, read, apply, prune, observe, report.

Handlers (a TTSService's new spec, child events, retries) all call `reconcile`;
running it twice in a row changes nothing, and the second run writes nothing: a child that
already holds what would be applied is not applied again (drift.py), and an unchanged
status is not patched. Each pass tells `ctx.triage` what it built and saw. A spec that
cannot work yields a Degraded status, a Warning event (once per new reason) and
kopf.TemporaryError / PermanentError.

The operator only ever writes objects this TTSService controls: a child's name taken by an
object without this TTSService's controller ownerReference (uid) is a ChildConflict, and
then nothing at all is applied (see `reconcile`). Nor is anything applied for a spec the
operator's policy refuses (PolicyViolation, see policy.py): the operator's rights are not
handed to whoever may create a TTSService.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, cast

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from tts_operator.builders import ChildRef, build_children
from tts_operator.builders.common import (
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    selector_string,
)
from tts_operator.builders.model import pvc_claim
from tts_operator.drift import stamp, up_to_date
from tts_operator.kinds import DEPLOYMENT, POD, PVC, SCALEDOBJECT, Manifest
from tts_operator.kube import owns_field
from tts_operator.models import TTSServiceSpec
from tts_operator.policy import POLICY_VIOLATION, check, download_rules, refusal_message
from tts_operator.settings import FIELD_MANAGER, OperatorSettings
from tts_operator.status import (
    CHILD_CONFLICT,
    DEGRADED,
    INVALID_SPEC,
    Observed,
    Problem,
    compute_status,
    condition,
    degraded_status,
    every_pod_ready,
)
from tts_operator.triage import Triage

# A second manager that keeps .spec.replicas while the operator lets go of it, so turning
# autoscaling on does not reset the Deployment to 1 replica before the HPA acts
# (Kubernetes docs: server-side apply, "transferring ownership").
HANDOVER_MANAGER = "tts-operator-handover-to-hpa"


class KubeApi(Protocol):
    def apply(self, manifest: Manifest, field_manager: str | None = None) -> Manifest: ...
    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None: ...
    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool: ...
    def list(
        self, api_version: str, kind: str, namespace: str, selector: str
    ) -> list[Manifest]: ...
    def patch_status(self, namespace: str, name: str, status: Manifest) -> Manifest: ...


# (owner body, event type, reason, message)
EventSink = Callable[[Manifest, str, str, str], None]


def kopf_event(body: Manifest, type_: str, reason: str, message: str) -> None:
    kopf.event(cast(Any, body), type=type_, reason=reason, message=message)


@dataclass(frozen=True)
class Context:
    kube: KubeApi
    settings: OperatorSettings
    events: EventSink = kopf_event
    adopt: Callable[[list[Manifest], Manifest], None] = lambda objs, owner: kopf.adopt(
        objs, owner=cast(Any, owner)
    )
    triage: Triage = field(default_factory=Triage)
    """What the passes built and saw, so watch events that change nothing skip a pass."""


def _meta(body: Manifest) -> tuple[str, str, int | None]:
    meta = body["metadata"]
    return meta["name"], meta["namespace"], meta.get("generation")


def _degraded(status: Manifest | None) -> tuple[str, str] | None:
    """(reason, message) of a Degraded=True condition, else None."""
    cond = condition(status, DEGRADED)
    if cond.get("status") != "True":
        return None
    return str(cond.get("reason")), str(cond.get("message", ""))


def _degraded_reason(status: Manifest | None) -> str | None:
    found = _degraded(status)
    return found[0] if found else None


def report(ctx: Context, body: Manifest, status: Manifest) -> Manifest:
    """Patch the status when it differs; post a Warning event when a new problem appears
    (a new reason; for ChildConflict and PolicyViolation also a different set of conflicting
    objects or refused fields, which the message names; counts in other reasons' messages
    change too often to post on)."""
    previous = body.get("status") or {}
    name, namespace, _ = _meta(body)
    now, before = _degraded(status), _degraded(previous)
    # ChildConflict and PolicyViolation messages name the objects / fields, and change only
    # when those do: a different set is a new problem worth its own event.
    renamed = now is not None and now[0] in (CHILD_CONFLICT, POLICY_VIOLATION) and now != before
    if now and (now[0] != (before or ("", ""))[0] or renamed):
        ctx.events(body, "Warning", now[0], now[1])
    if {k: previous.get(k) for k in status} != status:
        ctx.kube.patch_status(namespace, name, status)
    return status


def admit(ctx: Context, body: Manifest) -> TTSServiceSpec | Problem:
    """The spec, parsed once, or why the operator refuses it: InvalidSpec (the models refuse
    it although the API server accepted it) or PolicyViolation (the operator's policy does
    not allow it; the message names each field and the chart value that would allow it)."""
    try:
        spec = TTSServiceSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        return Problem(INVALID_SPEC, str(err).replace("\n", " "))
    settings = ctx.settings
    violations = check(spec, settings.policy, settings.runtime_image, settings.hf_endpoint)
    if violations:
        return Problem(POLICY_VIOLATION, refusal_message(violations))
    return spec


def refuse(ctx: Context, body: Manifest, problem: Problem) -> NoReturn:
    """Refuse a spec before anything is built or written: Degraded (and Ready, Progressing
    False) with the problem's reason, one Warning event, and kopf.PermanentError. Permanent:
    only a spec change (an update, handled anew) or new operator settings (a restart, which
    resumes every TTSService) can change the answer, so retrying on a timer would only repeat
    it. Children already there are left exactly as they are (still serving the last allowed
    spec)."""
    name, _, generation = _meta(body)
    report(ctx, body, degraded_status(name, generation, problem, body.get("status")))
    prefix = "invalid spec: " if problem.reason == INVALID_SPEC else ""
    raise kopf.PermanentError(prefix + problem.message)


def precheck(ctx: Context, namespace: str, spec: TTSServiceSpec) -> Problem | None:
    """Problems the schema cannot see: a PVC that does not exist (yet)."""
    claim = pvc_claim(spec.model.uri)
    if claim and ctx.kube.get(PVC.api_version, PVC.kind, namespace, claim) is None:
        return Problem(
            "ModelClaimNotFound",
            f'PersistentVolumeClaim "{claim}" (from model.uri {spec.model.uri}) does not exist '
            f'in namespace "{namespace}"',
        )
    return None


def controlled_by(obj: Manifest, owner_uid: str) -> bool:
    """Whether `obj` has a controller ownerReference to the owner with this uid."""
    refs = obj.get("metadata", {}).get("ownerReferences", []) or []
    return bool(owner_uid) and any(
        r.get("controller") is True and r.get("uid") == owner_uid for r in refs
    )


def _key(manifest: Manifest) -> tuple[str, str]:
    return manifest["kind"], manifest["metadata"]["name"]


def read_children(
    ctx: Context, namespace: str, desired: list[Manifest]
) -> dict[tuple[str, str], Manifest | None]:
    """The live object (or None) at each desired child's name: one GET per child."""
    return {
        _key(m): ctx.kube.get(m["apiVersion"], m["kind"], namespace, m["metadata"]["name"])
        for m in desired
    }


def _controller(obj: Manifest) -> str:
    for ref in obj.get("metadata", {}).get("ownerReferences", []) or []:
        if ref.get("controller") is True:
            return f"controlled by {ref.get('kind')}/{ref.get('name')}, uid {ref.get('uid')}"
    return "no controller"


def conflicts(
    live: dict[tuple[str, str], Manifest | None], owner_uid: str
) -> list[tuple[str, str, str]]:
    """(kind, name, its controller) of each existing object this TTSService does not control."""
    return [
        (kind, name, _controller(obj))
        for (kind, name), obj in live.items()
        if obj is not None and not controlled_by(obj, owner_uid)
    ]


def conflict_problem(namespace: str, found: list[tuple[str, str, str]]) -> Problem:
    objects = ", ".join(f"{kind}/{name} ({who})" for kind, name, who in found)
    verbs = ("exists", "is") if len(found) == 1 else ("exist", "are")
    return Problem(
        CHILD_CONFLICT,
        f'{objects} already {verbs[0]} in namespace "{namespace}" and {verbs[1]} '
        "not controlled by this TTSService, so the operator changes nothing (it never takes "
        "over an object it does not own). Rename the TTSService, or delete or rename the "
        "other object.",
        refused=True,
    )


def hand_over_replicas(ctx: Context, deployment: Manifest, live: Manifest | None) -> None:
    """Before the first apply without replicas, let a second manager co-own the current
    count so dropping ours does not reset it (the HPA takes it from there). `live` is the
    Deployment as read before applying (None when there is none yet)."""
    meta = deployment["metadata"]
    if live is None or not owns_field(live, FIELD_MANAGER, "spec", "replicas"):
        return
    ctx.kube.apply(
        {
            **DEPLOYMENT.header(),
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"replicas": live.get("spec", {}).get("replicas", 1)},
        },
        field_manager=HANDOVER_MANAGER,
    )


def prune(ctx: Context, namespace: str, owner_uid: str, unwanted: list[ChildRef]) -> None:
    """Delete children the spec no longer wants, but only ones this TTSService controls
    (managed-by label and a controller ownerReference with its uid): never anyone else's."""
    for ref in unwanted:
        live = ctx.kube.get(ref.api_version, ref.kind, namespace, ref.name)
        if live is None:
            continue
        labels = live.get("metadata", {}).get("labels", {}) or {}
        if labels.get(LABEL_MANAGED_BY) == MANAGED_BY and controlled_by(live, owner_uid):
            ctx.kube.delete(ref.api_version, ref.kind, namespace, ref.name)


def observe(ctx: Context, namespace: str, name: str, deployment: Manifest | None) -> Observed:
    """The Deployment and, unless its status says every pod is Ready (then none can have a
    problem to report), the pods: a LIST filters every pod in the namespace."""
    if every_pod_ready(deployment):
        return Observed(deployment=deployment, pods=[])
    pods = ctx.kube.list(POD.api_version, POD.kind, namespace, selector_string(name))
    return Observed(deployment=deployment, pods=pods)


KEDA_NOT_INSTALLED = "KedaNotInstalled"


def _api_problem(err: ApiException, manifest: Manifest | None) -> Problem:
    if err.status == 404 and manifest is not None and manifest["kind"] == SCALEDOBJECT.kind:
        # The API server has no keda.sh/v1alpha1 ScaledObject: KEDA is not installed.
        return Problem(
            KEDA_NOT_INSTALLED,
            f"autoscaling.provider is keda but the cluster does not serve "
            f"{SCALEDOBJECT.api_version} {SCALEDOBJECT.kind}: install KEDA, or set "
            "autoscaling.provider to hpa",
        )
    return Problem("ApplyFailed", f"the API server refused a child ({err.status}): {err.body}")


def reconcile(ctx: Context, body: Manifest) -> Manifest | None:
    """Bring one TTSService's children to its spec and report status. Returns the status,
    or None when a new TTSService's first status is left to a refresh (see the end)."""
    name, namespace, _ = _meta(body)
    spec = admit(ctx, body)
    if isinstance(spec, Problem):
        refuse(ctx, body, spec)
    kids = build_children(
        name,
        namespace,
        spec,
        ctx.settings.runtime_image,
        download_rules(ctx.settings.policy, ctx.settings.hf_endpoint),
        ctx.settings.prometheus_source,
    )
    problem = precheck(ctx, namespace, spec)
    if problem:
        _report_observed(ctx, body, spec, Observed(None, [], problem))
        raise kopf.TemporaryError(problem.message, delay=ctx.settings.retry_seconds)

    ctx.adopt(kids.desired, body)
    for manifest in kids.desired:
        stamp(manifest)  # the hash of what is applied: an unchanged child is not applied again
    ctx.triage.built(namespace, name, kids.desired, kids.unwanted)
    uid = str(body["metadata"].get("uid", ""))
    deployment: Manifest | None = None
    applying: Manifest | None = None  # for the error message
    try:
        # Server-side apply with force takes over whatever sits at a name, so read every
        # child first and apply only over objects this TTSService controls (or none there).
        live = read_children(ctx, namespace, kids.desired)
        taken = conflicts(live, uid)
        if taken:
            # Refuse the whole pass, not just the conflicting child: a Deployment without its
            # Service (or ConfigMap, or PDB) is half a product, and stopping before any write
            # leaves both the other object and what exists of ours exactly as they are.
            ours = live.get((DEPLOYMENT.kind, name))
            ours = ours if ours is not None and controlled_by(ours, uid) else None
            problem = conflict_problem(namespace, taken)
            _report_observed(ctx, body, spec, Observed(ours, [], problem))
            # Retried: the conflict clears without a spec change once the other object goes.
            raise kopf.TemporaryError(problem.message, delay=ctx.settings.retry_seconds)
        for manifest in kids.desired:
            applying = manifest
            is_deployment = manifest["kind"] == DEPLOYMENT.kind
            current = live[_key(manifest)]
            if up_to_date(manifest, current):
                applied = current  # an apply would change nothing of ours: skip the write
            else:
                if is_deployment and spec.autoscaling.enabled:
                    hand_over_replicas(ctx, manifest, current)
                applied = ctx.kube.apply(manifest)
            if is_deployment:
                deployment = applied
                ctx.triage.reporting_from(namespace, name, deployment)
        applying = None
        prune(ctx, namespace, uid, kids.unwanted)
    except ApiException as err:
        problem = _api_problem(err, applying)
        _report_observed(ctx, body, spec, Observed(None, [], problem))
        # 400/422: the spec produced something the cluster refuses; retrying cannot help.
        # Anything else (403 before RBAC lands, 5xx, throttling) may pass later.
        if err.status in (400, 422):
            raise kopf.PermanentError(problem.message) from err
        raise kopf.TemporaryError(problem.message, delay=ctx.settings.retry_seconds) from err

    if live.get((DEPLOYMENT.kind, name)) is None:
        # This pass created the Deployment: it has no ReplicaSet, so no pods, yet. Listing
        # them would cost a request per new TTSService for nothing; its rollout events bring
        # the status refresh that counts them.
        if not body.get("status"):
            # A new TTSService: its first status waits for that refresh (the caller asks for
            # one after status_delay_seconds), so it is not written twice within a second:
            # a write and a watch event per TTSService, which count by the thousand.
            return None
        return _report_observed(ctx, body, spec, Observed(deployment=deployment, pods=[]))
    return _report_observed(ctx, body, spec, observe(ctx, namespace, name, deployment))


def refresh_status(ctx: Context, body: Manifest) -> Manifest | None:
    """Status only (pods changed): no applies. None, with nothing written, when the spec is
    refused (InvalidSpec, PolicyViolation: `reconcile` reported it when the spec came) or
    while a ChildConflict stands (only `reconcile`, which reads the children, may clear
    it)."""
    name, namespace, _ = _meta(body)
    spec = admit(ctx, body)
    if isinstance(spec, Problem) or _degraded_reason(body.get("status")) == CHILD_CONFLICT:
        return None
    deployment = ctx.kube.get(DEPLOYMENT.api_version, DEPLOYMENT.kind, namespace, name)
    return _report_observed(ctx, body, spec, observe(ctx, namespace, name, deployment))


def _report_observed(
    ctx: Context, body: Manifest, spec: TTSServiceSpec, observed: Observed
) -> Manifest:
    name, namespace, generation = _meta(body)
    status = compute_status(name, namespace, generation, spec, observed, body.get("status"))
    report(ctx, body, status)
    ctx.triage.observed(namespace, name, observed)
    return status


def owner_name(child: Manifest) -> str | None:
    """The TTSService a child belongs to: its controller ownerReference, or for pods (owned
    by a ReplicaSet) the instance label the operator put on the pod template."""
    meta = child.get("metadata", {})
    for ref in meta.get("ownerReferences", []) or []:
        if ref.get("kind") == "TTSService" and ref.get("controller"):
            return str(ref.get("name"))
    if child.get("kind", "Pod") == "Pod":
        instance = (meta.get("labels") or {}).get(LABEL_INSTANCE)
        return str(instance) if instance else None
    return None
