"""The official `openai` client against a real runtime on loopback."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import soundfile as sf
from servers import live_server
from tts_runtime.app import create_app
from tts_runtime.engine import OnnxEngine
from tts_runtime.settings import RuntimeSettings


@pytest.fixture(scope="module")
def client(small_model_dir: Path) -> Iterator[openai.OpenAI]:
    engine = OnnxEngine.load(small_model_dir, "fp32", "cpu")
    app = create_app(RuntimeSettings(model_path=small_model_dir), engine)
    with live_server(app) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="not-checked", max_retries=0)


def test_speech_create_returns_wav(client: openai.OpenAI) -> None:
    response = client.audio.speech.create(
        model="tts-1", voice="default", input="Hello from the test voice.", response_format="wav"
    )
    samples, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == 22050 and samples.size > 1000


def test_speech_create_with_defaults_and_hd_alias(client: openai.OpenAI) -> None:
    response = client.audio.speech.create(model="tts-1-hd", voice="default", input="Hi.", speed=1.5)
    assert response.content[:4] == b"RIFF"  # our default format is wav


def test_streaming_response_helper_yields_audio_chunks(client: openai.OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="default",
        input="First sentence. Second sentence. Third sentence.",
        response_format="pcm",
        extra_body={"stream": True},
    ) as response:
        assert response.http_request.url.path == "/v1/audio/speech"
        chunks = list(response.iter_bytes())
    pcm = b"".join(chunks)
    samples = np.frombuffer(pcm, dtype="<i2")
    assert samples.size > 3 * 256 and np.abs(samples).max() > 0


def test_streaming_helper_to_file(client: openai.OpenAI, tmp_path: Path) -> None:
    target = tmp_path / "speech.wav"
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="default", input="Saved to a file.", response_format="flac"
    ) as response:
        response.stream_to_file(target)
    _, rate = sf.read(target)
    assert rate == 22050


def test_errors_surface_as_openai_exceptions_with_the_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad_voice:
        client.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    assert "unknown voice 'nobody'" in str(bad_voice.value)
    with pytest.raises(openai.NotFoundError) as bad_model:
        client.audio.speech.create(model="gpt-9", voice="default", input="Hi.")
    assert "not served here" in str(bad_model.value)
    with pytest.raises(openai.BadRequestError, match="speed"):
        client.audio.speech.create(model="tts-1", voice="default", input="Hi.", speed=8)
