"""Graph surgery on Piper/VITS ONNX models: exposing the phoneme durations.

Piper's export outputs only audio, but a padded batch item's audio runs on past its own
end (the decoder is not masked), so the runtime needs each item's length: the sum of its
durations x hop_length. VITS computes the durations as `w_ceil = ceil(exp(logw) * x_mask
* length_scale)`; like piper's own alignment patch (piper.patch_voice_with_alignment) we
mark that Ceil's output as an extra graph output.
"""

from __future__ import annotations

from collections import defaultdict, deque

import onnx

# Ops through which VITS consumes w_ceil: generate_path's cumulative sum and the
# y_lengths sum. A Ceil that reaches neither within a few nodes is not the durations.
_LENGTH_REGULATOR_OPS = frozenset({"CumSum", "ReduceSum"})
_SEARCH_DEPTH = 6


class DurationsNotFoundError(ValueError):
    """The graph has no single Ceil feeding a length regulator."""


def find_durations_tensor(model: onnx.ModelProto) -> str:
    """Name of the Ceil output that holds the per-phoneme frame counts."""
    ceil_outputs: list[str] = [n.output[0] for n in model.graph.node if n.op_type == "Ceil"]
    if not ceil_outputs:
        raise DurationsNotFoundError(
            "the graph has no Ceil node, so it exposes no phoneme durations "
            "(not a VITS/Piper export?)"
        )
    if len(ceil_outputs) == 1:
        return ceil_outputs[0]
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    feeding = [t for t in ceil_outputs if _reaches_length_regulator(t, consumers)]
    if len(feeding) != 1:
        raise DurationsNotFoundError(
            f"found {len(ceil_outputs)} Ceil nodes and {len(feeding)} of them feed a length "
            "regulator (CumSum/ReduceSum); cannot tell which holds the durations"
        )
    return feeding[0]


def _reaches_length_regulator(tensor: str, consumers: dict[str, list[onnx.NodeProto]]) -> bool:
    queue = deque([(tensor, 0)])
    seen = {tensor}
    while queue:
        name, depth = queue.popleft()
        for node in consumers.get(name, []):
            if node.op_type in _LENGTH_REGULATOR_OPS:
                return True
            if depth + 1 < _SEARCH_DEPTH:
                for out in node.output:
                    if out not in seen:
                        seen.add(out)
                        queue.append((out, depth + 1))
    return False


def expose_durations(model: onnx.ModelProto) -> str:
    """Make the durations tensor a graph output (in place, idempotent); return its name.

    A model already patched by piper's alignment script keeps its output as is."""
    name = find_durations_tensor(model)
    if not any(output.name == name for output in model.graph.output):
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    type_untyped_outputs(model)
    return name


def type_untyped_outputs(model: onnx.ModelProto) -> None:
    """Give graph outputs added without a type (as piper's patch adds them) their type.

    onnxruntime copes with an untyped output, but the fp16 converter does not: with
    keep_io_types it casts the untyped output the wrong way and onnxruntime then refuses
    the model. Shape inference finds the type; if it cannot, the output stays untyped."""
    untyped = [o for o in model.graph.output if not o.type.tensor_type.elem_type]
    if not untyped:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort; an untyped output still runs in fp32
        return
    known = {info.name: info for info in inferred.graph.value_info}
    for output in untyped:
        if output.name in known:
            output.CopyFrom(known[output.name])


def isolate_consumed_outputs(model: onnx.ModelProto) -> int:
    """Route graph outputs that other nodes also read through an Identity (in place).

    With keep_io_types the fp16 converter renames an output's producer to feed a Cast to
    float32, but nodes that read the output inside the graph then get that float32 copy
    where they expect float16, and onnxruntime refuses the model. This is exactly the
    durations output (VITS reads w_ceil again for the lengths and the path), so give the
    graph its own Identity to produce each such output. Output names do not change.
    Returns how many outputs were rerouted."""
    outputs = {o.name for o in model.graph.output}
    consumed = {name for node in model.graph.node for name in node.input} & outputs
    for name in sorted(consumed):
        internal = f"{name}__internal"
        for node in model.graph.node:
            node.output[:] = [internal if out == name else out for out in node.output]
            node.input[:] = [internal if inp == name else inp for inp in node.input]
        model.graph.node.append(
            onnx.helper.make_node("Identity", [internal], [name], name=f"{name}__output")
        )
    return len(consumed)
