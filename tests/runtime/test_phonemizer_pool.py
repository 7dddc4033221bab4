"""The espeak-ng worker processes: a crash, a hang or a death between requests costs at
most the one text that caused it, and the pool goes on with a fresh worker."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tts_runtime.errors import UnspeakableInputError
from tts_runtime.phonemizer_pool import PhonemizerPool, WorkerStartError

pytest.importorskip("piper.phonemize_espeak", reason="espeak-ng: pip install --no-deps piper-tts")

# Crashes espeak-ng (SIGSEGV); the pool has no input rules, those live in text.py.
CRASHER = "s'" * 80


@pytest.fixture
def pool() -> Iterator[PhonemizerPool]:
    workers = PhonemizerPool("en-us", [], 2, timeout_s=2)
    yield workers
    workers.close()


def test_a_worker_phonemizes_like_espeak_ng_in_process(pool: PhonemizerPool) -> None:
    from piper.phonemize_espeak import EspeakPhonemizer

    text = "Hello there. How are you today?"
    assert pool.phonemize(text) == EspeakPhonemizer().phonemize("en-us", text)


def test_a_crash_fails_only_its_text_and_a_new_worker_takes_over(pool: PhonemizerPool) -> None:
    before = pool.pids
    with pytest.raises(UnspeakableInputError) as raised:
        pool.phonemize(CRASHER)
    assert raised.value.reason == "crashed"
    assert "SIGSEGV" in str(raised.value)
    assert pool.restarts == 1 and len(pool.pids) == 2 and pool.pids != before
    for _ in range(4):  # both workers, the new one among them, still answer
        assert pool.phonemize("Still here.")


def test_a_hung_worker_is_replaced_after_the_timeout(pool: PhonemizerPool) -> None:
    for pid in pool.pids:  # whichever worker takes the text, it will not answer
        os.kill(pid, signal.SIGSTOP)
    with pytest.raises(UnspeakableInputError) as raised:
        pool.phonemize("Nobody answers this.")
    assert raised.value.reason == "timed_out"
    for pid in pool.pids:
        os.kill(pid, signal.SIGCONT)
    assert pool.restarts == 1
    assert pool.phonemize("Answered again.")


def test_a_worker_that_died_while_idle_is_replaced_without_blaming_the_next_text(
    pool: PhonemizerPool,
) -> None:
    for pid in pool.pids:  # as the OOM killer would
        os.kill(pid, signal.SIGKILL)
    for pid in pool.pids:  # dead (a zombie until the pool reaps it), as between requests
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert pool.phonemize("This text did nothing wrong.")
    assert pool.phonemize("Nor did this one.")
    assert pool.restarts == 2


def test_an_unknown_voice_stops_the_pool_from_starting() -> None:
    with pytest.raises(WorkerStartError, match="no-such-voice"):
        PhonemizerPool("no-such-voice", [], 1)


def test_closing_the_pool_ends_its_workers() -> None:
    workers = PhonemizerPool("en-us", [], 2)
    pids = workers.pids
    workers.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
