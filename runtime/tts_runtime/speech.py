"""POST /v1/audio/speech: parse, check, plan, then a whole or a streamed response.

Each request has one RequestEnd, which finishes it exactly once however it ends (refused,
failed, sent, cut short, client gone): its outcome is counted, its segments not yet
started are dropped, and it leaves the count the drain waits for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from tts_runtime import audio
from tts_runtime.api_models import SpeechRequest, invalid_field
from tts_runtime.batcher import Job
from tts_runtime.cache import CACHE_HEADER, HIT, MISS
from tts_runtime.engine_types import Audio, SynthesisItem, SynthesisScales
from tts_runtime.errors import (
    CLIENT_CLOSED_REQUEST,
    ApiError,
    BatcherError,
    UnspeakableInputError,
    api_error,
    draining_error,
    status_label,
)
from tts_runtime.http_protocol import UNSENT_BYTES_KEY
from tts_runtime.settings import RuntimeSettings
from tts_runtime.state import Runtime
from tts_runtime.text import split_sentences

log = logging.getLogger(__name__)
T = TypeVar("T")

# A speech request is one flat JSON object (depth 1); deeper bodies are refused before
# json.loads, whose recursion a few thousand brackets would exhaust.
MAX_JSON_DEPTH = 32
# A JSON string (an unterminated one runs to the end): its brackets do not nest.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\Z)', re.DOTALL)
# A whole response goes out in pieces of this size (asyncio's default write buffer
# limit), each under the write timeout: a client that stops reading holds about one
# piece in the connection, not the whole body.
WRITE_PIECE_BYTES = 64 * 1024
# Most phoneme ids one item may hold, per character of TTS_MAX_SEGMENT_CHARS. Ordinary prose
# makes about 2.2 ids a character; digits, symbols read by name, a foreign script spelled
# letter by letter and emoji make up to 17 ("你好" is "chinese letter chinese letter"), and
# the engine's working set grows with an item's audio: one 400-character sentence of them at
# speed 0.25 made over an hour of audio in one run (20 GB with the small test voice). Such
# a sentence is split until each piece fits.
ITEM_IDS_PER_CHAR = 3
# While a write waits for a slow reader, how often its progress is looked at.
PROGRESS_POLL_S = 0.25


class RequestEnd:
    """Finishes one speech request exactly once: counts its outcome in tts_requests_total,
    drops its segments not yet started, and takes it off the drain's count."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.jobs: list[Job] = []
        # Unless the request ends otherwise, the client went away. None: not counted
        # (an unexpected exception; its 500 is logged).
        self.outcome: str | None = "cancelled"
        self._admitted = False
        self._finished = False

    def admit(self) -> None:
        """Counts the request in flight; 503 while draining."""
        if self.runtime.draining:
            raise draining_error()
        self.runtime.in_flight.enter()
        self._admitted = True

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self.outcome is not None:
            self.runtime.metrics.requests.labels(status=self.outcome).inc()
        self.runtime.batcher.abandon(self.jobs)
        if self._admitted:
            self.runtime.in_flight.leave()


async def answer_speech(request: Request, runtime: Runtime) -> StreamingResponse:
    """The audio for one request; its RequestEnd is finished here when it fails, and by
    the response once its body ends otherwise."""
    started = time.monotonic()
    end = RequestEnd(runtime)
    try:
        end.admit()
        speech_request = await _parse(request, runtime)
        response = await _cancel_on_disconnect(request, _respond(runtime, speech_request, end))
    except ApiError as exc:
        end.outcome = status_label(exc.status_code)
        end.finish()
        raise
    except BaseException:
        end.outcome = None
        end.finish()
        raise
    log.debug("speech answered in %.3f s", time.monotonic() - started)
    return response


# -- parse -------------------------------------------------------------------------


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
    except ValueError:  # an integer of more digits than int() converts (4300 by default)
        raise ApiError(
            400,
            "body has an integer of thousands of digits; the only number a speech request "
            "takes is speed (0.25 to 4.0)",
            code="invalid_json",
        ) from None
    except RecursionError:  # not reached under MAX_JSON_DEPTH; kept as a backstop
        raise ApiError(400, "body nests too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object", code="invalid_json")
    try:
        return SpeechRequest.model_validate(data)
    except ValidationError as exc:
        raise invalid_field(exc) from None


# -- check and plan ----------------------------------------------------------------


@dataclass(frozen=True)
class SpeechPlan:
    """A validated speech request, ready for the batcher: one item per sentence."""

    items: list[SynthesisItem]
    scales: SynthesisScales
    response_format: audio.ResponseFormat
    stream: bool
    # Where the response goes in the cache once made (None: cache off, or a stream).
    cache_key: str | None = None


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
    max_ids = ITEM_IDS_PER_CHAR * runtime.settings.max_segment_chars
    items = []
    for segment in split_sentences(text, runtime.settings.max_segment_chars):
        items.extend(_items(runtime, segment, speaker_id, max_ids))
    return items


def _items(runtime: Runtime, segment: str, speaker_id: int, max_ids: int) -> list[SynthesisItem]:
    """`segment` as one item, or, when its ids pass `max_ids`, as the items of its halves
    (cut at whitespace or a comma where there is one)."""
    ids = runtime.front_end.phoneme_ids(segment)
    if ids == runtime.empty_ids:
        return []
    if len(ids) <= max_ids or len(segment) < 2:
        return [SynthesisItem(ids, speaker_id)]
    halves = split_sentences(segment, (len(segment) + 1) // 2)
    return [item for half in halves for item in _items(runtime, half, speaker_id, max_ids)]


async def plan_speech(
    runtime: Runtime,
    request: SpeechRequest,
    speaker_id: int,
    fmt: audio.ResponseFormat,
    cache_key: str | None = None,
) -> SpeechPlan:
    """The items of a checked request (`_check_request` gave `speaker_id` and `fmt`)."""
    try:
        with runtime.batcher.preparing():
            items = await run_in_threadpool(_segment_ids, runtime, request.input, speaker_id)
    except UnspeakableInputError as exc:
        runtime.metrics.unspeakable_inputs.labels(reason=exc.reason).inc()
        log.info("input not speakable (%s): %s", exc.reason, exc)
        raise api_error(exc) from None
    if not items:
        raise ApiError(
            400,
            "input has nothing this voice can speak (no known symbols); send words in the "
            "voice's language",
            param="input",
        )
    return SpeechPlan(items, _scales(runtime, request), fmt, request.stream, cache_key)


def _scales(runtime: Runtime, request: SpeechRequest) -> SynthesisScales:
    return runtime.config.default_scales().at_speed(request.speed)


# -- respond -----------------------------------------------------------------------


def _audio_too_long(settings: RuntimeSettings) -> ApiError:
    return ApiError(
        400,
        f"this input makes more than {settings.max_audio_seconds:g} s of audio at this "
        "speed, the most one request may produce (TTS_MAX_AUDIO_SECONDS); send shorter "
        "input or a higher speed",
        param="input",
        code="audio_too_long",
    )


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


async def _respond(runtime: Runtime, request: SpeechRequest, end: RequestEnd) -> _AudioResponse:
    speaker_id, fmt = _check_request(runtime, request)
    cache_key = None
    if runtime.cache is not None:
        if request.stream:  # never looked up nor kept (docs/runtime.md, Response cache)
            runtime.cache.missed()
        else:
            segments = split_sentences(request.input, runtime.settings.max_segment_chars)
            cache_key = runtime.cache.key(speaker_id, segments, _scales(runtime, request), fmt)
            cached = await runtime.cache.get(cache_key)
            if cached is not None:
                return _send_whole(runtime, cached, fmt, end, HIT)
    plan = await plan_speech(runtime, request, speaker_id, fmt, cache_key)
    try:
        end.jobs = runtime.batcher.submit(
            plan.items,
            plan.scales,
            timeout_s=runtime.settings.request_timeout_s,
            in_order=plan.stream,
        )
    except Exception as exc:
        raise api_error(exc) from None
    # Failed, too long or cancelled: end.finish() drops what has not started.
    if plan.stream:
        return await _stream(runtime, plan, end)
    return await _whole(runtime, plan, end)


async def _await_all(runtime: Runtime, jobs: list[Job]) -> list[Audio]:
    """Each job's audio, in order; 400 once they add up to more than the audio cap."""
    audios: list[Audio] = []
    samples = 0
    for job in jobs:
        try:
            segment = await runtime.batcher.result(job)
        except BatcherError as exc:
            raise api_error(exc) from None
        samples += len(segment)
        if samples > runtime.max_audio_samples:
            raise _audio_too_long(runtime.settings)
        audios.append(segment)
    return audios


async def _whole(runtime: Runtime, plan: SpeechPlan, end: RequestEnd) -> _AudioResponse:
    audios = await _await_all(runtime, end.jobs)
    joined = np.concatenate(audios) if len(audios) > 1 else audios[0]
    body = await run_in_threadpool(
        audio.encode, joined, runtime.engine.sample_rate, plan.response_format
    )
    if runtime.cache is not None and plan.cache_key is not None:
        runtime.cache.put(plan.cache_key, body)
    return _send_whole(runtime, body, plan.response_format, end, MISS)


def _cache_headers(runtime: Runtime, state: str) -> dict[str, str]:
    """X-TTS-Cache: hit or miss, when the cache is on."""
    return {} if runtime.cache is None else {CACHE_HEADER: state}


def _send_whole(
    runtime: Runtime, body: bytes, fmt: audio.ResponseFormat, end: RequestEnd, cache: str
) -> _AudioResponse:
    """A whole body, in pieces of WRITE_PIECE_BYTES; the request is ok once all are sent."""

    async def pieces() -> AsyncGenerator[bytes, None]:
        for start in range(0, len(body), WRITE_PIECE_BYTES):
            yield body[start : start + WRITE_PIECE_BYTES]
        end.outcome = "ok"

    return _AudioResponse(
        pieces(),
        end,
        media_type=audio.MEDIA_TYPES[fmt],
        headers={"content-length": str(len(body)), **_cache_headers(runtime, cache)},
    )


async def _stream(runtime: Runtime, plan: SpeechPlan, end: RequestEnd) -> _AudioResponse:
    """First segment awaited before the headers go out, so its errors still get a
    proper status; each later one is asked of the batcher only once the one before has
    been sent (Starlette pulls the next chunk when the last write returned), so a client
    that stops reading stops the synthesis too."""
    jobs = end.jobs
    first = (await _await_all(runtime, jobs[:1]))[0]

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
                end.outcome = status_label(api_error(exc).status_code)
                return
            samples += len(segment)
            if samples > runtime.max_audio_samples:
                log.info(
                    "stream ended before %g s of audio, the most one request may produce "
                    "(TTS_MAX_AUDIO_SECONDS)",
                    runtime.settings.max_audio_seconds,
                )
                end.outcome = "bad_request"
                return
            yield await run_in_threadpool(audio.to_pcm16, segment)
        end.outcome = "ok"

    return _AudioResponse(
        chunks(),
        end,
        media_type=audio.MEDIA_TYPES[plan.response_format],
        headers=_cache_headers(runtime, MISS),
    )


class _WriteTimeoutError(Exception):
    pass


class _AudioResponse(StreamingResponse):
    """Sends `chunks`, dropping a client that takes no byte for TTS_WRITE_TIMEOUT_S
    (uvicorn then closes the connection) instead of holding the request for ever.
    However the response ends (sent, client gone, write timeout), `chunks` is closed and
    the request finished, at once.

    A client is judged by its progress, not by how long one write waits: a write waits
    until the kernel's send buffer (which grows to megabytes) has room, and a listener
    who reads a stream at playback speed can take a minute to drain it while reading all
    along. So while a write waits, the bytes its client has not taken yet (the
    connection's `unsent_bytes`, from http_protocol.py) are looked at every
    PROGRESS_POLL_S; each drop restarts the clock. Served without that protocol (tests
    that run plain uvicorn) each write simply has TTS_WRITE_TIMEOUT_S."""

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        end: RequestEnd,
        *,
        media_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(chunks, media_type=media_type, headers=headers)
        self._chunks = chunks
        self._end = end
        self._write_timeout_s = end.runtime.settings.write_timeout_s
        self._unsent_bytes: Callable[[], int] | None = None

    async def stream_response(self, send: Send) -> None:
        unsent_bytes = self._unsent_bytes

        async def send_in_time(message: Message) -> None:
            if unsent_bytes is None:
                try:
                    async with asyncio.timeout(self._write_timeout_s):
                        await send(message)
                except TimeoutError:
                    raise _WriteTimeoutError from None
                return
            await _send_while_taken(send(message), unsent_bytes, self._write_timeout_s)

        await super().stream_response(send_in_time)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._unsent_bytes = scope.get(UNSENT_BYTES_KEY)
        try:
            await super().__call__(scope, receive, send)
        except _WriteTimeoutError:
            log.info(
                "client read nothing for %g s (TTS_WRITE_TIMEOUT_S); response dropped",
                self._write_timeout_s,
            )
        finally:
            await self._chunks.aclose()
            self._end.finish()


async def _send_while_taken(
    sending: Awaitable[None], unsent_bytes: Callable[[], int], timeout_s: float
) -> None:
    """Awaits `sending`; _WriteTimeoutError once the client's unsent bytes have not gone
    down for `timeout_s` (while a write waits, only the client's reading moves them)."""
    task = asyncio.ensure_future(sending)
    loop = asyncio.get_running_loop()
    last_progress = loop.time()
    unsent = unsent_bytes()
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=PROGRESS_POLL_S)
            if done:
                return task.result()
            now, before = loop.time(), unsent
            unsent = unsent_bytes()
            if unsent < before:
                last_progress = now
            elif now - last_progress >= timeout_s:
                raise _WriteTimeoutError
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
