"""Request/response shapes of the OpenAI-compatible API (its errors: tts_runtime.errors)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tts_runtime.errors import ApiError

MIN_SPEED = 0.25
MAX_SPEED = 4.0
# Code points no text has: a lone UTF-16 surrogate (a JSON "\ud800" escape without its
# pair: the string cannot be written as UTF-8, so neither espeak-ng nor the cache key can
# take it) and NUL (ends the C string espeak-ng reads).
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


class VoiceRef(BaseModel):
    """The object form of `voice` the OpenAI API also takes: {"id": "..."}."""

    model_config = ConfigDict(extra="forbid")
    id: str


class SpeechRequest(BaseModel):
    """POST /v1/audio/speech body."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="tts-1, tts-1-hd or the served model id")
    input: str = Field(description="The text to speak.")
    voice: str | VoiceRef = Field(description="A voice from GET /v1/audio/voices.")
    response_format: str = Field(default="wav", description="wav, pcm, flac, mp3 or opus")
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)
    stream: bool = Field(default=False, description="Send each sentence as soon as it is ready.")
    # Sent by newer OpenAI clients; accepted so they work, without effect on this model.
    instructions: str | None = None
    stream_format: Literal["audio"] | None = None

    @field_validator("input")
    @classmethod
    def _is_text(cls, value: str) -> str:
        found = _NOT_TEXT.search(value)
        if found is not None:
            raise ValueError(
                f"character {found.start()} is U+{ord(found.group()):04X}, not text (a lone "
                "surrogate or NUL); send the text as UTF-8"
            )
        return value

    @property
    def voice_name(self) -> str:
        return self.voice if isinstance(self.voice, str) else self.voice.id


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "tts-operator"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class VoiceCard(BaseModel):
    id: str
    name: str
    speaker_id: int


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceCard]


def invalid_field(exc: ValidationError) -> ApiError:
    """A 400 naming the first bad field and what it must be."""
    first = exc.errors()[0]
    location = [str(part) for part in first["loc"]]
    param = location[0] if location else None
    where = ".".join(location) or "body"
    if first["type"] == "extra_forbidden":
        message = (
            f"unknown field {where!r}; allowed: model, input, voice, response_format, speed, stream"
        )
    elif first["type"] == "missing":
        message = f"missing required field {where!r}"
    else:
        message = f"invalid {where!r}: {first['msg']}"
    return ApiError(400, message, param=param, code="invalid_value")
