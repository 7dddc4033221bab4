"""Idle and slow clients against a real `tts-runtime serve` process: the connection
limit keeps the probes answering under a low open-file limit, request heads and
bodies have deadlines, and a half-sent body does not hold a SIGTERM drain."""

from __future__ import annotations

import contextlib
import json
import select
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from raw_client import Served, serve, wait_for
from servers import free_port, runtime_env, start_runtime

pytestmark = pytest.mark.slow

SPEECH = {"model": "tts-1", "input": "Hello there.", "voice": "default"}
# Documented: a socket without a request head for a second makes room for any request
# (tts_runtime.connections.EVICT_NEW_AFTER_S; not imported, so that this module also
# runs against a runtime without the limits and shows what goes wrong there).
IDLE_EVICTABLE_AFTER_S = 1.0


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_until_closed(sock: socket.socket, timeout_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; (data, seconds). Fails the test if the
    connection is still open after `timeout_s`."""
    started = time.monotonic()
    data = b""
    sock.settimeout(timeout_s)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            raise AssertionError(
                f"connection still open after {timeout_s} s; got {data[:200]!r}"
            ) from None
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length body; the connection stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def closed_by_server(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionError:
        return True


def half_body(port: int, sent: int = 20, declared: int = 200) -> socket.socket:
    """A speech request whose body stops after `sent` of `declared` bytes."""
    sock = connect(port)
    sock.sendall(
        b"POST /v1/audio/speech HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {declared}\r\n\r\n".encode()
        + (b'{"model": "tts-1", "voice": "default", "input": "' + b"x" * declared)[:sent]
    )
    return sock


def wait_in_flight(base: str, count: int) -> None:
    wait_for(
        lambda: httpx.get(f"{base}/readyz", timeout=5).json()["in_flight"] == count,
        10,
        f"{count} request(s) in flight",
    )


def fill_with_half_bodies(server: Served, count: int) -> list[socket.socket]:
    """`count` requests in flight, each waiting for the rest of its body. One that came
    in while a connection the client had just closed still counted is refused (503):
    it is sent again."""
    busy: list[socket.socket] = []
    deadline = time.monotonic() + 10
    while len(busy) < count:
        assert time.monotonic() < deadline, f"never {count} requests in flight"
        sock = half_body(server.port)
        if select.select([sock], [], [], 0.2)[0]:  # answered at once: refused
            sock.close()
        else:
            busy.append(sock)
    wait_in_flight(server.base, count)
    return busy


def timed_get(url: str) -> tuple[int, float]:
    started = time.monotonic()
    try:
        status = httpx.get(url, timeout=3).status_code
    except httpx.TimeoutException:
        raise AssertionError(f"{url} did not answer within 3 s") from None
    return status, time.monotonic() - started


def test_idle_sockets_under_a_low_file_limit_leave_the_probes_answering(
    small_model_dir: Path, tmp_path: Path
) -> None:
    """The issue's reproduction: 250 idle sockets under a 256-file limit."""
    with serve(
        small_model_dir, tmp_path, open_files=256, header_timeout_s="120"
    ) as server:  # a long header deadline: the limit, not the deadline, must do it
        lines_before = len(server.log_lines())
        idle = [connect(server.port) for _ in range(250)]
        opened = time.monotonic()
        time.sleep(0.5)

        latencies = []
        for _ in range(10):
            for path in ("/healthz", "/readyz"):
                status, seconds = timed_get(server.base + path)
                assert status == 200, path
                latencies.append(seconds)
        assert max(latencies) < 1.0, f"probes slow under idle sockets: {max(latencies):.3f} s"
        fds = len(list(Path(f"/proc/{server.pid}/fd").iterdir()))
        assert fds < 200, f"the server holds {fds} files under a 256-file limit"
        # Idle for a second, a socket makes room for any request, not only for probes.
        time.sleep(max(0.0, opened + IDLE_EVICTABLE_AFTER_S + 0.2 - time.monotonic()))
        speech = httpx.post(f"{server.base}/v1/audio/speech", json=SPEECH, timeout=30)
        assert speech.status_code == 200

        closed = sum(closed_by_server(sock) for sock in idle)
        assert closed >= 250 - (112 + 16), f"only {closed} idle sockets were closed"
        assert server.metric("tts_connections") <= 112 + 16
        assert server.metric("tts_connections_max") == 112  # fitted under the 256 files
        shed = server.metric("tts_connections_closed_total", reason="evicted") + server.metric(
            "tts_connections_closed_total", reason="over_limit"
        )
        assert shed >= 250 - (112 + 16)
        time.sleep(1)
        flood = server.log_lines()[lines_before:]
        assert len(flood) < 40, "repeated lines not rate-limited:\n" + "\n".join(flood[:50])

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        for sock in idle:
            sock.close()
    log = "\n".join(server.log_lines())
    assert "does not fit under the open-file limit of 256" in log
    assert "suppressed" in log and "similar lines" in log  # the flood summed up at exit


def test_a_request_head_that_does_not_arrive_in_time_is_closed(
    small_model_dir: Path, tmp_path: Path
) -> None:
    with serve(small_model_dir, tmp_path, header_timeout_s="1") as server:
        partial = connect(server.port)
        partial.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: t\r\nContent-Ty")
        silent = connect(server.port)
        trickle = connect(server.port)
        head = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"

        def send_slowly() -> None:  # a byte at a time: the deadline is for the whole head
            with contextlib.suppress(OSError):
                for byte in head[:-2]:
                    trickle.send(bytes([byte]))
                    time.sleep(0.1)

        threading.Thread(target=send_slowly, daemon=True).start()
        kept_alive = connect(server.port)
        kept_alive.sendall(head)
        assert read_response(kept_alive).startswith(b"HTTP/1.1 200")
        kept_alive.sendall(b"GET /readyz HTTP/1.1\r\n")  # the next head, half of it

        data, seconds = read_until_closed(partial, timeout_s=6)
        assert data.startswith(b"HTTP/1.1 408"), data
        assert b"x-tts-pod:" in data.lower()
        error = json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["code"] == "request_timeout"
        assert "TTS_HEADER_TIMEOUT_S" in error["message"]
        assert 0.8 < seconds < 3
        data, seconds = read_until_closed(silent, timeout_s=6)
        assert data == b""  # never sent anything: closed without a word, as keep-alive is
        data, _ = read_until_closed(trickle, timeout_s=6)
        assert data.startswith(b"HTTP/1.1 408")
        data, _ = read_until_closed(kept_alive, timeout_s=6)
        assert data.startswith(b"HTTP/1.1 408")

        assert server.metric("tts_connections_closed_total", reason="header_timeout") == 4
        assert httpx.get(f"{server.base}/healthz", timeout=5).status_code == 200
    assert "request head incomplete after 1 s" in "\n".join(server.log_lines())


def test_a_request_body_that_does_not_arrive_in_time_gets_408(
    small_model_dir: Path, tmp_path: Path
) -> None:
    with serve(small_model_dir, tmp_path, body_timeout_s="1") as server:
        sock = half_body(server.port)
        data, seconds = read_until_closed(sock, timeout_s=6)
        assert data.startswith(b"HTTP/1.1 408"), data
        error = json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]
        assert "TTS_BODY_TIMEOUT_S" in error["message"]
        assert 0.8 < seconds < 3
        assert data.count(b"HTTP/1.1") == 1  # the app wrote nothing after the 408

        wait_in_flight(server.base, 0)
        assert server.metric("tts_connections_closed_total", reason="body_timeout") == 1
        assert server.metric("tts_requests_total", status="bad_request") == 1
        assert httpx.post(f"{server.base}/v1/audio/speech", json=SPEECH, timeout=30).is_success
    assert "request body incomplete after 1 s" in "\n".join(server.log_lines())


def test_a_half_sent_body_does_not_hold_up_sigterm(small_model_dir: Path, tmp_path: Path) -> None:
    with serve(small_model_dir, tmp_path, body_timeout_s="2", drain_timeout_s="25") as server:
        sock = half_body(server.port)
        wait_in_flight(server.base, 1)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0
        seconds = time.monotonic() - started
        sock.close()
    assert seconds < 2 + 3, f"exit took {seconds:.1f} s with a 2 s body deadline"
    assert "drained: every accepted request finished" in "\n".join(server.log_lines())


def test_probes_get_through_when_every_connection_is_busy(
    small_model_dir: Path, tmp_path: Path
) -> None:
    with serve(small_model_dir, tmp_path, max_connections="4", body_timeout_s="60") as server:
        busy = fill_with_half_bodies(server, 4)

        for path in ("/healthz", "/readyz", "/metrics"):
            status, seconds = timed_get(server.base + path)
            assert status == 200 and seconds < 1.0, path
        refused = httpx.post(f"{server.base}/v1/audio/speech", json=SPEECH, timeout=5)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "connection_limit"
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["x-tts-pod"]
        assert refused.headers["connection"] == "close"

        idle = [connect(server.port) for _ in range(40)]  # more than the probe reserve
        time.sleep(0.3)
        for path in ("/healthz", "/readyz"):
            status, seconds = timed_get(server.base + path)
            assert status == 200 and seconds < 1.0, path
        assert server.metric("tts_connections") <= 4 + 16
        assert server.metric("tts_connections_closed_total", reason="probes_only") == 1
        assert all(not closed_by_server(sock) for sock in busy)  # requests are never evicted
        for sock in busy + idle:
            sock.close()


def test_an_open_file_limit_too_low_for_any_connection_stops_the_server(
    small_model_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    process = start_runtime(runtime_env(small_model_dir, free_port()), log, open_files=100)
    assert process.wait(timeout=60) == 2
    assert "the open-file limit (RLIMIT_NOFILE) is 100" in log.read_text()


def test_a_port_in_use_still_exits_3(small_model_dir: Path, tmp_path: Path) -> None:
    # The runtime binds the listening socket itself (to guard its accept), as uvicorn did.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        log = tmp_path / "server.log"
        port = taken.getsockname()[1]
        process = start_runtime(runtime_env(small_model_dir, port), log)
        assert process.wait(timeout=60) == 3
    assert "address already in use" in log.read_text().lower()
