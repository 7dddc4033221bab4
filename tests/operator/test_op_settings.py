"""Operator settings from TTS_OPERATOR_* env vars."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from tts_operator.settings import DEFAULT_RUNTIME_IMAGE, OperatorSettings


def test_defaults_watch_the_whole_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    s = OperatorSettings()
    assert s.clusterwide and s.namespace_list == []
    assert s.runtime_image == DEFAULT_RUNTIME_IMAGE
    assert s.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    assert s.peering_name == "tts-operator"


def test_env_prefix_and_namespace_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_OPERATOR_NAMESPACES", " a, b ,,c ")
    monkeypatch.setenv("TTS_OPERATOR_LIVENESS_PORT", "0")
    monkeypatch.setenv("TTS_OPERATOR_METRICS_PORT", "9191")
    s = OperatorSettings()
    assert s.namespace_list == ["a", "b", "c"] and not s.clusterwide
    assert s.liveness_endpoint is None
    assert s.metrics_port == 9191


@pytest.mark.parametrize(
    ("var", "value"),
    [("TTS_OPERATOR_LOG_FORMAT", "xml"), ("TTS_OPERATOR_METRICS_PORT", "70000")],
)
def test_bad_settings_fail_clearly(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError):
        OperatorSettings()


def test_default_priority_differs_per_process() -> None:
    # kopf pauses every replica that sees an equal or higher priority: ties would stall all.
    priorities = {OperatorSettings().priority for _ in range(5)}
    assert len(priorities) > 1 and all(p > 0 for p in priorities)


def test_metrics_host_defaults_to_every_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorSettings().metrics_host == "0.0.0.0"
    monkeypatch.setenv("TTS_OPERATOR_METRICS_HOST", "127.0.0.1")
    assert OperatorSettings().metrics_host == "127.0.0.1"
    monkeypatch.setenv("TTS_OPERATOR_METRICS_HOST", "")
    with pytest.raises(ValidationError):
        OperatorSettings()


def test_hf_uris_download_from_the_hub_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorSettings().hf_endpoint == "https://huggingface.co"
    monkeypatch.setenv("TTS_OPERATOR_HF_ENDPOINT", "https://hf-mirror.example/hub/")
    assert OperatorSettings().hf_endpoint == "https://hf-mirror.example/hub"
    for bad in ("huggingface.co", "ftp://hub.example", "https://hub.example/?x=1", "https://"):
        monkeypatch.setenv("TTS_OPERATOR_HF_ENDPOINT", bad)
        with pytest.raises(ValidationError, match="hf_endpoint"):
            OperatorSettings()
