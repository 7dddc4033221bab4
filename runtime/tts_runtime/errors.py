"""Every error the runtime raises across a module boundary, and the one place that maps
each to the HTTP answer it gets (`api_error`), as KServe's errors module does.

Start-up errors (ModelLoadError, SettingsError, StartupError) stop the process with a
non-zero exit and one line; the rest end one request with an OpenAI-style JSON error:
{"error": {"message", "type", "param", "code"}}, with a message saying what to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from starlette.exceptions import HTTPException

# nginx's "client closed request": never seen by the client, only counted (cancelled).
CLIENT_CLOSED_REQUEST = 499

# -- start-up ----------------------------------------------------------------------


class ModelLoadError(Exception):
    """A model (or its voice config) cannot be loaded; says which file and why.

    The server stops with a non-zero exit on this error, printing str(error)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"cannot load model file {path}: {problem}")


class SettingsError(Exception):
    """A setting is missing or invalid; the message says which and why."""


class StartupError(Exception):
    """The settings and the model do not fit together (e.g. a voice's speaker id)."""


# -- the batcher -------------------------------------------------------------------


class BatcherError(Exception):
    """Base of the errors a caller of the batcher sees."""


class QueueFullError(BatcherError):
    def __init__(self, queued: int, capacity: int, retry_after_s: int) -> None:
        super().__init__(
            f"the synthesis queue is full ({queued} of {capacity} segments queued); "
            f"retry after {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


class TooManySegmentsError(BatcherError):
    """One request alone has more segments than the queue can ever hold."""


class DeadlineExceededError(BatcherError):
    pass


class SynthesisFailedError(BatcherError):
    pass


class BatcherStoppedError(BatcherError):
    pass


# -- the text front end -----------------------------------------------------------

UnspeakableReason = Literal["refused", "crashed", "timed_out", "failed"]


class UnspeakableInputError(Exception):
    """The text front end cannot take this input: a rule refused it up front (a known
    espeak-ng crash), or the phonemizer crashed on it, hung, or raised. Only the request
    that sent it fails (tts_unspeakable_inputs_total counts it by reason)."""

    def __init__(self, reason: UnspeakableReason, message: str) -> None:
        super().__init__(message)
        self.reason: UnspeakableReason = reason


# -- the HTTP API ------------------------------------------------------------------


class ApiError(Exception):
    """An HTTP error with an OpenAI-style body."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def draining_error() -> ApiError:
    return ApiError(
        503,
        "the server is shutting down; retry (another replica will answer)",
        type="server_error",
        code="draining",
        headers={"Retry-After": "1"},
    )


def api_error(exc: BaseException) -> ApiError:
    """The HTTP answer to `exc`: the one map from exception class to status and code."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, QueueFullError):
        return ApiError(
            429,
            str(exc),
            type="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    if isinstance(exc, TooManySegmentsError):
        return ApiError(400, str(exc), param="input", code="too_many_segments")
    if isinstance(exc, DeadlineExceededError):
        return ApiError(
            504,
            "the request waited in the queue past its timeout and was not run; the server "
            "is overloaded, retry later or on another replica",
            type="server_error",
            code="timeout",
        )
    if isinstance(exc, UnspeakableInputError):
        return ApiError(400, str(exc), param="input", code="unspeakable_input")
    if isinstance(exc, BatcherStoppedError):
        return draining_error()
    if isinstance(exc, BatcherError):  # SynthesisFailedError
        return ApiError(500, str(exc), type="server_error", code="synthesis_failed")
    if isinstance(exc, HTTPException):  # Starlette's own: unknown path, wrong method
        kind = "not_found" if exc.status_code == 404 else "invalid_request"
        return ApiError(exc.status_code, str(exc.detail), code=kind)
    return ApiError(500, f"internal error: {exc}", type="server_error", code="internal_error")


_STATUS_LABELS = {
    429: "queue_full",
    504: "timeout",
    503: "draining",
    CLIENT_CLOSED_REQUEST: "cancelled",
}


def status_label(code: int) -> str:
    """The `status` label of tts_requests_total for a response with this status code."""
    if code < 400:
        return "ok"
    return _STATUS_LABELS.get(code, "bad_request" if code < 500 else "error")
