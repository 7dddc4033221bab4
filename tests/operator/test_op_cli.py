"""The tts-operator command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from tts_operator import crdgen
from tts_operator.cli import main


def test_crd_prints_the_generated_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == crdgen.render()


def test_crd_check_and_write(tmp_path: Path) -> None:
    target = tmp_path / "crd.yaml"
    assert main(["crd", "--check", str(target)]) == 1  # missing
    assert main(["crd", "--write", str(target)]) == 0
    assert main(["crd", "--check", str(target)]) == 0
    target.write_text(target.read_text() + "# edited\n")
    assert main(["crd", "--check", str(target)]) == 1


def test_run_refuses_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TTS_OPERATOR_RETRY_SECONDS", "0")
    assert main(["run"]) == 2
    assert "TTS_OPERATOR_" in capsys.readouterr().err


def test_run_without_credentials_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("TTS_OPERATOR_METRICS_PORT", "0")
    # kopf.configure would re-plumb the root logger for the rest of the test session.
    monkeypatch.setattr("tts_operator.runner.configure_logging", lambda settings: None)
    assert main(["run"]) == 2
    assert "no Kubernetes credentials" in capsys.readouterr().err
