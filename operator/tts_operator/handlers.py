"""Thin kopf handlers: they find the TTSService and call `reconcile` (or `refresh_status`).

- create / update / resume of a TTSService: reconcile it.
- a timer every TTS_OPERATOR_RESYNC_SECONDS: reconcile again (drift, status).
- events of owned Deployments/Services/HPAs/PDBs/ConfigMaps (managed-by label): reconcile the
  owner, so a child deleted or edited by hand is put back at once.
- events of its pods: recompute the owner's status only (Ready counts, InsufficientGPU).
"""

from __future__ import annotations

import copy
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

    def run(handler: str, body: Mapping[str, Any], logger: Any) -> None:
        with observed(handler):
            status = reconcile(ctx(), raw(body))
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions", []) if c["type"] == "Ready"), {}
        )
        logger.info(f"reconciled: Ready={ready.get('status')} ({ready.get('reason')})")

    # A private registry has none of kopf's default login handlers: use the kubernetes
    # client's (in-cluster service account, else KUBECONFIG), the same as `Kube` uses.
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.create(*TTS, registry=registry)
    def on_create(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        run("create", body, logger)

    @kopf.on.update(*TTS, registry=registry)
    def on_update(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        run("update", body, logger)

    @kopf.on.resume(*TTS, registry=registry)
    def on_resume(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        run("resume", body, logger)

    @kopf.timer(
        *TTS,
        registry=registry,
        interval=settings.resync_seconds,
        initial_delay=settings.resync_seconds,
    )
    def resync(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        try:
            run("resync", body, logger)
        except (kopf.TemporaryError, kopf.PermanentError) as err:
            # Already in the status and (once) in an event; the next tick retries.
            logger.debug(f"resync: {err}")

    def owner_of(body: kopf.Body) -> Manifest | None:
        name = owner_name(raw(body))
        namespace = body.get("metadata", {}).get("namespace")
        if not name or not namespace:
            return None
        owner = ctx().kube.get(TTS_API_VERSION, "TTSService", namespace, name)
        if owner is None or owner.get("metadata", {}).get("deletionTimestamp"):
            return None
        return owner

    def on_child(event: Mapping[str, Any], body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        # The initial listing (type None) is covered by the resume handlers.
        if event.get("type") is None:
            return
        owner = owner_of(body)
        if owner is None:
            return
        try:
            with observed("child"):
                reconcile(ctx(), owner)
        except (kopf.TemporaryError, kopf.PermanentError) as err:
            logger.info(f"owner {owner['metadata']['name']} not reconciled: {err}")

    for group, version, plural in OWNED:
        kopf.on.event(
            group, version, plural, registry=registry, labels=MANAGED, id=f"child-{plural}"
        )(on_child)

    @kopf.on.event(*PODS, registry=registry, labels=MANAGED)
    def on_pod(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        if event.get("type") is None:
            return
        owner = owner_of(body)
        if owner is not None:
            with observed("pod"):
                refresh_status(ctx(), owner)
