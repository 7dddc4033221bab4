from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tts_runtime.engine_types import SynthesisScales
from tts_runtime.errors import ModelLoadError
from tts_runtime.voice import VoiceConfig, load_voice_config, resolve_model_files


def piper_json(**overrides: Any) -> dict[str, Any]:
    """A config in Piper's own layout, as Piper's exporter writes it."""
    data: dict[str, Any] = {
        "audio": {"sample_rate": 16000, "quality": "low"},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.5, "length_scale": 1.2, "noise_w": 0.7},
        "phoneme_type": "espeak",
        "phoneme_map": {},
        "phoneme_id_map": {"_": [0], "^": [1], "$": [2], "a": [3]},
        "num_symbols": 4,
        "num_speakers": 1,
        "speaker_id_map": {},
        "piper_version": "1.0.0",
    }
    data.update(overrides)
    return data


def write_config(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "model.onnx.json"
    path.write_text(json.dumps(data))
    return path


def test_reads_piper_layout() -> None:
    config = VoiceConfig.model_validate(piper_json())
    assert config.sample_rate == 16000
    assert config.espeak_voice == "en-us"
    assert config.phoneme_type == "espeak"
    assert config.hop_length == 256  # Piper's default when absent
    assert config.default_scales() == SynthesisScales(
        noise_scale=0.5, length_scale=1.2, noise_w=0.7
    )


def test_inference_defaults_when_absent() -> None:
    data = piper_json()
    del data["inference"]
    assert VoiceConfig.model_validate(data).default_scales() == SynthesisScales(0.667, 1.0, 0.8)


def test_round_trips_through_piper_json() -> None:
    config = VoiceConfig.model_validate(
        piper_json(hop_length=300, num_speakers=2, speaker_id_map={"a": 0, "b": 1})
    )
    again = VoiceConfig.model_validate(config.to_piper_json())
    assert again == config
    assert again.hop_length == 300


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"phoneme_id_map": {"_": [0], "a": [3]}}, "BOS, PAD, EOS"),
        ({"audio": {"sample_rate": 0}}, "sample_rate"),
        ({"phoneme_type": "klingon"}, "phoneme_type"),
        ({"num_symbols": 3}, "num_symbols"),
        ({"speaker_id_map": {"x": 4}}, "speaker_id_map"),
        ({"espeak": {"voice": ""}}, "espeak.voice"),
    ],
)
def test_bad_config_raises_model_load_error(
    tmp_path: Path, overrides: dict[str, Any], problem: str
) -> None:
    path = write_config(tmp_path, piper_json(**overrides))
    with pytest.raises(ModelLoadError) as caught:
        load_voice_config(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\udcff"])
def test_unparsable_config_names_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "model.onnx.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(ModelLoadError) as caught:
        load_voice_config(path)
    assert caught.value.path == path


def test_resolves_directory_layout(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "model.onnx.json").write_text("{}")
    assert resolve_model_files(tmp_path) == (tmp_path / "model.onnx", tmp_path / "model.onnx.json")


def test_resolves_file_with_config_beside(tmp_path: Path) -> None:
    model = tmp_path / "en_US-lessac-medium.onnx"
    model.write_bytes(b"x")
    (tmp_path / "en_US-lessac-medium.onnx.json").write_text("{}")
    assert resolve_model_files(model) == (model, tmp_path / "en_US-lessac-medium.onnx.json")


@pytest.mark.parametrize(
    ("files", "target", "problem"),
    [
        ([], "missing", "no such file"),
        (["model.onnx.json"], ".", "model file is missing"),
        (["model.onnx"], ".", "voice config is missing"),
        (["voice.onnx"], "voice.onnx", "voice config is missing"),
        (["voice.bin"], "voice.bin", "expected a directory or a .onnx file"),
    ],
)
def test_resolve_errors(tmp_path: Path, files: list[str], target: str, problem: str) -> None:
    for name in files:
        (tmp_path / name).write_text("x")
    with pytest.raises(ModelLoadError, match=problem):
        resolve_model_files(tmp_path / target)
