"""The contract between the batcher and the inference engine.

The batcher only needs this much of an engine, so it can be read (and tested)
without knowing anything about onnxruntime.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

Audio = npt.NDArray[np.float32]

# How onnxruntime keeps the memory of one run for the next (docs/runtime.md, "Memory"):
#   shrink    arena on, memory patterns off, the arena shrunk back after every run (default)
#   grow      onnxruntime's defaults: the arena keeps the largest blocks it ever needed
#   no-arena  every tensor malloc'ed and freed (glibc keeps much of it resident anyway)
MemoryMode = Literal["shrink", "grow", "no-arena"]
MEMORY_MODES: tuple[MemoryMode, ...] = ("shrink", "grow", "no-arena")


@dataclass(frozen=True)
class SynthesisScales:
    """Piper's `scales` input. It is one tensor per batch, so only requests with
    equal scales can share a batch."""

    noise_scale: float
    length_scale: float
    noise_w: float

    def at_speed(self, speed: float) -> SynthesisScales:
        """These scales for a request's `speed`: Piper's length_scale is 1 / speed."""
        return dataclasses.replace(self, length_scale=self.length_scale / speed)


@dataclass(frozen=True)
class SynthesisItem:
    """One utterance (a sentence or segment) ready for the model."""

    phoneme_ids: tuple[int, ...]
    speaker_id: int = 0


class SynthesisEngine(Protocol):
    """What the batcher calls, from its worker thread."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def provider(self) -> str: ...

    @property
    def precision(self) -> str: ...

    def synthesize(self, items: Sequence[SynthesisItem], scales: SynthesisScales) -> list[Audio]:
        """Run one batch; returns float32 mono audio per item, each trimmed to its own length.

        Blocking; raises on failure (the batcher then retries the items one by one)."""
        ...
