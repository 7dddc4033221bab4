"""API keys: with TTS_API_KEYS_FILE set, every path but the probes and /metrics needs
`Authorization: Bearer KEY` (what the official openai client sends as its api_key).

The file holds one key per line; blank lines and lines starting with `#` are ignored. In
Kubernetes it is a Secret's key mounted as a volume (spec.auth.apiKeysSecretRef), which the
kubelet updates by writing a new directory and swapping the `..data` symlink: the file is
looked at (one stat) at most once a second while requests come, and re-read when it is
another file or changed, so a rotated Secret takes effect without a restart. A file that
cannot be read or holds no key at start stops the process; later it keeps the keys last
read and logs once until the file is good again.

A key is compared in constant time: the SHA-256 of what the client sent against the SHA-256
of every key, all of them every time (no early exit that would tell which key, or how much
of it, matched). A request without a valid key is answered 401 before its body is read,
so it never reaches the text front end or the batcher, and is counted in
tts_auth_failures_total{reason}. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tts_runtime.errors import ApiError, StartupError
from tts_runtime.metrics import AUTH_FAILURE_REASONS

log = logging.getLogger(__name__)

# Paths served without a key: the kubelet's probes and Prometheus carry none.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
RELOAD_INTERVAL_S = 1.0
# tts_auth_failures_total's reasons: no (Bearer) Authorization header, or a wrong key.
MISSING, INVALID = AUTH_FAILURE_REASONS

Clock = Callable[[], float]
# (st_dev, st_ino, st_size, st_mtime_ns) of the file the path leads to now.
_Stamp = tuple[int, int, int, int]


class ApiKeysError(StartupError):
    """The key file cannot be used: unreadable, not UTF-8, or without a key."""


def parse_keys(text: str) -> list[str]:
    """The keys in a key file's text: one per line, surrounding blanks stripped, blank
    lines and `#` comments left out."""
    keys = (line.strip() for line in text.splitlines())
    return [key for key in keys if key and not key.startswith("#")]


def read_keys(path: Path) -> list[str]:
    """The keys in the file at `path`; ApiKeysError (naming the file, never its content)
    when it cannot be read or holds none."""
    try:
        # utf-8-sig: a byte-order mark some editors write would else start the first key.
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise ApiKeysError(f"cannot read the API key file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ApiKeysError(f"the API key file {path} is not UTF-8 text") from None
    keys = parse_keys(text)
    if not keys:
        raise ApiKeysError(
            f"the API key file {path} holds no key (one per line; blank lines and "
            "lines starting with # are ignored)"
        )
    return keys


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = os.stat(path)  # follows the symlinks: a swapped ..data is another file
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class ApiKeys:
    """The keys accepted now: read from `path` at once (ApiKeysError if it cannot be), and
    again when the file changes, looked at no more than once per `interval_s`."""

    def __init__(
        self, path: Path, *, interval_s: float = RELOAD_INTERVAL_S, clock: Clock = time.monotonic
    ) -> None:
        self.path = path
        self._interval_s = interval_s
        self._clock = clock
        self._stamp = _stamp(path)
        self._digests = self._digest_all(read_keys(path))
        self._next_look = clock() + interval_s
        self._failing = False  # the last re-read failed (logged once)

    @property
    def count(self) -> int:
        return len(self._digests)

    @staticmethod
    def _digest_all(keys: Iterable[str]) -> tuple[bytes, ...]:
        return tuple(dict.fromkeys(_digest(key.encode("utf-8")) for key in keys))

    def accepts(self, presented: bytes) -> bool:
        """Whether `presented` (the Bearer token's bytes) is one of the keys; every key is
        compared, in constant time each."""
        self.refresh()
        digest = _digest(presented)
        found = False
        for key in self._digests:
            found |= hmac.compare_digest(digest, key)
        return found

    def refresh(self) -> None:
        """Re-read the file if it changed since the last look (at most once per interval)."""
        now = self._clock()
        if now < self._next_look:
            return
        self._next_look = now + self._interval_s
        stamp = _stamp(self.path)
        if stamp is not None and stamp == self._stamp and not self._failing:
            return
        try:
            keys = read_keys(self.path)
        except ApiKeysError as err:
            if not self._failing:
                log.error("%s; keeping the %d key(s) read before", err, self.count)
                self._failing = True
            return
        self._stamp = stamp
        self._digests = self._digest_all(keys)
        self._failing = False
        log.info("API keys reloaded from %s: %d key(s)", self.path, self.count)


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token of the first `Authorization: Bearer TOKEN` header; None without one."""
    for name, value in headers:
        if name.lower() != b"authorization":
            continue
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        token = token.strip()
        return token or None
    return None


def unauthorized(reason: str) -> ApiError:
    """The 401 for a request without a valid key, as OpenAI answers it."""
    if reason == MISSING:
        message = (
            "no API key: send one in an Authorization header using Bearer auth "
            "(Authorization: Bearer YOUR_KEY; the openai client's api_key)"
        )
        code = "missing_api_key"
    else:
        message = "incorrect API key provided"
        code = "invalid_api_key"
    return ApiError(401, message, code=code, headers={"WWW-Authenticate": "Bearer"})


class ApiKeyMiddleware:
    """Answers 401 to any request outside `open_paths` without a valid key, before the
    app sees it (so before its body is read); `on_failure(reason)` counts each."""

    def __init__(
        self,
        app: ASGIApp,
        keys: ApiKeys,
        on_failure: Callable[[str], None],
        open_paths: Collection[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.keys = keys
        self.on_failure = on_failure
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope["headers"])
        if token is not None and self.keys.accepts(token):
            await self.app(scope, receive, send)
            return
        reason = MISSING if token is None else INVALID
        self.on_failure(reason)
        error = unauthorized(reason)
        response = JSONResponse(error.body(), status_code=401, headers=error.headers)
        await response(scope, receive, send)
