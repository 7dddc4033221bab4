"""ConnectionGuard's policy, the open-file limit, and the listener when files run out.
(Against a real server: test_connection_limits.py.)"""

from __future__ import annotations

import logging
import resource
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry
from tts_runtime.connections import (
    EVICT_NEW_AFTER_S,
    FD_HEADROOM,
    PROBE_RESERVE,
    ConnectionGuard,
    ConnectionLimitError,
    GuardedListener,
    fit_connection_limit,
    raise_open_file_limit,
)
from tts_runtime.errors import SettingsError
from tts_runtime.http_protocol import kernel_unsent_bytes
from tts_runtime.metrics import ConnectionMetrics
from tts_runtime.settings import load_settings


class Conn:
    def __init__(self, guard: ConnectionGuard, fd: int) -> None:
        self.guard = guard
        self.evicted = False
        self.mode = guard.register(self, fd)

    def evict(self) -> None:
        self.evicted = True

    def unsent_bytes(self) -> int:
        return 0


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, name
    return float(value)


def accept(guard: ConnectionGuard, fd: int) -> Conn | None:
    """What the listener and the protocol do for one new connection."""
    if not guard.admit(fd, "10.0.0.1"):
        return None
    return Conn(guard, fd)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(registry: CollectorRegistry, clock: Clock) -> ConnectionGuard:
    return ConnectionGuard(3, ConnectionMetrics(registry, 3), clock=clock)


def test_below_the_limit_every_connection_is_served(
    guard: ConnectionGuard, registry: CollectorRegistry
) -> None:
    conns = [accept(guard, fd) for fd in range(3)]
    assert all(c is not None and c.mode == "serve" for c in conns)
    assert guard.sockets == 3
    assert sample(registry, "tts_connections") == 3
    assert sample(registry, "tts_connections_max") == 3


def test_at_the_limit_the_new_connection_waiting_longest_makes_room(
    guard: ConnectionGuard, registry: CollectorRegistry, clock: Clock
) -> None:
    a, b, c = (accept(guard, fd) for fd in range(3))
    assert a and b and c
    guard.update(b, "new")  # b waits first, then a; c has a request in progress
    guard.update(a, "new")
    guard.update(c, "busy")
    clock.now += EVICT_NEW_AFTER_S
    guard.update(b, "new")  # still waiting: keeps its place in line
    d = accept(guard, 3)
    assert d is not None and d.mode == "serve"
    assert b.evicted and not a.evicted and not c.evicted
    assert sample(registry, "tts_connections_closed_total", reason="evicted") == 1

    guard.update(a, "busy")  # its request head came: no longer evictable
    guard.closed(b)
    e = accept(guard, 4)
    assert e is not None and e.mode == "probes"  # nobody waits: the probe reserve
    assert not a.evicted


def test_a_connection_just_opened_is_not_closed_to_make_room(
    guard: ConnectionGuard, clock: Clock
) -> None:
    # A client slowed down by a busy event loop: its head is on its way.
    conns = [accept(guard, fd) for fd in range(3)]
    for conn in conns:
        assert conn is not None
        guard.update(conn, "new")
    clock.now += EVICT_NEW_AFTER_S / 2
    late = accept(guard, 3)
    assert late is not None and late.mode == "probes"  # 503 for speech, and no one reset
    assert not any(c is not None and c.evicted for c in conns)
    clock.now += EVICT_NEW_AFTER_S / 2
    later = accept(guard, 4)
    assert later is not None and later.mode == "serve"
    assert [c is not None and c.evicted for c in conns] == [True, False, False]


def test_keep_alive_connections_are_closed_only_when_the_reserve_is_full(
    guard: ConnectionGuard, registry: CollectorRegistry
) -> None:
    served = [accept(guard, fd) for fd in range(3)]
    for conn in served:
        assert conn is not None
        guard.update(conn, "idle")  # answered, kept alive: may send again any moment
    reserve = [accept(guard, fd) for fd in range(3, 3 + PROBE_RESERVE)]
    assert all(c is not None and c.mode == "probes" for c in reserve)
    assert not any(c is not None and c.evicted for c in served)

    last = accept(guard, 99)  # rather than refuse it: the keep-alive idle longest goes
    assert last is not None and last.mode == "probes"
    assert [c is not None and c.evicted for c in served] == [True, False, False]


def test_a_connection_that_waits_again_goes_to_the_back_of_the_line(
    guard: ConnectionGuard,
) -> None:
    a, b, c = (accept(guard, fd) for fd in range(3))
    assert a and b and c
    for conn in (a, b, c):
        guard.update(conn, "idle")
    guard.update(a, "busy")  # a request on a, answered: a waits again, newest in line
    guard.update(a, "idle")
    for fd in range(3, 3 + PROBE_RESERVE):
        assert accept(guard, fd) is not None
    assert accept(guard, 99) is not None
    assert b.evicted and not a.evicted and not c.evicted


def test_with_every_connection_busy_only_the_probe_reserve_is_left(
    guard: ConnectionGuard, registry: CollectorRegistry
) -> None:
    busy = [accept(guard, fd) for fd in range(3)]
    reserve = [accept(guard, fd) for fd in range(3, 3 + PROBE_RESERVE)]
    assert all(c is not None and c.mode == "probes" for c in reserve)
    assert accept(guard, 99) is None  # beyond cap + reserve: closed at once
    assert sample(registry, "tts_connections_closed_total", reason="over_limit") == 1
    assert guard.sockets == 3 + PROBE_RESERVE
    assert not any(c is not None and c.evicted for c in busy)

    first = reserve[0]
    assert first is not None
    guard.closed(first)  # a probe finished: room for one more
    assert accept(guard, 100) is not None


def test_full_with_an_eviction_under_way_the_listener_waits_a_moment(
    guard: ConnectionGuard,
) -> None:
    conns = [accept(guard, fd) for fd in range(3 + PROBE_RESERVE)]
    idle = conns[0]
    assert idle is not None
    guard.update(idle, "new")
    assert not guard.must_wait()
    newcomer = accept(guard, 50)  # over by one socket until the evicted one has closed
    assert newcomer is not None and idle.evicted
    assert guard.must_wait()
    guard.closed(idle)  # the next loop iteration: its socket is closed
    assert not guard.must_wait()
    assert guard.sockets == 3 + PROBE_RESERVE


def test_an_accepted_connection_counts_before_its_protocol_exists(
    guard: ConnectionGuard,
) -> None:
    for fd in range(3):
        assert guard.admit(fd, "10.0.0.1")  # a burst: accepted, no protocol yet
    assert guard.sockets == 3
    assert guard.admit(3, "10.0.0.1")
    assert Conn(guard, 3).mode == "probes"  # decided at accept, applied by the protocol
    assert Conn(guard, 0).mode == "serve"
    assert guard.sockets == 4


def test_the_limit_is_fitted_under_the_open_file_limit(caplog: pytest.LogCaptureFixture) -> None:
    assert fit_connection_limit(1024, 1_048_576) == 1024
    with caplog.at_level(logging.WARNING, "tts_runtime.connections"):
        assert fit_connection_limit(1024, 256) == 256 - FD_HEADROOM - PROBE_RESERVE
    assert "TTS_MAX_CONNECTIONS=1024 does not fit under the open-file limit of 256" in caplog.text
    with pytest.raises(ConnectionLimitError, match="RLIMIT_NOFILE"):
        fit_connection_limit(1024, FD_HEADROOM + PROBE_RESERVE)


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 524288))
    monkeypatch.setattr(resource, "setrlimit", lambda _, lim: calls.append(lim))
    assert raise_open_file_limit() == 524288
    assert calls == [(524288, 524288)]


def test_an_open_file_limit_that_cannot_be_raised_is_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(_: int, __: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    with caplog.at_level(logging.WARNING, "tts_runtime.connections"):
        assert raise_open_file_limit() == 1024
    assert "cannot raise the open-file limit from 1024 to 4096" in caplog.text


# A listener whose process has run out of files, on asyncio's own loop; prints how many
# errors asyncio logged in 2.5 s.
OUT_OF_FILES = textwrap.dedent(
    """
    import asyncio, logging, resource, socket, sys
    from prometheus_client import CollectorRegistry
    from tts_runtime.connections import ConnectionGuard, GuardedListener
    from tts_runtime.metrics import ConnectionMetrics

    errors = []
    class Count(logging.Handler):
        def emit(self, record):
            errors.append(record)
    logging.getLogger("asyncio").addHandler(Count())
    logging.getLogger("asyncio").propagate = False

    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        if sys.argv[1] == "guarded":
            guard = ConnectionGuard(1000, ConnectionMetrics(CollectorRegistry(), 1000))
            sock = GuardedListener(sock, guard)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, sock=sock, backlog=2048)
        clients = [socket.create_connection(sock.getsockname()) for _ in range(3)]
        hogs = []
        try:
            while True:
                hogs.append(open("/dev/null"))
        except OSError:
            pass
        await asyncio.sleep(2.5)
        for hog in hogs:
            hog.close()
        print(len(errors))
        server.close()

    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
    asyncio.run(main())
    """
)


def errors_when_out_of_files(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", OUT_OF_FILES, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout.split()[-1])


def test_a_listener_out_of_files_logs_once_a_second_not_once_per_queued_accept() -> None:
    # Side by side: asyncio's plain listener logs its error up to the backlog times per
    # retry (2048 here); the guarded one ends the round after the first.
    assert errors_when_out_of_files("plain") > 1000
    assert errors_when_out_of_files("guarded") <= 4


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("TTS_MAX_CONNECTIONS", "0", "greater than or equal to 1"),
        ("TTS_MAX_CONNECTIONS", "many", "valid integer"),
        ("TTS_HEADER_TIMEOUT_S", "0", "greater than 0"),
        ("TTS_BODY_TIMEOUT_S", "-1", "greater than 0"),
        ("TTS_BODY_TIMEOUT_S", "86400", "less than or equal to 3600"),
    ],
)
def test_bad_connection_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv("TTS_MODEL_PATH", "/models")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert f"{variable}: " in str(caught.value) and problem in str(caught.value)
    assert f"(got '{value}')" in str(caught.value)


def test_connection_settings_defaults_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_MODEL_PATH", "/models")
    for key in ("TTS_MAX_CONNECTIONS", "TTS_HEADER_TIMEOUT_S", "TTS_BODY_TIMEOUT_S"):
        monkeypatch.delenv(key, raising=False)
    settings = load_settings()
    assert (settings.max_connections, settings.header_timeout_s) == (1024, 10.0)
    assert settings.body_timeout_s == 10.0
    monkeypatch.setenv("TTS_MAX_CONNECTIONS", "64")
    monkeypatch.setenv("TTS_HEADER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("TTS_BODY_TIMEOUT_S", "30")
    settings = load_settings()
    assert (settings.max_connections, settings.header_timeout_s, settings.body_timeout_s) == (
        64,
        2.5,
        30.0,
    )


def test_accepted_connections_have_nagle_off() -> None:
    """uvicorn's listening socket has protocol 0, so asyncio does not turn Nagle off on
    what it accepts; with Nagle on, a response body written after its head waited for the
    client's delayed ACK, 40 ms on most responses."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    metrics = ConnectionMetrics(CollectorRegistry(), 8)
    guarded = GuardedListener(listener, ConnectionGuard(8, metrics))
    with socket.create_connection(guarded.getsockname()), guarded:
        conn, _ = guarded.accept()
        with conn:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


class Unsent(Conn):
    def __init__(self, guard: ConnectionGuard, fd: int, unsent: int) -> None:
        super().__init__(guard, fd)
        self.unsent = unsent

    def unsent_bytes(self) -> int:
        return self.unsent


def test_the_guard_sums_what_clients_have_not_taken_over_open_connections() -> None:
    guard = ConnectionGuard(8, ConnectionMetrics(CollectorRegistry(), 8))
    first, second = Unsent(guard, 3, 1000), Unsent(guard, 4, 24)
    assert guard.unsent_bytes() == 1024
    guard.closed(first)
    assert guard.unsent_bytes() == 24
    second.unsent = 0
    assert guard.unsent_bytes() == 0


def test_the_kernel_send_queue_counts_bytes_until_the_peer_reads_them() -> None:
    """What a drain waits on, and what says a slow reader is still reading: SIOCOUTQ
    counts bytes written but not yet acknowledged by the peer."""
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()) as client:
        server, _ = listener.accept()
        with server:
            server.setblocking(False)
            written = 0
            try:
                while written < 8 << 20:  # until the client's window and our buffer are full
                    written += server.send(b"x" * 65536)
            except BlockingIOError:
                pass
            queued = kernel_unsent_bytes(server.fileno())
            assert 0 < queued <= written
            client.setblocking(False)
            taken = 0
            deadline = time.monotonic() + 10
            while taken < written:
                assert time.monotonic() < deadline, f"took {taken} of {written}"
                try:
                    taken += len(client.recv(1 << 20))
                except BlockingIOError:
                    time.sleep(0.001)
            wait_until(lambda: kernel_unsent_bytes(server.fileno()) == 0)
    assert kernel_unsent_bytes(-1) == 0


def wait_until(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)
