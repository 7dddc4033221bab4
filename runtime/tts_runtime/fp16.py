"""FP32 -> FP16 conversion of Piper/VITS models for the CUDA execution provider."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
from onnx import TensorProto
from onnxconverter_common import float16

from tts_runtime.graph import isolate_consumed_outputs, type_untyped_outputs

# RandomNormalLike is not in onnxconverter-common's default block list, but its fp16
# output would be wrong-typed for the noise it scales: keep it (and its casts) in fp32.
OP_BLOCK_LIST = [*float16.DEFAULT_OP_BLOCK_LIST, "RandomNormalLike"]


def convert_model_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An fp16 copy of model with float32 inputs and outputs (keep_io_types)."""
    source = onnx.ModelProto()
    source.CopyFrom(model)  # the converter edits its argument in place
    name_unnamed_nodes(source)
    type_untyped_outputs(source)  # e.g. durations exposed by piper's alignment patch
    isolate_consumed_outputs(source)
    with warnings.catch_warnings():
        # One warning per tiny weight flushed to fp16's range: noise, not news.
        warnings.filterwarnings("ignore", message=".*will be truncated to", category=UserWarning)
        converted: onnx.ModelProto = float16.convert_float_to_float16(
            source, keep_io_types=True, op_block_list=OP_BLOCK_LIST
        )
    fix_float_casts(converted)
    return converted


def name_unnamed_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name: the converter names the casts it inserts after the
    consuming node, so unnamed consumers of one input yield duplicate names that
    onnxruntime rejects ("two nodes with same node name")."""
    taken = {node.name for node in model.graph.node if node.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def fix_float_casts(model: onnx.ModelProto) -> int:
    """Point Cast nodes at float16 where the converter declared their output float16.

    onnxconverter-common retypes the output of a model's own Cast(to=FLOAT) to float16 but
    leaves `to` alone, and onnxruntime refuses the model ("Type (tensor(float16)) of output
    arg ... does not match expected type (tensor(float))"). Returns how many were fixed."""
    fp16_tensors = {
        info.name
        for info in [*model.graph.value_info, *model.graph.output]
        if info.type.tensor_type.elem_type == TensorProto.FLOAT16
    }
    fixed = 0
    for node in model.graph.node:
        if node.op_type != "Cast" or node.output[0] not in fp16_tensors:
            continue
        for attr in node.attribute:
            if attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
                fixed += 1
    return fixed


def convert_to_fp16(src: Path, dst: Path) -> None:
    """Read an fp32 ONNX file and write its fp16 conversion (float32 I/O kept)."""
    onnx.save(convert_model_to_fp16(onnx.load(str(src))), str(dst))
