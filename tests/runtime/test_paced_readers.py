"""Listeners who play a stream as it arrives, against a real `tts-runtime serve` process
(issue 21, item 2). Before the fix each write had TTS_WRITE_TIMEOUT_S on its own, and a
write waits until the kernel's send buffer (it grows to megabytes) has room: a client
reading a pcm stream at exactly real time was cut off after about 124 s with the default
30 s, although it read steadily all along. Now a client is dropped only when it takes no
byte for TTS_WRITE_TIMEOUT_S.

A write blocks only once the response outgrows what the kernel buffers (here about 4 MB:
the send buffer grows to net.ipv4.tcp_wmem's 4 MiB at once on loopback, and a blocked
socket is writable again only once a third of it has drained, 1.4 MB, 30 s at real time).
So each response here is 120 s of audio (5.3 MB), and the write timeout 10 s: the old code
cut both listeners off at their first blocked write. (Not less: the server sees a reader's
progress as TCP acknowledgements, which a slow reader's kernel sends only as its receive
window reopens, in steps of up to 64 KB on loopback, some 3-6 s apart at half real time.)
The two listen at once, so the test takes as long as the slower one, some four minutes.
TTS_PACED_AUDIO_S=600 (with
TTS_PACED_WRITE_TIMEOUT_S=30) runs the issue's 10-minute text at the default timeout."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import pytest
from raw_client import PacedResponse, post, read_chunked_paced, serve, speech, wait_for
from tts_runtime.testmodel import SAMPLE_RATE

pytestmark = pytest.mark.slow

REAL_TIME = SAMPLE_RATE * 2  # bytes per second of 16-bit mono pcm
AUDIO_S = float(os.environ.get("TTS_PACED_AUDIO_S", "120"))
WRITE_TIMEOUT_S = os.environ.get("TTS_PACED_WRITE_TIMEOUT_S", "10")
# The small test voice makes about 0.12 s of audio per character of this text.
SENTENCE = "This sentence is read by a listener as it plays."


def text_of(audio_s: float) -> str:
    sentences = max(1, round(audio_s / (0.12 * (len(SENTENCE) + 1))))
    return " ".join([SENTENCE] * sentences)


def test_listeners_at_real_time_and_half_of_it_get_every_byte(
    small_model_dir: Path, tmp_path: Path
) -> None:
    body = speech(text_of(AUDIO_S), stream=True, response_format="pcm")
    with serve(
        small_model_dir,
        tmp_path,
        write_timeout_s=WRITE_TIMEOUT_S,
        max_audio_seconds="86400",
        max_input_chars="100000",  # a 10-minute text is some 5,000 characters
    ) as server:
        results: dict[str, PacedResponse | BaseException] = {}

        def listen(name: str, rate: float) -> None:
            try:
                # The kernel's own receive buffer, as a player has: it grows, the server's
                # send buffer grows with it, and one write then waits for megabytes.
                with contextlib.closing(post(server.port, body, receive_buffer=None)) as sock:
                    sock.settimeout(float(WRITE_TIMEOUT_S) * 4)
                    results[name] = read_chunked_paced(sock, rate)
            except BaseException as exc:  # recorded: checked below
                results[name] = exc

        listeners = [
            threading.Thread(target=listen, args=("real time", REAL_TIME)),
            threading.Thread(target=listen, args=("half real time", REAL_TIME / 2)),
        ]
        for thread in listeners:
            thread.start()
        for thread in listeners:
            thread.join(timeout=AUDIO_S * 3 + 60)
        made_s = server.metric("tts_audio_seconds_total")
        assert server.metric("tts_requests_total", status="cancelled") == 0
        assert server.metric("tts_requests_total", status="ok") == 2
    received = 0
    for name, result in results.items():
        assert isinstance(result, PacedResponse), (name, result)
        assert result.complete, f"{name}: cut off after {len(result.body)} bytes"
        assert result.head.startswith(b"HTTP/1.1 200 OK")
        # the pace really was kept: at most a read's worth ahead of it
        assert (
            len(result.body) / result.seconds
            <= (REAL_TIME if name == "real time" else REAL_TIME / 2) * 1.05
        )
        received += len(result.body)
        print(f"{name}: {len(result.body)} bytes in {result.seconds:.1f} s")
    assert len(results) == 2
    # every byte the server made reached a listener
    assert received / 2 / SAMPLE_RATE == pytest.approx(made_s, rel=0.001)
    assert made_s >= 2 * AUDIO_S * 0.8


def test_a_listener_who_stops_reading_is_dropped_after_the_write_timeout(
    small_model_dir: Path, tmp_path: Path
) -> None:
    """Judged by progress, a client that takes nothing still loses its request: within
    TTS_WRITE_TIMEOUT_S of its last byte, plus the time the socket buffers take to fill
    and one look at its progress."""
    timeout_s = 3.0
    body = speech(text_of(120), stream=True, response_format="pcm")
    with serve(
        small_model_dir, tmp_path, write_timeout_s=str(timeout_s), max_audio_seconds="86400"
    ) as server:
        with contextlib.closing(post(server.port, body)) as sock:
            stopped = read_chunked_paced(sock, REAL_TIME, stop_after=100_000)
            assert not stopped.complete
            stopped_at = time.monotonic()
            wait_for(
                lambda: server.metric("tts_requests_total", status="cancelled") == 1,
                timeout_s + 10,
                "the stopped listener dropped",
            )
            dropped_after = time.monotonic() - stopped_at
        assert server.readyz()["in_flight"] == 0
        assert "client read nothing for 3 s (TTS_WRITE_TIMEOUT_S)" in server.log_text()
    print(f"dropped {dropped_after:.1f} s after the listener stopped reading")
