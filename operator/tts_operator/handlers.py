"""Thin kopf handlers: they find the TTSService and call `reconcile` (or `refresh_status`).

- create / update / resume of a TTSService: reconcile it (kopf retries a TemporaryError).
- events of owned Deployments/Services/HPAs/PDBs/ConfigMaps (managed-by label): reconcile the
  owner, so a child deleted or edited by hand is put back at once.
- events of its pods: recompute the owner's status only (Ready counts, InsufficientGPU).

No timer, daemon or on.delete handler: kopf puts its finalizer on every object that such a
handler matches (a timer always counts), and then deleting a TTSService, or its namespace,
hangs while the operator is down. Children carry ownerReferences, so the garbage collector deletes
them; drift and status changes arrive as child and pod watch events (kopf re-lists after a
watch error, and resume reconciles everything when the operator starts).
"""

from __future__ import annotations

import copy
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from tts_operator.builders.common import LABEL_MANAGED_BY, MANAGED_BY
from tts_operator.kube import TTS_API_VERSION, Kube, Manifest, load_client
from tts_operator.metrics import observed
from tts_operator.models import GROUP, PLURAL, VERSION
from tts_operator.reconcile import Context, owner_name, reconcile, refresh_status
from tts_operator.settings import OperatorSettings

TTS = (GROUP, VERSION, PLURAL)
# (group, version, plural) of each owned kind; the chart's RBAC must allow list/watch on them.
OWNED = [
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("apps", "v1", "deployments"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
]
PODS = ("", "v1", "pods")
MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}


def raw(body: Mapping[str, Any]) -> Manifest:
    """A plain, private copy of a kopf Body."""
    return copy.deepcopy({k: body[k] for k in body})


def register(
    settings: OperatorSettings,
    registry: kopf.OperatorRegistry,
    make_context: Callable[[OperatorSettings], Context] | None = None,
) -> None:
    """Register every handler into `registry`. The Kubernetes client is made lazily (at the
    first handler call), so registering needs no cluster."""
    holder: dict[str, Context] = {}

    def ctx() -> Context:
        if "ctx" not in holder:
            factory = make_context or (lambda s: Context(kube=Kube(load_client()), settings=s))
            holder["ctx"] = factory(settings)
        return holder["ctx"]

    locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
    locks_guard = threading.Lock()

    def fresh_owner(namespace: str, name: str) -> Manifest | None:
        owner = ctx().kube.get(TTS_API_VERSION, "TTSService", namespace, name)
        if owner is None or owner.get("metadata", {}).get("deletionTimestamp"):
            return None
        return owner

    def run(
        handler: str, namespace: str, name: str, logger: Any, status_only: bool = False
    ) -> None:
        """Serialize passes per TTSService (handlers run in a thread pool) and work on a fresh
        read of it, so concurrent triggers neither race nor post the same event twice."""
        with locks_guard:
            lock = locks[(namespace, name)]
        with lock, observed(handler):
            owner = fresh_owner(namespace, name)
            if owner is None:
                return
            if status_only:
                refresh_status(ctx(), owner)
                return
            status = reconcile(ctx(), owner)
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions", []) if c["type"] == "Ready"), {}
        )
        logger.info(f"reconciled: Ready={ready.get('status')} ({ready.get('reason')})")

    def run_body(handler: str, body: Mapping[str, Any], logger: Any) -> None:
        meta = body["metadata"]
        run(handler, meta["namespace"], meta["name"], logger)

    # A private registry has none of kopf's default login handlers: use the kubernetes
    # client's (in-cluster service account, else KUBECONFIG), the same as `Kube` uses.
    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.create(*TTS, registry=registry, id="create")
    def on_create(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        run_body("create", body, logger)

    @kopf.on.update(*TTS, registry=registry, id="update")
    def on_update(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        run_body("update", body, logger)

    @kopf.on.resume(*TTS, registry=registry, id="resume")
    def on_resume(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        run_body("resume", body, logger)

    def on_child(event: Mapping[str, Any], body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        # The initial listing (type None) is covered by the resume handlers.
        name, namespace = owner_name(raw(body)), body.get("metadata", {}).get("namespace")
        if event.get("type") is None or not name or not namespace:
            return
        try:
            run("child", namespace, name, logger)
        except (kopf.TemporaryError, kopf.PermanentError) as err:
            logger.info(f"owner {name} not reconciled: {err}")

    for group, version, plural in OWNED:
        kopf.on.event(
            group, version, plural, registry=registry, labels=MANAGED, id=f"child-{plural}"
        )(on_child)

    @kopf.on.event(*PODS, registry=registry, labels=MANAGED, id="pods")
    def on_pod(event: Mapping[str, Any], body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        name, namespace = owner_name(raw(body)), body.get("metadata", {}).get("namespace")
        if event.get("type") is not None and name and namespace:
            run("pod", namespace, name, logger, status_only=True)
