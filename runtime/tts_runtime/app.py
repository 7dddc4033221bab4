"""The FastAPI app: OpenAI-compatible speech API over the dynamic batcher.

The event loop only routes: the text front end and audio encoding run in the
threadpool, inference in the batcher's single worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tts_runtime import audio
from tts_runtime.api_models import (
    ApiError,
    ModelCard,
    ModelList,
    SpeechRequest,
    VoiceCard,
    VoiceList,
    invalid_field,
)
from tts_runtime.batcher import (
    Batcher,
    BatcherStoppedError,
    DeadlineExceededError,
    Job,
    QueueFullError,
    SynthesisFailedError,
    TooManySegmentsError,
)
from tts_runtime.engine_types import Audio, SynthesisEngine, SynthesisItem, SynthesisScales
from tts_runtime.metrics import RuntimeMetrics
from tts_runtime.settings import RuntimeSettings
from tts_runtime.text import TextFrontEnd, split_sentences
from tts_runtime.voice import VoiceConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd")
WARM_UP_TEXT = "Warm up."
# A sentence of typical length: what batch sizes pay is measured on this.
CALIBRATION_TEXT = "The quick brown fox jumps over the lazy dog before the evening train departs."
# Which pod answered (TTS_POD_NAME), on every response.
POD_HEADER = "X-TTS-Pod"
# A speech request is one flat JSON object (depth 1); deeper bodies are refused before
# json.loads, whose recursion a few thousand brackets would exhaust.
MAX_JSON_DEPTH = 32
# A JSON string (an unterminated one runs to the end): its brackets do not nest.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\Z)', re.DOTALL)
# A whole response goes out in pieces of this size (asyncio's default write buffer
# limit), each under the write timeout: a client that stops reading holds about one
# piece in the connection, not the whole body.
WRITE_PIECE_BYTES = 64 * 1024
# nginx's "client closed request": never seen by the client, only counted (cancelled).
CLIENT_CLOSED_REQUEST = 499


class ServedEngine(SynthesisEngine, Protocol):
    """What the app needs of a loaded model (tts_runtime.engine.OnnxEngine)."""

    @property
    def config(self) -> VoiceConfig: ...

    @property
    def fallback_reason(self) -> str | None: ...


class StartupError(Exception):
    """The settings and the model do not fit together (e.g. a voice's speaker id)."""


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


@dataclass
class _InFlight:
    """Counts accepted requests until their last byte is sent, for the drain."""

    count: int = 0

    def __post_init__(self) -> None:
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> Callable[[], None]:
        self.count += 1
        self.idle.clear()
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.count -= 1
            if self.count == 0:
                self.idle.set()

        return release


class Runtime:
    """The state behind one app: model, batcher, readiness and drain."""

    def __init__(self, settings: RuntimeSettings, engine: ServedEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.config = engine.config
        self.voices = voice_map(settings, engine.config)
        self.model_ids = tuple(dict.fromkeys((settings.model_name, *OPENAI_MODEL_ALIASES)))
        self.formats = audio.available_formats()
        self.front_end = TextFrontEnd(engine.config)
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
        self.warmed_up = False
        self.warm_up_error: str | None = None
        self.draining = False
        self._in_flight: _InFlight | None = None
        self._warm_up_task: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> _InFlight:
        if self._in_flight is None:  # created on the loop that serves
            self._in_flight = _InFlight()
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

    async def _warm_up(self) -> None:
        """One real batch through the whole path before /readyz says yes."""
        try:
            scales = self.config.default_scales()
            ids = self.front_end.phoneme_ids(WARM_UP_TEXT)
            jobs = self.batcher.submit([SynthesisItem(ids)], scales, timeout_s=600, internal=True)
            await self.batcher.result(jobs[0])
            if self.settings.batch_calibration and self.settings.max_batch_size > 1:
                typical = SynthesisItem(self.front_end.phoneme_ids(CALIBRATION_TEXT))
                await self.batcher.calibrate(typical, scales)
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


# -- request handling --------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """A validated speech request, ready for the batcher."""

    items: list[SynthesisItem]
    scales: SynthesisScales
    response_format: audio.ResponseFormat
    stream: bool


def _check_request(runtime: Runtime, request: SpeechRequest) -> tuple[int, audio.ResponseFormat]:
    """Semantic checks; returns (speaker id, format)."""
    settings = runtime.settings
    if request.model not in runtime.model_ids:
        raise ApiError(
            404,
            f"model {request.model!r} is not served here; use one of {list(runtime.model_ids)}",
            param="model",
            code="model_not_found",
        )
    speaker_id = runtime.voices.get(request.voice_name)
    if speaker_id is None:
        raise ApiError(
            400,
            f"unknown voice {request.voice_name!r}; available voices: {sorted(runtime.voices)} "
            "(see GET /v1/audio/voices)",
            param="voice",
            code="invalid_value",
        )
    fmt = request.response_format
    if fmt not in runtime.formats:
        raise ApiError(
            400,
            f"response_format {fmt!r} is not supported; use one of {list(runtime.formats)}",
            param="response_format",
            code="invalid_value",
        )
    if request.stream and fmt not in audio.STREAMABLE_FORMATS:
        raise ApiError(
            400,
            f"stream: true sends audio as it is made, which works for "
            f"{list(audio.STREAMABLE_FORMATS)}; use one of those or stream: false",
            param="response_format",
            code="invalid_value",
        )
    if not request.input.strip():
        raise ApiError(400, "input is empty; send the text to speak", param="input")
    if len(request.input) > settings.max_input_chars:
        raise ApiError(
            400,
            f"input has {len(request.input)} characters, more than the limit of "
            f"{settings.max_input_chars}; split it into several requests",
            param="input",
            code="string_above_max_length",
        )
    return speaker_id, fmt  # type: ignore[return-value]  # checked against runtime.formats


def _segment_ids(runtime: Runtime, text: str, speaker_id: int) -> list[SynthesisItem]:
    """Text -> one item per sentence (runs in the threadpool: espeak is CPU work)."""
    items = []
    for segment in split_sentences(text, runtime.settings.max_segment_chars):
        ids = runtime.front_end.phoneme_ids(segment)
        if ids != runtime.empty_ids:
            items.append(SynthesisItem(ids, speaker_id))
    return items


async def _plan(runtime: Runtime, request: SpeechRequest) -> _Plan:
    speaker_id, fmt = _check_request(runtime, request)
    with runtime.batcher.preparing():
        items = await run_in_threadpool(_segment_ids, runtime, request.input, speaker_id)
    if not items:
        raise ApiError(
            400,
            "input has nothing this voice can speak (no known symbols); send words in the "
            "voice's language",
            param="input",
        )
    scales = runtime.config.default_scales().at_speed(request.speed)
    return _Plan(items, scales, fmt, request.stream)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise _too_large(limit)
    except ClientDisconnect:
        # The client's problem, not the server's: one line, no traceback. The 400 is
        # counted as bad_request; uvicorn drops it, nobody is left to read it.
        log.info(
            "client disconnected after sending %d of %s body bytes",
            len(body),
            declared if declared is not None else "unknown",
        )
        raise ApiError(
            400, "client disconnected before sending the whole body", code="client_disconnected"
        ) from None
    return bytes(body)


def json_depth(body: bytes) -> int:
    """How deep arrays and objects nest in `body`, brackets inside strings not counted;
    linear and without recursion, so any body can be measured."""
    brackets = np.frombuffer(_JSON_STRING.sub(b"", body), dtype=np.uint8)
    steps = np.isin(brackets, (ord("["), ord("{"))).astype(np.int64) - np.isin(
        brackets, (ord("]"), ord("}"))
    )
    return int(np.cumsum(steps).max(initial=0))


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body is larger than {limit} bytes; send shorter input",
        code="request_too_large",
    )


async def _parse(request: Request, runtime: Runtime) -> SpeechRequest:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(
            415,
            f"Content-Type must be application/json, got {content_type or 'none'!r}",
            code="unsupported_media_type",
        )
    body = await _read_body(request, runtime.settings.max_body_bytes)
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        log.info("refused a request body nested %d levels deep", depth)
        raise ApiError(
            400,
            f"body nests arrays/objects {depth} levels deep, more than the limit of "
            f"{MAX_JSON_DEPTH}; send one flat JSON object such as "
            '{"model": "tts-1", "input": "Hello.", "voice": "default"}',
            code="invalid_json",
        )
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # not reached under MAX_JSON_DEPTH; kept as a backstop
        raise ApiError(400, "body nests too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object", code="invalid_json")
    try:
        return SpeechRequest.model_validate(data)
    except ValidationError as exc:
        raise invalid_field(exc) from None


def _batcher_error(exc: Exception) -> ApiError:
    if isinstance(exc, QueueFullError):
        return ApiError(
            429,
            str(exc),
            type="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    if isinstance(exc, TooManySegmentsError):
        return ApiError(400, str(exc), param="input", code="too_many_segments")
    if isinstance(exc, DeadlineExceededError):
        return ApiError(
            504,
            "the request waited in the queue past its timeout and was not run; the server "
            "is overloaded, retry later or on another replica",
            type="server_error",
            code="timeout",
        )
    if isinstance(exc, BatcherStoppedError):
        return _draining_error()
    return ApiError(500, str(exc), type="server_error", code="synthesis_failed")


def _draining_error() -> ApiError:
    return ApiError(
        503,
        "the server is shutting down; retry (another replica will answer)",
        type="server_error",
        code="draining",
        headers={"Retry-After": "1"},
    )


_STATUS_LABELS = {
    429: "queue_full",
    504: "timeout",
    503: "draining",
    CLIENT_CLOSED_REQUEST: "cancelled",
}


def _status_label(code: int) -> str:
    if code < 400:
        return "ok"
    return _STATUS_LABELS.get(code, "bad_request" if code < 500 else "error")


def _audio_too_long(settings: RuntimeSettings) -> ApiError:
    return ApiError(
        400,
        f"this input makes more than {settings.max_audio_seconds:g} s of audio at this "
        "speed, the most one request may produce (TTS_MAX_AUDIO_SECONDS); send shorter "
        "input or a higher speed",
        param="input",
        code="audio_too_long",
    )


async def _speech(request: Request, runtime: Runtime) -> Response:
    if runtime.draining:
        raise _draining_error()
    release = runtime.in_flight.enter()
    response: Response | None = None
    try:
        speech_request = await _parse(request, runtime)
        response = await _cancel_on_disconnect(request, _respond(runtime, speech_request, release))
        return response
    finally:
        if not isinstance(response, _AudioResponse):  # that one releases after its last byte
            release()


async def _cancel_on_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """`work`, unless the client disconnects first: then `work` is cancelled, which drops
    its segments not yet started, and the request ends as 499 (counted `cancelled`)."""
    task = asyncio.create_task(work)
    gone = asyncio.create_task(_until_disconnected(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
        if task.cancelled():
            log.info("client disconnected before its audio was ready; request cancelled")
            raise ApiError(CLIENT_CLOSED_REQUEST, "client disconnected", code="client_disconnected")
        return task.result()
    finally:
        gone.cancel()
        task.cancel()  # no-op once done; else this handler itself is being cancelled


async def _until_disconnected(request: Request) -> None:
    # The body is read: the server's next message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _respond(
    runtime: Runtime, request: SpeechRequest, release: Callable[[], None]
) -> _AudioResponse:
    plan = await _plan(runtime, request)
    try:
        jobs = runtime.batcher.submit(
            plan.items,
            plan.scales,
            timeout_s=runtime.settings.request_timeout_s,
            in_order=plan.stream,
        )
    except Exception as exc:
        raise _batcher_error(exc) from None
    try:
        if plan.stream:
            return await _stream(runtime, plan, jobs, release)
        return await _whole(runtime, plan, jobs, release)
    except BaseException:  # failed, too long or cancelled: drop what has not started
        runtime.batcher.abandon(jobs)
        raise


async def _await_all(runtime: Runtime, jobs: list[Job]) -> list[Audio]:
    """Each job's audio, in order; 400 once they add up to more than the audio cap."""
    audios: list[Audio] = []
    samples = 0
    for job in jobs:
        try:
            segment = await runtime.batcher.result(job)
        except (DeadlineExceededError, SynthesisFailedError, BatcherStoppedError) as exc:
            raise _batcher_error(exc) from None
        samples += len(segment)
        if samples > runtime.max_audio_samples:
            raise _audio_too_long(runtime.settings)
        audios.append(segment)
    return audios


@dataclass
class _Delivery:
    """How one response's body ended, settled when the response closes: the outcome is
    counted, segments not yet started are dropped, the request leaves the drain's count."""

    runtime: Runtime
    jobs: list[Job]
    release: Callable[[], None]
    outcome: str = "cancelled"  # unless the body ends otherwise: the client went away

    def close(self) -> None:
        self.runtime.metrics.requests.labels(status=self.outcome).inc()
        self.runtime.batcher.abandon(self.jobs)
        self.release()


async def _whole(
    runtime: Runtime, plan: _Plan, jobs: list[Job], release: Callable[[], None]
) -> _AudioResponse:
    audios = await _await_all(runtime, jobs)
    joined = np.concatenate(audios) if len(audios) > 1 else audios[0]
    body = await run_in_threadpool(
        audio.encode, joined, runtime.engine.sample_rate, plan.response_format
    )
    delivery = _Delivery(runtime, jobs, release)

    async def pieces() -> AsyncGenerator[bytes, None]:
        for start in range(0, len(body), WRITE_PIECE_BYTES):
            yield body[start : start + WRITE_PIECE_BYTES]
        delivery.outcome = "ok"

    return _AudioResponse(
        pieces(),
        delivery,
        media_type=audio.MEDIA_TYPES[plan.response_format],
        headers={"content-length": str(len(body))},
    )


async def _stream(
    runtime: Runtime, plan: _Plan, jobs: list[Job], release: Callable[[], None]
) -> _AudioResponse:
    """First segment awaited before the headers go out, so its errors still get a
    proper status; each later one is asked of the batcher only once the one before has
    been sent (Starlette pulls the next chunk when the last write returned), so a client
    that stops reading stops the synthesis too."""
    first = (await _await_all(runtime, jobs[:1]))[0]
    delivery = _Delivery(runtime, jobs, release)

    async def chunks() -> AsyncGenerator[bytes, None]:
        if plan.response_format == "wav":
            yield audio.wav_stream_header(runtime.engine.sample_rate)
        yield await run_in_threadpool(audio.to_pcm16, first)
        samples = len(first)
        for job in jobs[1:]:
            try:
                segment = await runtime.batcher.result(job)
            except Exception as exc:  # headers are gone: end the stream short
                log.warning("stream cut short: %s", exc)
                delivery.outcome = _status_label(_batcher_error(exc).status_code)
                return
            samples += len(segment)
            if samples > runtime.max_audio_samples:
                log.info(
                    "stream ended before %g s of audio, the most one request may produce "
                    "(TTS_MAX_AUDIO_SECONDS)",
                    runtime.settings.max_audio_seconds,
                )
                delivery.outcome = "bad_request"
                return
            yield await run_in_threadpool(audio.to_pcm16, segment)
        delivery.outcome = "ok"

    return _AudioResponse(chunks(), delivery, media_type=audio.MEDIA_TYPES[plan.response_format])


class _WriteTimeoutError(Exception):
    pass


class _AudioResponse(StreamingResponse):
    """Sends `chunks`, each write within TTS_WRITE_TIMEOUT_S: a client that reads nothing
    for that long is dropped (uvicorn closes the connection) instead of holding the
    request for ever. However the response ends (sent, client gone, write timeout),
    `chunks` is closed and the delivery settled, once and at once."""

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        delivery: _Delivery,
        *,
        media_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(chunks, media_type=media_type, headers=headers)
        self._chunks = chunks
        self._delivery = delivery
        self._write_timeout_s = delivery.runtime.settings.write_timeout_s

    async def stream_response(self, send: Send) -> None:
        async def send_in_time(message: Message) -> None:
            try:
                async with asyncio.timeout(self._write_timeout_s):
                    await send(message)
            except TimeoutError:
                raise _WriteTimeoutError from None

        await super().stream_response(send_in_time)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except _WriteTimeoutError:
            log.info(
                "client read nothing for %g s (TTS_WRITE_TIMEOUT_S); response dropped",
                self._write_timeout_s,
            )
        finally:
            await self._chunks.aclose()
            self._delivery.close()


# -- the app -----------------------------------------------------------------------


class PodHeaderMiddleware:
    """Puts `X-TTS-Pod: <pod name>` on every HTTP response as its headers go out, so
    streamed responses (headers sent before the body is made) carry it too."""

    def __init__(self, app: ASGIApp, pod_name: str) -> None:
        self.app = app
        self.header = (POD_HEADER.lower().encode("latin-1"), pod_name.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = self.header[0]

        async def send_with_pod(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if bytes(h[0]).lower() != name]
                message = {**message, "headers": [*headers, self.header]}
            await send(message)

        await self.app(scope, receive, send_with_pod)


class _RuntimeApp(FastAPI):
    """FastAPI with PodHeaderMiddleware wrapped around its whole middleware stack:
    outside Starlette's ServerErrorMiddleware, whose 500 for an unexpected exception
    would otherwise bypass a middleware added with add_middleware."""

    def __init__(self, *, pod_name: str, **kwargs: Any) -> None:
        self.pod_name = pod_name
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return PodHeaderMiddleware(super().build_middleware_stack(), self.pod_name)


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


def create_app(settings: RuntimeSettings, engine: ServedEngine) -> FastAPI:
    """The app for one loaded model. Lifespan starts the batcher and the warm-up."""
    runtime = Runtime(settings, engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    docs = settings.api_docs  # /docs and /redoc load scripts from a CDN: off unless asked
    app = _RuntimeApp(
        pod_name=settings.pod_name,
        title="tts-runtime",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.runtime = runtime

    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "invalid_request"
        return _error_response(ApiError(exc.status_code, str(exc.detail), code=kind))

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error_response(
            ApiError(500, f"internal error: {exc}", type="server_error", code="internal_error")
        )

    @app.post(
        "/v1/audio/speech",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SpeechRequest.model_json_schema()}},
            }
        },
        response_class=Response,
    )
    async def speech(request: Request) -> Response:
        """Text in, audio out (OpenAI's audio.speech.create)."""
        started = time.monotonic()
        try:
            response = await _speech(request, runtime)
        except ApiError as exc:  # the rest is counted as its body ends (_Delivery)
            runtime.metrics.requests.labels(status=_status_label(exc.status_code)).inc()
            raise
        log.debug("speech answered in %.3f s", time.monotonic() - started)
        return response

    @app.get("/v1/audio/voices")
    async def voices() -> VoiceList:
        return VoiceList(
            data=[VoiceCard(id=n, name=n, speaker_id=s) for n, s in runtime.voices.items()]
        )

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=model_id) for model_id in runtime.model_ids])

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness: the process serves; a failed warm-up means a restart may help."""
        if runtime.warm_up_error:
            return JSONResponse({"status": "failed", "error": runtime.warm_up_error}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready once the model is loaded and a warm-up batch ran; not while draining."""
        details = runtime.readiness()
        return JSONResponse(details, status_code=200 if details["ready"] else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(runtime.metrics.exposition(), media_type=runtime.metrics.content_type)

    return app
