"""What every part of the local cluster shares: its error, where the repository is, polling."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

# The package is installed in editable mode from the repository (`make setup`), so the
# repository root is two folders above this file: cluster/tts_cluster/base.py.
REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


class ClusterError(RuntimeError):
    """The local cluster could not be built, started or reached."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, check: Any, timeout: float, interval: float = 0.2) -> Any:
    """Poll `check()` until it returns something truthy; ClusterError after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as error:  # the thing polled is not up yet
            last_error = error
        time.sleep(interval)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what} ({last_error})")
