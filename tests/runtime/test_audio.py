"""Audio encoding: every advertised format decodes back to the same sound."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
from tts_runtime import audio

RATE = 22050


def tone(seconds: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_this_libsndfile_offers_all_five_formats() -> None:
    assert audio.available_formats() == ("flac", "mp3", "opus", "pcm", "wav")


def test_pcm16_clips_and_scales() -> None:
    pcm = audio.to_pcm16(np.array([0.0, 0.5, 1.0, -1.0, 2.0, -3.0], dtype=np.float32))
    assert struct.unpack("<6h", pcm) == (0, 16383, 32767, -32767, 32767, -32767)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_lossless_formats_round_trip(fmt: audio.ResponseFormat) -> None:
    samples = tone()
    decoded, rate = sf.read(io.BytesIO(audio.encode(samples, RATE, fmt)), dtype="float32")
    assert rate == RATE
    np.testing.assert_allclose(decoded, samples, atol=1 / 32767 + 1e-6)


@pytest.mark.parametrize(("fmt", "rate"), [("mp3", RATE), ("opus", 24000)])
def test_lossy_formats_keep_the_tone(fmt: audio.ResponseFormat, rate: int) -> None:
    decoded, got_rate = sf.read(io.BytesIO(audio.encode(tone(1.0), RATE, fmt)), dtype="float32")
    assert got_rate == rate
    assert abs(decoded.size - rate) < 0.1 * rate
    spectrum = np.abs(np.fft.rfft(decoded))
    peak_hz = np.argmax(spectrum) * rate / decoded.size
    assert abs(peak_hz - 440) < 5


def test_opus_keeps_a_native_rate() -> None:
    _, rate = sf.read(io.BytesIO(audio.encode(tone(), 16000, "opus")))
    assert rate == 16000


def test_resample_keeps_frequency_and_length() -> None:
    out = audio.resample(tone(1.0), RATE, 24000)
    assert out.dtype == np.float32 and out.size == 24000
    assert abs(np.argmax(np.abs(np.fft.rfft(out))) - 440) <= 1
    assert audio.resample(np.zeros(0, np.float32), RATE, 24000).size == 0


def test_streaming_wav_header_then_pcm_is_readable() -> None:
    header = audio.wav_stream_header(RATE)
    assert len(header) == 44 and header[:4] == b"RIFF" and header[36:40] == b"data"
    samples = tone(0.1)
    stream = header + audio.to_pcm16(samples)
    # A streaming-aware reader takes the unknown size as "until the end".
    channels, rate, _, _, bits = struct.unpack("<HIIHH", header[22:36])
    assert (channels, rate, bits) == (1, RATE, 16)
    decoded = np.frombuffer(stream[44:], dtype="<i2")
    assert decoded.size == samples.size
