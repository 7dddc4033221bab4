"""Start the operator process: logging, metrics, peering, then `kopf.run`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from tts_operator import metrics
from tts_operator.handlers import register
from tts_operator.kube import Kube, load_client
from tts_operator.settings import OperatorSettings

log = logging.getLogger("tts_operator")


class QuietWatchers(logging.Filter):
    """Drop kopf's per-event "Handler '...' succeeded" lines below DEBUG: TTSService, child
    and pod events arrive by the dozen during a rollout; failures and pass results (the
    "reconciled: Ready=..." line) still log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or logging.getLogger().level <= logging.DEBUG:
            return True
        message = record.getMessage()
        return not (
            message.startswith(("Handler 'child-", "Handler 'pods'", "Handler 'ttsservices'"))
            and message.endswith("succeeded.")
        )


def configure_logging(settings: OperatorSettings) -> None:
    """JSON lines carry the object's namespace/name under "object" (kopf's formatter)."""
    kopf.configure(
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object",
    )
    root = logging.getLogger()
    root.setLevel(settings.log_level.upper())
    for handler in root.handlers:
        handler.addFilter(QuietWatchers())


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: kopf builds one for every watch event of every kind (a deep copy of
    the body, less metadata and status) to find what changed for change handlers, even
    where none are registered. This operator has none (handlers.py), and the copies were a
    fifth of its CPU with 1,000 TTSServices (docs/benchmarks.md)."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Nothing is kept (kopf calls this only after change handlers ran)."""


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    ks = kopf.OperatorSettings()
    ks.persistence.diffbase_storage = NoDiffBase()
    # Only warnings become Kubernetes Events (child and pod events would flood them otherwise).
    ks.posting.level = logging.WARNING
    ks.peering.stealth = True
    return ks


def peering_objects(settings: OperatorSettings) -> list[tuple[str, dict[str, object]]]:
    """(collection path, object) for each peering object this operator joins."""
    meta = {"name": settings.peering_name}
    if settings.clusterwide:
        return [
            (
                "/apis/kopf.dev/v1/clusterkopfpeerings",
                {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": meta},
            )
        ]
    return [
        (
            f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings",
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfPeering",
                "metadata": {**meta, "namespace": ns},
            },
        )
        for ns in settings.namespace_list
    ]


def ensure_peering(kube: Kube, settings: OperatorSettings) -> None:
    """Create the peering object(s) when missing. Best effort: the chart may create them
    instead, and kopf stops with a clear error if the peering CRDs are absent."""
    for path, body in peering_objects(settings):
        try:
            if kube.create_if_missing(body, path):
                log.info(f"created peering object {settings.peering_name!r} at {path}")
        except ApiException as err:
            log.warning(f"could not create peering object at {path} ({err.status}); continuing")


def wait_for_peering(
    kube: Kube,
    settings: OperatorSettings,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait until the peering object(s) someone else creates (the chart's release) exist;
    PeeringMissingError after settings.peering_wait_seconds."""
    deadline = clock() + settings.peering_wait_seconds
    for path, body in peering_objects(settings):
        name = settings.peering_name
        announced = False
        while not kube.exists(f"{path}/{name}"):
            if clock() >= deadline:
                raise PeeringMissingError(
                    f"peering object {body['kind']} {name!r} did not appear within "
                    f"{settings.peering_wait_seconds:.0f}s (TTS_OPERATOR_PEERING_CREATE=false: "
                    "the chart's release creates it; is peering.create off?)"
                )
            if not announced:
                log.info(f"waiting for peering object {name!r} at {path} (created by the release)")
                announced = True
            sleep(1.0)


class PeeringMissingError(RuntimeError):
    """The peering object the operator was told to wait for never appeared."""


def run(settings: OperatorSettings) -> None:
    configure_logging(settings)
    metrics.serve(settings.metrics_port, settings.metrics_host)
    if not settings.standalone:
        kube = Kube(load_client())
        if settings.peering_create:
            ensure_peering(kube, settings)
        else:
            wait_for_peering(kube, settings)
    registry = kopf.OperatorRegistry()
    register(settings, registry)
    kopf.run(
        registry=registry,
        settings=kopf_settings(settings),
        clusterwide=settings.clusterwide,
        namespaces=settings.namespace_list,
        standalone=True if settings.standalone else None,
        peering_name=None if settings.standalone else settings.peering_name,
        priority=settings.priority,
        liveness_endpoint=settings.liveness_endpoint,
    )
