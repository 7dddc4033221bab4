from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from tts_runtime import engine as engine_module
from tts_runtime.engine import OnnxEngine, fp16_path
from tts_runtime.engine_types import MEMORY_MODES, SynthesisItem, SynthesisScales
from tts_runtime.errors import ModelLoadError
from tts_runtime.fp16 import convert_to_fp16
from tts_runtime.graph import find_durations_tensor
from tts_runtime.testmodel import write_test_model

QUIET = SynthesisScales(noise_scale=0.0, length_scale=1.0, noise_w=0.0)
SHORT = SynthesisItem((1, 0, 20, 0, 2))
LONG = SynthesisItem((1, 0, 20, 0, 21, 0, 22, 0, 23, 0, 24, 0, 25, 0, 3, 0, 26, 0, 2))


@pytest.fixture(scope="module")
def engine(small_model_dir: Path) -> OnnxEngine:
    return OnnxEngine.load(small_model_dir, precision="fp32", device="cpu")


@pytest.fixture
def model_copy(small_model_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(small_model_dir, tmp_path / "voice")
    return tmp_path / "voice"


def test_loads_on_cpu(engine: OnnxEngine, small_model_dir: Path) -> None:
    assert engine.provider == "CPUExecutionProvider"
    assert engine.precision == "fp32"
    assert engine.fallback_reason is None
    assert engine.sample_rate == 22050
    assert engine.model_name == small_model_dir.name
    model = onnx.load(str(small_model_dir / "model.onnx"))
    assert engine.num_parameters == sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def test_loads_a_single_onnx_file_by_path(small_model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(small_model_dir / "model.onnx", tmp_path / "en_test-voice.onnx")
    shutil.copy(small_model_dir / "model.onnx.json", tmp_path / "en_test-voice.onnx.json")
    engine = OnnxEngine.load(tmp_path / "en_test-voice.onnx", precision="fp32", device="cpu")
    assert engine.model_name == "en_test-voice"


def test_fp16_without_cuda_falls_back_to_fp32_on_cpu(small_model_dir: Path) -> None:
    engine = OnnxEngine.load(small_model_dir, precision="fp16", device="cpu")
    assert (engine.provider, engine.precision) == ("CPUExecutionProvider", "fp32")
    assert engine.fallback_reason is not None and "CPU" in engine.fallback_reason


def test_auto_device_says_why_it_runs_on_cpu(small_model_dir: Path) -> None:
    if engine_module.cuda_problem() is None:
        pytest.skip("CUDA works on this machine: there is no fallback to observe")
    engine = OnnxEngine.load(small_model_dir, precision="fp16", device="auto")
    assert (engine.provider, engine.precision) == ("CPUExecutionProvider", "fp32")
    assert engine.fallback_reason is not None and "CUDA" in engine.fallback_reason
    with pytest.raises(ModelLoadError, match="device cuda requested"):
        OnnxEngine.load(small_model_dir, precision="fp16", device="cuda")


def test_fp16_path_converts_in_memory_or_uses_the_file_beside(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend CUDA works: onnxruntime then runs the CUDA plan on its CPU fallback, which
    # exercises the fp16 model selection without a GPU.
    monkeypatch.setattr(engine_module, "cuda_problem", lambda: None)
    in_memory = OnnxEngine.load(model_copy, precision="fp16", device="auto")
    assert in_memory.precision == "fp16"
    assert not fp16_path(model_copy / "model.onnx").exists()  # nothing written to disk
    reference = OnnxEngine.load(model_copy, precision="fp32", device="cpu")
    np.testing.assert_allclose(
        in_memory.synthesize([LONG], QUIET)[0], reference.synthesize([LONG], QUIET)[0], atol=5e-3
    )

    convert_to_fp16(model_copy / "model.onnx", model_copy / "model.fp16.onnx")
    (model_copy / "model.onnx").write_bytes(b"corrupt: proves the fp16 file is the one read")
    from_file = OnnxEngine.load(model_copy, precision="fp16", device="auto")
    assert from_file.precision == "fp16"
    assert len(from_file.synthesize([SHORT], QUIET)[0]) > 0


def test_audio_is_trimmed_to_durations_times_hop(engine: OnnxEngine) -> None:
    [alone] = engine.synthesize([SHORT], QUIET)
    short, long = engine.synthesize([SHORT, LONG], QUIET)
    assert len(short) == len(alone)  # the padded tail is cut off
    assert len(short) % engine.config.hop_length == 0
    assert len(long) > len(short)
    assert short.dtype == np.float32 and short.ndim == 1


def test_batched_item_sounds_like_the_item_alone(engine: OnnxEngine) -> None:
    """Tolerance: the decoder (like VITS's HiFi-GAN) is not masked, so in a batch its
    convolutions near an item's end read the item's padded tail, which holds the first
    decoder layer's response to the item's last frames instead of zeros. Only the last
    samples change, within the receptive field of the layers after conv_pre (measured:
    296 samples, about one frame, in the small model), so the last 2 hops may differ.
    Everything before matches within 1e-4 (about 3 steps of 16-bit PCM: room for float
    reassociation between batch shapes; on this CPU it is in fact exact)."""
    alone = [engine.synthesize([item], QUIET)[0] for item in (SHORT, LONG)]
    batched = engine.synthesize([SHORT, LONG, SHORT], QUIET)
    boundary = 2 * engine.config.hop_length
    for solo, together in zip([alone[0], alone[1], alone[0]], batched, strict=True):
        assert len(solo) == len(together)
        np.testing.assert_allclose(together[:-boundary], solo[:-boundary], atol=1e-4)
        assert np.abs(together[-boundary:]).max() <= 1.0
    # The longest item has no padding at all, so it matches everywhere.
    np.testing.assert_allclose(batched[1], alone[1], atol=1e-4)


def test_each_speaker_gets_its_own_voice(multi_speaker_model_dir: Path) -> None:
    engine = OnnxEngine.load(multi_speaker_model_dir, precision="fp32", device="cpu")
    a, b, a_again = engine.synthesize(
        [
            SynthesisItem(LONG.phoneme_ids, 0),
            SynthesisItem(LONG.phoneme_ids, 2),
            SynthesisItem(LONG.phoneme_ids, 0),
        ],
        QUIET,
    )
    np.testing.assert_allclose(a, a_again, atol=1e-5)
    assert len(a) != len(b) or not np.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        (SynthesisItem(()), "no phoneme ids"),
        (SynthesisItem((1, 9999, 2)), "phoneme ids"),
        (SynthesisItem((1, 0, 2), speaker_id=1), "speaker id"),
    ],
)
def test_bad_items_raise_value_error(engine: OnnxEngine, item: SynthesisItem, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        engine.synthesize([SHORT, item], QUIET)


def test_empty_batch(engine: OnnxEngine) -> None:
    assert engine.synthesize([], QUIET) == []


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        OnnxEngine.load(tmp_path / "absent", precision="fp32", device="cpu")


def test_corrupt_onnx(model_copy: Path) -> None:
    (model_copy / "model.onnx").write_bytes(b"\x00garbage\xff" * 100)
    with pytest.raises(ModelLoadError) as caught:
        OnnxEngine.load(model_copy, precision="fp32", device="cpu")
    assert "model.onnx" in str(caught.value) and "ONNX" in str(caught.value)


def test_truncated_onnx(model_copy: Path) -> None:
    data = (model_copy / "model.onnx").read_bytes()
    (model_copy / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"model\.onnx"):
        OnnxEngine.load(model_copy, precision="fp32", device="cpu")


def set_num_speakers(model_dir: Path, count: int) -> None:
    path = model_dir / "model.onnx.json"
    config = json.loads(path.read_text())
    config["num_speakers"] = count
    config["speaker_id_map"] = {}
    path.write_text(json.dumps(config))


def test_config_claims_speakers_the_model_lacks(model_copy: Path) -> None:
    set_num_speakers(model_copy, 2)
    with pytest.raises(ModelLoadError, match="no sid input"):
        OnnxEngine.load(model_copy, precision="fp32", device="cpu")


def test_model_wants_sid_but_config_has_one_speaker(tmp_path: Path) -> None:
    model_dir = write_test_model(tmp_path, num_speakers=2)
    set_num_speakers(model_dir, 1)
    with pytest.raises(ModelLoadError, match="sid"):
        OnnxEngine.load(model_dir, precision="fp32", device="cpu")


def rewrite_model(model_dir: Path, edit: Callable[[onnx.ModelProto], None]) -> None:
    model = onnx.load(str(model_dir / "model.onnx"))
    edit(model)
    onnx.save(model, str(model_dir / "model.onnx"))


def _ceil_to_floor(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        if node.op_type == "Ceil":
            node.op_type = "Floor"


def _rename_scales(model: onnx.ModelProto) -> None:
    for graph_input in model.graph.input:
        if graph_input.name == "scales":
            graph_input.name = "settings"


@pytest.mark.parametrize(
    ("edit", "problem"),
    [(_ceil_to_floor, "no Ceil"), (_rename_scales, "lacks the Piper inputs .*scales")],
)
def test_model_breaking_the_contract(
    model_copy: Path, edit: Callable[[onnx.ModelProto], None], problem: str
) -> None:
    rewrite_model(model_copy, edit)
    with pytest.raises(ModelLoadError, match=problem):
        OnnxEngine.load(model_copy, precision="fp32", device="cpu")


def test_durations_found_for_the_loaded_model(small_model_dir: Path) -> None:
    model = onnx.load(str(small_model_dir / "model.onnx"))
    ceil = next(n for n in model.graph.node if n.op_type == "Ceil")
    assert find_durations_tensor(model) == ceil.output[0]


def test_memory_modes_make_the_same_audio(small_model_dir: Path) -> None:
    runs = {
        mode: OnnxEngine.load(small_model_dir, "fp32", "cpu", mode).synthesize([SHORT, LONG], QUIET)
        for mode in MEMORY_MODES
    }
    for audio in runs.values():
        for got, expected in zip(audio, runs["grow"], strict=True):
            np.testing.assert_array_equal(got, expected)


_RETAINED = """
import sys
from pathlib import Path
from tts_runtime.engine import OnnxEngine
from tts_runtime.engine_types import MEMORY_MODES, SynthesisItem, SynthesisScales

def rss_mib():
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

engine = OnnxEngine.load(Path(sys.argv[1]), "fp32", "cpu", sys.argv[2])
quiet = SynthesisScales(0.0, 1.0, 0.0)
small = [SynthesisItem((1, 0, 20, 0, 2))]
engine.synthesize(small, quiet)
before = rss_mib()
engine.synthesize([SynthesisItem((1, *[20, 0] * 200, 2))] * 32, quiet)  # one large batch
engine.synthesize(small, quiet)
print(rss_mib() - before)
"""


def test_shrink_gives_a_large_batchs_memory_back_and_grow_keeps_it(
    small_model_dir: Path,
) -> None:
    """Each mode in a fresh process: RSS kept after one large batch and a small one."""
    retained = {
        mode: float(
            subprocess.run(
                [sys.executable, "-c", _RETAINED, str(small_model_dir), mode],
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            ).stdout
        )
        for mode in ("grow", "shrink")
    }
    assert retained["grow"] > 300, retained  # the batch is large enough to show the effect
    assert retained["shrink"] < retained["grow"] / 4, retained


def test_session_options_per_memory_mode() -> None:
    grow, shrink, no_arena = (
        engine_module.session_options(m) for m in ("grow", "shrink", "no-arena")
    )
    assert grow.enable_mem_pattern and grow.enable_cpu_mem_arena  # onnxruntime's defaults
    assert not shrink.enable_mem_pattern and shrink.enable_cpu_mem_arena  # shrinkage needs it
    assert not no_arena.enable_mem_pattern and not no_arena.enable_cpu_mem_arena
