"""A real redis-server on loopback for the cache tests (Debian's redis-server package,
installed by hack/host-packages.sh). Not a test module."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from servers import free_port
from tts_runtime.cache_bench import redis_server_command, wait_for_redis

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """One redis-server process: no persistence, loopback only, DEBUG allowed from
    loopback (a test makes it slow with DEBUG SLEEP). Can be stopped and started again on
    the same port."""

    def __init__(self, workdir: Path) -> None:
        if REDIS_SERVER is None:
            pytest.skip(
                "redis-server is not installed (Debian package redis-server; "
                "`make host-packages` installs it)"
            )
        self.binary = REDIS_SERVER
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = redis_server_command(self.binary, self.port, self.workdir)
        command += ["--enable-debug-command", "local"]
        with (self.workdir / "redis.log").open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_redis(self.port, self.process)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}: {self.log()}") from None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def log(self) -> str:
        return (self.workdir / "redis.log").read_text(errors="replace")[-2000:]

    @contextlib.contextmanager
    def asleep(self, seconds: float) -> Iterator[None]:
        """Redis busy for `seconds` (DEBUG SLEEP blocks the whole server), answering
        nothing meanwhile; the block waits until it answers again."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=seconds + 5) as sock:
            sock.sendall(f"DEBUG SLEEP {seconds}\r\n".encode())
            time.sleep(0.05)  # the server has read the command
            yield
            assert sock.recv(64).startswith(b"+OK")


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
