"""Dynamic batcher: turns many concurrent segments into few engine batches.

Shape (Triton-like, on asyncio):
- `submit` queues all segments of one request at once, or refuses them all at
  once with QueueFullError (-> 429) when the queue is full.
- One scheduler task picks the next batch whenever the single inference thread is
  free: the oldest segment plus the queued segments with EQUAL scales (the model's
  `scales` input is per batch) nearest to it in length, up to max_batch_size,
  while the padding share stays bounded.
- It holds a partial batch open for up to max_queue_delay only while other
  requests are still being prepared (`preparing`), so an idle server runs a lone
  request at once and the batcher costs nothing at concurrency 1.
- A streamed request's later segments are held out of the queue until the
  caller asks for them (`result`), which the app does once the segment before has
  been sent: a client that stops reading stops the synthesis too.
- A segment whose deadline passes while queued fails with DeadlineExceededError
  (-> 504) and never runs. A batch that raises is re-run item by item so only the
  bad item fails. Results are delivered by the worker's completion callback, not
  by the scheduler task, and the scheduler is restarted if it ever dies, so a
  crash there loses no accepted segment.
- Internal work (the start-up warm-up) is submitted with `internal=True`: it runs
  like any segment but is never batched with user segments and never reaches the
  tts_* metrics, so the audio total and the queue wait the HPA scales on count
  user traffic only. Batch-size calibration (tts_runtime.calibration) times the engine
  through `time_batch`, outside the queue and the metrics, and sets `batch_limit`.
- One injected `Clock` times batches and counts queue waits and deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from tts_runtime.engine_types import Audio, SynthesisEngine, SynthesisItem, SynthesisScales
from tts_runtime.errors import (
    BatcherStoppedError,
    DeadlineExceededError,
    QueueFullError,
    SynthesisFailedError,
    TooManySegmentsError,
)
from tts_runtime.metrics import RuntimeMetrics

log = logging.getLogger(__name__)

# Above this share of padded phoneme slots a segment waits for a better-matched
# batch: on CPU padding costs as much compute as real phonemes.
DEFAULT_MAX_PADDING_RATIO = 0.5


class Clock(Protocol):
    """Seconds that never go back, from an arbitrary start. The batcher times batches and
    counts queue waits and deadlines on one injected clock, so tests can fake time."""

    def monotonic(self) -> float: ...


class _SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = _SystemClock()


class _State(enum.Enum):
    HELD = "held"  # a stream's later segment, not asked for yet: outside the queue
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@dataclass(eq=False)
class Job:
    """One queued segment; `Batcher.result(job)` awaits its audio."""

    item: SynthesisItem
    scales: SynthesisScales
    enqueued_at: float
    timeout_s: float
    future: asyncio.Future[Audio]
    state: _State
    internal: bool = False  # warm-up: runs, but stays out of the metrics
    # When it must have started: its timeout counts from when it joined the queue.
    deadline: float = math.inf

    @property
    def length(self) -> int:
        return len(self.item.phoneme_ids)


@dataclass
class _Outcome:
    """What the worker thread hands back; it never raises into the event loop."""

    audios: list[Audio] | None = None
    error: BaseException | None = None
    seconds: float = 0.0


@dataclass
class BatchStats:
    """Running totals, for logs, tests and the benchmark."""

    batches: int = 0
    segments: int = 0
    retried_batches: int = 0
    scheduler_restarts: int = 0
    # How many batches of each size: a Counter, not a list, so a pod that runs for weeks
    # holds one entry per size rather than one per batch.
    batch_sizes: Counter[int] = field(default_factory=Counter)


def padding_ratio(lengths: Sequence[int]) -> float:
    """Share of the padded [B, max_len] input that is padding."""
    if not lengths:
        return 0.0
    longest = max(lengths)
    if longest == 0:
        return 0.0
    return 1.0 - sum(lengths) / (len(lengths) * longest)


class Batcher:
    def __init__(
        self,
        engine: SynthesisEngine,
        *,
        max_batch_size: int = 8,
        max_queue_delay_s: float = 0.01,
        max_queue_size: int = 256,
        max_padding_ratio: float = DEFAULT_MAX_PADDING_RATIO,
        metrics: RuntimeMetrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_queue_delay_s < 0:
            raise ValueError("max_batch_size and max_queue_size must be >= 1, delay >= 0")
        self._engine = engine
        self._max_batch_size = max_batch_size
        self._batch_limit = max_batch_size  # lowered by calibration where batching does not pay
        self._clock = clock
        self._max_queue_delay_s = max_queue_delay_s
        self._max_queue_size = max_queue_size
        self._max_padding_ratio = max_padding_ratio
        self._metrics = metrics
        self._queue: list[Job] = []
        self._preparing = 0
        self._outstanding = 0  # engine calls submitted to the worker and not yet delivered
        self._batch_seconds_ewma = 0.0
        self._wake = asyncio.Event()
        self._worker_free = asyncio.Event()
        self._worker_free.set()
        self._executor: ThreadPoolExecutor | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.stats = BatchStats()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self._scheduler is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts-inference")
        self._start_scheduler()

    async def stop(self) -> None:
        """Fail what is still queued, let the running batch finish, free the thread."""
        self._stopping = True
        self._wake.set()
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        for job in self._queue:
            self._settle(job, error=BatcherStoppedError("the server is shutting down"))
        self._queue.clear()
        self._update_depth()
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: self._executor.shutdown(wait=True) if self._executor else None
            )

    def _start_scheduler(self) -> None:
        self._scheduler = asyncio.get_running_loop().create_task(
            self._schedule_forever(), name="tts-batch-scheduler"
        )
        self._scheduler.add_done_callback(self._on_scheduler_done)

    def _on_scheduler_done(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        reason = "cancelled" if task.cancelled() else repr(task.exception())
        log.error("batch scheduler stopped unexpectedly (%s); restarting it", reason)
        self.stats.scheduler_restarts += 1
        self._start_scheduler()

    # -- what callers use ---------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def batch_limit(self) -> int:
        """The largest batch the scheduler forms now (<= max_batch_size)."""
        return self._batch_limit

    @batch_limit.setter
    def batch_limit(self, limit: int) -> None:
        """Set by start-up calibration (tts_runtime.calibration) where batching does not pay."""
        if not 1 <= limit <= self._max_batch_size:
            raise ValueError(f"batch limit {limit} is outside 1..{self._max_batch_size}")
        self._batch_limit = limit

    async def time_batch(self, items: list[SynthesisItem], scales: SynthesisScales) -> float:
        """Seconds one engine call on `items` takes, run on the inference thread outside
        the queue and the metrics (for tts_runtime.calibration)."""
        assert self._executor is not None, "start() the batcher first"
        outcome = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._synthesize, items, scales
        )
        if outcome.error is not None:
            raise RuntimeError(f"engine failed: {outcome.error!r}") from outcome.error
        return outcome.seconds

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Wrap a request's text front end: tells the scheduler more segments are on
        their way, so a partial batch is worth holding for up to max_queue_delay."""
        self._preparing += 1
        try:
            yield
        finally:
            self._preparing -= 1
            self._wake.set()

    def submit(
        self,
        items: Sequence[SynthesisItem],
        scales: SynthesisScales,
        timeout_s: float,
        *,
        in_order: bool = False,
        internal: bool = False,
    ) -> list[Job]:
        """Queue all segments of one request, or none (QueueFullError).

        in_order (streaming): only the first segment is queued; each later one is held
        out of the queue (taking no queue room) until `result` asks for it, which the
        app does once the segment before it has been sent. So the first segment is
        never held back in a batch with the rest of its own text, a client that stops
        reading stops the synthesis, and each segment's timeout counts from when it
        was asked for: a long stream is not cut short merely for being long.

        internal (warm-up): the segments run in batches of their own and are left out
        of every metric, so start-up work never shows as user traffic."""
        if self._stopping or self._scheduler is None:
            raise BatcherStoppedError("the batcher is not running")
        if len(items) > self._max_queue_size:
            raise TooManySegmentsError(
                f"the input splits into {len(items)} segments but the queue holds at most "
                f"{self._max_queue_size}; send shorter input"
            )
        runnable = 1 if in_order else len(items)
        if len(self._queue) + runnable > self._max_queue_size:
            raise QueueFullError(len(self._queue), self._max_queue_size, self._retry_after_s())
        now = self._clock.monotonic()
        loop = asyncio.get_running_loop()
        jobs = [
            Job(item, scales, now, timeout_s, loop.create_future(), _State.HELD, internal)
            for item in items
        ]
        for job in jobs[:runnable]:
            self._enqueue(job, now)
        self._wake.set()
        return jobs

    async def result(self, job: Job) -> Audio:
        """Await one segment's audio; DeadlineExceededError if it is still queued
        when its deadline passes (it is then dropped, never run). A held segment joins
        the queue now, at its end: it is wanted. It was admitted with its request, so
        it goes in even when the queue is full; the queue then exceeds its size by at
        most one segment per stream."""
        if job.state is _State.HELD:
            if self._stopping:
                self._settle(job, error=BatcherStoppedError("the server is shutting down"))
            else:
                self._enqueue(job, self._clock.monotonic())
                self._wake.set()
        if job.future.done():
            return job.future.result()
        remaining = job.deadline - self._clock.monotonic()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout=max(remaining, 0))
        except TimeoutError:
            if job.state is _State.QUEUED:
                self._expire(job)
            # Already running: it finishes in one batch time; waiting is cheaper than
            # throwing the work away.
            return await job.future
        except asyncio.CancelledError:
            self.abandon([job])
            raise

    def abandon(self, jobs: Sequence[Job]) -> None:
        """The caller went away: drop its segments not yet started."""
        for job in jobs:
            if job.state in (_State.HELD, _State.QUEUED):
                self._remove(job)
                self._settle(job, error=BatcherStoppedError("request abandoned"))
                job.future.exception()  # mark retrieved: nobody will await it

    # -- scheduling ---------------------------------------------------------------

    async def _schedule_forever(self) -> None:
        while not self._stopping:
            await self._worker_free.wait()
            batch = await self._next_batch()
            if batch:
                self._dispatch(batch)

    async def _next_batch(self) -> list[Job]:
        while True:
            self._expire_overdue()
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            head = self._queue[0]
            # One scales input per batch; internal work never shares a batch with user work.
            compatible = [
                job
                for job in self._queue
                if job.scales == head.scales and job.internal == head.internal
            ]
            hold_until = head.enqueued_at + self._max_queue_delay_s
            now = self._clock.monotonic()
            if len(compatible) >= self._batch_limit or self._preparing == 0 or now >= hold_until:
                return self._select(head, compatible)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=hold_until - now)

    def _select(self, head: Job, compatible: list[Job]) -> list[Job]:
        """The head (oldest) plus the compatible segments nearest to it in length."""
        batch = [head]
        by_closeness = sorted(
            compatible[1:], key=lambda job: (abs(job.length - head.length), job.enqueued_at)
        )
        for job in by_closeness:
            if len(batch) == self._batch_limit:
                break
            lengths = [j.length for j in batch] + [job.length]
            if padding_ratio(lengths) <= self._max_padding_ratio:
                batch.append(job)
        return batch

    def _dispatch(self, batch: list[Job]) -> None:
        now = self._clock.monotonic()
        for job in batch:
            self._remove(job)
            job.state = _State.RUNNING
            if self._metrics is not None and not job.internal:
                self._metrics.queue_wait.observe(now - job.enqueued_at)
        self._update_depth()
        self._run_on_worker(batch, retry_singly=len(batch) > 1)

    def _run_on_worker(self, batch: list[Job], *, retry_singly: bool) -> None:
        assert self._executor is not None and self._loop is not None
        self._outstanding += 1
        self._worker_free.clear()
        items = [job.item for job in batch]
        scales = batch[0].scales
        loop = self._loop
        try:
            future = self._executor.submit(self._synthesize, items, scales)
        except RuntimeError:  # the executor was shut down under us (stop())
            self._outstanding -= 1
            for job in batch:
                self._settle(job, error=BatcherStoppedError("the server is shutting down"))
            return

        def deliver(done: Future[_Outcome]) -> None:
            loop.call_soon_threadsafe(self._deliver, batch, done.result(), retry_singly)

        future.add_done_callback(deliver)

    def _synthesize(self, items: list[SynthesisItem], scales: SynthesisScales) -> _Outcome:
        """Runs in the inference thread. Catches everything: whatever the engine does,
        the outcome goes back to the event loop as data."""
        started = self._clock.monotonic()
        try:
            audios = self._engine.synthesize(items, scales)
            if len(audios) != len(items):
                raise RuntimeError(
                    f"engine returned {len(audios)} outputs for a batch of {len(items)}"
                )
            return _Outcome(audios=list(audios), seconds=self._clock.monotonic() - started)
        except BaseException as exc:  # a dying engine must not take the batcher with it
            return _Outcome(error=exc, seconds=self._clock.monotonic() - started)

    def _deliver(self, batch: list[Job], outcome: _Outcome, retry_singly: bool) -> None:
        self._outstanding -= 1
        try:
            if outcome.audios is not None:
                self._record_batch(batch, outcome)
                for job, audio in zip(batch, outcome.audios, strict=True):
                    self._settle(job, audio=audio)
            elif retry_singly:
                log.warning(
                    "batch of %d failed (%r); re-running its items one by one",
                    len(batch),
                    outcome.error,
                )
                self.stats.retried_batches += 1
                for job in batch:
                    self._run_on_worker([job], retry_singly=False)
            else:
                log.error("synthesis failed: %r", outcome.error)
                self._settle(
                    batch[0], error=SynthesisFailedError(f"synthesis failed: {outcome.error}")
                )
        finally:
            if self._outstanding == 0:
                self._worker_free.set()

    def _record_batch(self, batch: list[Job], outcome: _Outcome) -> None:
        assert outcome.audios is not None
        self.stats.batches += 1
        self.stats.segments += len(batch)
        self.stats.batch_sizes[len(batch)] += 1
        self._batch_seconds_ewma = 0.8 * self._batch_seconds_ewma + 0.2 * outcome.seconds
        if self._metrics is None or batch[0].internal:  # batches never mix internal and user
            return
        audio_seconds = sum(len(a) for a in outcome.audios) / self._engine.sample_rate
        m = self._metrics
        m.batch_size.observe(len(batch))
        m.inference.observe(outcome.seconds)
        m.padding_ratio.observe(padding_ratio([job.length for job in batch]))
        m.audio_seconds.inc(audio_seconds)
        if audio_seconds > 0:
            m.real_time_factor.observe(outcome.seconds / audio_seconds)

    # -- bookkeeping --------------------------------------------------------------

    def _expire_overdue(self) -> None:
        now = self._clock.monotonic()
        for job in [job for job in self._queue if job.deadline <= now]:
            self._expire(job)

    def _expire(self, job: Job) -> None:
        self._remove(job)
        self._settle(job, error=DeadlineExceededError("the request timed out while queued"))

    def _enqueue(self, job: Job, now: float) -> None:
        # Queue wait and deadline count from here: a stream's later segment is not
        # "waiting" while its client reads the one before.
        job.state = _State.QUEUED
        job.enqueued_at = now
        job.deadline = now + job.timeout_s
        self._queue.append(job)
        self._update_depth()

    def _remove(self, job: Job) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(job)
        self._update_depth()

    def _settle(
        self, job: Job, *, audio: Audio | None = None, error: BaseException | None = None
    ) -> None:
        job.state = _State.DONE
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            assert audio is not None
            job.future.set_result(audio)

    def _update_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(len(self._queue))

    def _retry_after_s(self) -> int:
        batches_ahead = math.ceil(len(self._queue) / self._batch_limit)
        return max(1, min(30, math.ceil(batches_ahead * self._batch_seconds_ewma)))
