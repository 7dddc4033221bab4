"""Batch-size calibration: which batch sizes pay on this hardware.

Hardware tuning, not scheduling (Triton keeps it in configuration and a separate
analyzer): it runs once at start-up, before /readyz turns 200, and hands the batcher the
largest batch size worth forming (`Batcher.batch_limit`). It times the engine on the
batcher's inference thread, outside the queue and the metrics.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

from tts_runtime.engine_types import SynthesisItem, SynthesisScales

log = logging.getLogger(__name__)

# A bigger batch must cut the time per item by this share to be worth forming.
CALIBRATION_GAIN = 0.05


class BatchTimer(Protocol):
    """What calibration needs: seconds one engine call on this batch takes
    (tts_runtime.batcher.Batcher)."""

    async def time_batch(self, items: list[SynthesisItem], scales: SynthesisScales) -> float: ...


def doublings(limit: int) -> list[int]:
    """1, 2, 4, ... up to and including `limit`."""
    sizes = [1]
    while sizes[-1] * 2 < limit:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != limit:
        sizes.append(limit)
    return sizes


async def calibrate_batch_limit(
    timer: BatchTimer,
    item: SynthesisItem,
    scales: SynthesisScales,
    max_batch_size: int,
    *,
    repeats: int = 3,
) -> int:
    """The largest batch size that still pays on this hardware.

    Times batches of copies of `item` at 1, 2, 4, ... max_batch_size and keeps
    growing while the time per item falls by at least CALIBRATION_GAIN. On a GPU
    that is usually max_batch_size; on a CPU, where the engine already spreads one
    item over every core, per-item time does not fall with batch size and the
    limit stays 1, so batching never makes a CPU pod slower than batch=1.

    Each candidate is timed alternately with the current best (best, candidate,
    best, ...; the fastest run of each counts), so load that comes and goes on a
    shared machine weighs on both sides alike."""
    best_size = 1
    for size in doublings(max_batch_size)[1:]:
        try:
            best_cost, cost = await _compare(timer, item, scales, best_size, size, repeats)
        except Exception as exc:
            log.warning("calibration stopped at batch size %d: %r", size, exc)
            break
        if cost > best_cost * (1 - CALIBRATION_GAIN):
            break
        best_size = size
    log.info("batch limit %d of %d", best_size, max_batch_size)
    return best_size


async def _compare(
    timer: BatchTimer, item: SynthesisItem, scales: SynthesisScales, a: int, b: int, repeats: int
) -> tuple[float, float]:
    """Best seconds per item at batch sizes a and b, timed alternately."""
    best = {a: math.inf, b: math.inf}
    for _ in range(repeats):
        for size in (a, b):
            best[size] = min(best[size], await timer.time_batch([item] * size, scales) / size)
    return best[a], best[b]
