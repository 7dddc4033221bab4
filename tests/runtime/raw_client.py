"""A real `tts-runtime serve` process, and raw-socket clients that misbehave the way
real ones do: stop reading halfway through a response, or hang up before it is ready.
Not a test module."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from servers import free_port, metric_value, runtime_env, start_runtime, wait_ready

# A client that stopped reading: the server can fill only socket buffers, and this keeps
# the client's side of them small.
RECEIVE_BUFFER_BYTES = 4096


@dataclass
class Served:
    base: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.base, name, **labels)

    def readyz(self) -> dict[str, Any]:
        details: dict[str, Any] = httpx.get(f"{self.base}/readyz", timeout=5).json()
        return details

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_lines(self) -> list[str]:
        return self.log_text().splitlines()


@contextlib.contextmanager
def serve(
    model_dir: Path, tmp_path: Path, *, open_files: int | None = None, **settings: str
) -> Iterator[Served]:
    """`tts-runtime serve` on loopback with TTS_<NAME> = value for each setting (and at most
    `open_files` open files); killed afterwards unless the test already stopped it."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    process = start_runtime(runtime_env(model_dir, port, **settings), log, open_files=open_files)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process=process)
        yield Served(base, port, process, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def speech(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": "tts-1", "input": text, "voice": "default", **fields}


def post(port: int, body: dict[str, Any]) -> socket.socket:
    """Send one speech request and return the socket, having read nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    payload = json.dumps(body).encode()
    head = (
        "POST /v1/audio/speech HTTP/1.1\r\nHost: tts\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


def read_at_least(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"the server closed the connection after {len(data)} bytes"
        data += chunk
    return data


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.02)


def steady(read: Callable[[], float], *, interval_s: float = 1.0, timeout_s: float = 30) -> float:
    """`read()` once it has stopped changing (the same twice, `interval_s` apart)."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while True:
        time.sleep(interval_s)
        latest = read()
        if latest == value:
            return value
        assert time.monotonic() < deadline, f"still changing after {timeout_s} s: {latest}"
        value = latest
