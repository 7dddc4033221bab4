"""Piper's voice config (model.onnx.json) and where to find a model's files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from tts_runtime.engine_types import SynthesisScales
from tts_runtime.errors import ModelLoadError

# Piper's symbols: every sentence is BOS, then PAD after each phoneme, then EOS.
BOS = "^"
PAD = "_"
EOS = "$"

DEFAULT_HOP_LENGTH = 256  # Piper's default when the config does not say


class VoiceConfig(BaseModel):
    """The parts of a Piper voice config the runtime uses, flattened.

    Validates either this flat shape or Piper's own nested JSON layout
    (audio.sample_rate, espeak.voice, inference.{noise_scale,length_scale,noise_w})."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sample_rate: int = Field(gt=0)
    phoneme_type: Literal["espeak", "text", "pinyin"] = "espeak"
    espeak_voice: str = ""
    phoneme_id_map: dict[str, list[int]]
    num_symbols: int | None = Field(default=None, gt=0)
    num_speakers: int = Field(default=1, ge=1)
    speaker_id_map: dict[str, int] = Field(default_factory=dict)
    noise_scale: float = Field(default=0.667, ge=0)
    length_scale: float = Field(default=1.0, gt=0)
    noise_w: float = Field(default=0.8, ge=0)
    hop_length: int = Field(default=DEFAULT_HOP_LENGTH, gt=0)
    vowel_clusters: list[list[str]] = Field(default_factory=list)
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file this config was loaded from, for error messages."""
        return self._source

    @model_validator(mode="before")
    @classmethod
    def _flatten_piper_layout(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "audio" not in data:
            return data
        flat = {k: v for k, v in data.items() if k not in ("audio", "espeak", "inference")}
        audio = data.get("audio")
        if isinstance(audio, Mapping) and "sample_rate" in audio:
            flat["sample_rate"] = audio["sample_rate"]
        espeak = data.get("espeak")
        if isinstance(espeak, Mapping) and "voice" in espeak:
            flat["espeak_voice"] = espeak["voice"]
        inference = data.get("inference")
        if isinstance(inference, Mapping):
            for key in ("noise_scale", "length_scale", "noise_w"):
                if key in inference:
                    flat[key] = inference[key]
        return flat

    @model_validator(mode="after")
    def _check_consistency(self) -> VoiceConfig:
        missing = [s for s in (BOS, PAD, EOS) if not self.phoneme_id_map.get(s)]
        if missing:
            raise ValueError(f"phoneme_id_map lacks the symbols {missing} (BOS, PAD, EOS)")
        all_ids = [i for ids in self.phoneme_id_map.values() for i in ids]
        if any(i < 0 for i in all_ids):
            raise ValueError("phoneme_id_map has negative ids")
        if self.num_symbols is not None and max(all_ids) >= self.num_symbols:
            raise ValueError(
                f"phoneme_id_map uses id {max(all_ids)} but num_symbols is {self.num_symbols}"
            )
        bad = {n: s for n, s in self.speaker_id_map.items() if not 0 <= s < self.num_speakers}
        if bad:
            raise ValueError(f"speaker_id_map ids {bad} are outside 0..{self.num_speakers - 1}")
        if self.phoneme_type == "espeak" and not self.espeak_voice:
            raise ValueError("phoneme_type espeak needs espeak.voice")
        return self

    def default_scales(self) -> SynthesisScales:
        return SynthesisScales(
            noise_scale=self.noise_scale, length_scale=self.length_scale, noise_w=self.noise_w
        )

    def to_piper_json(self) -> dict[str, Any]:
        """The config in Piper's own layout (what model.onnx.json holds)."""
        return {
            "audio": {"sample_rate": self.sample_rate},
            "espeak": {"voice": self.espeak_voice},
            "inference": {
                "noise_scale": self.noise_scale,
                "length_scale": self.length_scale,
                "noise_w": self.noise_w,
            },
            "phoneme_type": self.phoneme_type,
            "phoneme_id_map": self.phoneme_id_map,
            "num_symbols": self.num_symbols
            if self.num_symbols is not None
            else 1 + max(i for ids in self.phoneme_id_map.values() for i in ids),
            "num_speakers": self.num_speakers,
            "speaker_id_map": self.speaker_id_map,
            "hop_length": self.hop_length,
        }


def resolve_model_files(path: Path) -> tuple[Path, Path]:
    """(model.onnx, model.onnx.json) for a model directory or a .onnx file.

    A directory must hold model.onnx and model.onnx.json; a file X.onnx needs
    X.onnx.json beside it (Piper's layout)."""
    if path.is_dir():
        model = path / "model.onnx"
    elif path.suffix == ".onnx":
        model = path
    elif path.exists():
        raise ModelLoadError(path, "expected a directory or a .onnx file")
    else:
        raise ModelLoadError(path, "no such file or directory")
    if not model.is_file():
        raise ModelLoadError(model, "model file is missing")
    config = model.with_name(model.name + ".json")
    if not config.is_file():
        raise ModelLoadError(config, "voice config is missing (Piper keeps it beside the model)")
    return model, config


def load_voice_config(path: Path) -> VoiceConfig:
    """Read and validate a Piper voice config; ModelLoadError says what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelLoadError(path, f"cannot read voice config: {error}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(path, f"voice config is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ModelLoadError(path, "voice config must be a JSON object")
    try:
        config = VoiceConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in error.errors()
        )
        raise ModelLoadError(path, f"invalid voice config: {problems}") from error
    config._source = path
    return config
