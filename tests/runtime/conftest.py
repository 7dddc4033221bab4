"""Shared runtime fixtures: the small test voice, built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tts_runtime.testmodel import write_test_model


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the small single-speaker test voice (model.onnx + model.onnx.json)."""
    return write_test_model(tmp_path_factory.mktemp("small_model"), size="small")


@pytest.fixture(scope="session")
def multi_speaker_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small test voice with three speakers (the model takes `sid`)."""
    return write_test_model(tmp_path_factory.mktemp("multi_model"), size="small", num_speakers=3)


@pytest.fixture(scope="session")
def espeak_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small test voice behind the text front end real Piper voices use (espeak-ng
    phonemes, Piper's standard phoneme ids folded into the small model's symbols): the
    production path from text to ids at the small model's speed."""
    phoneme_ids = pytest.importorskip(
        "piper.phoneme_ids", reason="espeak-ng: pip install --no-deps piper-tts"
    )
    model_dir = write_test_model(tmp_path_factory.mktemp("espeak_model"), size="small")
    config_path = model_dir / "model.onnx.json"
    config = json.loads(config_path.read_text())
    symbols = int(config["num_symbols"])
    config["phoneme_type"] = "espeak"
    config["phoneme_id_map"] = {
        phoneme: [i % symbols for i in ids]
        for phoneme, ids in phoneme_ids.DEFAULT_PHONEME_ID_MAP.items()
    }
    config_path.write_text(json.dumps(config, ensure_ascii=False))
    return model_dir
