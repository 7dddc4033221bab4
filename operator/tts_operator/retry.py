"""Passes put off per TTSService: status refreshes gathered over a short window, and retries
of failed passes with exponential backoff and jitter, until one succeeds.

They run as asyncio tasks in the operator's own event loop, never as a kopf timer or daemon:
kopf puts its finalizer on every object such a handler matches (see handlers.py). At most
one status refresh and one full pass wait per TTSService: later requests join them, a
waiting full pass (a retry) takes in status refreshes asked meanwhile, a full pass that
succeeds cancels a waiting retry, and a retry that finds its TTSService gone simply
succeeds, so retries end with the TTSService.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from tts_operator.metrics import RETRIES

log = logging.getLogger("tts_operator.retry")

Key = tuple[str, str]  # namespace, TTSService name
# Runs one pass for a TTSService, full or status only; raises when it fails.
Run = Callable[[Key, bool], Awaitable[None]]


@dataclass(frozen=True)
class Backoff:
    first: float = 0.5
    factor: float = 2.0
    cap: float = 15.0

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds before retry number `attempt` (0-based), `rand` in [0, 1): equal jitter,
        half of the exponential step fixed and half random, so TTSServices that failed
        together come back spread out, yet never sooner than half a step."""
        step = min(self.cap, self.first * self.factor ** min(attempt, 64))
        return step / 2 + step / 2 * rand


def retryable(err: BaseException) -> bool:
    """Errors that may pass by themselves: kopf.TemporaryError ("not yet": a missing claim, a
    conflict, a 5xx the reconcile reported), the API server's answers but 400/422 (a
    request that can never work), timeouts and broken connections."""
    if isinstance(err, ApiException):
        return err.status not in (400, 422)
    return isinstance(err, kopf.TemporaryError | urllib3.exceptions.HTTPError | OSError)


def describe(err: BaseException) -> str:
    if isinstance(err, ApiException):
        return f"HTTP {err.status} {err.reason}"
    return f"{type(err).__name__}: {err}"


@dataclass
class _Waiting:
    due: float
    task: asyncio.Task[None]


class Deferred:
    """Passes waiting to run, keyed by TTSService. Call from the event loop only."""

    def __init__(
        self,
        run: Run,
        backoff: Backoff,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._run = run
        self.backoff = backoff
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._waiting: dict[tuple[Key, bool], _Waiting] = {}
        self._attempts: dict[tuple[Key, bool], int] = {}  # failures in a row, by kind
        self._tasks: set[asyncio.Task[None]] = set()  # waiting or running

    def waiting(self, key: Key, full: bool) -> float | None:
        """When the waiting pass of this kind is due (None: none waits)."""
        found = self._waiting.get((key, full))
        return found.due if found is not None and not found.task.done() else None

    def request(self, key: Key, full: bool, delay: float) -> None:
        """A pass for `key` in `delay` seconds, unless one waiting already covers it."""
        if self.waiting(key, True) is not None or (not full and self.waiting(key, False)):
            return
        due = self._clock() + delay
        task = asyncio.get_running_loop().create_task(self._later(key, full, due))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._waiting[(key, full)] = _Waiting(due, task)

    def failed(self, key: Key, full: bool, err: BaseException) -> None:
        """A pass for `key` failed: retry it after the next backoff step if `err` may pass,
        else leave it (logged) to the next event or spec change."""
        if isinstance(err, kopf.PermanentError) or not retryable(err):
            self._attempts.pop((key, full), None)
            if isinstance(err, kopf.PermanentError):  # a refused spec: its status says why
                log.info(f"{key[0]}/{key[1]}: not reconciled: {err}")
            else:
                log.error(f"{key[0]}/{key[1]}: pass failed, not retried: {describe(err)}")
            return
        attempt = self._attempts.get((key, full), 0)
        self._attempts[(key, full)] = attempt + 1
        delay = self.backoff.delay(attempt, self._rand())
        RETRIES.labels("full" if full else "status").inc()
        log.warning(
            f"{key[0]}/{key[1]}: pass failed ({describe(err)}); retry {attempt + 1} in {delay:.1f}s"
        )
        self.request(key, full, delay)

    def succeeded(self, key: Key, full: bool) -> None:
        """A pass for `key` succeeded: the backoff starts over, and a full one leaves a
        waiting retry nothing to do."""
        self._attempts.pop((key, full), None)
        if not full:
            return
        self._attempts.pop((key, False), None)
        waiting = self._waiting.pop((key, True), None)
        if waiting is not None and waiting.task is not asyncio.current_task():
            waiting.task.cancel()

    async def _later(self, key: Key, full: bool, due: float) -> None:
        await self._sleep(max(0.0, due - self._clock()))
        waiting = self._waiting.get((key, full))
        if waiting is not None and waiting.task is asyncio.current_task():
            del self._waiting[(key, full)]  # running now: a new request waits anew
        try:
            await self._run(key, full)
        except Exception as err:  # judged by `failed`: retried or logged
            self.failed(key, full, err)
        else:
            self.succeeded(key, full)

    async def drain(self) -> None:
        """Wait until no pass waits or runs (tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
