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
        # Type left open, as piper's patch does: onnxruntime infers it.
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    return name
