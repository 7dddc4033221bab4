"""`tts-runtime serve`: load the model, serve it with one uvicorn worker, drain on SIGTERM.

Drain: the first SIGTERM (or SIGINT) turns readiness off and makes new speech
requests 503 while the listener stays open (Kubernetes needs a moment to take
the pod out of its endpoints); once every accepted request has written its last
byte and every client has taken them (the transports' buffers and the kernel's
send queues are empty: a pod's network goes with its last process), or the
drain timeout passes, uvicorn shuts down and the process exits 0. A second
signal stops at once.

Connections: the process's open-file limit is raised to its hard limit, the
listener caps open connections under it (connections.py), and each request's
head and body must arrive within a deadline (http_protocol.py), so idle or
slow clients can neither starve the probes nor hold a drain. Repeated log
lines are rate-limited (log_limit.py), so a flood of them cannot swamp the loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn

from tts_runtime.app import create_app
from tts_runtime.connections import (
    PROBE_RESERVE,
    ConnectionGuard,
    ConnectionLimitError,
    GuardedListener,
    fit_connection_limit,
    raise_open_file_limit,
)
from tts_runtime.errors import ModelLoadError, StartupError
from tts_runtime.http_protocol import RequestDeadlines, protocol_class
from tts_runtime.log_limit import RepeatLimitFilter, limit_repeats
from tts_runtime.metrics import ConnectionMetrics
from tts_runtime.settings import RuntimeSettings
from tts_runtime.state import Runtime

log = logging.getLogger(__name__)

EXIT_MODEL_ERROR = 2
EXIT_USAGE = 2
# How often a drain looks whether the clients have taken the last bytes.
FLUSH_POLL_S = 0.05


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose exit signal starts a drain instead of an immediate stop."""

    def __init__(
        self,
        config: uvicorn.Config,
        runtime: Runtime,
        drain_timeout_s: float,
        log_limits: Sequence[RepeatLimitFilter] = (),
        guard: ConnectionGuard | None = None,
    ) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._guard = guard
        self._drain_timeout_s = drain_timeout_s
        self._log_limits = log_limits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None
        self.drained_cleanly: bool | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0:  # once a second: summarise a flood of log lines that stopped
            for repeat_filter in self._log_limits:
                repeat_filter.flush()
        return await super().on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in uvicorn's captured signals: uvicorn would re-raise it after
        # shutdown and the process would die by the signal instead of exiting 0.
        if self._drain_requested or self._loop is None:
            log.warning("second %s: stopping without waiting", signal.Signals(sig).name)
            self.should_exit = True
            self.force_exit = True
            return
        self._drain_requested = True
        log.info("%s: draining (up to %.0f s)", signal.Signals(sig).name, self._drain_timeout_s)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._drain_timeout_s
        self._runtime.begin_drain()
        finished = await self._runtime.wait_drained(self._drain_timeout_s)
        unsent = await self._wait_flushed(deadline) if finished else 0
        self.drained_cleanly = finished and unsent == 0
        if self.drained_cleanly:
            log.info("drained: every accepted request finished and its clients took every byte")
        elif finished:
            log.warning(
                "drain timeout (%.0f s) passed with %d response byte(s) not yet taken by "
                "their clients",
                self._drain_timeout_s,
                unsent,
            )
        else:
            log.warning(
                "drain timeout (%.0f s) passed with %d request(s) still running",
                self._drain_timeout_s,
                self._runtime.in_flight.count,
            )
        self.should_exit = True

    async def _wait_flushed(self, deadline: float) -> int:
        """Waits, until `deadline` (loop time), for the clients to take every response
        byte written for them; the bytes still unsent then."""
        loop = asyncio.get_running_loop()
        while self._guard is not None:
            unsent = self._guard.unsent_bytes()
            if unsent == 0 or loop.time() >= deadline:
                return unsent
            await asyncio.sleep(FLUSH_POLL_S)
        return 0


def configure_logging(level: str) -> list[RepeatLimitFilter]:
    """Log to stderr, each handler rate-limiting repeated lines; the filters installed."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return [limit_repeats(handler) for handler in logging.getLogger().handlers]


def serve(settings: RuntimeSettings) -> int:
    """Load the model and serve until drained; the process exit code."""
    log_limits = configure_logging(settings.log_level)
    try:
        max_connections = fit_connection_limit(settings.max_connections, raise_open_file_limit())
    except ConnectionLimitError as exc:
        print(f"tts-runtime: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Imported here: onnxruntime is heavy and only `serve` needs it.
    from tts_runtime.engine import OnnxEngine

    try:
        engine = OnnxEngine.load(
            settings.model_path, settings.precision, settings.device, settings.memory_mode
        )
        app = create_app(settings, engine)
    except (ModelLoadError, StartupError) as exc:
        print(f"tts-runtime: {exc}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    runtime: Runtime = app.state.runtime
    guard = ConnectionGuard(
        max_connections, ConnectionMetrics(runtime.metrics.registry, max_connections)
    )
    deadlines = RequestDeadlines(
        settings.header_timeout_s, settings.body_timeout_s, settings.pod_name
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,  # one process: several would each load the model and split the batches
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        lifespan="on",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=5,  # uvicorn's default: idle between requests, then closed
        # uvicorn's own limit_concurrency is not used: it answers 503 to the probes too,
        # and still accepts (and holds) every socket.
        http=protocol_class(guard, deadlines),
        ws="none",  # no WebSocket routes; an upgrade would take the socket from the guard
        loop="asyncio",  # the listener's accept hook needs asyncio's loop (uvloop's is in C)
        log_config=None,  # keep the logging set up above
    )
    listener = GuardedListener(config.bind_socket(), guard)  # exits 3 if it cannot bind
    log.info(
        "at most %d connections (+%d for probes); request head within %g s, body within %g s",
        max_connections,
        PROBE_RESERVE,
        settings.header_timeout_s,
        settings.body_timeout_s,
    )
    server = DrainingServer(config, runtime, settings.drain_timeout_s, log_limits, guard)
    try:
        server.run(sockets=[listener])
    finally:
        for repeat_filter in log_limits:
            repeat_filter.flush(everything=True)
    if not server.started:
        return 1
    return 0
