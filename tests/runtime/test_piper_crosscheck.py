"""Cross-check with the peer: piper-tts's own PiperVoice runs our test voice.

If Piper's reference implementation produces the same samples from the same files and
text, the runtime's config parsing, phoneme ids and model contract are Piper's, so a real
Piper voice dropped into the runtime behaves the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tts_runtime.engine import OnnxEngine
from tts_runtime.engine_types import SynthesisItem, SynthesisScales
from tts_runtime.text import TextFrontEnd

piper_voice = pytest.importorskip(
    "piper.voice", reason="the optional piper-tts package (GPL-3.0) is not installed"
)
piper_config = pytest.importorskip("piper.config")

TEXT = "Hello there, how are you today?"
QUIET = SynthesisScales(noise_scale=0.0, length_scale=1.0, noise_w=0.0)


def piper_samples(model_dir: Path, text: str, speaker_id: int | None = None) -> list[np.ndarray]:
    voice = piper_voice.PiperVoice.load(model_dir / "model.onnx")
    syn_config = piper_config.SynthesisConfig(
        speaker_id=speaker_id,
        noise_scale=QUIET.noise_scale,
        length_scale=QUIET.length_scale,
        noise_w_scale=QUIET.noise_w,
        normalize_audio=False,  # the runtime returns the model's samples unscaled
    )
    return [chunk.audio_float_array for chunk in voice.synthesize(text, syn_config)]


@pytest.mark.parametrize(
    ("fixture", "speaker_id"), [("small_model_dir", None), ("multi_speaker_model_dir", 2)]
)
def test_piper_voice_and_runtime_produce_the_same_samples(
    request: pytest.FixtureRequest, fixture: str, speaker_id: int | None
) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    engine = OnnxEngine.load(model_dir, precision="fp32", device="cpu")
    ids = TextFrontEnd(engine.config).phoneme_ids(TEXT)
    [ours] = engine.synthesize([SynthesisItem(ids, speaker_id or 0)], QUIET)

    [theirs] = piper_samples(model_dir, TEXT, speaker_id)
    assert len(ours) == len(theirs)
    # Same model, same onnxruntime, same inputs: equal up to Piper's final clip to [-1, 1]
    # (a no-op after the model's tanh).
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_piper_derives_the_same_phoneme_ids(small_model_dir: Path) -> None:
    voice = piper_voice.PiperVoice.load(small_model_dir / "model.onnx")
    [phonemes] = voice.phonemize(TEXT)
    engine = OnnxEngine.load(small_model_dir, precision="fp32", device="cpu")
    assert tuple(voice.phonemes_to_ids(phonemes)) == TextFrontEnd(engine.config).phoneme_ids(TEXT)


def test_piper_alignment_patch_finds_the_same_durations(small_model_dir: Path) -> None:
    """Piper's own alignment support finds the Ceil the runtime trims by."""
    voice = piper_voice.PiperVoice.load(small_model_dir / "model.onnx", include_alignments=True)
    engine = OnnxEngine.load(small_model_dir, precision="fp32", device="cpu")
    ids = TextFrontEnd(engine.config).phoneme_ids(TEXT)
    audio, samples_per_id = voice.phoneme_ids_to_audio(
        list(ids),
        piper_config.SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=1.0),
        include_alignments=True,
    )
    assert samples_per_id is not None
    [ours] = engine.synthesize([SynthesisItem(ids)], QUIET)
    assert int(samples_per_id.sum()) == len(ours) == len(audio)
