"""A VITS-shaped Piper voice with random weights, built with the onnx package alone.

No real voice can be downloaded where this project is tested, so tests, the demo and the
benchmark use this model. It honours Piper's export contract exactly: inputs `input`
int64 [B,T], `input_lengths` int64 [B], `scales` float32 [3] (noise_scale, length_scale,
noise_w) and `sid` int64 [B] for multi-speaker voices; output `output` float32
[B,1,1,samples]. The graph follows VITS inference: phoneme embedding, a masked conv
encoder, a duration predictor whose durations come from a Ceil (what the runtime exposes
to trim padded batch items), length regulation by cumulative durations (VITS's
generate_path), prior noise (RandomNormalLike x noise_scale), a masked conv "flow", and a
HiFi-GAN-like decoder (transposed convs and residual blocks) producing hop_length samples
per frame. With both noise scales 0 it is deterministic.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tts_runtime.voice import BOS, EOS, PAD, VoiceConfig

ModelSize = Literal["small", "medium"]

# Piper exports at opset 15; IR 8 is what that opset needs and every onnxruntime reads.
OPSET = 15
IR_VERSION = 8
SAMPLE_RATE = 22050
HOP_LENGTH = 256


@dataclass(frozen=True)
class _Shape:
    hidden: int
    encoder_layers: int
    ffn: int
    inter: int
    duration_channels: int
    flow_layers: int
    decoder_channels: int
    upsample_rates: tuple[int, ...]
    resblock_kernels: tuple[int, ...]
    resblock_dilations: tuple[int, ...]


SHAPES: dict[str, _Shape] = {
    # Tiny: builds in well under a second and runs a sentence in milliseconds.
    "small": _Shape(32, 2, 64, 16, 32, 1, 32, (8, 8, 4), (3,), (1, 3)),
    # Piper "medium" sizes: hidden 192, decoder 512 channels upsampled 8x8x2x2 = 256.
    "medium": _Shape(192, 6, 768, 192, 256, 4, 512, (8, 8, 2, 2), (3, 7, 11), (1, 3, 5)),
}


def phoneme_id_map() -> dict[str, list[int]]:
    """Piper's special symbols, then the characters a `text` voice maps directly."""
    symbols = [PAD, BOS, EOS, " ", *"!'(),-.:;?", *string.ascii_lowercase]
    symbols += [*string.ascii_uppercase, *string.digits]
    symbols += [chr(c) for c in range(0x300, 0x30D)]  # combining accents left by NFD
    return {s: [i] for i, s in enumerate(symbols)}


class _GraphBuilder:
    """Appends nodes and random initializers, naming tensors uniquely."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: np.ndarray, hint: str = "const") -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def weight(self, shape: tuple[int, ...], fan_in: int, gain: float = 1.0) -> str:
        std = gain / math.sqrt(fan_in)
        return self.const(self.rng.normal(0.0, std, shape).astype(np.float32), "weight")

    def bias(self, channels: int, value: float = 0.0) -> str:
        return self.const(np.full((channels,), value, np.float32), "bias")

    def conv(
        self,
        x: str,
        c_in: int,
        c_out: int,
        kernel: int,
        dilation: int = 1,
        gain: float = 1.0,
        bias: float = 0.0,
    ) -> str:
        pad = dilation * (kernel - 1) // 2
        w = self.weight((c_out, c_in, kernel), c_in * kernel, gain)
        return self.op(
            "Conv",
            [x, w, self.bias(c_out, bias)],
            "conv",
            kernel_shape=[kernel],
            pads=[pad, pad],
            dilations=[dilation],
        )

    def conv_transpose(self, x: str, c_in: int, c_out: int, rate: int) -> str:
        # kernel 2r, stride r, padding r/2: exactly r output frames per input frame.
        w = self.weight((c_in, c_out, 2 * rate), c_in * 2, 1.0)
        return self.op(
            "ConvTranspose",
            [x, w, self.bias(c_out)],
            "upsample",
            kernel_shape=[2 * rate],
            strides=[rate],
            pads=[rate // 2, rate // 2],
        )

    def lrelu(self, x: str) -> str:
        return self.op("LeakyRelu", [x], "lrelu", alpha=0.1)

    def scalar(self, value: float) -> str:
        return self.const(np.array(value, np.float32), "scalar")

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, np.int64), "ints")


def build_test_model(
    size: ModelSize = "small", num_speakers: int = 1, seed: int = 1234
) -> onnx.ModelProto:
    """The ONNX graph alone (see the module docstring)."""
    shape = SHAPES[size]
    n_symbols = len(phoneme_id_map())
    g = _GraphBuilder(seed)
    h, c = shape.hidden, shape.inter

    # Text encoder: embedding x sqrt(hidden), masked convs (VITS masks after every layer,
    # so a padded batch item's real positions never see its padding).
    emb = g.const(g.rng.normal(0.0, h**-0.5, (n_symbols, h)).astype(np.float32), "emb")
    x = g.op("Gather", [emb, "input"], "embedded")
    x = g.op("Mul", [x, g.scalar(math.sqrt(h))])
    x = g.op("Transpose", [x], "x", perm=[0, 2, 1])  # [B,H,T]
    t_text = g.op("Gather", [g.op("Shape", ["input"]), g.ints(1)], "t_text")
    positions = g.op(
        "Range",
        [g.const(np.array(0, np.int64)), g.op("Squeeze", [t_text]), g.const(np.array(1, np.int64))],
        "positions",
    )
    x_mask = g.op(
        "Less",
        [
            g.op("Unsqueeze", [positions, g.ints(0)]),
            g.op("Unsqueeze", ["input_lengths", g.ints(1)]),
        ],
    )
    x_mask = g.op("Unsqueeze", [g.op("Cast", [x_mask], to=TensorProto.FLOAT), g.ints(1)], "x_mask")
    x = g.op("Mul", [x, x_mask])
    for _ in range(shape.encoder_layers):
        y = g.op("Relu", [g.conv(x, h, h, 5, gain=1.0)])
        x = g.op("Mul", [g.op("Add", [x, g.op("Mul", [y, g.scalar(0.5)])]), x_mask])
        y = g.op("Relu", [g.conv(x, h, shape.ffn, 3)])
        y = g.conv(g.op("Mul", [y, x_mask]), shape.ffn, h, 3, gain=0.5)
        x = g.op("Mul", [g.op("Add", [x, y]), x_mask])

    speaker: str | None = None
    if num_speakers > 1:
        spk = g.const(g.rng.normal(0.0, 0.5, (num_speakers, h)).astype(np.float32), "spk_emb")
        speaker = g.op("Unsqueeze", [g.op("Gather", [spk, "sid"]), g.ints(2)], "speaker")
        x = g.op("Mul", [g.op("Add", [x, speaker]), x_mask])

    stats = g.op("Mul", [g.conv(x, h, 2 * c, 1, gain=0.5), x_mask], "stats")
    m_p = g.name("m_p")
    logs_p = g.name("logs_p")
    g.nodes.append(
        helper.make_node("Split", [stats, g.ints(c, c)], [m_p, logs_p], name="split_stats", axis=1)
    )
    logs_p = g.op("Mul", [logs_p, g.scalar(0.1)])  # keep exp(logs) near 1

    # Duration predictor: about 3 frames per id (Piper's rate at 22050 Hz / hop 256).
    noise_scale = g.op("Gather", ["scales", g.const(np.array(0, np.int64))], "noise_scale")
    length_scale = g.op("Gather", ["scales", g.const(np.array(1, np.int64))], "length_scale")
    noise_w = g.op("Gather", ["scales", g.const(np.array(2, np.int64))], "noise_w")
    d = g.op("Mul", [g.op("Relu", [g.conv(x, h, shape.duration_channels, 3)]), x_mask])
    logw = g.conv(d, shape.duration_channels, 1, 1, gain=0.3, bias=math.log(3.0))
    logw_noise = g.op("RandomNormalLike", [logw], "logw_noise", dtype=TensorProto.FLOAT)
    logw = g.op("Add", [logw, g.op("Mul", [g.op("Mul", [logw_noise, noise_w]), g.scalar(0.3)])])
    w = g.op("Mul", [g.op("Mul", [g.op("Exp", [logw]), x_mask]), length_scale])
    w_ceil = g.op("Ceil", [w], "w_ceil")  # [B,1,T] frames per phoneme id

    # Length regulation (VITS generate_path): frame f belongs to id t when
    # cumsum(w)[t-1] <= f < cumsum(w)[t].
    y_lengths = g.op("Max", [g.op("ReduceSum", [w_ceil, g.ints(1, 2)], keepdims=0), g.scalar(1.0)])
    y_lengths = g.op("Cast", [y_lengths], "y_lengths", to=TensorProto.INT64)
    t_frames = g.op("ReduceMax", [y_lengths], "t_frames", keepdims=0)
    frames = g.op(
        "Range",
        [g.const(np.array(0, np.int64)), t_frames, g.const(np.array(1, np.int64))],
        "frames",
    )
    y_mask = g.op(
        "Less", [g.op("Unsqueeze", [frames, g.ints(0)]), g.op("Unsqueeze", [y_lengths, g.ints(1)])]
    )
    y_mask = g.op("Unsqueeze", [g.op("Cast", [y_mask], to=TensorProto.FLOAT), g.ints(1)], "y_mask")
    cum = g.op(
        "Transpose", [g.op("CumSum", [w_ceil, g.const(np.array(2, np.int64))])], perm=[0, 2, 1]
    )
    cum_prev = g.op("Sub", [cum, g.op("Transpose", [w_ceil], perm=[0, 2, 1])])
    frames_f = g.op("Unsqueeze", [g.op("Cast", [frames], to=TensorProto.FLOAT), g.ints(0, 1)])
    path = g.op(
        "Sub",
        [
            g.op("Cast", [g.op("Less", [frames_f, cum])], to=TensorProto.FLOAT),
            g.op("Cast", [g.op("Less", [frames_f, cum_prev])], to=TensorProto.FLOAT),
        ],
        "path",
    )  # [B,T,frames]
    m = g.op("MatMul", [m_p, path])
    logs = g.op("MatMul", [logs_p, path])
    prior_noise = g.op("RandomNormalLike", [m], "prior_noise", dtype=TensorProto.FLOAT)
    noise = g.op("Mul", [g.op("Mul", [prior_noise, g.op("Exp", [logs])]), noise_scale])
    z = g.op("Mul", [g.op("Add", [m, noise]), y_mask], "z_p")

    for _ in range(shape.flow_layers):  # stands in for VITS's reversed coupling flow
        y = g.conv(g.lrelu(g.conv(z, c, c, 5)), c, c, 1, gain=0.5)
        z = g.op("Mul", [g.op("Add", [z, y]), y_mask])

    # HiFi-GAN-like decoder. Like VITS it is not masked, so near the end of a padded
    # batch item it sees a little of the padding (the batch-vs-alone boundary effect).
    channels = shape.decoder_channels
    o = g.conv(z, c, channels, 7)
    if speaker is not None:
        o = g.op("Add", [o, g.conv(speaker, h, channels, 1, gain=0.5)])
    for rate in shape.upsample_rates:
        o = g.conv_transpose(g.lrelu(o), channels, channels // 2, rate)
        channels //= 2
        branches = []
        for kernel in shape.resblock_kernels:
            b = o
            for dilation in shape.resblock_dilations:
                y = g.conv(g.lrelu(b), channels, channels, kernel, dilation, gain=0.5)
                b = g.op("Add", [b, y])
            branches.append(b)
        o = branches[0] if len(branches) == 1 else g.op("Mean", branches)
    o = g.op("Tanh", [g.conv(g.lrelu(o), channels, 1, 7, gain=0.5)])
    g.nodes.append(helper.make_node("Unsqueeze", [o, g.ints(1)], ["output"], name="output"))

    inputs = [
        helper.make_tensor_value_info("input", TensorProto.INT64, ["batch_size", "phonemes"]),
        helper.make_tensor_value_info("input_lengths", TensorProto.INT64, ["batch_size"]),
        helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
    ]
    if num_speakers > 1:
        inputs.append(helper.make_tensor_value_info("sid", TensorProto.INT64, ["batch_size"]))
    output = helper.make_tensor_value_info(
        "output", TensorProto.FLOAT, ["batch_size", 1, 1, "time"]
    )
    graph = helper.make_graph(g.nodes, f"vits_test_{size}", inputs, [output], g.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tts-runtime"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def make_voice_config(num_speakers: int = 1) -> VoiceConfig:
    return VoiceConfig(
        sample_rate=SAMPLE_RATE,
        phoneme_type="text",
        espeak_voice="en-us",
        phoneme_id_map=phoneme_id_map(),
        num_symbols=len(phoneme_id_map()),
        num_speakers=num_speakers,
        speaker_id_map={f"speaker_{i}": i for i in range(num_speakers)} if num_speakers > 1 else {},
        hop_length=HOP_LENGTH,
    )


def write_test_model(out_dir: Path, size: ModelSize = "small", num_speakers: int = 1) -> Path:
    """Write model.onnx and model.onnx.json (Piper's layout) into out_dir; return out_dir."""
    if num_speakers < 1:
        raise ValueError("num_speakers must be at least 1")
    if size not in SHAPES:
        raise ValueError(f"size must be one of {sorted(SHAPES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(build_test_model(size, num_speakers), str(out_dir / "model.onnx"))
    config = make_voice_config(num_speakers).to_piper_json()
    config["audio"]["quality"] = size
    config["dataset"] = f"tts-runtime-test-{size}"
    (out_dir / "model.onnx.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))
    return out_dir
