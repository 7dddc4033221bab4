"""`tts-runtime` commands; start-up failures checked on the real process (exit code and
the one line it prints), as an operator would see them in `kubectl logs`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from servers import free_port, runtime_command, runtime_env
from tts_runtime.cli import main


def serve_fails(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        runtime_command("serve"), env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    return result


def test_testmodel_writes_a_piper_voice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["testmodel", str(tmp_path / "voice"), "--speakers", "2"]) == 0
    config = json.loads((tmp_path / "voice" / "model.onnx.json").read_text())
    assert config["num_speakers"] == 2
    onnx.checker.check_model(str(tmp_path / "voice" / "model.onnx"))
    assert "wrote" in capsys.readouterr().out


def test_testmodel_refuses_a_bad_speaker_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["testmodel", str(tmp_path), "--speakers", "0"]) == 2
    assert "num_speakers" in capsys.readouterr().err


def test_convert_writes_an_fp16_model_with_fp32_io(small_model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "model.fp16.onnx"
    assert main(["convert", "--fp16", str(small_model_dir / "model.onnx"), str(target)]) == 0
    model = onnx.load(str(target))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_convert_names_a_missing_or_broken_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", "--fp16", str(tmp_path / "nope.onnx"), str(tmp_path / "o")]) == 2
    assert "nope.onnx: no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert main(["convert", "--fp16", str(broken), str(tmp_path / "o")]) == 2
    assert "cannot convert" in capsys.readouterr().err


def test_serve_with_a_missing_model_exits_naming_the_path(tmp_path: Path) -> None:
    result = serve_fails(runtime_env(tmp_path / "absent", free_port()))
    assert result.returncode == 2
    assert f"cannot load model file {tmp_path / 'absent'}: no such file" in result.stderr


def test_serve_with_a_corrupt_onnx_exits_naming_the_file(
    small_model_dir: Path, tmp_path: Path
) -> None:
    shutil.copy(small_model_dir / "model.onnx.json", tmp_path / "model.onnx.json")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07garbage" * 100)
    result = serve_fails(runtime_env(tmp_path, free_port()))
    assert result.returncode == 2
    assert f"cannot load model file {tmp_path / 'model.onnx'}" in result.stderr


def test_serve_with_a_config_that_does_not_fit_the_model_exits(
    small_model_dir: Path, tmp_path: Path
) -> None:
    shutil.copy(small_model_dir / "model.onnx", tmp_path / "model.onnx")
    config = json.loads((small_model_dir / "model.onnx.json").read_text())
    config["num_speakers"] = 4
    (tmp_path / "model.onnx.json").write_text(json.dumps(config))
    result = serve_fails(runtime_env(tmp_path, free_port()))
    assert result.returncode == 2
    assert "num_speakers 4 but the model has no sid input" in result.stderr


def test_serve_with_a_bad_setting_exits_naming_the_variable(small_model_dir: Path) -> None:
    env = runtime_env(small_model_dir, free_port(), max_batch_size="0", drain_timeout_s="soon")
    result = serve_fails(env)
    assert result.returncode == 2
    assert "TTS_MAX_BATCH_SIZE" in result.stderr and "TTS_DRAIN_TIMEOUT_S" in result.stderr


def test_serve_with_voices_the_model_lacks_exits(small_model_dir: Path) -> None:
    env = runtime_env(small_model_dir, free_port(), voices='{"alloy": 7}')
    result = serve_fails(env)
    assert result.returncode == 2
    assert "TTS_VOICES" in result.stderr and "alloy" in result.stderr
