"""RepeatLimitFilter: a flood of one log line becomes a few lines and a summary."""

from __future__ import annotations

import io
import logging
import threading

import pytest
from tts_runtime.log_limit import MAX_KINDS, RepeatLimitFilter, limit_repeats


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(
    msg: str, *args: object, level: int = logging.WARNING, name: str = "tts_runtime.x"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emitted() -> list[logging.LogRecord]:
    return []


@pytest.fixture
def limit(clock: Clock, emitted: list[logging.LogRecord]) -> RepeatLimitFilter:
    return RepeatLimitFilter(emitted.append, burst=3, interval_s=10, clock=clock)


def test_passes_a_burst_then_sums_up_the_rest_when_the_interval_ends(
    limit: RepeatLimitFilter, clock: Clock, emitted: list[logging.LogRecord]
) -> None:
    # Same template, different arguments: one kind of line.
    passed = [limit.filter(record("refused %s", f"10.0.0.{n}")) for n in range(100)]
    assert passed == [True] * 3 + [False] * 97
    assert emitted == []

    clock.now += 10
    assert limit.filter(record("refused %s", "10.0.0.1"))  # a new interval, a new burst
    [summary] = emitted  # emitted before the line that opened the new interval
    assert summary.levelno == logging.WARNING and summary.name == "tts_runtime.x"
    assert summary.getMessage() == "suppressed 97 similar lines in the last 10 s: refused %s"
    assert limit.filter(summary)  # summaries always pass


def test_kinds_are_counted_apart(limit: RepeatLimitFilter) -> None:
    for _ in range(3):
        assert limit.filter(record("one"))
        assert limit.filter(record("two"))
        assert limit.filter(record("one", level=logging.ERROR))
        assert limit.filter(record("one", name="uvicorn.error"))
    assert not limit.filter(record("one"))
    assert not limit.filter(record("two"))


def test_debug_lines_and_access_logs_are_never_limited(limit: RepeatLimitFilter) -> None:
    assert all(limit.filter(record("detail", level=logging.DEBUG)) for _ in range(50))
    access = record('%s - "GET / HTTP/1.1" %d', "10.0.0.1", 200, name="uvicorn.access")
    assert all(limit.filter(access) for _ in range(50))


def test_flush_sums_up_a_flood_that_stopped(
    limit: RepeatLimitFilter, clock: Clock, emitted: list[logging.LogRecord]
) -> None:
    for _ in range(10):
        limit.filter(record("flood"))
    limit.flush()
    assert emitted == []  # the interval is not over yet
    clock.now += 11
    limit.flush()
    assert [r.getMessage() for r in emitted] == [
        "suppressed 7 similar lines in the last 10 s: flood"
    ]
    limit.flush()
    assert len(emitted) == 1  # summed up once


def test_flush_everything_at_exit(
    limit: RepeatLimitFilter, emitted: list[logging.LogRecord]
) -> None:
    for _ in range(5):
        limit.filter(record("a"))
    for _ in range(2):
        limit.filter(record("b"))
    limit.flush(everything=True)
    assert [r.getMessage() for r in emitted] == ["suppressed 2 similar lines in the last 10 s: a"]


def test_no_summary_when_nothing_was_held_back(
    limit: RepeatLimitFilter, clock: Clock, emitted: list[logging.LogRecord]
) -> None:
    limit.filter(record("once"))
    clock.now += 60
    limit.filter(record("again"))
    limit.flush(everything=True)
    assert emitted == []


def test_a_long_template_is_cut_in_its_summary(
    limit: RepeatLimitFilter, clock: Clock, emitted: list[logging.LogRecord]
) -> None:
    long = "socket.accept() out of system resource\nsocket: <fd=9>\n" + "x" * 500
    for _ in range(4):
        limit.filter(record(long))
    limit.flush(everything=True)
    assert emitted[0].getMessage().endswith(": socket.accept() out of system resource")


def test_kinds_tracked_are_bounded(limit: RepeatLimitFilter) -> None:
    for n in range(MAX_KINDS + 50):
        limit.filter(record(f"line {n}"))
    assert len(limit._windows) == MAX_KINDS


def test_threads_share_one_budget(clock: Clock, emitted: list[logging.LogRecord]) -> None:
    limit = RepeatLimitFilter(emitted.append, burst=5, interval_s=10, clock=clock)
    passed: list[bool] = []
    lock = threading.Lock()

    def log_many() -> None:
        for _ in range(500):
            ok = limit.filter(record("from a thread"))
            with lock:
                passed.append(ok)

    threads = [threading.Thread(target=log_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(passed) == 5 and len(passed) == 4000
    limit.flush(everything=True)
    assert emitted[0].getMessage().startswith("suppressed 3995 similar lines")


def test_installed_on_a_handler_a_flood_becomes_a_few_lines() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("tts_runtime.test_log_limit")
    logger.propagate = False
    logger.addHandler(handler)
    repeat_filter = limit_repeats(handler)
    try:
        for n in range(5000):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logger.exception("accept failed (%d)", n)
        repeat_filter.flush(everything=True)
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert sum(line.startswith("ERROR") for line in lines) == 6  # 5 + the summary
    assert lines[-1] == (
        "ERROR tts_runtime.test_log_limit: "
        "suppressed 4995 similar lines in the last 10 s: accept failed (%d)"
    )
