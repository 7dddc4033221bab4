"""The batcher's own logic, against a small deterministic engine (the Protocol's test
double): grouping, backpressure, deadlines, failure isolation, self-healing.
The real OnnxEngine behind it is exercised by the app, client and drain tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np
import pytest
from tts_runtime.batcher import Batcher, padding_ratio
from tts_runtime.calibration import calibrate_batch_limit
from tts_runtime.engine_types import Audio, SynthesisItem, SynthesisScales
from tts_runtime.errors import (
    BatcherStoppedError,
    DeadlineExceededError,
    QueueFullError,
    SynthesisFailedError,
    TooManySegmentsError,
)
from tts_runtime.metrics import RuntimeMetrics

T = TypeVar("T")
SCALES = SynthesisScales(0.667, 1.0, 0.8)
SLOW = SynthesisScales(0.667, 2.0, 0.8)
POISON = 999


class RecordingEngine:
    """Returns each item's ids as its audio; records every batch it ran; can be held
    (gate) so tests control when the worker is busy; fails batches holding POISON."""

    sample_rate = 100
    provider = "TestProvider"
    precision = "fp32"

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.batches: list[list[tuple[int, ...]]] = []
        self.scales_seen: list[SynthesisScales] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_with = fail_with

    def synthesize(self, items: Sequence[SynthesisItem], scales: SynthesisScales) -> list[Audio]:
        self.entered.set()
        self.gate.wait(timeout=10)
        ids = [item.phoneme_ids for item in items]
        self.batches.append(ids)
        self.scales_seen.append(scales)
        if any(POISON in i for i in ids):
            raise self.fail_with or ValueError("poisoned item")
        return [np.asarray(i, dtype=np.float32) for i in ids]


def item(*ids: int) -> SynthesisItem:
    return SynthesisItem(phoneme_ids=tuple(ids))


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(body(), timeout=20))


async def started(engine: RecordingEngine, **kwargs: object) -> Batcher:
    batcher = Batcher(engine, **kwargs)  # type: ignore[arg-type]
    await batcher.start()
    return batcher


async def hold_worker(batcher: Batcher, engine: RecordingEngine) -> asyncio.Future[Audio]:
    """Occupy the inference thread with one blocker item so later items queue up."""
    engine.gate.clear()
    engine.entered.clear()
    (blocker,) = batcher.submit([item(0)], SCALES, timeout_s=30)
    await asyncio.get_running_loop().run_in_executor(None, engine.entered.wait, 5)
    return blocker.future


def test_lone_request_runs_and_returns_its_own_audio() -> None:
    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine, max_queue_delay_s=60.0)
        (job,) = batcher.submit([item(1, 2, 3)], SCALES, timeout_s=30)
        # Nothing else is being prepared, so the 60 s delay is not waited out.
        audio = await batcher.result(job)
        assert audio.tolist() == [1.0, 2.0, 3.0]
        assert engine.batches == [[(1, 2, 3)]]
        await batcher.stop()

    run(body)


def test_segments_queued_while_worker_busy_share_one_batch_up_to_max_size() -> None:
    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine, max_batch_size=4)
        blocker = await hold_worker(batcher, engine)
        jobs = batcher.submit([item(i, i) for i in range(1, 7)], SCALES, timeout_s=30)
        engine.gate.set()
        audios = [await batcher.result(job) for job in jobs]
        await blocker
        assert [a.tolist() for a in audios] == [[float(i), float(i)] for i in range(1, 7)]
        assert [len(b) for b in engine.batches] == [1, 4, 2]
        assert batcher.stats.batch_sizes == {1: 1, 4: 1, 2: 1}
        await batcher.stop()

    run(body)


def test_only_equal_scales_share_a_batch() -> None:
    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine)
        blocker = await hold_worker(batcher, engine)
        normal = batcher.submit([item(1), item(2)], SCALES, timeout_s=30)
        slow = batcher.submit([item(3), item(4)], SLOW, timeout_s=30)
        engine.gate.set()
        for job in normal + slow:
            await batcher.result(job)
        await blocker
        assert engine.batches[1:] == [[(1,), (2,)], [(3,), (4,)]]
        assert engine.scales_seen[1:] == [SCALES, SLOW]
        await batcher.stop()

    run(body)


def test_batches_group_similar_lengths_and_bound_padding() -> None:
    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine, max_batch_size=8, max_padding_ratio=0.5)
        blocker = await hold_worker(batcher, engine)
        lengths = [10, 100, 11, 98, 12, 95]
        jobs = batcher.submit([item(*([n] * n)) for n in lengths], SCALES, timeout_s=30)
        engine.gate.set()
        for job in jobs:
            await batcher.result(job)
        await blocker
        ran = sorted(sorted(len(ids) for ids in batch) for batch in engine.batches[1:])
        assert ran == [[10, 11, 12], [95, 98, 100]]
        assert all(padding_ratio([len(i) for i in b]) <= 0.5 for b in engine.batches)
        await batcher.stop()

    run(body)


def test_in_order_segments_start_one_batch_after_another() -> None:
    """Streaming: the first segment is not held back in a batch with its own text's
    later segments, whatever the text length; other requests still share batches."""

    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine)
        blocker = await hold_worker(batcher, engine)
        stream = batcher.submit([item(1), item(2), item(3)], SCALES, 30, in_order=True)
        other = batcher.submit([item(9)], SCALES, timeout_s=30)
        engine.gate.set()
        for job in stream + other:
            await batcher.result(job)
        await blocker
        assert engine.batches[1:] == [[(1,), (9,)], [(2,)], [(3,)]]
        await batcher.stop()

    run(body)


def test_in_order_segment_timeouts_count_from_when_each_became_runnable() -> None:
    """A stream longer than one timeout is not cut short for being long: each later
    segment's clock starts when the one before it starts."""

    class Slow(RecordingEngine):
        def synthesize(
            self, items: Sequence[SynthesisItem], scales: SynthesisScales
        ) -> list[Audio]:
            time.sleep(0.1)
            return super().synthesize(items, scales)

    async def body() -> None:
        engine = Slow()
        batcher = await started(engine)
        stream = batcher.submit([item(n) for n in range(1, 6)], SCALES, 0.25, in_order=True)
        audios = [await batcher.result(job) for job in stream]
        # Five segments of 0.1 s each: the last started well after 0.25 s, yet ran.
        assert [a.tolist() for a in audios] == [[1.0], [2.0], [3.0], [4.0], [5.0]]
        await batcher.stop()

    run(body)


def test_a_streams_later_segments_wait_outside_the_queue_until_asked_for() -> None:
    """The app asks for a stream's segment k once k-1 has been sent: until then k takes
    no queue room and is not run, and its wait for a slow reader is neither a timeout
    nor queue latency."""

    async def body() -> None:
        engine = RecordingEngine()
        metrics = RuntimeMetrics()
        batcher = await started(engine, metrics=metrics)
        first, second, third = batcher.submit(
            [item(1), item(2), item(3)], SCALES, timeout_s=0.05, in_order=True
        )
        assert batcher.queue_depth == 1
        await batcher.result(first)
        await asyncio.sleep(0.2)  # the client reads slowly: longer than the timeout
        assert engine.batches == [[(1,)]]
        assert (await batcher.result(second)).tolist() == [2.0]
        batcher.abandon([first, second, third])  # the client went away
        await asyncio.sleep(0.05)
        assert engine.batches == [[(1,)], [(2,)]]
        waited = metrics.registry.get_sample_value("tts_queue_wait_seconds_sum")
        assert waited is not None and waited < 0.1
        await batcher.stop()

    run(body)


def test_full_queue_refuses_the_whole_request_at_once() -> None:
    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine, max_queue_size=3)
        blocker = await hold_worker(batcher, engine)
        kept = batcher.submit([item(1), item(2)], SCALES, timeout_s=30)
        with pytest.raises(QueueFullError) as refused:
            batcher.submit([item(3), item(4)], SCALES, timeout_s=30)
        assert refused.value.retry_after_s >= 1
        assert batcher.queue_depth == 2  # all-or-nothing: neither segment was queued
        with pytest.raises(TooManySegmentsError):
            batcher.submit([item(5)] * 4, SCALES, timeout_s=30)
        engine.gate.set()
        for job in kept:
            await batcher.result(job)
        await blocker
        assert (3,) not in [ids for batch in engine.batches for ids in batch]
        await batcher.stop()

    run(body)


def test_deadline_passed_while_queued_fails_and_never_runs() -> None:
    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine)
        blocker = await hold_worker(batcher, engine)
        (late,) = batcher.submit([item(7, 7)], SCALES, timeout_s=0.05)
        with pytest.raises(DeadlineExceededError):
            await batcher.result(late)
        assert batcher.queue_depth == 0
        engine.gate.set()
        await blocker
        (after,) = batcher.submit([item(8)], SCALES, timeout_s=30)
        await batcher.result(after)
        assert (7, 7) not in [ids for batch in engine.batches for ids in batch]
        await batcher.stop()

    run(body)


def test_overdue_segment_not_yet_awaited_is_dropped_by_the_scheduler() -> None:
    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine)
        blocker = await hold_worker(batcher, engine)
        (late,) = batcher.submit([item(7)], SCALES, timeout_s=0.01)
        await asyncio.sleep(0.05)  # nobody awaits `late` yet, like a later stream segment
        engine.gate.set()
        await blocker
        with pytest.raises(DeadlineExceededError):
            await batcher.result(late)
        assert [(7,)] not in engine.batches
        await batcher.stop()

    run(body)


@pytest.mark.parametrize("failure", [ValueError("bad input"), KeyboardInterrupt()])
def test_failing_batch_is_rerun_item_by_item_so_only_the_bad_item_fails(
    failure: BaseException,
) -> None:
    async def body() -> None:
        engine = RecordingEngine(fail_with=failure)
        batcher = await started(engine)
        blocker = await hold_worker(batcher, engine)
        good1, bad, good2 = batcher.submit([item(1), item(POISON), item(2)], SCALES, 30)
        engine.gate.set()
        await blocker
        assert (await batcher.result(good1)).tolist() == [1.0]
        assert (await batcher.result(good2)).tolist() == [2.0]
        with pytest.raises(SynthesisFailedError):
            await batcher.result(bad)
        assert engine.batches[1:] == [[(1,), (POISON,), (2,)], [(1,)], [(POISON,)], [(2,)]]
        assert batcher.stats.retried_batches == 1
        (later,) = batcher.submit([item(3)], SCALES, timeout_s=30)
        assert (await batcher.result(later)).tolist() == [3.0]
        await batcher.stop()

    run(body)


def test_engine_breaking_its_contract_fails_the_items_not_the_batcher() -> None:
    class WrongCount(RecordingEngine):
        def synthesize(
            self, items: Sequence[SynthesisItem], scales: SynthesisScales
        ) -> list[Audio]:
            return super().synthesize(items, scales)[:-1] if len(items) > 1 else []

    async def body() -> None:
        engine = WrongCount()
        batcher = await started(engine)
        (job,) = batcher.submit([item(1)], SCALES, timeout_s=30)
        with pytest.raises(SynthesisFailedError, match="0 outputs for a batch of 1"):
            await batcher.result(job)
        await batcher.stop()

    run(body)


def test_killed_scheduler_is_restarted_and_loses_no_accepted_segment() -> None:
    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine)
        blocker = await hold_worker(batcher, engine)
        queued = batcher.submit([item(1), item(2)], SCALES, timeout_s=30)
        assert batcher._scheduler is not None
        batcher._scheduler.cancel()  # kill it on purpose, mid-flight
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        engine.gate.set()
        assert (await blocker).tolist() == [0.0]  # the running batch is still delivered
        assert [(await batcher.result(j)).tolist() for j in queued] == [[1.0], [2.0]]
        assert batcher.stats.scheduler_restarts == 1
        (later,) = batcher.submit([item(3)], SCALES, timeout_s=30)
        assert (await batcher.result(later)).tolist() == [3.0]
        await batcher.stop()

    run(body)


def test_partial_batch_is_held_only_while_other_requests_are_being_prepared() -> None:
    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine, max_queue_delay_s=60.0)
        with batcher.preparing():
            (first,) = batcher.submit([item(1)], SCALES, timeout_s=30)
            await asyncio.sleep(0.05)
            assert engine.batches == []  # held: another request is on its way
            (second,) = batcher.submit([item(2)], SCALES, timeout_s=30)
            await asyncio.sleep(0.05)
            assert engine.batches == []
        # The last preparer is done: the batch goes without waiting out the 60 s.
        await batcher.result(first)
        await batcher.result(second)
        assert engine.batches == [[(1,), (2,)]]
        await batcher.stop()

    run(body)


def test_full_batch_goes_even_while_others_are_preparing() -> None:
    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine, max_batch_size=2, max_queue_delay_s=60.0)
        with batcher.preparing():
            jobs = batcher.submit([item(1), item(2)], SCALES, timeout_s=30)
            for job in jobs:
                await batcher.result(job)
        assert engine.batches == [[(1,), (2,)]]
        await batcher.stop()

    run(body)


def test_caller_cancelled_drops_its_queued_segments() -> None:
    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine)
        blocker = await hold_worker(batcher, engine)
        (job,) = batcher.submit([item(5)], SCALES, timeout_s=30)
        waiter = asyncio.create_task(batcher.result(job))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert batcher.queue_depth == 0
        engine.gate.set()
        await blocker
        assert [(5,)] not in engine.batches
        await batcher.stop()

    run(body)


def test_stop_fails_what_is_still_queued() -> None:
    async def body() -> None:
        engine = RecordingEngine()
        batcher = await started(engine)
        blocker = await hold_worker(batcher, engine)
        (queued,) = batcher.submit([item(4)], SCALES, timeout_s=30)
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0.01)
        engine.gate.set()
        await stopping
        assert (await blocker).tolist() == [0.0]
        with pytest.raises(BatcherStoppedError):
            await batcher.result(queued)
        with pytest.raises(BatcherStoppedError):
            batcher.submit([item(1)], SCALES, timeout_s=30)

    run(body)


def test_metrics_follow_the_batches() -> None:
    async def body() -> RuntimeMetrics:
        engine = RecordingEngine()
        metrics = RuntimeMetrics(max_batch_size=8)
        batcher = await started(engine, metrics=metrics)
        blocker = await hold_worker(batcher, engine)
        jobs = batcher.submit([item(1, 1), item(2, 2, 2, 2)], SCALES, timeout_s=30)
        assert metrics.registry.get_sample_value("tts_queue_depth") == 2
        engine.gate.set()
        for job in jobs:
            await batcher.result(job)
        await blocker
        await batcher.stop()
        return metrics

    metrics = run(body)
    sample = metrics.registry.get_sample_value
    assert sample("tts_queue_depth") == 0
    assert sample("tts_queue_wait_seconds_count") == 3
    assert sample("tts_batch_size_count") == 2
    assert sample("tts_batch_size_sum") == 3
    assert sample("tts_inference_seconds_count") == 2
    # 1 + 2 + 4 samples at 100 Hz.
    assert sample("tts_audio_seconds_total") == pytest.approx(0.07)
    # Batch [2, 4] phonemes: 2 of 8 slots are padding.
    assert sample("tts_padding_ratio_sum") == pytest.approx(0.25)
    assert sample("tts_real_time_factor_count") == 2


def test_internal_work_runs_apart_from_user_segments_and_stays_out_of_the_metrics() -> None:
    async def body() -> tuple[RecordingEngine, RuntimeMetrics]:
        engine = RecordingEngine()
        metrics = RuntimeMetrics(max_batch_size=8)
        batcher = await started(engine, metrics=metrics)
        await calibrate_batch_limit(batcher, item(7, 7), SCALES, 8, repeats=1)  # off the books
        assert metrics.registry.get_sample_value("tts_batch_size_count") == 0
        engine.batches.clear()
        (warm_up,) = batcher.submit([item(5)], SCALES, timeout_s=30, internal=True)
        await batcher.result(warm_up)
        blocker = await hold_worker(batcher, engine)
        (internal,) = batcher.submit([item(6)], SCALES, timeout_s=30, internal=True)
        users = batcher.submit([item(1, 1), item(2, 2)], SCALES, timeout_s=30)
        engine.gate.set()
        for job in [internal, *users]:
            await batcher.result(job)
        await blocker
        await batcher.stop()
        return engine, metrics

    engine, metrics = run(body)
    assert engine.batches == [[(5,)], [(0,)], [(6,)], [(1, 1), (2, 2)]]
    sample = metrics.registry.get_sample_value
    assert sample("tts_queue_wait_seconds_count") == 3  # the blocker and the two user items
    assert sample("tts_batch_size_count") == 2
    assert sample("tts_batch_size_sum") == 3
    assert sample("tts_inference_seconds_count") == 2
    assert sample("tts_padding_ratio_count") == 2
    assert sample("tts_real_time_factor_count") == 2
    assert sample("tts_audio_seconds_total") == pytest.approx(0.05)  # 1 + 2 + 2 samples


def test_padding_ratio() -> None:
    assert padding_ratio([]) == 0.0
    assert padding_ratio([5, 5]) == 0.0
    assert padding_ratio([1, 3]) == pytest.approx(1 / 3)


class CostedEngine(RecordingEngine):
    """Advances a fake clock by cost(batch size) per call: calibration decisions are
    tested on a cost model, not on this machine's timing."""

    def __init__(self, cost: Callable[[int], float]) -> None:
        super().__init__()
        self.cost = cost
        self.now = 0.0

    def synthesize(self, items: Sequence[SynthesisItem], scales: SynthesisScales) -> list[Audio]:
        self.now += self.cost(len(items))
        return super().synthesize(items, scales)

    def monotonic(self) -> float:  # the batcher's clock
        return self.now


@pytest.mark.parametrize(
    ("cost", "max_batch", "limit", "sizes_tried"),
    [
        # GPU-like: a batch costs little more than one item.
        (lambda b: 10.0 + b, 8, 8, [1, 2, 4, 8]),
        # CPU-like: per-item time grows with the batch (what this 2-core machine shows).
        (lambda b: 10.0 * b * (1 + 0.02 * b), 8, 1, [1, 2]),
        # Pays up to 4, not beyond.
        (lambda b: {1: 10.0, 2: 12.0, 4: 16.0, 8: 40.0}[b], 8, 4, [1, 2, 4, 8]),
        # A gain under 5% is not worth the batch.
        (lambda b: 10.0 * b * 0.97, 8, 1, [1, 2]),
        (lambda b: 10.0 + b, 6, 6, [1, 2, 4, 6]),
    ],
)
def test_calibration_keeps_the_batch_sizes_that_pay(
    cost: Callable[[int], float], max_batch: int, limit: int, sizes_tried: list[int]
) -> None:
    async def body() -> None:
        engine = CostedEngine(cost)
        batcher = await started(engine, max_batch_size=max_batch, clock=engine)
        assert batcher.batch_limit == max_batch
        assert (
            await calibrate_batch_limit(batcher, item(1, 2, 3), SCALES, max_batch, repeats=2)
            == limit
        )
        assert sorted({len(b) for b in engine.batches}) == sizes_tried
        await batcher.stop()

    run(body)


def test_calibrated_limit_caps_the_batches() -> None:
    async def body() -> None:
        engine = CostedEngine(lambda b: 10.0 * b * 1.1)
        batcher = await started(engine, max_batch_size=8, clock=engine)
        batcher.batch_limit = await calibrate_batch_limit(batcher, item(1), SCALES, 8)
        engine.batches.clear()
        blocker = await hold_worker(batcher, engine)
        jobs = batcher.submit([item(2), item(3), item(4)], SCALES, timeout_s=30)
        engine.gate.set()
        for job in jobs:
            await batcher.result(job)
        await blocker
        assert engine.batches == [[(0,)], [(2,)], [(3,)], [(4,)]]
        await batcher.stop()

    run(body)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_queue_waits_and_deadlines_follow_the_injected_clock() -> None:
    """No real time passes: the fake clock alone makes one segment wait 2.5 s and
    another miss its deadline (dropped, never run)."""

    async def body() -> tuple[RecordingEngine, RuntimeMetrics]:
        engine, clock, metrics = RecordingEngine(), FakeClock(), RuntimeMetrics(max_batch_size=8)
        batcher = await started(engine, clock=clock, metrics=metrics)
        blocker = await hold_worker(batcher, engine)
        (late,) = batcher.submit([item(1)], SCALES, timeout_s=2)
        clock.now += 1
        (waiting,) = batcher.submit([item(2, 2)], SCALES, timeout_s=30)
        clock.now += 2.5
        with pytest.raises(DeadlineExceededError):
            await batcher.result(late)
        engine.gate.set()
        await blocker
        await batcher.result(waiting)
        await batcher.stop()
        return engine, metrics

    engine, metrics = run(body)
    assert engine.batches == [[(0,)], [(2, 2)]]
    sample = metrics.registry.get_sample_value
    assert sample("tts_queue_wait_seconds_count") == 2  # the blocker and `waiting`
    assert sample("tts_queue_wait_seconds_sum") == pytest.approx(2.5)
    # The blocker ran from 1000 to 1003.5 by the same clock; `waiting` in no time.
    assert sample("tts_inference_seconds_sum") == pytest.approx(3.5)
