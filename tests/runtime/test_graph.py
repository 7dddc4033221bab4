from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from tts_runtime.graph import (
    DurationsNotFoundError,
    expose_durations,
    find_durations_tensor,
    isolate_consumed_outputs,
)


@pytest.fixture
def model(small_model_dir: Path) -> onnx.ModelProto:
    return onnx.load(str(small_model_dir / "model.onnx"))


def durations_name(model: onnx.ModelProto) -> str:
    return str(next(n.output[0] for n in model.graph.node if n.op_type == "Ceil"))


def test_exposes_the_ceil_as_an_output_once(model: onnx.ModelProto) -> None:
    name = expose_durations(model)
    assert name == durations_name(model)
    assert expose_durations(model) == name  # already exposed (e.g. piper's patch): no-op
    assert [o.name for o in model.graph.output] == ["output", name]


def test_finds_the_ceil_feeding_the_length_regulator_among_others(
    model: onnx.ModelProto,
) -> None:
    # A real export may round elsewhere too (e.g. a Ceil on a shape computation).
    model.graph.node.append(helper.make_node("Ceil", ["scales"], ["unrelated_ceil"]))
    model.graph.node.append(helper.make_node("Neg", ["unrelated_ceil"], ["unrelated_neg"]))
    assert find_durations_tensor(model) == durations_name(model)


def test_two_candidate_ceils_are_ambiguous(model: onnx.ModelProto) -> None:
    model.graph.node.append(helper.make_node("Ceil", ["scales"], ["second_ceil"]))
    model.graph.node.append(
        helper.make_node("CumSum", ["second_ceil", "const_axis"], ["second_cumsum"])
    )
    with pytest.raises(DurationsNotFoundError, match="cannot tell"):
        find_durations_tensor(model)


def test_no_ceil(model: onnx.ModelProto) -> None:
    del model.graph.node[:]
    with pytest.raises(DurationsNotFoundError, match="no Ceil"):
        find_durations_tensor(model)


def test_exposed_durations_output_gets_a_type(model: onnx.ModelProto) -> None:
    name = expose_durations(model)
    [output] = [o for o in model.graph.output if o.name == name]
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_isolating_consumed_outputs_keeps_names_and_results(model: onnx.ModelProto) -> None:
    name = expose_durations(model)
    assert isolate_consumed_outputs(model) == 1
    assert isolate_consumed_outputs(model) == 0  # nothing left to isolate
    assert [o.name for o in model.graph.output] == ["output", name]
    assert not any(name in node.input for node in model.graph.node)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[1, 0, 20, 0, 2]], dtype=np.int64)
    feeds = {"input": ids, "input_lengths": np.array([5]), "scales": np.zeros(3, np.float32)}
    feeds["scales"][1] = 1.0
    audio, frames = session.run(["output", name], feeds)
    assert int(frames.sum()) * 256 == audio.shape[3]
