"""Thin kopf handlers: they find the TTSService and call `reconcile` (or `refresh_status`).

- create / update / resume of a TTSService: reconcile it (kopf retries a TemporaryError).
- events of the owned kinds (kinds.CHILDREN: ConfigMaps, Deployments, Services, HPAs, PDBs;
  managed-by label): reconcile the owner, so a child deleted or edited by hand is put back.
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
from tts_operator.kinds import CHILDREN, POD, TTSSERVICE, Kind, Manifest
from tts_operator.kube import Kube, load_client
from tts_operator.metrics import observed
from tts_operator.reconcile import Context, owner_name, reconcile, refresh_status
from tts_operator.settings import OperatorSettings
from tts_operator.status import READY, condition

MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}


def gvp(kind: Kind) -> tuple[str, str, str]:
    """(group, version, plural): how kopf names a resource to watch."""
    return kind.group, kind.version, kind.plural


def raw(body: Mapping[str, Any]) -> Manifest:
    """A plain, private copy of a kopf Body."""
    return copy.deepcopy({k: body[k] for k in body})


class Passes:
    """Runs one pass for one TTSService at a time (handlers run in a thread pool), each on a
    fresh read of it, so concurrent triggers neither race nor post the same event twice.
    The Kubernetes client is made lazily (at the first pass), so registering needs no
    cluster."""

    def __init__(
        self,
        settings: OperatorSettings,
        make_context: Callable[[OperatorSettings], Context] | None = None,
    ) -> None:
        self._settings = settings
        self._make_context = make_context or (
            lambda s: Context(kube=Kube(load_client()), settings=s)
        )
        self._context: Context | None = None
        self._locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    @property
    def ctx(self) -> Context:
        if self._context is None:
            self._context = self._make_context(self._settings)
        return self._context

    def fresh_owner(self, namespace: str, name: str) -> Manifest | None:
        """The TTSService as stored now; None when it is gone or being deleted."""
        owner = self.ctx.kube.get(TTSSERVICE.api_version, TTSSERVICE.kind, namespace, name)
        if owner is None or owner.get("metadata", {}).get("deletionTimestamp"):
            return None
        return owner

    def run(
        self, handler: str, namespace: str, name: str, logger: Any, status_only: bool = False
    ) -> None:
        with self._locks_guard:
            lock = self._locks[(namespace, name)]
        with lock, observed(handler):
            owner = self.fresh_owner(namespace, name)
            if owner is None:
                return
            if status_only:
                refresh_status(self.ctx, owner)
                return
            status = reconcile(self.ctx, owner)
        ready = condition(status, READY)
        logger.info(f"reconciled: Ready={ready.get('status')} ({ready.get('reason')})")

    def run_body(self, handler: str, body: Mapping[str, Any], logger: Any) -> None:
        meta = body["metadata"]
        self.run(handler, meta["namespace"], meta["name"], logger)

    def run_owner(
        self, handler: str, event: Mapping[str, Any], body: Mapping[str, Any], logger: Any,
        status_only: bool = False,
    ) -> None:  # fmt: skip
        """A child's or pod's watch event: a pass for its TTSService. The initial listing
        (type None) is covered by the resume handlers."""
        name, namespace = owner_name(raw(body)), body.get("metadata", {}).get("namespace")
        if event.get("type") is not None and name and namespace:
            self.run(handler, namespace, name, logger, status_only)


def register(
    settings: OperatorSettings,
    registry: kopf.OperatorRegistry,
    make_context: Callable[[OperatorSettings], Context] | None = None,
) -> None:
    """Register every handler into `registry`."""
    passes = Passes(settings, make_context)
    tts = gvp(TTSSERVICE)

    # A private registry has none of kopf's default login handlers: use the kubernetes
    # client's (in-cluster service account, else KUBECONFIG), the same as `Kube` uses.
    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.create(*tts, registry=registry, id="create")
    def on_create(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        passes.run_body("create", body, logger)

    @kopf.on.update(*tts, registry=registry, id="update")
    def on_update(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        passes.run_body("update", body, logger)

    @kopf.on.resume(*tts, registry=registry, id="resume")
    def on_resume(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        passes.run_body("resume", body, logger)

    def on_child(event: Mapping[str, Any], body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        try:
            passes.run_owner("child", event, body, logger)
        except (kopf.TemporaryError, kopf.PermanentError) as err:
            logger.info(f"owner {owner_name(raw(body))} not reconciled: {err}")

    for kind in CHILDREN:
        kopf.on.event(*gvp(kind), registry=registry, labels=MANAGED, id=f"child-{kind.plural}")(
            on_child
        )

    @kopf.on.event(*gvp(POD), registry=registry, labels=MANAGED, id="pods")
    def on_pod(event: Mapping[str, Any], body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        passes.run_owner("pod", event, body, logger, status_only=True)
