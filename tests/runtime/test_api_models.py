"""The speech request model and the OpenAI-style error body."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from tts_runtime.api_models import SpeechRequest, invalid_field
from tts_runtime.errors import ApiError


def test_defaults_and_voice_forms() -> None:
    request = SpeechRequest.model_validate({"model": "tts-1", "input": "Hi.", "voice": "alloy"})
    assert (request.response_format, request.speed, request.stream) == ("wav", 1.0, False)
    assert request.voice_name == "alloy"
    by_id = SpeechRequest.model_validate({"model": "m", "input": "x", "voice": {"id": "echo"}})
    assert by_id.voice_name == "echo"


def test_newer_openai_fields_are_accepted() -> None:
    request = SpeechRequest.model_validate(
        {"model": "m", "input": "x", "voice": "v", "instructions": "calm", "stream_format": "audio"}
    )
    assert request.instructions == "calm"


def error_for(data: dict[str, object]) -> ApiError:
    with pytest.raises(ValidationError) as exc:
        SpeechRequest.model_validate(data)
    return invalid_field(exc.value)


@pytest.mark.parametrize(
    ("data", "param", "says"),
    [
        ({"input": "x", "voice": "v"}, "model", "missing required field 'model'"),
        ({"model": "m", "input": "x", "voice": "v", "speed": 0.2}, "speed", "0.25"),
        ({"model": "m", "input": "x", "voice": "v", "speed": 4.01}, "speed", "4"),
        ({"model": "m", "input": "x", "voice": "v", "stream": "maybe"}, "stream", "boolean"),
        ({"model": "m", "input": "x", "voice": "v", "pitch": 2}, "pitch", "unknown field 'pitch'"),
        (
            {"model": "m", "input": "x", "voice": "v", "stream_format": "sse"},
            "stream_format",
            "audio",
        ),
        ({"model": "", "input": "x", "voice": "v"}, "model", "at least 1 character"),
    ],
)
def test_invalid_fields_name_the_field_and_the_fix(
    data: dict[str, object], param: str, says: str
) -> None:
    error = error_for(data)
    assert error.status_code == 400
    assert error.param == param
    assert says in error.message


def test_error_body_has_the_openai_shape() -> None:
    error = ApiError(429, "slow down", type="requests", code="rate_limit_exceeded")
    assert error.body() == {
        "error": {
            "message": "slow down",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
