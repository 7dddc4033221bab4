"""API keys (TTS_API_KEYS_FILE): the key file, its reload, the constant-time check, and the
official `openai` client against a real server that requires a key.

The key file is written the way the kubelet writes a Secret volume: the file is a symlink
through `..data`, itself a symlink to a timestamped directory, and an update writes a new
directory and swaps `..data` in one rename."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import httpx
import openai
import pytest
from servers import (
    free_port,
    live_server,
    metric_value,
    runtime_command,
    runtime_env,
    wait_ready,
)
from tts_runtime import auth
from tts_runtime.app import create_app
from tts_runtime.auth import (
    ApiKeys,
    ApiKeysError,
    bearer_token,
    parse_keys,
    read_keys,
)
from tts_runtime.engine import OnnxEngine
from tts_runtime.errors import SettingsError
from tts_runtime.settings import RuntimeSettings, load_settings

KEY = "sk-tts-first-key"
OTHER_KEY = "sk-tts-second-key"
ROTATED_KEY = "sk-tts-rotated-key"


class SecretVolume:
    """A directory laid out as the kubelet lays out a Secret volume with one key."""

    def __init__(self, root: Path, key: str = "api-keys") -> None:
        self.root = root
        self.key = key
        self._versions = count()
        root.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.root / self.key

    def write(self, text: str) -> None:
        """A new timestamped directory, then `..data` swapped to it atomically (rename)."""
        version = f"..2024_01_01_00_00_00.{next(self._versions)}"
        (self.root / version).mkdir()
        (self.root / version / self.key).write_text(text)
        temporary = self.root / "..data_tmp"
        temporary.symlink_to(version)
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        os.rename(temporary, self.root / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to(f"..data/{self.key}")
        if old is not None:  # the kubelet removes the old version after the swap
            (self.root / old / self.key).unlink(missing_ok=True)
            (self.root / old).rmdir()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def volume(tmp_path: Path) -> SecretVolume:
    secret = SecretVolume(tmp_path / "secret")
    secret.write(f"# the TTS API keys\n{KEY}\n\n  {OTHER_KEY}  \n")
    return secret


# ---------------------------------------------------------------- the key file


def test_keys_are_lines_without_blanks_and_comments() -> None:
    text = "# comment\n\nsk-a\n  sk-b \r\n#sk-commented-out\n\t\n"
    assert parse_keys(text) == ["sk-a", "sk-b"]


def test_the_key_file_is_read_through_the_secret_volume_symlinks(volume: SecretVolume) -> None:
    assert volume.path.is_symlink()
    assert read_keys(volume.path) == [KEY, OTHER_KEY]


def test_a_byte_order_mark_does_not_become_part_of_the_first_key(volume: SecretVolume) -> None:
    """Some editors start a UTF-8 file with U+FEFF; str.strip() keeps it (it is not
    whitespace), so the first key would silently never match."""
    volume.write(f"\ufeff{KEY}\n{OTHER_KEY}\n")
    assert read_keys(volume.path) == [KEY, OTHER_KEY]
    keys = ApiKeys(volume.path)
    assert keys.accepts(KEY.encode())


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "holds no key"),
        ("# only a comment\n\n   \n", "holds no key"),
        (b"\xff\xfe", "is not UTF-8 text"),
    ],
)
def test_an_unusable_key_file_is_refused_naming_the_file(
    tmp_path: Path, content: str | bytes, problem: str
) -> None:
    path = tmp_path / "keys"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ApiKeysError, match=problem) as err:
        ApiKeys(path)
    assert str(path) in str(err.value)


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ApiKeysError, match=r"cannot read the API key file .*No such file"):
        read_keys(tmp_path / "absent")


def test_the_setting_refuses_an_unusable_file_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keys").write_text("# no key yet\n")
    monkeypatch.setenv("TTS_MODEL_PATH", str(tmp_path))
    monkeypatch.setenv("TTS_API_KEYS_FILE", str(tmp_path / "keys"))
    with pytest.raises(SettingsError, match=r"TTS_API_KEYS_FILE: .*holds no key"):
        load_settings()
    monkeypatch.setenv("TTS_API_KEYS_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match=r"TTS_API_KEYS_FILE: .*cannot read"):
        load_settings()


def test_serve_with_an_empty_key_file_exits_2_naming_it(tmp_path: Path) -> None:
    """Stops at once, before the model loads (the model path here does not even exist)."""
    keys = tmp_path / "keys"
    keys.write_text("\n")
    env = runtime_env(tmp_path / "no-model", free_port(), api_keys_file=str(keys))
    result = subprocess.run(
        runtime_command("serve"), env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"TTS_API_KEYS_FILE: Value error, the API key file {keys} holds no key" in (
        result.stderr
    )


def test_no_key_file_means_no_key_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TTS_API_KEYS_FILE", raising=False)
    assert RuntimeSettings(model_path=Path("/m")).api_keys_file is None


# ---------------------------------------------------------------- the check


def test_every_key_is_accepted_and_nothing_else(volume: SecretVolume) -> None:
    keys = ApiKeys(volume.path)
    assert keys.count == 2
    assert keys.accepts(KEY.encode()) and keys.accepts(OTHER_KEY.encode())
    for wrong in (b"", b"sk-tts", KEY.encode() + b"x", KEY.upper().encode(), b"# the TTS API keys"):
        assert not keys.accepts(wrong)


def test_every_key_is_compared_in_constant_time_every_time(
    volume: SecretVolume, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Digests of equal length, all compared with hmac.compare_digest, even after a match:
    neither the key's length nor which key matched changes the work done."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    keys = ApiKeys(volume.path)
    for presented in (KEY, OTHER_KEY, "short", "a much longer wrong key " * 10):
        compared.clear()
        keys.accepts(presented.encode())
        assert len(compared) == 2
        assert {a for a, _ in compared} == {hashlib.sha256(presented.encode()).digest()}
        assert all(len(a) == len(b) == 32 for a, b in compared)


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ([(b"authorization", b"Bearer sk-1")], b"sk-1"),
        ([(b"Authorization", b"bearer   sk-1 ")], b"sk-1"),
        ([(b"x-other", b"y"), (b"authorization", b"Bearer sk-1")], b"sk-1"),
        ([(b"authorization", b"Basic dXNlcjpwYXNz")], None),
        ([(b"authorization", b"Bearer")], None),
        ([(b"authorization", b"Bearer  ")], None),
        ([(b"authorization", b"sk-1")], None),
        ([], None),
    ],
)
def test_the_bearer_token(headers: list[tuple[bytes, bytes]], token: bytes | None) -> None:
    assert bearer_token(headers) == token


# ---------------------------------------------------------------- reload


def test_a_rotated_secret_takes_effect_after_the_next_look(volume: SecretVolume) -> None:
    clock = FakeClock()
    keys = ApiKeys(volume.path, clock=clock)
    volume.write(f"{ROTATED_KEY}\n")
    clock.now += 0.5  # looked at no more than once a second
    assert keys.accepts(KEY.encode()) and not keys.accepts(ROTATED_KEY.encode())
    clock.now += 0.6
    assert keys.accepts(ROTATED_KEY.encode())
    assert not keys.accepts(KEY.encode()) and not keys.accepts(OTHER_KEY.encode())
    assert keys.count == 1


def test_the_file_is_looked_at_no_more_than_once_a_second(
    volume: SecretVolume, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    keys = ApiKeys(volume.path, clock=clock)
    looks: list[Path] = []
    real_stamp = auth._stamp

    def counting_stamp(path: Path) -> object:
        looks.append(path)
        return real_stamp(path)

    monkeypatch.setattr(auth, "_stamp", counting_stamp)
    for _ in range(80):  # 16 requests a second for 5 s (0.0625: exact in binary)
        keys.accepts(KEY.encode())
        clock.now += 0.0625
    assert len(looks) == 4  # at 1, 2, 3 and 4 s


def test_a_broken_file_keeps_the_last_keys_and_logs_once(
    volume: SecretVolume, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    keys = ApiKeys(volume.path, clock=clock)
    caplog.set_level(logging.INFO, logger="tts_runtime.auth")
    for broken in ("# all keys removed\n", None):
        if broken is None:  # the Secret's key is gone from the volume
            os.unlink(volume.root / "..data" / volume.key)
        else:
            volume.write(broken)
        for _ in range(3):
            clock.now += 1.1
            assert keys.accepts(KEY.encode())
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert "keeping the 2 key(s) read before" in errors[0].getMessage()
        assert KEY not in caplog.text
    volume.write(f"{ROTATED_KEY}\n")
    clock.now += 1.1
    assert keys.accepts(ROTATED_KEY.encode()) and not keys.accepts(KEY.encode())
    assert "API keys reloaded from" in caplog.records[-1].getMessage()
    assert ROTATED_KEY not in caplog.text


# ---------------------------------------------------------------- the official client, a server


@pytest.fixture(scope="module")
def secured(
    small_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, SecretVolume]]:
    """A runtime on loopback requiring the keys in a Secret-style volume."""
    volume = SecretVolume(tmp_path_factory.mktemp("auth") / "secret")
    volume.write(f"{KEY}\n{OTHER_KEY}\n")
    engine = OnnxEngine.load(small_model_dir, "fp32", "cpu")
    settings = RuntimeSettings(model_path=small_model_dir, api_keys_file=volume.path)
    with live_server(create_app(settings, engine)) as url:
        wait_ready(url)  # /readyz needs no key
        yield url, volume


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def speak(c: openai.OpenAI) -> bytes:
    return c.audio.speech.create(model="tts-1", voice="default", input="Hello.").content


def test_the_right_key_works(secured: tuple[str, SecretVolume]) -> None:
    url, _ = secured
    assert speak(client(url, KEY))[:4] == b"RIFF"
    assert speak(client(url, OTHER_KEY))[:4] == b"RIFF"
    assert "tts-1" in [m.id for m in client(url, KEY).models.list()]


def test_a_wrong_key_is_refused_with_401(secured: tuple[str, SecretVolume]) -> None:
    url, _ = secured
    before = metric_value(url, "tts_auth_failures_total", reason="invalid")
    requests = {s: metric_value(url, "tts_requests_total", status=s) for s in ("ok", "bad_request")}
    with pytest.raises(openai.AuthenticationError) as err:
        speak(client(url, "sk-wrong"))
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"
    assert err.value.body == {
        "message": "incorrect API key provided",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    assert "sk-wrong" not in str(err.value)
    assert err.value.response.headers["WWW-Authenticate"] == "Bearer"
    assert err.value.response.headers["X-TTS-Pod"]
    with pytest.raises(openai.AuthenticationError):
        client(url, "sk-wrong").models.list()
    assert metric_value(url, "tts_auth_failures_total", reason="invalid") == before + 2
    # Never a speech request: nothing counted in tts_requests_total.
    for status, value in requests.items():
        assert metric_value(url, "tts_requests_total", status=status) == value


def test_a_missing_key_is_refused_with_401(secured: tuple[str, SecretVolume]) -> None:
    url, _ = secured
    before = metric_value(url, "tts_auth_failures_total", reason="missing")
    body = {"model": "tts-1", "voice": "default", "input": "Hi."}
    for headers in ({}, {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer"}):
        response = httpx.post(f"{url}/v1/audio/speech", json=body, headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "missing_api_key"
        assert "Authorization: Bearer" in response.json()["error"]["message"]
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert metric_value(url, "tts_auth_failures_total", reason="missing") == before + 3


def test_every_path_but_the_probes_and_metrics_needs_a_key(
    secured: tuple[str, SecretVolume],
) -> None:
    url, _ = secured
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{url}{path}", timeout=10).status_code == 200, path
    for path in ("/v1/models", "/v1/audio/voices", "/v1/unknown", "/v2/x", "//v1/models", "/"):
        assert httpx.get(f"{url}{path}", timeout=10).status_code == 401, path
    headers = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{url}/v1/audio/voices", headers=headers, timeout=10).status_code == 200
    assert httpx.get(f"{url}/v1/unknown", headers=headers, timeout=10).status_code == 404


def test_the_401_comes_before_the_body_is_read(secured: tuple[str, SecretVolume]) -> None:
    """A request announcing a 10 MB body and sending none gets its 401 at once: the server
    never waited for (nor read) the body."""
    url, _ = secured
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-wrong\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n"
        )
        began = time.monotonic()
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 401 "), head[:100]
    assert time.monotonic() - began < 2


def test_a_key_rotated_on_disk_takes_effect_without_a_restart(
    secured: tuple[str, SecretVolume],
) -> None:
    url, volume = secured
    assert speak(client(url, KEY))[:4] == b"RIFF"
    volume.write(f"# rotated\n{ROTATED_KEY}\n")
    deadline = time.monotonic() + 10
    while True:  # the server looks at the file at most once a second
        try:
            speak(client(url, ROTATED_KEY))
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline, "the rotated key was never accepted"
            time.sleep(0.2)
    with pytest.raises(openai.AuthenticationError):
        speak(client(url, KEY))
    with pytest.raises(openai.AuthenticationError):
        speak(client(url, OTHER_KEY))
    volume.write(f"{KEY}\n{OTHER_KEY}\n")  # as the other tests of this module expect
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).is_error:
        assert time.monotonic() < deadline
        time.sleep(0.2)
