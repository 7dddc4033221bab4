"""TTS_* settings: defaults from the design, validation with messages naming the variable."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from tts_runtime.errors import SettingsError
from tts_runtime.settings import RuntimeSettings, default_pod_name, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("TTS_"):
            monkeypatch.delenv(key)


def test_defaults_match_the_agreed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_MODEL_PATH", "/models/voice")
    settings = load_settings()
    assert settings.model_path == Path("/models/voice")
    assert (settings.model_name, settings.precision, settings.device) == ("tts-1", "fp16", "auto")
    assert settings.voices is None
    assert (settings.max_batch_size, settings.max_queue_delay_ms) == (8, 10.0)
    assert settings.batch_calibration is True
    assert settings.memory_mode == "shrink"
    assert settings.api_docs is False
    assert (settings.max_queue_size, settings.request_timeout_s) == (256, 30.0)
    assert (settings.max_input_chars, settings.max_segment_chars) == (4096, 400)
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert (settings.drain_timeout_s, settings.log_level) == (25.0, "info")
    assert settings.max_queue_delay_s == pytest.approx(0.01)
    assert settings.max_body_bytes > 4 * settings.max_input_chars


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "TTS_MODEL_PATH": "/m",
        "TTS_MODEL_NAME": "piper-lessac",
        "TTS_PRECISION": "fp32",
        "TTS_DEVICE": "cpu",
        "TTS_VOICES": '{"alloy": 0, "echo": 2}',
        "TTS_MAX_BATCH_SIZE": "16",
        "TTS_BATCH_CALIBRATION": "false",
        "TTS_PORT": "9000",
        "TTS_LOG_LEVEL": "DEBUG",
        "TTS_API_DOCS": "true",
    }.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.model_name == "piper-lessac"
    assert settings.voices == {"alloy": 0, "echo": 2}
    assert (settings.max_batch_size, settings.port, settings.log_level) == (16, 9000, "debug")
    assert settings.batch_calibration is False
    assert settings.api_docs is True


def test_command_line_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_MODEL_PATH", "/from/env")
    monkeypatch.setenv("TTS_PORT", "9000")
    settings = load_settings(model_path=Path("/from/flag"))
    assert settings.model_path == Path("/from/flag") and settings.port == 9000


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "TTS_MODEL_PATH: Field required"),
        ({"TTS_PRECISION": "int8"}, "TTS_PRECISION"),
        ({"TTS_DEVICE": "tpu"}, "TTS_DEVICE"),
        (
            {"TTS_MAX_BATCH_SIZE": "0"},
            "TTS_MAX_BATCH_SIZE: Input should be greater than or equal to 1",
        ),
        ({"TTS_MAX_BATCH_SIZE": "eight"}, "TTS_MAX_BATCH_SIZE"),
        ({"TTS_PORT": "70000"}, "TTS_PORT"),
        ({"TTS_REQUEST_TIMEOUT_S": "0"}, "TTS_REQUEST_TIMEOUT_S"),
        ({"TTS_VOICES": "{not json"}, "TTS_VOICES"),
        ({"TTS_VOICES": "{}"}, "at least one voice"),
        ({"TTS_VOICES": '{"alloy": -1}'}, "must be >= 0"),
        ({"TTS_LOG_LEVEL": "loud"}, "TTS_LOG_LEVEL"),
        ({"TTS_MEMORY_MODE": "unlimited"}, "TTS_MEMORY_MODE: Input should be 'shrink'"),
        ({"TTS_POD_NAME": "Pod_1"}, "TTS_POD_NAME: Value error, must be a Kubernetes pod name"),
        ({"TTS_POD_NAME": ""}, "TTS_POD_NAME: Value error, must be a Kubernetes pod name"),
        ({"TTS_POD_NAME": "-pod"}, "TTS_POD_NAME"),
        ({"TTS_POD_NAME": "pod-"}, "TTS_POD_NAME"),
        ({"TTS_POD_NAME": "a..b"}, "TTS_POD_NAME"),
        ({"TTS_POD_NAME": "pod 1"}, "TTS_POD_NAME"),
        ({"TTS_POD_NAME": "p\u00f6d"}, "TTS_POD_NAME"),
        ({"TTS_POD_NAME": "a" * 254}, "at most 253 characters"),
    ],
)
def test_bad_settings_raise_one_clear_message(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    if "TTS_MODEL_PATH" not in env and env:
        monkeypatch.setenv("TTS_MODEL_PATH", "/m")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith("invalid runtime settings")
    assert says in message
    assert "Traceback" not in message and "pydantic" not in message.lower()


def test_segments_never_exceed_the_input_limit() -> None:
    settings = RuntimeSettings(model_path=Path("/m"), max_input_chars=100)
    assert settings.max_segment_chars == 100


def test_pod_name_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_MODEL_PATH", "/m")
    for name in ("voice-7d9c8b6f5-x2x4q", "a", "tts.pod-1", "a" * 253):
        monkeypatch.setenv("TTS_POD_NAME", name)
        assert load_settings().pod_name == name


def test_pod_name_defaults_to_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_MODEL_PATH", "/m")
    monkeypatch.setattr(socket, "gethostname", lambda: "voice-abc12-xyz9")
    assert load_settings().pod_name == "voice-abc12-xyz9"


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("Dev-Laptop.local", "dev-laptop.local"),
        ("my_box", "my-box"),
        ("_build_", "build"),
        ("___", "localhost"),
        ("h" * 300, "h" * 253),
    ],
)
def test_a_host_name_that_is_no_pod_name_is_made_one_not_fatal(
    monkeypatch: pytest.MonkeyPatch, host: str, name: str
) -> None:
    # Nobody set TTS_POD_NAME: an odd host name outside Kubernetes must not stop the server.
    monkeypatch.setattr(socket, "gethostname", lambda: host)
    assert default_pod_name() == name
    assert RuntimeSettings(model_path=Path("/m")).pod_name == name
