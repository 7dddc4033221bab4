"""Clients that stop reading, against a real `tts-runtime serve` process (issue 11,
item 4). Before the fix every later sentence of a stream became runnable as soon as the
one before it started: a client that read 1 KB still had all its audio made and held,
and nothing timed out until it hung up. Now a sentence is made only once the one before
has been sent, every write has TTS_WRITE_TIMEOUT_S, and TTS_MAX_AUDIO_SECONDS caps what
one request makes."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest
from raw_client import post, read_at_least, serve, speech, steady, wait_for

pytestmark = pytest.mark.slow

# 120 sentences, 3,199 characters: about 380 s of audio from the small test voice at
# speed 1 and 1,400 s at speed 0.25 (62 MB of 16-bit samples, far more than any socket
# buffers hold).
TEXT = " ".join(f"Sentence number {n} is here." for n in range(120))
SAMPLE_RATE = 22050  # the small test voice's
# The default cap would stop these long requests before their buffers fill.
NO_CAP = "86400"  # the largest TTS_MAX_AUDIO_SECONDS
# Once a response is dropped its socket is aborted, not left waiting for a client that
# never reads: the one connection left open is the /metrics scrape's own.
ONLY_SCRAPES = "the stalled client's connection aborted"


def test_a_stream_that_is_not_read_stops_being_made_and_is_dropped(
    small_model_dir: Path, tmp_path: Path
) -> None:
    with serve(small_model_dir, tmp_path, write_timeout_s="6", max_audio_seconds=NO_CAP) as server:
        body = speech(TEXT, speed=0.25, stream=True, response_format="pcm")
        # A client that reads gets every sentence: this is what the text makes.
        with httpx.stream("POST", f"{server.base}/v1/audio/speech", json=body, timeout=60) as r:
            assert r.status_code == 200
            received = sum(len(chunk) for chunk in r.iter_bytes())
        total = server.metric("tts_audio_seconds_total")
        assert received / 2 / SAMPLE_RATE == pytest.approx(total, rel=0.001)
        assert total > 1000

        with contextlib.closing(post(server.port, body)) as stalled:
            assert read_at_least(stalled, 1024).startswith(b"HTTP/1.1 200 OK")
            # The client reads nothing more: once the socket buffers are full, no more
            # sentences are made (before the fix: all of them, about 1,400 s).
            made = steady(lambda: server.metric("tts_audio_seconds_total")) - total
            assert server.readyz()["in_flight"] == 1  # waiting for its client, not dropped
            assert made < total / 4, f"{made:.0f} s of audio made for a client that read 1 KB"

            # Nothing read for TTS_WRITE_TIMEOUT_S: the request is dropped and counted.
            wait_for(
                lambda: server.metric("tts_requests_total", status="cancelled") == 1,
                20,
                "the stalled stream dropped",
            )
            assert server.readyz()["in_flight"] == 0
            assert server.metric("tts_queue_depth") == 0
            wait_for(lambda: server.metric("tts_connections") == 1, 10, ONLY_SCRAPES)
            assert server.metric("tts_audio_seconds_total") - total == made
        assert server.metric("tts_requests_total", status="ok") == 1
        assert "client read nothing for 6 s (TTS_WRITE_TIMEOUT_S)" in server.log_text()


def test_a_whole_response_that_is_not_read_is_dropped_after_the_write_timeout(
    small_model_dir: Path, tmp_path: Path
) -> None:
    """A whole body goes out piece by piece, each under the write timeout, and the
    request stays in flight (a drain waits for it) until its last byte is sent."""
    with serve(small_model_dir, tmp_path, write_timeout_s="3", max_audio_seconds=NO_CAP) as server:
        with contextlib.closing(post(server.port, speech(TEXT, speed=0.25))) as stalled:
            assert read_at_least(stalled, 1024).startswith(b"HTTP/1.1 200 OK")
            # Made (a 62 MB WAV) but not sent: before the fix the app had handed the
            # whole body to the connection, released the request, and the bytes stayed
            # in memory for as long as the client kept the socket open.
            assert server.readyz()["in_flight"] == 1
            wait_for(
                lambda: server.metric("tts_requests_total", status="cancelled") == 1,
                20,
                "the unread response dropped",
            )
            assert server.readyz()["in_flight"] == 0
            wait_for(lambda: server.metric("tts_connections") == 1, 10, ONLY_SCRAPES)
        assert server.metric("tts_requests_total", status="ok") == 0
        assert "client read nothing for 3 s (TTS_WRITE_TIMEOUT_S)" in server.log_text()


def test_one_request_makes_at_most_tts_max_audio_seconds(
    small_model_dir: Path, tmp_path: Path
) -> None:
    with serve(small_model_dir, tmp_path, max_audio_seconds="30") as server:
        # A stream ends at the last sentence that fits under the cap.
        body = speech(TEXT, stream=True, response_format="pcm")
        with httpx.stream("POST", f"{server.base}/v1/audio/speech", json=body, timeout=60) as r:
            assert r.status_code == 200
            streamed = b"".join(r.iter_bytes())  # ends cleanly, short
        assert 20 < len(streamed) / 2 / SAMPLE_RATE <= 30
        made = server.metric("tts_audio_seconds_total")
        assert made <= 30 + 10  # plus the sentence (about 3 s) that went over: made, not sent
        assert server.metric("tts_requests_total", status="bad_request") == 1
        assert "stream ended before 30 s of audio" in server.log_text()

        # A whole response: 400 as soon as its audio passes the cap, the rest dropped.
        whole = httpx.post(f"{server.base}/v1/audio/speech", json=speech(TEXT), timeout=60)
        assert whole.status_code == 400
        error = whole.json()["error"]
        assert error["code"] == "audio_too_long" and error["param"] == "input"
        assert "more than 30 s of audio" in error["message"]
        assert "TTS_MAX_AUDIO_SECONDS" in error["message"]
        # About 380 s if it had all been made; the cap, plus at most the batches that
        # were already running or done, was.
        assert server.metric("tts_audio_seconds_total") - made < 120
        assert server.metric("tts_requests_total", status="bad_request") == 2
        assert server.readyz()["queue_depth"] == 0
