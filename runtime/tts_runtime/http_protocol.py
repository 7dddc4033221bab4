"""uvicorn's h11 protocol with the connection guard and deadlines for the request.

uvicorn closes a connection idle between requests (keep-alive timeout) but sets no
limit on how long a request head or body may take to arrive: a client sending a
byte every few seconds, or nothing at all, keeps its connection, and a half-sent
body keeps its request in flight, holding a SIGTERM drain until it times out.

- TTS_HEADER_TIMEOUT_S counts from when a connection starts waiting for a request
  head (it opened, or its last response went out) until the whole head is in.
  Missed: 408 and close if part of a head came, else a quiet close.
- TTS_BODY_TIMEOUT_S counts from the head until the whole body is in. Missed: 408
  (unless a response has started) and close; the app sees a client disconnect.

The protocol tells the guard what the connection waits for (connections.py decides
whom to close at the limit); one let in on the probe reserve serves only PROBE_PATHS.

It also tells how many response bytes the client has not taken yet (`unsent_bytes`: the
transport's buffer plus the kernel's send queue). A slow reader is judged by whether that
number goes down (speech.py), and a drain waits until it is 0 on every connection
(server.py), so no byte accepted for a client is lost at exit. For the same reason a
connection whose client is still taking its last response is not idle: the keep-alive
and head timeouts start over while that number keeps going down (a listener may take
half a minute to read what the kernel buffered for it after the last write).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import struct
import termios
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from uvicorn.protocols.http.h11_impl import H11Protocol

from tts_runtime.connections import PROBE_PATHS, ConnectionGuard

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope

log = logging.getLogger("tts_runtime.connections")

# After a timeout's 408 is written, how long close() may wait for the client to take it.
CLOSE_GRACE_S = 1.0
# Where a request's scope holds its connection's unsent_bytes (a callable), for the app.
UNSENT_BYTES_KEY = "tts.unsent_bytes"

Phase = Literal["head", "body"]


@dataclass(frozen=True)
class RequestDeadlines:
    header_timeout_s: float
    body_timeout_s: float
    pod_name: str  # for X-TTS-Pod on the responses sent from here


class GuardedH11Protocol(H11Protocol):
    """One client connection: uvicorn's h11 protocol, watched by `guard`."""

    guard: ClassVar[ConnectionGuard]
    deadlines: ClassVar[RequestDeadlines]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase | None = None
        self._subject: object = None  # the request cycle the armed deadline is for
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._peer = "-"
        self._fd = -1
        # unsent_bytes at each timer's last look since the last response (none: not looked)
        self._unsent_seen: dict[str, int] = {}

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.client:
            self._peer = str(self.client[0])
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        if self.guard.register(self, sock.fileno() if sock is not None else None) == "probes":
            self.app = _probes_only(self.app, self.guard, self.deadlines.pod_name, self._peer)
        self.app = self._abort_unfinished(self.app)
        self._sync()

    def data_received(self, data: bytes) -> None:
        if self._phase == "head":
            self._head_bytes += len(data)
        super().data_received(data)
        self._sync()

    def on_response_complete(self) -> None:
        self._unsent_seen.clear()
        super().on_response_complete()
        self._sync()

    def timeout_keep_alive_handler(self) -> None:
        if self._still_taking_response("keep-alive"):
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
            return
        super().timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fd = -1  # the number may soon be another socket's
        self._cancel_deadline()
        self.guard.closed(self)
        super().connection_lost(exc)

    def _abort_unfinished(self, app: ASGI3Application) -> ASGI3Application:
        """`app`, after which a response left unfinished (the app gave up on a client that
        stopped reading: TTS_WRITE_TIMEOUT_S) is aborted. uvicorn only close()s it, which
        waits for the unsent bytes: for ever, holding the socket, if the client never reads."""

        async def aborting_unfinished(
            scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
        ) -> None:
            scope[UNSENT_BYTES_KEY] = self.unsent_bytes  # type: ignore[literal-required]
            try:
                await app(scope, receive, send)
            finally:
                cycle = self.cycle
                if cycle is not None and cycle.response_started and not cycle.response_complete:
                    self.loop.call_later(CLOSE_GRACE_S, self.transport.abort)

        return aborting_unfinished

    def evict(self) -> None:
        self._cancel_deadline()
        self.transport.abort()

    def unsent_bytes(self) -> int:
        """Response bytes written for the client that it has not yet acknowledged."""
        return self.transport.get_write_buffer_size() + kernel_unsent_bytes(self._fd)

    def _still_taking_response(self, timer: str) -> bool:
        """Whether the client has bytes of its last response to take and took some since
        `timer` last looked (its first look: has any to take)."""
        unsent, before = self.unsent_bytes(), self._unsent_seen.get(timer)
        self._unsent_seen[timer] = unsent
        return unsent > 0 and (before is None or unsent < before)

    # -- deadlines ----------------------------------------------------------------

    def _sync(self) -> None:
        """Arm the deadline for what the connection waits for now, if it changed."""
        cycle = self.cycle
        phase: Phase | None
        if self.transport.is_closing():
            phase = None
        elif cycle is None or cycle.response_complete:
            phase = "head"
        elif cycle.more_body and not cycle.disconnected:
            phase = "body"
        else:
            phase = None  # the app is at work: its own timeouts apply
        if phase == "head":
            self.guard.update(self, "new" if cycle is None else "idle")
        else:
            self.guard.update(self, "busy")
        if phase == self._phase and cycle is self._subject:
            return
        self._cancel_deadline()
        self._phase, self._subject = phase, cycle
        if phase == "head":
            self._head_bytes = 0
            self._deadline = self.loop.call_later(self.deadlines.header_timeout_s, self._expired)
        elif phase == "body":
            self._deadline = self.loop.call_later(self.deadlines.body_timeout_s, self._expired)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._phase == "head" and not self._head_bytes and self._still_taking_response("head"):
            self._deadline = self.loop.call_later(self.deadlines.header_timeout_s, self._expired)
            return
        self.guard.update(self, "busy")  # closing: not one to evict any more
        if self._phase == "head":
            self.guard.metrics.closed.labels(reason="header_timeout").inc()
            if not self._head_bytes:  # never started a request: close like keep-alive does
                log.debug("closed a connection from %s: no request within its deadline", self._peer)
                self.transport.close()
                return
            what, timeout_s, respond = "head", self.deadlines.header_timeout_s, True
            log.info(
                "closed a connection from %s: request head incomplete after %g s",
                self._peer,
                timeout_s,
            )
        else:
            self.guard.metrics.closed.labels(reason="body_timeout").inc()
            what, timeout_s = "body", self.deadlines.body_timeout_s
            respond = not self.cycle.response_started
            self.cycle.disconnected = True  # nothing the app sends may follow the 408
            log.info(
                "closed a connection from %s: request body incomplete after %g s",
                self._peer,
                timeout_s,
            )
        if respond:
            self.transport.write(_timeout_response(what, timeout_s, self.deadlines.pod_name))
        self.transport.close()
        self.loop.call_later(CLOSE_GRACE_S, self.transport.abort)  # a client that never reads


def kernel_unsent_bytes(fd: int) -> int:
    """Bytes in a socket's kernel send queue not yet acknowledged by the peer (Linux's
    SIOCOUTQ, the same number as TIOCOUTQ); 0 for a socket already closed."""
    if fd < 0:
        return 0
    try:
        answer = fcntl.ioctl(fd, termios.TIOCOUTQ, struct.pack("i", 0))
    except OSError:
        return 0
    return int(struct.unpack("i", answer)[0])


def _timeout_response(what: str, timeout_s: float, pod_name: str) -> bytes:
    """A whole 408 response, written straight to the socket: the app is not asked."""
    setting = "TTS_HEADER_TIMEOUT_S" if what == "head" else "TTS_BODY_TIMEOUT_S"
    body = _error_body(
        f"the request {what} did not arrive within {timeout_s:g} s ({setting}); "
        "send the whole request at once",
        "invalid_request_error",
        "request_timeout",
    )
    head = b"HTTP/1.1 408 Request Timeout\r\n" + b"".join(
        name + b": " + value + b"\r\n" for name, value in _error_headers(body, pod_name)
    )
    return head + b"\r\n" + body


def _error_body(message: str, type_: str, code: str) -> bytes:
    """The API's JSON error shape (see app.py)."""
    error = {"message": message, "type": type_, "param": None, "code": code}
    return json.dumps({"error": error}).encode()


def _error_headers(
    body: bytes, pod_name: str, *, retry_after: bool = False
) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-tts-pod", pod_name.encode("latin-1")),
    ]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    return headers


def _probes_only(
    app: ASGI3Application, guard: ConnectionGuard, pod_name: str, peer: str
) -> ASGI3Application:
    """`app` for PROBE_PATHS; 503 and close for anything else."""

    async def probes_only(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await app(scope, receive, send)
            return
        guard.metrics.closed.labels(reason="probes_only").inc()
        log.warning(
            "connection limit reached (%d open): %s from %s refused with 503; "
            "beyond the limit only /healthz, /readyz and /metrics are served",
            guard.max_connections,
            scope["path"],
            peer,
        )
        body = _error_body(
            f"the server is at its connection limit ({guard.max_connections}, "
            "TTS_MAX_CONNECTIONS); retry",
            "server_error",
            "connection_limit",
        )
        headers = _error_headers(body, pod_name, retry_after=True)
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return probes_only


def protocol_class(guard: ConnectionGuard, deadlines: RequestDeadlines) -> type[H11Protocol]:
    """The protocol class to give uvicorn (Config(http=...)): bound to one guard."""

    class BoundGuardedH11Protocol(GuardedH11Protocol):
        pass

    BoundGuardedH11Protocol.guard = guard
    BoundGuardedH11Protocol.deadlines = deadlines
    return BoundGuardedH11Protocol
