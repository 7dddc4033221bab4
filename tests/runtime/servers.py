"""Helpers for tests that run the real runtime: on loopback in a thread, or as a
`tts-runtime serve` subprocess. Not a test module."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from tts_runtime.engine import OnnxEngine
from tts_runtime.engine_types import Audio, SynthesisItem, SynthesisScales
from tts_runtime.state import CALIBRATION_TEXT, WARM_UP_TEXT
from tts_runtime.text import TextFrontEnd
from tts_runtime.voice import VoiceConfig


def metric_value(base: str, name: str, **labels: str) -> float:
    """One sample of the runtime's /metrics at `base`, chosen by name and exact labels."""
    text = httpx.get(f"{base}/metrics", timeout=5).text
    wanted = name
    if labels:
        wanted += "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{wanted} not in /metrics")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatedEngine:
    """The real OnnxEngine, except that batches `held(items)` picks wait for `gate`.
    Lets a test decide WHEN the worker finishes, without changing WHAT it computes.

    The app's own start-up batches (warm-up, batch-size calibration) pass freely
    unless hold_startup, and are kept apart in `startup_batches`: `batches` and
    `entered` hold only what requests caused."""

    def __init__(
        self,
        engine: OnnxEngine,
        held: Callable[[Sequence[SynthesisItem]], bool],
        *,
        hold_startup: bool = False,
    ) -> None:
        self._engine = engine
        self._held = held
        self._hold_startup = hold_startup
        front_end = TextFrontEnd(engine.config)
        self._startup_ids = {front_end.phoneme_ids(t) for t in (WARM_UP_TEXT, CALIBRATION_TEXT)}
        self.gate = threading.Event()
        self.batches: list[list[SynthesisItem]] = []
        self.scales: list[SynthesisScales] = []
        self.entered: list[list[SynthesisItem]] = []  # batches the worker took, held or not
        self.startup_batches: list[list[SynthesisItem]] = []

    def is_startup(self, items: Sequence[SynthesisItem]) -> bool:
        return all(item.phoneme_ids in self._startup_ids for item in items)

    @property
    def config(self) -> VoiceConfig:
        return self._engine.config

    @property
    def fallback_reason(self) -> str | None:
        return self._engine.fallback_reason

    @property
    def sample_rate(self) -> int:
        return self._engine.sample_rate

    @property
    def provider(self) -> str:
        return self._engine.provider

    @property
    def precision(self) -> str:
        return self._engine.precision

    def synthesize(self, items: Sequence[SynthesisItem], scales: SynthesisScales) -> list[Audio]:
        if self.is_startup(items):
            if self._hold_startup:
                assert self.gate.wait(timeout=30), "test gate never opened"
            self.startup_batches.append(list(items))
            return self._engine.synthesize(items, scales)
        self.entered.append(list(items))
        if self._held(items):
            assert self.gate.wait(timeout=30), "test gate never opened"
        self.batches.append(list(items))
        self.scales.append(scales)
        return self._engine.synthesize(items, scales)


@contextlib.contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 in a thread; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_ready(
    base_url: str, timeout_s: float = 60, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"{base_url} not ready within {timeout_s} s")


def runtime_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tts_runtime.cli", *args]


def runtime_env(model_path: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment for a `tts-runtime serve` subprocess: TTS_* only from here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
    env.update(
        {
            "TTS_MODEL_PATH": str(model_path),
            "TTS_HOST": "127.0.0.1",
            "TTS_PORT": str(port),
            "TTS_DEVICE": "cpu",
            "TTS_PRECISION": "fp32",
            "TTS_LOG_LEVEL": "info",
        }
    )
    env.update({f"TTS_{k.upper()}": v for k, v in settings.items()})
    return env


def start_runtime(
    env: Mapping[str, str], log: Path, *, open_files: int | None = None
) -> subprocess.Popen[bytes]:
    """`tts-runtime serve` in the background, its output in `log` (a file, so a chatty
    server can never block on a full pipe). `open_files` sets its RLIMIT_NOFILE (soft
    and hard), as a container runtime would."""

    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with log.open("wb") as out:
        return subprocess.Popen(
            runtime_command("serve"),
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_files if open_files is not None else None,
        )
