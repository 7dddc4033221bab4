"""How many client connections the runtime holds open, and which it gives up first.

uvicorn accepts every connection it is offered and waits for a request head for
ever, so a few hundred idle sockets use up the process's file descriptors: accept
then fails, the kubelet's probes wait in the listen queue until they time out,
and asyncio logs each failed accept. `GuardedListener` asks a `ConnectionGuard`
before it hands an accepted connection to asyncio:

1. below TTS_MAX_CONNECTIONS open connections: served normally;
2. at the cap: the connection that has waited longest for its first request head,
   if that is over EVICT_NEW_AFTER_S (a socket that never sent anything, a head
   trickling in), is closed to make room. A client sends its head as soon as it
   connects, so this spares clients merely slowed by a busy event loop;
3. otherwise up to PROBE_RESERVE more are let in, which may only call PROBE_PATHS
   (anything else gets 503);
4. with the reserve full too, the connection waiting longest for its first head, of
   any age, else the keep-alive connection idle longest, is closed to let in one
   more on the same terms; with neither, the new one is closed as soon as accepted.

Probes send their request as soon as they connect, so they never wait long and idle
sockets cannot crowd them out. Open sockets never exceed cap + PROBE_RESERVE (+1 for
an instant), which `fit_connection_limit` keeps FD_HEADROOM below the open-file limit.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal, Protocol

from tts_runtime.metrics import ConnectionMetrics

log = logging.getLogger("tts_runtime.connections")

# What the cluster's own machinery calls: liveness, readiness, Prometheus.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Connections beyond the cap kept for PROBE_PATHS: kubelet (liveness, readiness,
# startup) and a scraper or two need a handful at a time.
PROBE_RESERVE = 16
# File descriptors that are not client sockets: the model, logs, the listener, the
# CUDA driver's handles, the socket accepted only to be refused.
FD_HEADROOM = 128
# A connection without a whole request head this long after it opened is taken to be
# idle rather than slowed down, and may be closed to make room below the reserve.
EVICT_NEW_AFTER_S = 1.0

Mode = Literal["serve", "probes"]  # probes: let in on the reserve, PROBE_PATHS only
# What a connection waits for: its first request head (new), its next one on a
# keep-alive connection (idle), or nothing (busy: a request in progress, or closing).
State = Literal["new", "idle", "busy"]


class Guarded(Protocol):
    """What the guard needs of a connection: a way to close it at once, and how many
    response bytes its client has not taken yet."""

    def evict(self) -> None: ...

    def unsent_bytes(self) -> int: ...


class ConnectionLimitError(Exception):
    """The open-file limit leaves no room for client connections."""


class ConnectionGuard:
    """Counts connections from accept to close and decides who gets in."""

    def __init__(
        self,
        max_connections: int,
        metrics: ConnectionMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.metrics = metrics
        self._clock = clock
        self._pending: dict[int, Mode] = {}  # accepted, no protocol yet: fd -> mode
        self._open: dict[Guarded, Mode] = {}
        # Who may be closed to make room, oldest first, with when they began to wait.
        # "idle" ones (keep-alive) go last: a client may be sending its next request on
        # one at that very moment.
        self._queues: dict[State, OrderedDict[Guarded, float]] = {
            "new": OrderedDict(),
            "idle": OrderedDict(),
        }
        self._evicting: set[Guarded] = set()  # closed by us, not yet gone

    @property
    def sockets(self) -> int:
        """Accepted connections whose socket is still open."""
        return len(self._pending) + len(self._open)

    def must_wait(self) -> bool:
        """Full, and a connection just evicted closes within one loop iteration: accept
        nothing until then (so the limit is overshot by one socket at most)."""
        return self.sockets >= self._hard_limit and bool(self._evicting)

    def admit(self, fd: int, peer: str) -> bool:
        """Decide on a connection just accepted; False: close it."""
        mode: Mode
        below_cap = self.sockets - len(self._evicting) < self.max_connections
        below_reserve = self.sockets < self._hard_limit
        # The steps in the module's docstring, in order.
        if (below_cap and below_reserve) or self._evict("new", peer, EVICT_NEW_AFTER_S):
            mode = "serve"
        elif below_reserve or self._evict("new", peer) or self._evict("idle", peer):
            mode = "probes"
        else:
            self._refuse(peer)
            return False
        self._pending[fd] = mode
        self._count()
        return True

    @property
    def _hard_limit(self) -> int:
        return self.max_connections + PROBE_RESERVE

    def register(self, conn: Guarded, fd: int | None) -> Mode:
        """A protocol took over the connection accepted as `fd`; how to serve it."""
        mode = self._pending.pop(fd, "serve") if fd is not None else "serve"
        self._open[conn] = mode
        self._count()
        return mode

    def update(self, conn: Guarded, state: State) -> None:
        """What `conn` waits for now; unchanged, it keeps its place in line."""
        if conn not in self._open or conn in self._evicting:
            return
        queue = self._queues.get(state)
        if queue is not None and conn in queue:
            return
        for other in self._queues.values():
            other.pop(conn, None)
        if queue is not None:
            queue[conn] = self._clock()

    def unsent_bytes(self) -> int:
        """Response bytes, over every open connection, that clients have not taken yet."""
        return sum(conn.unsent_bytes() for conn in self._open)

    def closed(self, conn: Guarded) -> None:
        for queue in self._queues.values():
            queue.pop(conn, None)
        self._evicting.discard(conn)
        self._open.pop(conn, None)
        self._count()

    def _evict(self, state: State, peer: str, min_wait_s: float = 0.0) -> bool:
        """Close the connection in `state` waiting longest, if it has waited `min_wait_s`."""
        queue = self._queues[state]
        if not queue:
            return False
        oldest, since = next(iter(queue.items()))
        if self._clock() - since < min_wait_s:
            return False
        del queue[oldest]
        self._evicting.add(oldest)
        self.metrics.closed.labels(reason="evicted").inc()
        log.info(
            "connection limit reached (%d open): closed the %s connection waiting longest "
            "to let in one from %s",
            self.max_connections,
            "keep-alive" if state == "idle" else "new",
            peer,
        )
        oldest.evict()
        return True

    def _refuse(self, peer: str) -> None:
        self.metrics.closed.labels(reason="over_limit").inc()
        log.warning(
            "connection limit reached (%d open, %d more kept for probes, all in use): "
            "refused a connection from %s",
            self.max_connections,
            PROBE_RESERVE,
            peer,
        )

    def _count(self) -> None:
        self.metrics.open.set(self.sockets)


class GuardedListener(socket.socket):
    """The listening socket, with the guard consulted as each connection is accepted.

    asyncio's selector loop calls `accept()` on the socket it serves, in a loop, until
    it would block; refusing here means a connection over the limit never holds a
    file descriptor for longer than it takes to close it.
    """

    def __init__(self, sock: socket.socket, guard: ConnectionGuard) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self.set_inheritable(False)  # uvicorn's bind_socket shares it for worker processes
        self.guard = guard
        self._out_of_files = False

    def accept(self) -> tuple[socket.socket, Any]:
        while True:
            if self.guard.must_wait():
                raise BlockingIOError(errno.EAGAIN, "connection limit: waiting for evictions")
            try:
                conn, addr = super().accept()
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                # Out of files (despite the limit: something else holds them). asyncio
                # logs the error and pauses the listener for a second, but first calls
                # accept() again up to the listen backlog times in the same round, logging
                # each failure: thousands of lines a second. Let it see the first only.
                if self._out_of_files:
                    self._out_of_files = False
                    raise BlockingIOError(errno.EAGAIN, "out of files; retried later") from None
                self._out_of_files = True
                raise
            self._out_of_files = False
            if self.guard.admit(conn.fileno(), _host(addr)):
                _no_delay(conn)
                return conn, addr
            conn.close()


def _no_delay(conn: socket.socket) -> None:
    """Nagle off, as asyncio sets it for sockets it opens itself: uvicorn's listening
    socket has protocol 0, so asyncio leaves the connections accepted on it alone, and a
    response's body, written after its head, then waited for the client's delayed ACK
    (40 ms on Linux) on most responses."""
    if conn.family in (socket.AF_INET, socket.AF_INET6):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _host(addr: Any) -> str:
    return str(addr[0]) if isinstance(addr, tuple) and addr else str(addr)


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one, as Go programs do at start (a
    container's soft limit may be 1024); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. a sandbox forbids it: keep the soft limit
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def fit_connection_limit(wanted: int, open_file_limit: int) -> int:
    """The connection cap to use: `wanted`, lowered until cap + probe reserve + headroom
    fit under the open-file limit. Raises when not even one connection fits."""
    if open_file_limit == resource.RLIM_INFINITY:
        return wanted
    room = open_file_limit - FD_HEADROOM - PROBE_RESERVE
    if room < 1:
        raise ConnectionLimitError(
            f"the open-file limit (RLIMIT_NOFILE) is {open_file_limit}; the runtime needs at "
            f"least {FD_HEADROOM + PROBE_RESERVE + 1} to serve connections; raise it "
            "(ulimit -n, or the container runtime's default)"
        )
    if wanted > room:
        log.warning(
            "TTS_MAX_CONNECTIONS=%d does not fit under the open-file limit of %d "
            "(%d kept for probes, %d for other files): using %d",
            wanted,
            open_file_limit,
            PROBE_RESERVE,
            FD_HEADROOM,
            room,
        )
    return min(wanted, room)
