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


def post(
    port: int, body: dict[str, Any], *, receive_buffer: int | None = RECEIVE_BUFFER_BYTES
) -> socket.socket:
    """Send one speech request and return the socket, having read nothing. The receive
    buffer is small unless `receive_buffer` is None (the kernel's own, which grows)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
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


@dataclass
class PacedResponse:
    """What a paced reader took: the head, the body de-chunked, and whether the body
    ended with its final (zero-size) chunk, as a whole chunked response does."""

    head: bytes
    body: bytes
    complete: bool
    seconds: float
    taken: int  # bytes taken from the socket: head, body and chunk framing


class PacedReader:
    """Reads a socket no faster than `bytes_per_s`, as a player that plays a stream as it
    arrives does: a small receive buffer, small reads, steady pace."""

    def __init__(self, sock: socket.socket, bytes_per_s: float) -> None:
        self._sock = sock
        self._rate = bytes_per_s
        self._started = time.monotonic()
        self.taken = 0  # bytes taken from the socket so far
        self._buffer = b""
        self.stop_after: int | None = None  # bytes; then the reader stops reading

    def _fill(self) -> bool:
        """Takes what the pace allows (at most 4 KB a read); False at end of stream."""
        while True:
            if self.stop_after is not None and self.taken >= self.stop_after:
                raise _Stopped
            allowed = int(self._rate * (time.monotonic() - self._started)) - self.taken
            if allowed > 0:
                break
            time.sleep(min(0.05, -allowed / self._rate + 0.001))
        try:
            chunk = self._sock.recv(min(allowed, 4096))
        except (ConnectionResetError, TimeoutError):
            return False
        if not chunk:
            return False
        self.taken += len(chunk)
        self._buffer += chunk
        return True

    def read_until(self, marker: bytes) -> bytes | None:
        while marker not in self._buffer:
            if not self._fill():
                return None
        data, self._buffer = self._buffer.split(marker, 1)
        return data

    def read_exactly(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            if not self._fill():
                return None
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


class _Stopped(Exception):
    pass


def read_chunked_paced(
    sock: socket.socket,
    bytes_per_s: float,
    *,
    stop_after: int | None = None,
    reader: PacedReader | None = None,
) -> PacedResponse:
    """The whole chunked response on `sock`, read at `bytes_per_s` (by `reader`, whose
    `taken` others may watch, when given); with `stop_after`, the reader stops taking
    bytes once it has taken that many, and returns at once, incomplete."""
    started = time.monotonic()
    reader = reader or PacedReader(sock, bytes_per_s)
    reader.stop_after = stop_after
    head, body = b"", bytearray()
    try:
        head = reader.read_until(b"\r\n\r\n") or b""
        assert b"transfer-encoding: chunked" in head.lower(), head
        while True:
            size_line = reader.read_until(b"\r\n")
            if size_line is None:
                break
            size = int(size_line.split(b";")[0], 16)
            data = reader.read_exactly(size + 2)
            if data is None or not data.endswith(b"\r\n"):
                break
            if size == 0:
                return PacedResponse(
                    head, bytes(body), True, time.monotonic() - started, reader.taken
                )
            body += data[:-2]
    except _Stopped:
        pass
    return PacedResponse(head, bytes(body), False, time.monotonic() - started, reader.taken)
