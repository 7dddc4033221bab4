"""The state behind one app: the loaded model, the batcher, warm-up, readiness, and the
count of requests in flight that a drain waits for."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from tts_runtime import audio
from tts_runtime.batcher import Batcher
from tts_runtime.cache import build_cache
from tts_runtime.calibration import calibrate_batch_limit
from tts_runtime.engine_types import SynthesisEngine, SynthesisItem
from tts_runtime.errors import StartupError
from tts_runtime.metrics import RuntimeMetrics
from tts_runtime.settings import RuntimeSettings
from tts_runtime.text import TextFrontEnd
from tts_runtime.voice import VoiceConfig

log = logging.getLogger(__name__)

OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd")
WARM_UP_TEXT = "Warm up."
# A sentence of typical length: what batch sizes pay is measured on this.
CALIBRATION_TEXT = "The quick brown fox jumps over the lazy dog before the evening train departs."


class ServedEngine(SynthesisEngine, Protocol):
    """What the app needs of a loaded model (tts_runtime.engine.OnnxEngine)."""

    @property
    def config(self) -> VoiceConfig: ...

    @property
    def fallback_reason(self) -> str | None: ...


def voice_map(settings: RuntimeSettings, config: VoiceConfig) -> dict[str, int]:
    """Served voice name -> speaker id; TTS_VOICES, else the voice's own map."""
    voices = settings.voices or dict(config.speaker_id_map) or {"default": 0}
    bad = {name: sid for name, sid in voices.items() if not 0 <= sid < config.num_speakers}
    if bad:
        raise StartupError(
            f"TTS_VOICES: speaker ids {bad} do not exist; the model has "
            f"{config.num_speakers} speaker(s) (ids 0..{config.num_speakers - 1})"
        )
    return voices


class InFlight:
    """Counts accepted requests until their last byte is sent, for the drain. Each
    request leaves once: tts_runtime.speech's RequestEnd is the only caller."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.count += 1
        self.idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()


class Runtime:
    """The state behind one app: model, batcher, readiness and drain."""

    def __init__(self, settings: RuntimeSettings, engine: ServedEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.config = engine.config
        self.voices = voice_map(settings, engine.config)
        self.model_ids = tuple(dict.fromkeys((settings.model_name, *OPENAI_MODEL_ALIASES)))
        self.formats = audio.available_formats()
        # espeak-ng in worker processes: no text can end this one.
        self.front_end = TextFrontEnd(engine.config, workers=settings.front_end_workers)
        self.empty_ids = self.front_end.phoneme_ids("")
        self.max_audio_samples = int(settings.max_audio_seconds * engine.sample_rate)
        self.metrics = RuntimeMetrics(max_batch_size=settings.max_batch_size)
        self.metrics.set_model(settings.model_name, engine.provider, engine.precision)
        self.batcher = Batcher(
            engine,
            max_batch_size=settings.max_batch_size,
            max_queue_delay_s=settings.max_queue_delay_s,
            max_queue_size=settings.max_queue_size,
            metrics=self.metrics,
        )
        # The response cache (tts_runtime.cache), or None when off.
        self.cache = build_cache(
            settings, engine.precision, engine.sample_rate, self.metrics.registry
        )
        self.warmed_up = False
        self.warm_up_error: str | None = None
        self.draining = False
        self._in_flight: InFlight | None = None
        self._warm_up_task: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> InFlight:
        if self._in_flight is None:  # created on the loop that serves
            self._in_flight = InFlight()
        return self._in_flight

    @property
    def ready(self) -> bool:
        return self.warmed_up and not self.draining

    async def start(self) -> None:
        await self.batcher.start()
        self._warm_up_task = asyncio.create_task(self._warm_up(), name="tts-warm-up")

    async def stop(self) -> None:
        if self._warm_up_task is not None and not self._warm_up_task.done():
            self._warm_up_task.cancel()
        await self.batcher.stop()
        self.front_end.close()
        if self.cache is not None:
            await self.cache.close()

    async def _warm_up(self) -> None:
        """One real batch through the whole path before /readyz says yes."""
        try:
            scales = self.config.default_scales()
            ids = self.front_end.phoneme_ids(WARM_UP_TEXT)
            jobs = self.batcher.submit([SynthesisItem(ids)], scales, timeout_s=600, internal=True)
            await self.batcher.result(jobs[0])
            if self.settings.batch_calibration and self.settings.max_batch_size > 1:
                typical = SynthesisItem(self.front_end.phoneme_ids(CALIBRATION_TEXT))
                self.batcher.batch_limit = await calibrate_batch_limit(
                    self.batcher, typical, scales, self.settings.max_batch_size
                )
            self.warmed_up = True
            log.info(
                "warm-up batch done; ready on %s (%s)", self.engine.provider, self.engine.precision
            )
        except Exception as exc:
            self.warm_up_error = f"warm-up batch failed: {exc}"
            log.error("%s", self.warm_up_error)

    def begin_drain(self) -> None:
        if not self.draining:
            log.info("draining: readiness off, refusing new requests")
        self.draining = True

    async def wait_drained(self, timeout_s: float) -> bool:
        """True when every accepted request finished within the timeout."""
        try:
            await asyncio.wait_for(self.in_flight.idle.wait(), timeout=timeout_s)
            return True
        except TimeoutError:
            return False

    def readiness(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "warmed_up": self.warmed_up,
            "draining": self.draining,
            "warm_up_error": self.warm_up_error,
            "model": self.settings.model_name,
            "provider": self.engine.provider,
            "precision": self.engine.precision,
            "fallback_reason": self.engine.fallback_reason,
            "sample_rate": self.engine.sample_rate,
            "batch_limit": self.batcher.batch_limit,
            "queue_depth": self.batcher.queue_depth,
            "in_flight": self.in_flight.count,
        }
