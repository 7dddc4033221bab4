"""Clients that hang up before their audio is ready (issue 11, item 5). Before the fix
a whole (non-streamed) request kept using the engine for nobody: every queued sentence
was still made, the queue room stayed taken (others got 429) and the request was
counted `ok`. Now the request is cancelled: sentences not yet started are dropped and
it is counted `cancelled`. Against real uvicorn on loopback: in a thread with a gated
engine (to hang up at an exact point), and as a `tts-runtime serve` process."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
import pytest
from raw_client import post, read_at_least, serve, speech, steady, wait_for
from servers import GatedEngine, live_server
from tts_runtime.app import create_app
from tts_runtime.engine import OnnxEngine
from tts_runtime.settings import RuntimeSettings

SENTENCES = 120
TEXT = " ".join(f"Sentence number {n} is here." for n in range(SENTENCES))


def test_hanging_up_drops_the_queued_sentences_and_counts_cancelled(
    small_model_dir: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    gated = GatedEngine(OnnxEngine.load(small_model_dir, "fp32", "cpu"), held=lambda _: True)
    settings = RuntimeSettings(
        model_path=small_model_dir, max_batch_size=1, batch_calibration=False
    )
    app = create_app(settings, gated)
    runtime = app.state.runtime
    with caplog.at_level("INFO"), live_server(app) as url:
        client = post(int(url.rsplit(":", 1)[1]), speech(TEXT))
        # The first sentence is in the engine (held there), the other 119 are queued.
        wait_for(lambda: len(gated.entered) == 1, 30, "the first sentence in the engine")
        wait_for(lambda: runtime.batcher.queue_depth == SENTENCES - 1, 10, "the rest queued")
        client.close()
        wait_for(lambda: runtime.batcher.queue_depth == 0, 10, "the queued sentences dropped")
        gated.gate.set()  # the sentence already running finishes; nothing follows it
        wait_for(lambda: runtime.in_flight.count == 0, 10, "the request released")
        time.sleep(0.2)
        metrics = httpx.get(f"{url}/metrics").text
    assert len(gated.entered) == 1
    assert 'tts_requests_total{status="cancelled"} 1.0' in metrics
    assert 'tts_requests_total{status="ok"} 0.0' in metrics
    assert "tts_queue_depth 0.0" in metrics
    cancelled = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(cancelled) == 1 and cancelled[0].levelname == "INFO"
    assert not any(r.exc_info or r.levelname in ("ERROR", "CRITICAL") for r in caplog.records)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


@pytest.mark.slow
def test_a_real_server_stops_making_audio_for_clients_that_hang_up(
    small_model_dir: Path, tmp_path: Path
) -> None:
    # Batches of one and no cap: the work goes on sentence by sentence for some 2 s.
    with serve(
        small_model_dir,
        tmp_path,
        max_batch_size="1",
        batch_calibration="false",
        max_audio_seconds="86400",
    ) as server:
        body = speech(TEXT, speed=0.25)
        reference = httpx.post(f"{server.base}/v1/audio/speech", json=body, timeout=60)
        assert reference.status_code == 200
        total = server.metric("tts_audio_seconds_total")  # what the text makes: ~1,400 s

        # A whole request whose client hangs up once its audio is being made.
        client = post(server.port, body)
        wait_for(lambda: server.metric("tts_audio_seconds_total") > total, 30, "synthesis started")
        client.close()
        made = steady(lambda: server.metric("tts_audio_seconds_total")) - total
        assert made < total / 2, f"{made:.0f} of {total:.0f} s made for a client that hung up"
        assert server.metric("tts_requests_total", status="cancelled") == 1
        assert server.metric("tts_requests_total", status="ok") == 1  # the reference only
        assert server.readyz()["in_flight"] == 0
        assert server.metric("tts_queue_depth") == 0

        # A stream whose client hangs up after its first audio: counted, nothing more made.
        stream = speech(TEXT, speed=0.25, stream=True, response_format="pcm")
        with contextlib.closing(post(server.port, stream)) as client:
            assert read_at_least(client, 1024).startswith(b"HTTP/1.1 200 OK")
        before = server.metric("tts_audio_seconds_total")
        wait_for(
            lambda: server.metric("tts_requests_total", status="cancelled") == 2,
            10,
            "the stream counted as cancelled",
        )
        assert steady(lambda: server.metric("tts_audio_seconds_total")) - before < total / 4
        assert server.readyz()["in_flight"] == 0
        assert "client disconnected before its audio was ready" in server.log_text()
