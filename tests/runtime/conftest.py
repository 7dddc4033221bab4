"""Shared runtime fixtures: the small test voice, built once per session."""

from __future__ import annotations

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
