"""The operator under test as a real process: `tts-operator run` against the e2e cluster."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from e2e_provider import PROVIDER
from kindcluster import MODEL_HOST_DIR
from kubeapi import wait_for
from prometheus_client.parser import text_string_to_metric_families
from tts_cluster import LOOPBACK, Component, free_port

OPERATOR_BIN = Path(sys.executable).parent / "tts-operator"


def e2e_policy() -> dict[str, object]:
    """The operator policy the e2e operators run with: the defaults (every image the tests
    use is under the default runtime image's repository), plus, on kind, the one host
    directory its BASE_SPEC mounts the test voice from (file://)."""
    return {"allowedHostPaths": [MODEL_HOST_DIR]} if PROVIDER == "kind" else {}


@dataclass
class OperatorProcess:
    """One operator replica. Several can share a cluster (peering decides who acts)."""

    kubeconfig: Path
    log_path: Path
    name: str = "operator"
    priority: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    liveness_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    component: Component | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "TTS_OPERATOR_LIVENESS_HOST": LOOPBACK,
                "TTS_OPERATOR_LIVENESS_PORT": str(self.liveness_port),
                "TTS_OPERATOR_METRICS_HOST": LOOPBACK,
                "TTS_OPERATOR_METRICS_PORT": str(self.metrics_port),
                "TTS_OPERATOR_LOG_FORMAT": "text",
                "TTS_OPERATOR_LOG_LEVEL": "debug",
                "TTS_OPERATOR_PRIORITY": str(self.priority),
                # A short retry so waits on a missing PVC fit a test's patience.
                "TTS_OPERATOR_RETRY_SECONDS": "2",
                "TTS_OPERATOR_POLICY": json.dumps(e2e_policy()),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True) -> None:
        if not OPERATOR_BIN.exists():
            raise RuntimeError(f"{OPERATOR_BIN} is missing: run `make setup`")
        self.component = Component(
            self.name, [str(OPERATOR_BIN), "run"], self.log_path, env=self.env()
        )
        self.component.start()
        if wait:
            wait_for(f"{self.name} liveness", self.alive, 60)

    def alive(self) -> bool:
        if self.component is None or not self.component.running:
            tail = self.component.log_tail() if self.component else ""
            raise RuntimeError(f"{self.name} is not running:\n{tail}")
        url = f"http://{LOOPBACK}:{self.liveness_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:  # not listening yet (or not answering 200)
            return False

    @property
    def running(self) -> bool:
        return self.component is not None and self.component.running

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop(timeout=20)

    def kill(self) -> None:
        """SIGKILL: no chance to finish a reconcile or release its peering."""
        if self.component is not None and self.component.proc is not None:
            os.killpg(self.component.proc.pid, signal.SIGKILL)
            self.component.proc.wait(10)
            self.component.proc = None

    def reconciles(self, handler: str | None = None) -> float:
        """tts_operator_reconciles_total from the process's /metrics (all results)."""
        return self.metric(
            "tts_operator_reconciles_total", **({"handler": handler} if handler else {})
        )

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` with these labels, from the process's /metrics."""
        url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, needle: str, timeout: float = 30, after: int = 0) -> None:
        """Wait for `needle` in the log written after offset `after` (see log_size)."""
        wait_for(
            f"{needle!r} in {self.name}'s log", lambda: needle in self.log_text()[after:], timeout
        )

    def log_size(self) -> int:
        return len(self.log_text())
