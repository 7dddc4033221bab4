"""Kind only: runtime pods really run (CPU fallback, generated test voice) behind the
operator's Service, and a request through that Service returns audio."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_provider import PROVIDER
from kubeapi import E2EKube, tts_body
from operatorproc import OperatorProcess

NAME = "speaker"

pytestmark = pytest.mark.skipif(
    PROVIDER != "kind",
    reason="runtime containers run only on kind (E2E_PROVIDER=kind); kwok stub pods run none",
)


@pytest.fixture
def service_port(cluster: Any, namespace: str) -> Iterator[int]:
    """`kubectl port-forward` to the TTSService's Service; yields the local port."""
    forward = subprocess.Popen(
        [
            "kubectl", f"--kubeconfig={cluster.kubeconfig}", "-n", namespace,
            "port-forward", f"service/{NAME}", ":8000", "--address=127.0.0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert forward.stdout is not None
        first = forward.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", first)
        assert match, f"port-forward said: {first!r}"
        yield int(match.group(1))
    finally:
        forward.terminate()
        forward.wait(10)


@pytest.fixture
def ready_service(kube: E2EKube, running_operator: OperatorProcess, namespace: str) -> None:
    # The kind provider's BASE_SPEC already points at the test voice and the loaded image.
    spec = {"replicas": 1}
    kube.create_tts(namespace, tts_body(NAME, spec))
    kube.wait_tts_ready(namespace, NAME, timeout=600)


def test_request_through_the_service_returns_audio(ready_service: None, service_port: int) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{service_port}/v1/audio/speech",
        json={"model": "tts-1", "input": "Hello from kind.", "voice": "default",
              "response_format": "wav"},
        timeout=120,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("audio/")
    assert response.content[:4] == b"RIFF" and response.content[8:12] == b"WAVE"
    assert len(response.content) > 44  # more than a bare WAV header
