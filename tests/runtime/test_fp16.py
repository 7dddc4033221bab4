from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnxconverter_common import float16
from tts_runtime.fp16 import (
    OP_BLOCK_LIST,
    convert_model_to_fp16,
    convert_to_fp16,
    fix_float_casts,
    name_unnamed_nodes,
)
from tts_runtime.graph import expose_durations

IDS = np.array([[1, 0, 20, 0, 21, 0, 22, 0, 23, 0, 24, 0, 2]], dtype=np.int64)
QUIET = np.array([0.0, 1.0, 0.0], dtype=np.float32)
# FP16 keeps about 3 significant digits (unit roundoff 4.9e-4); through ~20 conv layers
# into a tanh with output in [-1, 1] the error stays around 1e-3 (measured 6e-4 on small).
FP16_ATOL = 5e-3


def cpu_session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def synthesize(session: ort.InferenceSession) -> np.ndarray:
    feeds = {"input": IDS, "input_lengths": np.array([IDS.shape[1]]), "scales": QUIET}
    return np.asarray(session.run(["output"], feeds)[0])


@pytest.fixture(scope="module")
def fp32(small_model_dir: Path) -> onnx.ModelProto:
    return onnx.load(str(small_model_dir / "model.onnx"))


@pytest.fixture(scope="module")
def fp16(fp32: onnx.ModelProto) -> onnx.ModelProto:
    return convert_model_to_fp16(fp32)


def test_weights_are_fp16_and_io_stays_fp32(fp16: onnx.ModelProto) -> None:
    # Only constants of blocked ops (Max, Range, CumSum...) stay fp32: a few scalars.
    fp32_values = [t for t in fp16.graph.initializer if t.data_type == TensorProto.FLOAT]
    assert sum(int(np.prod(t.dims)) for t in fp32_values) <= 4
    assert sum(t.data_type == TensorProto.FLOAT16 for t in fp16.graph.initializer) > 20
    io = [*fp16.graph.input, *fp16.graph.output]
    assert {i.name: i.type.tensor_type.elem_type for i in io if i.name != "input"} == {
        "input_lengths": TensorProto.INT64,
        "scales": TensorProto.FLOAT,
        "output": TensorProto.FLOAT,
    }


def test_random_normal_like_stays_fp32(fp16: onnx.ModelProto) -> None:
    producers = {out: node for node in fp16.graph.node for out in node.output}
    noise = [n for n in fp16.graph.node if n.op_type == "RandomNormalLike"]
    assert len(noise) == 2
    for node in noise:
        feeder = producers[node.input[0]]
        assert feeder.op_type == "Cast"
        assert helper.get_attribute_value(feeder.attribute[0]) == TensorProto.FLOAT


def test_fp16_matches_fp32_with_noise_off(fp32: onnx.ModelProto, fp16: onnx.ModelProto) -> None:
    reference = synthesize(cpu_session(fp32))
    half = synthesize(cpu_session(fp16))
    assert half.dtype == np.float32
    assert half.shape == reference.shape  # same durations, same length
    np.testing.assert_allclose(half, reference, atol=FP16_ATOL)
    assert np.abs(half - reference).max() > 0  # really computed in fp16


def test_plain_converter_output_is_refused_and_the_cast_fix_repairs_it(
    fp32: onnx.ModelProto,
) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    name_unnamed_nodes(model)
    raw = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=OP_BLOCK_LIST)
    with pytest.raises(Exception, match="does not match expected type"):
        cpu_session(raw)
    assert fix_float_casts(raw) > 0
    assert synthesize(cpu_session(raw)).shape[3] > 0


def test_conversion_leaves_its_input_alone(fp32: onnx.ModelProto) -> None:
    before = fp32.SerializeToString()
    convert_model_to_fp16(fp32)
    assert fp32.SerializeToString() == before


def test_name_unnamed_nodes_gives_unique_names() -> None:
    nodes = [helper.make_node("Relu", ["x"], [f"y{i}"]) for i in range(3)]
    nodes.append(helper.make_node("Relu", ["x"], ["z"], name="Relu_0"))
    graph = helper.make_graph(nodes, "g", [], [])
    model = helper.make_model(graph)
    name_unnamed_nodes(model)
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == len(names)


def test_convert_file_to_file(small_model_dir: Path, tmp_path: Path, fp32: onnx.ModelProto) -> None:
    dst = tmp_path / "model.fp16.onnx"
    convert_to_fp16(small_model_dir / "model.onnx", dst)
    size_ratio = dst.stat().st_size / (small_model_dir / "model.onnx").stat().st_size
    assert size_ratio < 0.6  # weights halved
    np.testing.assert_allclose(
        synthesize(cpu_session(dst)), synthesize(cpu_session(fp32)), atol=FP16_ATOL
    )


def test_model_with_durations_already_exposed_converts(fp32: onnx.ModelProto) -> None:
    """Piper's alignment patch adds w_ceil as an untyped output that VITS also reads inside
    the graph; the plain converter breaks such a model, ours keeps it loadable."""
    patched = onnx.ModelProto()
    patched.CopyFrom(fp32)
    durations = expose_durations(patched)
    del patched.graph.output[1:]
    patched.graph.output.append(onnx.ValueInfoProto(name=durations))  # as piper adds it
    half = convert_model_to_fp16(patched)
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [TensorProto.FLOAT] * 2
    session = cpu_session(half)
    feeds = {"input": IDS, "input_lengths": np.array([IDS.shape[1]]), "scales": QUIET}
    audio, frames = session.run(["output", durations], feeds)
    reference = synthesize(cpu_session(fp32))
    assert int(frames.sum()) * 256 == audio.shape[3] == reference.shape[3]
