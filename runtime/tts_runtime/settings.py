"""Runtime settings: TTS_* environment variables, validated once at start.

A bad value stops the process with a message naming the variable (see
`load_settings`), never a traceback wall.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from tts_runtime.engine_types import MemoryMode
from tts_runtime.errors import SettingsError

ENV_PREFIX = "TTS_"

# A Kubernetes object name (DNS-1123 subdomain): what a pod name always is.
POD_NAME_MAX_LENGTH = 253
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
POD_NAME_PATTERN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")


def default_pod_name() -> str:
    """The host name: in Kubernetes, the pod's name. Outside Kubernetes a host name that is
    not a valid DNS-1123 name (upper case, underscores) is made into one rather than stop
    the process for a setting nobody gave."""
    name = socket.gethostname().lower()
    if len(name) <= POD_NAME_MAX_LENGTH and POD_NAME_PATTERN.fullmatch(name):
        return name
    cleaned = re.sub(r"[^a-z0-9]+", "-", name)[:POD_NAME_MAX_LENGTH].strip("-")
    return cleaned or "localhost"


class RuntimeSettings(BaseSettings):
    """Everything the runtime reads from its environment (names fixed in the design)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        protected_namespaces=(),
        validate_default=True,
    )

    model_path: Path = Field(
        description="Directory holding model.onnx + model.onnx.json, or a .onnx file "
        "with its .onnx.json beside it."
    )
    model_name: str = Field(default="tts-1", min_length=1, description="Served model id.")
    precision: Literal["fp16", "fp32"] = "fp16"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    voices: dict[str, int] | None = Field(
        default=None,
        description="JSON object voice name -> speaker id; default: the voice "
        'config\'s speaker_id_map, or {"default": 0}.',
    )
    memory_mode: MemoryMode = Field(
        default="shrink",
        description="How onnxruntime keeps memory between runs: shrink (arena shrunk back "
        "after every run: memory stays flat), grow (onnxruntime's defaults: keeps the "
        "largest batch's memory), no-arena (malloc per tensor).",
    )
    max_batch_size: int = Field(default=8, ge=1, le=256)
    batch_calibration: bool = Field(
        default=True,
        description="Time the engine at start and lower the batch limit to the largest "
        "batch that pays; false keeps max_batch_size (same limit on every node).",
    )
    max_queue_delay_ms: float = Field(default=10.0, ge=0, le=10_000)
    max_queue_size: int = Field(default=256, ge=1)
    request_timeout_s: float = Field(default=30.0, gt=0)
    write_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest one write of a speech response may wait for the client to "
        "read; past it the response is dropped and counted cancelled.",
    )
    max_audio_seconds: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="Most seconds of audio one request may produce: a stream ends there, "
        "a whole response gets 400 audio_too_long. Bounds what one request holds (float32 "
        "samples at the model's rate) and the engine time it takes.",
    )
    max_input_chars: int = Field(default=4096, ge=1)
    max_segment_chars: int = Field(default=400, ge=16)
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    drain_timeout_s: float = Field(default=25.0, ge=0)
    max_connections: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Most client connections open at once; at the limit the connection "
        "waiting longest for its first request is closed to make room, and a few more are "
        "kept for /healthz, /readyz and /metrics. Lowered at start to fit under the "
        "open-file limit.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Longest a connection may take to send a request head (from when it "
        "opens or its last response went out); then 408 and close.",
    )
    body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Longest a request body may take to arrive after its head (then 408 "
        "and close).",
    )
    api_docs: bool = Field(
        default=False,
        description="Serve /docs, /redoc and /openapi.json (the docs pages load their "
        "scripts from a CDN); off by default.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    pod_name: str = Field(
        default_factory=default_pod_name,
        description="Sent in the X-TTS-Pod header of every response (which pod answered); "
        "the operator sets it from the downward API (metadata.name). Default: the host "
        "name, which in Kubernetes is the pod name.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("pod_name")
    @classmethod
    def _check_pod_name(cls, value: str) -> str:
        if len(value) > POD_NAME_MAX_LENGTH or not POD_NAME_PATTERN.fullmatch(value):
            raise ValueError(
                "must be a Kubernetes pod name (DNS-1123: lower-case letters, digits, '-' "
                "and '.', starting and ending with a letter or digit, at most "
                f"{POD_NAME_MAX_LENGTH} characters)"
            )
        return value

    @field_validator("voices")
    @classmethod
    def _check_voices(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one voice")
        for name, speaker_id in value.items():
            if not name.strip():
                raise ValueError("voice names must not be empty")
            if speaker_id < 0:
                raise ValueError(f"speaker id of voice {name!r} must be >= 0, got {speaker_id}")
        return value

    @model_validator(mode="after")
    def _fit_segments_in_input(self) -> RuntimeSettings:
        # A segment never needs to be longer than a whole input; a small
        # TTS_MAX_INPUT_CHARS alone must not stop the server.
        self.max_segment_chars = min(self.max_segment_chars, self.max_input_chars)
        return self

    @property
    def max_queue_delay_s(self) -> float:
        return self.max_queue_delay_ms / 1000.0

    @property
    def max_body_bytes(self) -> int:
        """Cap on a request body: room for the input in 4-byte UTF-8 JSON-escaped
        characters plus the other fields; anything bigger is refused unread."""
        return 16 * 1024 + 12 * self.max_input_chars


def load_settings(**overrides: object) -> RuntimeSettings:
    """Read and validate the settings from the environment (command-line `overrides`
    win); raise SettingsError with one line per problem."""
    try:
        return RuntimeSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except PydanticSettingsError as exc:  # e.g. TTS_VOICES is not valid JSON
        raise SettingsError(f"invalid runtime settings: {exc}") from None


def _describe(exc: ValidationError) -> str:
    lines = ["invalid runtime settings:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "settings"
        variable = f"{ENV_PREFIX}{str(error['loc'][0]).upper()}" if error["loc"] else field
        given = error.get("input")
        shown = "" if isinstance(given, dict) or given is None else f" (got {given!r})"
        lines.append(f"  {variable}: {error['msg']}{shown}")
    return "\n".join(lines)
