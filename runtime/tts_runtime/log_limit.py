"""Rate limit for repeated log lines.

A client can make the server log the same line thousands of times a second (a
flood of malformed requests, a burst of connections over the limit, asyncio's
accept errors when file descriptors run out). Written out, that flood costs
CPU on the event loop and can fill the node's disk. `RepeatLimitFilter` lets
the first few records of each kind through per interval and replaces the rest
with one summary line when the interval ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# Records are "the same" when logger, level and message template match: the
# arguments (a client's address, a byte count) differ from line to line.
_Key = tuple[str, int, str]

SUMMARY_ATTRIBUTE = "repeat_summary"  # set on the summary records, which always pass
UNLIMITED_LOGGERS = frozenset({"uvicorn.access"})  # one line per request is the point there
MAX_KINDS = 1024  # kinds tracked at once; the oldest are forgotten beyond this
TEMPLATE_SHOWN = 160  # characters of a suppressed line's template quoted in its summary


@dataclass
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0


class RepeatLimitFilter(logging.Filter):
    """Passes at most `burst` records of one kind per `interval_s`; at the end of an
    interval in which records were held back, `emit` gets one record at the same level
    saying how many ("suppressed 4812 similar lines in the last 10 s: ...").

    Records below INFO (opt-in detail) and access logs are never limited. Summaries
    are emitted when the next record arrives after the interval and on `flush()`,
    which the server calls once a second so a flood that stops is still summarised.
    """

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        *,
        burst: int = 5,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if burst < 1 or interval_s <= 0:
            raise ValueError("burst must be >= 1 and interval_s > 0")
        self._emit = emit
        self._burst = burst
        self._interval_s = interval_s
        self._clock = clock
        self._windows: dict[_Key, _Window] = {}
        self._next_due = float("inf")  # earliest end of a window: no scan before it
        self._lock = threading.Lock()  # records come from the loop and worker threads

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            getattr(record, SUMMARY_ATTRIBUTE, False)
            or record.levelno < logging.INFO
            or record.name in UNLIMITED_LOGGERS
        ):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            due = self._expire(now)
            window = self._windows.get(key)
            if window is None:
                window = self._open_window(key, now)
            if window.passed < self._burst:
                window.passed += 1
                passed = True
            else:
                window.suppressed += 1
                passed = False
        for summary in due:  # outside the lock: emitting comes back through this filter
            self._emit(summary)
        return passed

    def flush(self, *, everything: bool = False) -> None:
        """Emit the summaries of intervals that are over (all of them at shutdown)."""
        now = float("inf") if everything else self._clock()
        with self._lock:
            due = self._expire(now)
        for summary in due:
            self._emit(summary)

    def _open_window(self, key: _Key, now: float) -> _Window:
        if len(self._windows) >= MAX_KINDS:  # dicts keep insertion order: oldest first
            del self._windows[next(iter(self._windows))]
        window = self._windows[key] = _Window(start=now)
        self._next_due = min(self._next_due, now + self._interval_s)
        return window

    def _expire(self, now: float) -> list[logging.LogRecord]:
        """Close the windows that are over; the summaries of those that held lines back."""
        if now < self._next_due:
            return []
        summaries = []
        self._next_due = float("inf")
        for key, window in list(self._windows.items()):
            end = window.start + self._interval_s
            if now < end:
                self._next_due = min(self._next_due, end)
                continue
            del self._windows[key]
            if window.suppressed:
                summaries.append(self._summary(key, window.suppressed))
        return summaries

    def _summary(self, key: _Key, count: int) -> logging.LogRecord:
        name, level, template = key
        shown = template.splitlines()[0] if template else ""
        if len(shown) > TEMPLATE_SHOWN:
            shown = shown[:TEMPLATE_SHOWN] + "..."
        record = logging.LogRecord(
            name,
            level,
            pathname=__file__,
            lineno=0,
            msg="suppressed %d similar lines in the last %.0f s: %s",
            args=(count, self._interval_s, shown),
            exc_info=None,
        )
        setattr(record, SUMMARY_ATTRIBUTE, True)
        return record


def limit_repeats(
    handler: logging.Handler, *, burst: int = 5, interval_s: float = 10.0
) -> RepeatLimitFilter:
    """Install a RepeatLimitFilter on `handler` (summaries go out through it too)."""
    repeat_filter = RepeatLimitFilter(handler.handle, burst=burst, interval_s=interval_s)
    handler.addFilter(repeat_filter)
    return repeat_filter
