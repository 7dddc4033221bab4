"""retry.py: the backoff, which errors are retried, and how put-off passes coalesce."""

from __future__ import annotations

import asyncio

import kopf
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from tts_operator.retry import Backoff, Deferred, Key, retryable

KEY: Key = ("speech", "voice")


def test_backoff_doubles_with_equal_jitter_up_to_the_cap() -> None:
    backoff = Backoff(first=0.5, factor=2, cap=15)
    lows = [backoff.delay(n, 0.0) for n in range(8)]
    highs = [backoff.delay(n, 0.999999) for n in range(8)]
    assert lows == [0.25, 0.5, 1.0, 2.0, 4.0, 7.5, 7.5, 7.5]
    assert [round(h, 3) for h in highs] == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert backoff.delay(10_000, 0.5) == 11.25  # no overflow, still capped


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (ApiException(status=500), True),
        (ApiException(status=503), True),
        (ApiException(status=429), True),
        (ApiException(status=409), True),
        (ApiException(status=403), True),  # RBAC not there yet
        (ApiException(status=400), False),
        (ApiException(status=422), False),
        (kopf.TemporaryError("not yet"), True),
        (kopf.PermanentError("never"), False),
        (urllib3.exceptions.TimeoutError("read timed out"), True),
        (urllib3.exceptions.ProtocolError("connection aborted"), True),
        (ConnectionResetError(), True),
        (KeyError("a bug"), False),
    ],
)
def test_which_errors_are_retried(err: BaseException, expected: bool) -> None:
    assert retryable(err) is expected


class Recorded:
    def __init__(self) -> None:
        self.passes: list[tuple[Key, bool]] = []
        self.fail: list[BaseException] = []
        self.delays: list[float] = []

    async def run(self, key: Key, full: bool) -> None:
        self.passes.append((key, full))
        if self.fail:
            raise self.fail.pop(0)

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def deferred(rec: Recorded) -> Deferred:
    return Deferred(rec.run, Backoff(cap=4), sleep=rec.sleep, rand=lambda: 0.0, clock=lambda: 0.0)


def test_requests_coalesce_and_a_full_pass_takes_in_a_status_refresh() -> None:
    rec = Recorded()

    async def scenario() -> None:
        later = deferred(rec)
        later.request(KEY, False, 1.0)
        later.request(KEY, False, 1.0)  # joins the waiting refresh
        later.request(KEY, True, 2.0)
        later.request(KEY, False, 1.0)  # a full pass waits: it covers the status
        later.request(("other", "x"), False, 1.0)
        await later.drain()

    asyncio.run(scenario())
    assert sorted(rec.passes) == [(("other", "x"), False), (KEY, False), (KEY, True)]


def test_a_failed_pass_is_retried_until_it_succeeds_then_backoff_restarts() -> None:
    rec = Recorded()
    rec.fail = [ApiException(status=503), ApiException(status=500)]

    async def scenario() -> None:
        later = deferred(rec)
        later.failed(KEY, True, ApiException(status=500))
        await later.drain()
        assert rec.delays == [0.25, 0.5, 1.0]
        later.failed(KEY, True, ApiException(status=500))  # a new failure starts over
        await later.drain()
        assert rec.delays[-1] == 0.25

    asyncio.run(scenario())
    assert rec.passes == [(KEY, True)] * 4


def test_an_error_that_cannot_pass_is_not_retried() -> None:
    rec = Recorded()

    async def scenario() -> None:
        later = deferred(rec)
        later.failed(KEY, True, kopf.PermanentError("refused"))
        later.failed(KEY, False, ApiException(status=422))
        await later.drain()

    asyncio.run(scenario())
    assert rec.passes == [] and rec.delays == []


def test_success_cancels_a_waiting_retry_but_not_a_status_refresh() -> None:
    rec = Recorded()

    async def scenario() -> None:
        later = deferred(rec)
        later.request(KEY, False, 1.0)
        later.failed(KEY, True, ApiException(status=503))
        later.succeeded(KEY, True)
        assert later.waiting(KEY, True) is None
        assert later.waiting(KEY, False) == 1.0
        await later.drain()

    asyncio.run(scenario())
    assert rec.passes == [(KEY, False)]
