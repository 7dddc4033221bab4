"""Audio encoding for the speech API: float32 samples -> wav, pcm, flac, mp3, opus.

Encoders are libsndfile's (through soundfile): it writes MP3 with LAME and Opus
in Ogg. Opus only takes 8/12/16/24/48 kHz, so other rates are resampled first.
Streaming is offered for the formats that can be sent segment by segment:
raw PCM and WAV with an open-ended header.
"""

from __future__ import annotations

import io
import struct
from typing import Literal

import numpy as np
import numpy.typing as npt
import soundfile as sf

from tts_runtime.engine_types import Audio

ResponseFormat = Literal["wav", "pcm", "flac", "mp3", "opus"]

# (soundfile format, subtype) for the whole-file encoders.
_SOUNDFILE_FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}
STREAMABLE_FORMATS = ("wav", "pcm")
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MEDIA_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
}
# What WAV readers take as "length unknown" in a streamed header (OpenAI sends the same).
_UNKNOWN_SIZE = 0xFFFFFFFF


def available_formats() -> tuple[str, ...]:
    """The response formats this libsndfile build can write."""
    found = sf.available_formats()
    usable = ["pcm"]
    for name, (container, subtype) in _SOUNDFILE_FORMATS.items():
        if container in found and subtype in sf.available_subtypes(container):
            usable.append(name)
    return tuple(sorted(usable))


def to_pcm16(audio: Audio) -> bytes:
    """Float samples in [-1, 1] -> little-endian signed 16-bit PCM (clipped)."""
    clipped = np.clip(audio, -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()


def encode(audio: Audio, sample_rate: int, response_format: ResponseFormat) -> bytes:
    """The whole utterance as one file in the requested format."""
    if response_format == "pcm":
        return to_pcm16(audio)
    container, subtype = _SOUNDFILE_FORMATS[response_format]
    samples = np.clip(audio, -1.0, 1.0).astype(np.float32)
    if response_format == "opus" and sample_rate not in OPUS_RATES:
        target = next((rate for rate in OPUS_RATES if rate >= sample_rate), OPUS_RATES[-1])
        samples = resample(samples, sample_rate, target)
        sample_rate = target
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def wav_stream_header(sample_rate: int, channels: int = 1, bits: int = 16) -> bytes:
    """A 44-byte RIFF/WAVE header with unknown sizes, sent before streamed PCM."""
    byte_rate = sample_rate * channels * bits // 8
    return (
        struct.pack("<4sI4s", b"RIFF", _UNKNOWN_SIZE, b"WAVE")
        + struct.pack(
            "<4sIHHIIHH",
            b"fmt ",
            16,
            1,
            channels,
            sample_rate,
            byte_rate,
            channels * bits // 8,
            bits,
        )
        + struct.pack("<4sI", b"data", _UNKNOWN_SIZE)
    )


def resample(samples: npt.NDArray[np.float32], source_rate: int, target_rate: int) -> Audio:
    """Band-limited resampling in the frequency domain (one utterance at a time)."""
    if source_rate == target_rate or samples.size == 0:
        return samples.astype(np.float32)
    target_len = max(1, round(samples.size * target_rate / source_rate))
    spectrum = np.fft.rfft(samples)
    bins = target_len // 2 + 1
    resized = np.zeros(bins, dtype=spectrum.dtype)
    keep = min(bins, spectrum.size)
    resized[:keep] = spectrum[:keep]
    out = np.fft.irfft(resized, n=target_len) * (target_len / samples.size)
    return out.astype(np.float32)
