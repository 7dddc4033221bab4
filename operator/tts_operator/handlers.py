"""Thin kopf handlers: they find the TTSService and start a pass (`reconcile` or
`refresh_status`) in a worker thread.

- a TTSService's own watch event: reconcile it now when its spec (metadata.generation) has
  not had a pass in this process yet: when it is new, edited, or first listed after the
  operator starts (kopf's create, update and resume, without kopf's bookkeeping). Its
  status patches, label edits and re-lists change no generation and run no pass.
- events of the owned kinds (kinds.CHILDREN: ConfigMaps, Deployments, Services, HPAs, PDBs;
  managed-by label) and of its pods: triage.py says what the event needs. A child deleted,
  or edited away from what the operator applies: reconcile the owner now, so it is put
  back. The Deployment's rollout numbers or a pod's problem changed: refresh the owner's
  status after status_delay_seconds (the events of one rollout step share it). Anything
  else: nothing.
- a pass that fails with an error that may pass (a 5xx, a timeout, a conflict, "not yet"):
  retried with backoff until one succeeds (retry.Deferred).

A TTSService is watched with kopf.on.event, not on.create / on.update / on.resume: those
make kopf patch its bookkeeping (the last handled spec, handler progress) into every
TTSService's annotations and diff every watch event against it, a write and a fifth of the
operator's CPU per TTSService at scale (docs/benchmarks.md), for what the generation says.

No timer, daemon or on.delete handler: kopf puts its finalizer on every object that such a
handler matches (a timer always counts), and then deleting a TTSService, or its namespace,
hangs while the operator is down. Children carry ownerReferences, so the garbage collector deletes
them; drift and status changes arrive as child and pod watch events (kopf re-lists after a
watch error, and resume reconciles everything when the operator starts); retries are
asyncio tasks of the operator's own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import kopf

from tts_operator.builders.common import LABEL_MANAGED_BY, MANAGED_BY
from tts_operator.kinds import CHILDREN, POD, TTSSERVICE, Kind, Manifest
from tts_operator.kube import Kube, load_client
from tts_operator.metrics import observed
from tts_operator.reconcile import Context, owner_name, reconcile, refresh_status
from tts_operator.retry import Backoff, Deferred
from tts_operator.settings import OperatorSettings
from tts_operator.status import READY, condition
from tts_operator.triage import Need

MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}
log = logging.getLogger("tts_operator")


def gvp(kind: Kind) -> tuple[str, str, str]:
    """(group, version, plural): how kopf names a resource to watch."""
    return kind.group, kind.version, kind.plural


def plain(body: Mapping[str, Any]) -> Manifest:
    """A kopf Body as a dict, to read only (its values are the watch event's own)."""
    return {k: body[k] for k in body}


def spec_version(owner: Mapping[str, Any]) -> tuple[str, int]:
    """(uid, generation) of a TTSService: the API server raises the generation on every
    spec change, and on nothing else (labels, annotations, status)."""
    meta = owner["metadata"]
    return str(meta.get("uid", "")), int(meta.get("generation") or 0)


class Named(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Log lines of a put-off pass, which has no kopf object logger: "[ns/name] ..."."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[{self.extra['object']}] {msg}", kwargs  # type: ignore[index]


class Passes:
    """Runs one pass for one TTSService at a time (passes run in worker threads), each on a
    fresh read of it, so concurrent triggers neither race nor post the same event twice.
    The Kubernetes client is made lazily (at the first pass), so registering needs no
    cluster."""

    def __init__(
        self,
        settings: OperatorSettings,
        make_context: Callable[[OperatorSettings], Context] | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._make_context = make_context or (
            lambda s: Context(
                kube=Kube(load_client(s.pass_workers), timeout=s.api_timeout_seconds), settings=s
            )
        )
        # Passes block on the API server; asyncio's default pool has only CPUs + 4 threads,
        # and a burst of new TTSServices would queue there, status refreshes behind creates.
        self._workers = concurrent.futures.ThreadPoolExecutor(
            settings.pass_workers, thread_name_prefix="pass"
        )
        self._context: Context | None = None
        self._locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        # (uid, generation) of the latest spec each TTSService's full pass started on: its
        # watch events with that generation (status patches, label edits, re-lists) need
        # none. The uid tells a TTSService deleted and made anew (generation 1 again).
        self._passed: dict[tuple[str, str], tuple[str, int]] = {}
        self._locks_guard = threading.Lock()
        self.deferred = Deferred(
            self._put_off_pass,
            Backoff(cap=settings.retry_seconds),
            sleep=sleep,
            rand=rand,
            clock=clock,
        )

    @property
    def ctx(self) -> Context:
        with self._locks_guard:  # one context: its triage memory is shared by every pass
            if self._context is None:
                self._context = self._make_context(self._settings)
            return self._context

    async def _in_worker(self, handler: str, namespace: str, name: str, *args: Any) -> None:
        """self.run(...) in a pass worker, with this task's context (kopf's event posting
        reads it), as asyncio.to_thread does for its own pool; then the status refresh a
        new TTSService's first pass leaves to later."""
        call = functools.partial(
            contextvars.copy_context().run, self.run, handler, namespace, name, *args
        )
        if await asyncio.get_running_loop().run_in_executor(self._workers, call):
            delay = self._settings.status_delay_seconds
            self.deferred.request((namespace, name), False, delay)

    def fresh_owner(self, namespace: str, name: str) -> Manifest | None:
        """The TTSService as stored now; None when it is gone or being deleted."""
        owner = self.ctx.kube.get(TTSSERVICE.api_version, TTSSERVICE.kind, namespace, name)
        if owner is None or owner.get("metadata", {}).get("deletionTimestamp"):
            return None
        return owner

    def run(
        self, handler: str, namespace: str, name: str, logger: Any, status_only: bool = False
    ) -> bool:
        """One pass, in the calling (worker) thread. True when it left the status to a
        refresh (reconcile.py: a new TTSService's first status waits for its rollout)."""
        with self._locks_guard:
            lock = self._locks[(namespace, name)]
        with lock, observed(handler):
            owner = self.fresh_owner(namespace, name)
            if owner is None:
                self.ctx.triage.forget(namespace, name)
                return False
            if status_only:
                refresh_status(self.ctx, owner)
                return False
            # Started is enough: a failed pass is retried by self.deferred, not by events.
            self._passed[(namespace, name)] = spec_version(owner)
            status = reconcile(self.ctx, owner)
        if status is None:
            logger.info("reconciled: children created; status after the first rollout step")
            return True
        ready = condition(status, READY)
        logger.info(f"reconciled: Ready={ready.get('status')} ({ready.get('reason')})")
        return False

    async def owner_event(
        self, event: Mapping[str, Any], body: Mapping[str, Any], logger: Any
    ) -> None:
        """A TTSService's watch event: a full pass now if its spec has had none in this
        process ("create" when it has no status yet, "resume" when first listed, else
        "update"); its deletion forgets it."""
        meta = body["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        event_type = event.get("type")
        if event_type == "DELETED":
            self._passed.pop(key, None)
            self.ctx.triage.forget(*key)
            return
        uid, generation = spec_version(body)
        passed = self._passed.get(key)
        if meta.get("deletionTimestamp") or (
            passed and passed[0] == uid and passed[1] >= generation
        ):
            return
        if event_type is None:
            handler = "resume"
        elif (body.get("status") or {}).get("observedGeneration") is None:
            handler = "create"
        else:
            handler = "update"
        await self._attempt(key, handler, logger)

    async def event(
        self, handler: str, kind: str, event: Mapping[str, Any], body: Mapping[str, Any],
        logger: Any,
    ) -> None:  # fmt: skip
        """A child's or pod's watch event: what it needs for its TTSService (triage.py). The
        initial listing (type None) is covered by the TTSServices' own listing."""
        obj = plain(body)
        name, namespace = owner_name(obj), obj.get("metadata", {}).get("namespace")
        event_type = event.get("type")
        if event_type is None or not name or not namespace:
            return
        key = (str(namespace), name)
        need = self.ctx.triage.need(kind, str(event_type), obj, name)
        if need is Need.STATUS:
            self.deferred.request(key, False, self._settings.status_delay_seconds)
        elif need is Need.FULL:
            await self._attempt(key, handler, logger)

    async def _attempt(self, key: tuple[str, str], handler: str, logger: Any) -> None:
        """A full pass now; when it fails, a retry with backoff (retry.Deferred)."""
        try:
            await self._in_worker(handler, *key, logger)
        except Exception as err:  # judged by Deferred.failed: retried or logged
            self.deferred.failed(key, True, err)
        else:
            self.deferred.succeeded(key, True)

    async def _put_off_pass(self, key: tuple[str, str], full: bool) -> None:
        """A status refresh gathered over status_delay_seconds, or a retry."""
        logger = Named(log, {"object": f"{key[0]}/{key[1]}"})
        await self._in_worker("retry" if full else "status", *key, logger, not full)


def register(
    settings: OperatorSettings,
    registry: kopf.OperatorRegistry,
    make_context: Callable[[OperatorSettings], Context] | None = None,
    passes: Passes | None = None,
) -> Passes:
    """Register every handler into `registry`; returns the Passes they share."""
    passes = passes or Passes(settings, make_context)
    tts = gvp(TTSSERVICE)

    # A private registry has none of kopf's default login handlers: use the kubernetes
    # client's (in-cluster service account, else KUBECONFIG), the same as `Kube` uses.
    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.event(*tts, registry=registry, id="ttsservices")
    async def on_tts(
        event: Mapping[str, Any], body: kopf.Body, logger: kopf.Logger, **_: Any
    ) -> None:
        await passes.owner_event(event, body, logger)

    def on_child(kind: str) -> Callable[..., Awaitable[None]]:
        async def handler(
            event: Mapping[str, Any], body: kopf.Body, logger: kopf.Logger, **_: Any
        ) -> None:
            await passes.event("child", kind, event, body, logger)

        return handler

    for kind in CHILDREN:
        kopf.on.event(*gvp(kind), registry=registry, labels=MANAGED, id=f"child-{kind.plural}")(
            on_child(kind.kind)
        )

    @kopf.on.event(*gvp(POD), registry=registry, labels=MANAGED, id="pods")
    async def on_pod(
        event: Mapping[str, Any], body: kopf.Body, logger: kopf.Logger, **_: Any
    ) -> None:
        await passes.event("pod", POD.kind, event, body, logger)

    return passes
