"""`tts-runtime serve`: load the model, serve it with one uvicorn worker, drain on SIGTERM.

Drain: the first SIGTERM (or SIGINT) turns readiness off and makes new speech
requests 503 while the listener stays open (Kubernetes needs a moment to take
the pod out of its endpoints); once every accepted request has sent its last
byte, or the drain timeout passes, uvicorn shuts down and the process exits 0.
A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from types import FrameType

import uvicorn

from tts_runtime.app import Runtime, StartupError, create_app
from tts_runtime.errors import ModelLoadError
from tts_runtime.settings import RuntimeSettings

log = logging.getLogger("tts_runtime.server")

EXIT_MODEL_ERROR = 2


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose exit signal starts a drain instead of an immediate stop."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime, drain_timeout_s: float) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._drain_timeout_s = drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None
        self.drained_cleanly: bool | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

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
        self._runtime.begin_drain()
        self.drained_cleanly = await self._runtime.wait_drained(self._drain_timeout_s)
        if self.drained_cleanly:
            log.info("drained: every accepted request finished")
        else:
            log.warning(
                "drain timeout (%.0f s) passed with %d request(s) still running",
                self._drain_timeout_s,
                self._runtime.in_flight.count,
            )
        self.should_exit = True


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def serve(settings: RuntimeSettings) -> int:
    """Load the model and serve until drained; the process exit code."""
    configure_logging(settings.log_level)
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
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,  # one process: several would each load the model and split the batches
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        lifespan="on",
        timeout_graceful_shutdown=5,
        log_config=None,  # keep the logging set up above
    )
    server = DrainingServer(config, app.state.runtime, settings.drain_timeout_s)
    server.run()
    if not server.started:
        return 1
    return 0
