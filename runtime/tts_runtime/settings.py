"""Runtime settings: TTS_* environment variables, validated once at start.

A bad value stops the process with a message naming the variable (see
`load_settings`), never a traceback wall.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from tts_runtime.auth import ApiKeysError, read_keys
from tts_runtime.engine_types import MemoryMode
from tts_runtime.errors import SettingsError

ENV_PREFIX = "TTS_"

# A Kubernetes object name (DNS-1123 subdomain): what a pod name always is.
POD_NAME_MAX_LENGTH = 253
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
POD_NAME_PATTERN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")

MI = 1 << 20
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")
# Settings whose value is never echoed in an error (a Redis URL may hold a password).
SECRET_SETTINGS = frozenset({"cache_redis_url"})


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, in words that never quote it; None when it is one
    redis-py takes: redis://[[user]:password@]host[:port][/db], rediss://... (TLS) or
    unix:///path/to/socket[?db=N]."""
    parts = urlsplit(url)
    if parts.scheme not in REDIS_URL_SCHEMES:
        return "is not a Redis URL: it must start with redis://, rediss:// or unix://"
    if parts.scheme == "unix":
        return None if parts.path else "names no socket path, e.g. unix:///run/redis.sock"
    if not parts.hostname:
        return "names no host, e.g. redis://redis.cache.svc:6379/0"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return "has a port that is not a number from 1 to 65535"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return "has a database (the path after the host) that is not a number"
    from redis.connection import parse_url

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError:
        return "is not one redis-py can use (check its query parameters)"
    return None


def read_redis_url(path: Path) -> str:
    """The Redis URL in a file (a mounted Secret's key), surrounding blanks stripped;
    ValueError naming the file, never its content."""
    try:
        url = path.read_text(encoding="utf-8-sig").strip()  # a leading BOM is no part of it
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else "not UTF-8 text"
        raise ValueError(f"cannot read the Redis URL file {path}: {reason}") from None
    problem = redis_url_problem(url)
    if problem:
        raise ValueError(f"the Redis URL in {path} {problem} (its content is not shown)")
    return url


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
    front_end_workers: int = Field(
        default=2,
        ge=0,
        le=64,
        description="espeak-ng phonemizer processes: a text that crashes espeak-ng then "
        "fails only its own request (400 unspeakable_input) and the worker is replaced. "
        "0 runs espeak-ng inside the server, where such a text ends the process.",
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
    cache_max_bytes: int = Field(
        default=0,
        ge=0,
        le=1 << 40,
        description="Bytes of whole speech responses kept in this process (an LRU; each "
        "entry counted as its body plus 256). 0: no in-process cache.",
    )
    cache_max_entry_bytes: int = Field(
        default=4 * MI,
        ge=0,
        le=1 << 40,
        description="Largest response kept in the cache (either tier).",
    )
    cache_redis_url: SecretStr | None = Field(
        default=None,
        description="A Redis shared by all replicas (redis://, rediss:// or unix://); for "
        "a URL without a password. One with a password goes in a file: "
        "cache_redis_url_file.",
    )
    cache_redis_url_file: Path | None = Field(
        default=None,
        description="File holding the Redis URL (a Secret's key mounted as a volume: what "
        "the operator sets); read at start.",
    )
    cache_redis_timeout_ms: float = Field(
        default=100.0,
        gt=0,
        le=10_000,
        description="Longest one Redis call may take (connect, GET or SET); past it, or on "
        "any error, the request is served from the model and Redis is left alone for 1 s, "
        "doubling to 30 s while it keeps failing.",
    )
    cache_scope: str = Field(
        default="",
        max_length=512,
        description="Part of every cache key: entries made under one scope are never "
        "served under another, so services sharing a Redis do not share audio (nor learn "
        "what the other's callers said). The operator sets the TTSService's NAMESPACE/NAME; "
        "empty (spec.cache.shareAcrossServices) shares with every service of the same "
        "model and scope.",
    )
    cache_redis_ttl_s: int = Field(
        default=86_400,
        ge=1,
        le=365 * 86_400,
        description="How long Redis keeps a response (its expiry).",
    )
    api_docs: bool = Field(
        default=False,
        description="Serve /docs, /redoc and /openapi.json (the docs pages load their "
        "scripts from a CDN); off by default.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="File of API keys, one per line (blank lines and # comments ignored); "
        "when set, every path but /healthz, /readyz and /metrics needs `Authorization: "
        "Bearer KEY`. Re-read when it changes (a Secret update), no restart needed. Must be "
        "readable and hold a key at start.",
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

    @field_validator("api_keys_file")
    @classmethod
    def _check_api_keys_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                read_keys(value)
            except ApiKeysError as err:
                raise ValueError(str(err)) from None
        return value

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

    @field_validator("cache_redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            problem = redis_url_problem(value.get_secret_value())
            if problem:
                raise ValueError(f"{problem} (the value is not shown)")
        return value

    @field_validator("cache_redis_url_file")
    @classmethod
    def _check_redis_url_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_redis_url(value)
        return value

    @model_validator(mode="after")
    def _one_redis_url(self) -> RuntimeSettings:
        if self.cache_redis_url is not None and self.cache_redis_url_file is not None:
            raise ValueError(
                f"set {ENV_PREFIX}CACHE_REDIS_URL or {ENV_PREFIX}CACHE_REDIS_URL_FILE, not both"
            )
        return self

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

    def redis_url(self) -> str | None:
        """The cache's Redis URL (from the file when one is named), or None."""
        if self.cache_redis_url_file is not None:
            return read_redis_url(self.cache_redis_url_file)
        return None if self.cache_redis_url is None else self.cache_redis_url.get_secret_value()

    @property
    def cache_enabled(self) -> bool:
        return self.cache_max_bytes > 0 or (
            self.cache_redis_url is not None or self.cache_redis_url_file is not None
        )


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
        secret = bool(error["loc"]) and error["loc"][0] in SECRET_SETTINGS
        shown = "" if isinstance(given, dict) or given is None or secret else f" (got {given!r})"
        lines.append(f"  {variable}: {error['msg']}{shown}")
    return "\n".join(lines)
