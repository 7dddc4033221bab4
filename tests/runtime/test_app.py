"""The HTTP API over the real OnnxEngine and the small test voice."""

from __future__ import annotations

import asyncio
import io
import json
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from servers import GatedEngine, live_server
from tts_runtime.app import create_app
from tts_runtime.engine import OnnxEngine
from tts_runtime.errors import StartupError
from tts_runtime.metrics import average_queue_wait
from tts_runtime.settings import RuntimeSettings, default_pod_name
from tts_runtime.text import TextFrontEnd

T = TypeVar("T")
WARM_UP_IDS: tuple[int, ...] = ()


@pytest.fixture(scope="module")
def engine(small_model_dir: Path) -> OnnxEngine:
    return OnnxEngine.load(small_model_dir, "fp32", "cpu")


def settings_for(model_dir: Path, **overrides: Any) -> RuntimeSettings:
    return RuntimeSettings(model_path=model_dir, **overrides)


def speech(**fields: Any) -> dict[str, Any]:
    return {"model": "tts-1", "input": "Hello there.", "voice": "default", **fields}


def wait_until_ready(client: TestClient) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = client.get("/readyz")
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        time.sleep(0.02)
    raise AssertionError(f"never ready: {client.get('/readyz').json()}")


@pytest.fixture
def client(engine: OnnxEngine, small_model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(small_model_dir), engine)) as test_client:
        wait_until_ready(test_client)
        yield test_client


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(body(), timeout=60))


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, and an in-process client for concurrent requests."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tts") as client:
            deadline = time.monotonic() + 30
            while (await client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "never ready"
                await asyncio.sleep(0.02)
            yield client


async def eventually(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.005)


async def worker_took(gated: GatedEngine, batches: int) -> None:
    await eventually(lambda: len(gated.entered) >= batches)


# -- readiness and discovery -------------------------------------------------------


def test_readyz_false_until_the_warm_up_batch_ran(
    engine: OnnxEngine, small_model_dir: Path
) -> None:
    gated = GatedEngine(engine, held=lambda items: True, hold_startup=True)
    with TestClient(create_app(settings_for(small_model_dir), gated)) as client:
        time.sleep(0.1)
        waiting = client.get("/readyz")
        assert waiting.status_code == 503
        assert waiting.json()["warmed_up"] is False
        assert client.get("/healthz").status_code == 200  # alive while warming up
        gated.gate.set()
        details = wait_until_ready(client)
    assert details["ready"] is True
    assert details["provider"] == "CPUExecutionProvider"
    assert details["precision"] == "fp32"
    assert details["fallback_reason"] is None
    assert gated.startup_batches[0][0].phoneme_ids == TextFrontEnd(engine.config).phoneme_ids(
        "Warm up."
    )
    assert details["batch_limit"] in (1, 2, 4, 8)


def test_without_calibration_the_batch_limit_is_max_batch_size(
    engine: OnnxEngine, small_model_dir: Path
) -> None:
    gated = GatedEngine(engine, held=lambda items: False)
    settings = settings_for(small_model_dir, max_batch_size=6, batch_calibration=False)
    with TestClient(create_app(settings, gated)) as client:
        details = wait_until_ready(client)
    assert details["batch_limit"] == 6
    assert [len(batch) for batch in gated.startup_batches] == [1]  # the warm-up alone


def test_readyz_reports_the_cpu_fallback_of_an_fp16_request(small_model_dir: Path) -> None:
    fp16_engine = OnnxEngine.load(small_model_dir, "fp16", "auto")
    if fp16_engine.provider == "CUDAExecutionProvider":
        pytest.skip("CUDA is available here, so there is no fallback to report")
    with TestClient(create_app(settings_for(small_model_dir), fp16_engine)) as client:
        details = wait_until_ready(client)
    assert details["precision"] == "fp32"
    assert details["provider"] == "CPUExecutionProvider"
    assert details["fallback_reason"]


def test_models_voices_and_metrics(client: TestClient) -> None:
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tts-1", "tts-1-hd"]
    voices = client.get("/v1/audio/voices").json()
    assert voices["data"] == [{"id": "default", "name": "default", "speaker_id": 0}]
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'tts_model_info{model="tts-1",precision="fp32",provider="CPUExecutionProvider"} 1.0' in (
        metrics.text
    )


def test_voices_come_from_the_speaker_map_and_select_the_speaker(
    multi_speaker_model_dir: Path,
) -> None:
    gated = GatedEngine(OnnxEngine.load(multi_speaker_model_dir, "fp32", "cpu"), lambda _: False)
    app = create_app(settings_for(multi_speaker_model_dir), gated)
    with TestClient(app) as client:
        wait_until_ready(client)
        names = [v["id"] for v in client.get("/v1/audio/voices").json()["data"]]
        assert names == ["speaker_0", "speaker_1", "speaker_2"]
        assert client.post("/v1/audio/speech", json=speech(voice="speaker_2")).status_code == 200
        assert client.post("/v1/audio/speech", json=speech(voice={"id": "speaker_1"})).is_success
    assert [b[0].speaker_id for b in gated.batches] == [2, 1]


def test_tts_voices_naming_a_missing_speaker_stops_startup(
    engine: OnnxEngine, small_model_dir: Path
) -> None:
    with pytest.raises(StartupError, match="TTS_VOICES"):
        create_app(settings_for(small_model_dir, voices={"alloy": 0, "echo": 3}), engine)


# -- speech ------------------------------------------------------------------------


def test_speech_returns_a_wav_of_the_model_rate(client: TestClient) -> None:
    response = client.post("/v1/audio/speech", json=speech())
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == 22050
    assert samples.ndim == 1 and samples.size > 1000
    assert np.isfinite(samples).all() and np.abs(samples).max() > 0


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("flac", "audio/flac"), ("mp3", "audio/mpeg"), ("opus", "audio/ogg; codecs=opus")],
)
def test_speech_encodes_compressed_formats(client: TestClient, fmt: str, content_type: str) -> None:
    response = client.post("/v1/audio/speech", json=speech(response_format=fmt))
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    samples, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == (24000 if fmt == "opus" else 22050)
    assert samples.size > 1000


def test_pcm_is_raw_16_bit_samples(client: TestClient) -> None:
    response = client.post("/v1/audio/speech", json=speech(response_format="pcm"))
    assert response.status_code == 200
    assert len(response.content) % 2 == 0 and len(response.content) > 2000
    assert not response.content.startswith(b"RIFF")


def test_speed_divides_the_length_scale(engine: OnnxEngine, small_model_dir: Path) -> None:
    gated = GatedEngine(engine, held=lambda _: False)
    with TestClient(create_app(settings_for(small_model_dir), gated)) as client:
        wait_until_ready(client)
        fast = client.post("/v1/audio/speech", json=speech(speed=4.0, response_format="pcm"))
        slow = client.post("/v1/audio/speech", json=speech(speed=0.25, response_format="pcm"))
    base = engine.config.length_scale
    assert [s.length_scale for s in gated.scales] == [base / 4.0, base / 0.25]
    assert len(fast.content) < len(slow.content)


def test_long_input_is_split_into_sentences_and_joined(
    engine: OnnxEngine, small_model_dir: Path
) -> None:
    gated = GatedEngine(engine, held=lambda _: False)
    with TestClient(create_app(settings_for(small_model_dir), gated)) as client:
        wait_until_ready(client)
        text = "First sentence here. Second one; third one? Fourth!"
        response = client.post("/v1/audio/speech", json=speech(input=text, response_format="pcm"))
    assert response.status_code == 200
    segments = [item for batch in gated.batches for item in batch]
    assert len(segments) == 4
    front_end = TextFrontEnd(engine.config)
    assert segments[0].phoneme_ids == front_end.phoneme_ids("First sentence here.")
    # Joined audio: as long as the segments' audio together (noise makes each differ).
    assert len(response.content) > 4 * 2 * 256


# -- bad input: always a 4xx with an OpenAI-style error -----------------------------


@pytest.mark.parametrize(
    ("body", "status", "param", "says"),
    [
        (speech(input=""), 400, "input", "empty"),
        (speech(input="   \n\t "), 400, "input", "empty"),
        (speech(input="a" * 4097), 400, "input", "limit of 4096"),
        (speech(voice="nobody"), 400, "voice", "available voices"),
        (speech(model="gpt-9"), 404, "model", "use one of"),
        (speech(response_format="aac"), 400, "response_format", "use one of"),
        (speech(response_format="flac", stream=True), 400, "response_format", "stream"),
        (speech(speed=0.1), 400, "speed", "greater than or equal to 0.25"),
        (speech(speed=4.5), 400, "speed", "less than or equal to 4"),
        (speech(speed="fast"), 400, "speed", "number"),
        ({"model": "tts-1", "voice": "default"}, 400, "input", "missing required field"),
        (speech(temperature=1), 400, "temperature", "unknown field"),
        (speech(input="%%%***"), 400, "input", "nothing this voice can speak"),
    ],
)
def test_bad_requests_get_a_4xx_that_says_what_to_fix(
    client: TestClient, body: dict[str, Any], status: int, param: str, says: str
) -> None:
    response = client.post("/v1/audio/speech", json=body)
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert says in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("content", "headers", "status", "says"),
    [
        (b'{"model": "tts-1", "input": ', {"content-type": "application/json"}, 400, "JSON"),
        (b"[1, 2]", {"content-type": "application/json"}, 400, "JSON object"),
        (b"\xff\xfe", {"content-type": "application/json"}, 400, "JSON"),
        (b"input=hi", {"content-type": "application/x-www-form-urlencoded"}, 415, "json"),
        (b"{}", {}, 415, "Content-Type"),
        (
            json.dumps(speech(input="a" * 300_000)).encode(),
            {"content-type": "application/json"},
            413,
            "larger than",
        ),
    ],
)
def test_malformed_bodies_get_a_4xx(
    client: TestClient, content: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    response = client.post("/v1/audio/speech", content=content, headers=headers)
    assert response.status_code == status, response.text[:300]
    assert says in response.json()["error"]["message"]


def test_unknown_paths_and_methods_get_json_errors(client: TestClient) -> None:
    missing = client.get("/v1/audio/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong_method = client.get("/v1/audio/speech")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_request_outcomes_are_counted(client: TestClient) -> None:
    client.post("/v1/audio/speech", json=speech())
    client.post("/v1/audio/speech", json=speech(voice="nobody"))
    text = client.get("/metrics").text
    assert 'tts_requests_total{status="ok"} 1.0' in text
    assert 'tts_requests_total{status="bad_request"} 1.0' in text


TRAFFIC_SERIES = (
    "tts_queue_wait_seconds_count",
    "tts_queue_wait_seconds_sum",
    "tts_batch_size_count",
    "tts_inference_seconds_count",
    "tts_padding_ratio_count",
    "tts_real_time_factor_count",
    "tts_audio_seconds_total",
)


def metric_samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_warm_up_and_calibration_leave_the_traffic_metrics_at_zero(client: TestClient) -> None:
    before = metric_samples(client)
    for name in TRAFFIC_SERIES:
        assert before[(name, ())] == 0.0, name
    requests = {
        labels: value for (name, labels), value in before.items() if name == "tts_requests_total"
    }
    assert requests and set(requests.values()) == {0.0}

    response = client.post("/v1/audio/speech", json=speech())
    assert response.status_code == 200
    info = sf.info(io.BytesIO(response.content))
    after = metric_samples(client)
    # One sample of rounding: the WAV holds whole 16-bit frames of the float audio.
    assert after[("tts_audio_seconds_total", ())] == pytest.approx(
        info.frames / info.samplerate, abs=1 / info.samplerate
    )
    assert after[("tts_queue_wait_seconds_count", ())] == 1
    assert after[("tts_batch_size_count", ())] == 1
    assert after[("tts_requests_total", (("status", "ok"),))] == 1


# -- backpressure, deadlines, drain -------------------------------------------------


def test_full_queue_answers_429_with_retry_after_at_once(
    engine: OnnxEngine, small_model_dir: Path
) -> None:
    gated = GatedEngine(engine, held=lambda _: True)
    app = create_app(settings_for(small_model_dir, max_queue_size=2), gated)

    async def body() -> None:
        async with serving(app) as client:
            running = asyncio.create_task(client.post("/v1/audio/speech", json=speech()))
            await worker_took(gated, 1)  # this request, held in the engine
            queued = [
                asyncio.create_task(client.post("/v1/audio/speech", json=speech(input=f"Hi {n}.")))
                for n in range(2)
            ]
            await eventually(lambda: app.state.runtime.batcher.queue_depth == 2)
            refused = await client.post("/v1/audio/speech", json=speech(input="One more."))
            assert refused.status_code == 429
            assert refused.headers["x-tts-pod"] == app.state.runtime.settings.pod_name
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            gated.gate.set()
            results = await asyncio.gather(running, *queued)
            assert [r.status_code for r in results] == [200, 200, 200]

    run(body)


def test_request_past_its_deadline_in_the_queue_gets_504_and_never_runs(
    engine: OnnxEngine, small_model_dir: Path
) -> None:
    front_end = TextFrontEnd(engine.config)
    gated = GatedEngine(engine, held=lambda _: True)
    app = create_app(settings_for(small_model_dir, request_timeout_s=0.3), gated)

    async def body() -> None:
        async with serving(app) as client:
            running = asyncio.create_task(client.post("/v1/audio/speech", json=speech()))
            await worker_took(gated, 1)  # the first request now sits in the held batch
            late = await client.post("/v1/audio/speech", json=speech(input="Too late."))
            assert late.status_code == 504
            assert late.headers["x-tts-pod"] == app.state.runtime.settings.pod_name
            assert late.json()["error"]["code"] == "timeout"
            gated.gate.set()
            assert (await running).status_code == 200  # started in time: finished
        too_late = front_end.phoneme_ids("Too late.")
        assert all(i.phoneme_ids != too_late for b in gated.batches for i in b)

    run(body)


def test_draining_turns_readiness_off_and_refuses_new_requests(client: TestClient) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    runtime.begin_drain()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["draining"] is True
    refused = client.post("/v1/audio/speech", json=speech())
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "draining"
    assert 'tts_requests_total{status="draining"} 1.0' in client.get("/metrics").text


# -- streaming -----------------------------------------------------------------------


def test_stream_sends_the_first_sentence_before_later_ones_are_synthesized(
    engine: OnnxEngine, small_model_dir: Path
) -> None:
    front_end = TextFrontEnd(engine.config)
    first = front_end.phoneme_ids("First part.")
    # Hold every batch but the one holding the first sentence.
    gated = GatedEngine(engine, held=lambda items: all(i.phoneme_ids != first for i in items))
    app = create_app(settings_for(small_model_dir), gated)
    text = "First part. " + " ".join(f"Then sentence number {n}." for n in range(6))
    request = speech(input=text, stream=True)
    with (
        live_server(app) as url,
        httpx.Client(base_url=url, timeout=30) as http,
        http.stream("POST", "/v1/audio/speech", json=request) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"] == "audio/wav"
        assert r.headers["x-tts-pod"] == app.state.runtime.settings.pod_name  # real uvicorn
        received = b""
        chunks = r.iter_raw()
        while len(received) <= 44:
            received += next(chunks)
        # Audio arrived while every later sentence is still held in the engine.
        assert len(gated.batches) == 1
        assert received[:4] == b"RIFF" and received[40:44] == b"\xff\xff\xff\xff"
        gated.gate.set()
        for chunk in chunks:
            received += chunk
    later = gated.batches[1:]
    assert len(later) == 6 and all(len(b) == 1 for b in later)
    samples = np.frombuffer(received[44:], dtype="<i2")
    assert samples.size > 7 * 256


def test_stream_of_pcm_matches_the_pcm_encoding(client: TestClient) -> None:
    with client.stream(
        "POST",
        "/v1/audio/speech",
        json=speech(input="One. Two.", stream=True, response_format="pcm"),
    ) as response:
        assert response.status_code == 200
        body = response.read()
    assert len(body) % 2 == 0 and len(body) > 2 * 256
    assert not body.startswith(b"RIFF")


def test_hpa_quotient_from_two_scrapes_of_metrics_is_zero_when_idle(client: TestClient) -> None:
    def queue_wait() -> tuple[float, float]:
        text = client.get("/metrics").text
        values = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("tts_queue_wait_seconds_")
        }
        return values["tts_queue_wait_seconds_sum"], values["tts_queue_wait_seconds_count"]

    before = queue_wait()
    client.post("/v1/audio/speech", json=speech(input="One. Two. Three."))
    busy = queue_wait()
    assert busy[1] - before[1] == 3  # one observation per sentence
    signal = average_queue_wait(*before, *busy)
    assert 0 <= signal < 30 and not math.isnan(signal)
    idle = queue_wait()
    assert average_queue_wait(*busy, *idle) == 0.0


# -- which pod answered (X-TTS-Pod) ---------------------------------------------------

POD = "voice-7d9c8b6f5-x2x4q"


def pod_app(engine: OnnxEngine, model_dir: Path) -> FastAPI:
    return create_app(settings_for(model_dir, pod_name=POD, batch_calibration=False), engine)


@pytest.fixture
def pod_client(engine: OnnxEngine, small_model_dir: Path) -> Iterator[TestClient]:
    with TestClient(pod_app(engine, small_model_dir)) as test_client:
        wait_until_ready(test_client)
        yield test_client


def test_speech_and_every_endpoint_say_which_pod_answered(pod_client: TestClient) -> None:
    spoken = pod_client.post("/v1/audio/speech", json=speech())
    assert spoken.status_code == 200 and spoken.content.startswith(b"RIFF")
    assert spoken.headers.get_list("x-tts-pod") == [POD]  # exactly once
    for path in ("/healthz", "/readyz", "/metrics", "/v1/models", "/v1/audio/voices"):
        response = pod_client.get(path)
        assert response.status_code == 200, path
        assert response.headers.get_list("x-tts-pod") == [POD], path


def test_streamed_speech_says_which_pod_answered(pod_client: TestClient) -> None:
    with pod_client.stream(
        "POST", "/v1/audio/speech", json=speech(input="One. Two.", stream=True)
    ) as response:
        assert response.status_code == 200
        assert response.headers.get_list("x-tts-pod") == [POD]
        assert len(response.read()) > 44


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/v1/audio/speech", {"json": speech(voice="nobody")}, 400),
        ("POST", "/v1/audio/speech", {"json": speech(model="whisper-1")}, 404),
        (
            "POST",
            "/v1/audio/speech",
            {"content": b"{", "headers": {"content-type": "application/json"}},
            400,
        ),
        (
            "POST",
            "/v1/audio/speech",
            {"content": b"hi", "headers": {"content-type": "text/plain"}},
            415,
        ),
        ("POST", "/v1/audio/speech", {"json": speech(input="x" * 200_000)}, 413),
        ("GET", "/v1/audio/nothing", {}, 404),
        ("GET", "/v1/audio/speech", {}, 405),
    ],
)
def test_error_responses_say_which_pod_answered(
    pod_client: TestClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = pod_client.request(method, path, **kwargs)
    assert response.status_code == status, response.text[:300]
    assert "error" in response.json()
    assert response.headers.get_list("x-tts-pod") == [POD]


def test_draining_503s_say_which_pod_answered(pod_client: TestClient) -> None:
    pod_client.app.state.runtime.begin_drain()  # type: ignore[attr-defined]
    refused = pod_client.post("/v1/audio/speech", json=speech())
    ready = pod_client.get("/readyz")
    assert (refused.status_code, ready.status_code) == (503, 503)
    assert refused.headers["x-tts-pod"] == ready.headers["x-tts-pod"] == POD


def test_an_unexpected_exception_still_says_which_pod_answered(
    engine: OnnxEngine, small_model_dir: Path
) -> None:
    # The 500 for an unexpected exception is made by Starlette's outermost middleware.
    app = pod_app(engine, small_model_dir)

    async def boom() -> None:
        raise RuntimeError("kaboom")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert response.headers.get_list("x-tts-pod") == [POD]


def test_without_tts_pod_name_the_header_is_the_host_name(client: TestClient) -> None:
    assert client.get("/healthz").headers["x-tts-pod"] == default_pod_name()


# -- hostile and broken clients ------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 5000,
        b'{"model": "tts-1", "input": ' + b"[" * 5000,
        b'{"model": "tts-1", "input": "hi", "voice": "default", "x": ' + b"{" * 40,
    ],
)
def test_deeply_nested_json_gets_400_and_one_log_line(
    client: TestClient, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO"):
        response = client.post(
            "/v1/audio/speech", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "invalid_json" and error["type"] == "invalid_request_error"
    assert "levels deep" in error["message"] and "flat JSON object" in error["message"]
    app_lines = [r for r in caplog.records if r.name == "tts_runtime.speech"]
    assert [r.getMessage() for r in app_lines] == [app_lines[0].getMessage()]
    assert "nested" in app_lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    assert 'status="bad_request"} 1.0' in client.get("/metrics").text


def test_brackets_inside_strings_do_not_count_as_nesting(client: TestClient) -> None:
    response = client.post("/v1/audio/speech", json=speech(input="[" * 100 + "Hello."))
    assert response.status_code == 200, response.text[:300]


def test_a_client_gone_mid_body_logs_one_line_and_no_traceback(
    engine: OnnxEngine,
    small_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    app = create_app(settings_for(small_model_dir), engine)
    with caplog.at_level("INFO"), live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/audio/speech HTTP/1.1\r\nHost: tts\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                b'{"model": '
            )
        deadline = time.monotonic() + 10
        while not any("disconnected" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the disconnect was never logged"
            time.sleep(0.02)
        metrics = httpx.get(f"{url}/metrics").text
    gone = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelname == "INFO"
    assert "10 of 1000 body bytes" in gone[0].getMessage()
    assert not any(r.exc_info or r.levelname in ("ERROR", "CRITICAL") for r in caplog.records)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert 'tts_requests_total{status="bad_request"} 1.0' in metrics
    assert 'tts_requests_total{status="error"} 0.0' in metrics


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_api_docs_are_off_unless_tts_api_docs(
    engine: OnnxEngine, small_model_dir: Path, path: str
) -> None:
    with TestClient(create_app(settings_for(small_model_dir), engine)) as off:
        assert off.get(path).status_code == 404
    on_app = create_app(settings_for(small_model_dir, api_docs=True), engine)
    with TestClient(on_app) as on:
        assert on.get(path).status_code == 200
