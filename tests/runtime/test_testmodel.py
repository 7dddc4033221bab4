from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tts_runtime.testmodel import (
    HOP_LENGTH,
    IR_VERSION,
    SHAPES,
    build_test_model,
    phoneme_id_map,
    write_test_model,
)
from tts_runtime.voice import load_voice_config

IDS = np.array([[1, 0, 20, 0, 21, 0, 22, 0, 2]], dtype=np.int64)


def run(
    session: ort.InferenceSession, ids: np.ndarray, scales: list[float], **extra: np.ndarray
) -> np.ndarray:
    feeds = {
        "input": ids,
        "input_lengths": np.array([ids.shape[1]] * ids.shape[0], dtype=np.int64),
        "scales": np.array(scales, dtype=np.float32),
        **extra,
    }
    return np.asarray(session.run(["output"], feeds)[0])


@pytest.fixture(scope="module")
def session(small_model_dir: Path) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(small_model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def test_writes_piper_layout(small_model_dir: Path) -> None:
    config = load_voice_config(small_model_dir / "model.onnx.json")
    assert config.phoneme_type == "text"
    assert config.num_speakers == 1
    assert config.hop_length == HOP_LENGTH
    raw = json.loads((small_model_dir / "model.onnx.json").read_text())
    assert raw["audio"]["sample_rate"] == 22050 and raw["num_symbols"] == len(phoneme_id_map())


def test_ir_version_is_one_onnxruntime_reads(small_model_dir: Path) -> None:
    model = onnx.load(str(small_model_dir / "model.onnx"))
    assert model.ir_version == IR_VERSION < onnx.IR_VERSION  # not the newest onnx default
    onnx.checker.check_model(model)


def test_io_contract(session: ort.InferenceSession) -> None:
    inputs = {i.name: i.type for i in session.get_inputs()}
    assert inputs == {
        "input": "tensor(int64)",
        "input_lengths": "tensor(int64)",
        "scales": "tensor(float)",
    }
    [output] = session.get_outputs()
    assert (output.name, output.type, len(output.shape)) == ("output", "tensor(float)", 4)


def test_vits_building_blocks_are_there() -> None:
    ops = {node.op_type for node in build_test_model().graph.node}
    assert {
        "Gather",
        "Conv",
        "Ceil",
        "CumSum",
        "MatMul",
        "RandomNormalLike",
        "ConvTranspose",
        "Tanh",
    } <= ops


def test_output_is_hop_samples_per_frame_and_bounded(session: ort.InferenceSession) -> None:
    audio = run(session, IDS, [0.0, 1.0, 0.0])
    assert audio.shape[:3] == (1, 1, 1)
    assert audio.shape[3] % HOP_LENGTH == 0
    assert audio.shape[3] // HOP_LENGTH >= IDS.shape[1]  # a few frames per id
    assert np.abs(audio).max() <= 1.0
    assert audio.std() > 0.01  # not silence


def test_deterministic_when_noise_scales_are_zero(session: ort.InferenceSession) -> None:
    first = run(session, IDS, [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(first, run(session, IDS, [0.0, 1.0, 0.0]))


def test_noise_scales_add_randomness(session: ort.InferenceSession) -> None:
    a = run(session, IDS, [0.667, 1.0, 0.0])
    b = run(session, IDS, [0.667, 1.0, 0.0])
    assert a.shape == b.shape and not np.array_equal(a, b)
    lengths = {run(session, IDS, [0.0, 1.0, 3.0]).shape[3] for _ in range(8)}
    assert len(lengths) > 1  # noise_w moves the durations


def test_length_scale_stretches(session: ort.InferenceSession) -> None:
    short = run(session, IDS, [0.0, 1.0, 0.0]).shape[3]
    long = run(session, IDS, [0.0, 2.0, 0.0]).shape[3]
    assert long >= 1.8 * short


def test_multi_speaker_model_takes_sid(multi_speaker_model_dir: Path) -> None:
    session = ort.InferenceSession(
        str(multi_speaker_model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    assert "sid" in {i.name for i in session.get_inputs()}
    zero = run(session, IDS, [0.0, 1.0, 0.0], sid=np.array([0], dtype=np.int64))
    two = run(session, IDS, [0.0, 1.0, 0.0], sid=np.array([2], dtype=np.int64))
    assert zero.shape != two.shape or not np.allclose(zero, two)
    config = load_voice_config(multi_speaker_model_dir / "model.onnx.json")
    assert config.num_speakers == 3 and config.speaker_id_map["speaker_2"] == 2


def test_medium_is_sized_like_a_piper_medium_voice() -> None:
    model = build_test_model("medium")
    parameters = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert 10_000_000 < parameters < 40_000_000
    assert SHAPES["medium"].hidden == 192


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_test_model(tmp_path, num_speakers=0)
    with pytest.raises(ValueError):
        write_test_model(tmp_path, size="large")  # type: ignore[arg-type]
