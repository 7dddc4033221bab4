"""The harness of the fuzz tests that drive a real `tts-runtime serve` (test_fuzz_api.py,
test_fuzz_front_end.py): bounded, reproducible hypothesis settings, and a client that checks
every answer (below 500; a 4xx in OpenAI's JSON error shape, a 200 with audio), readiness
after every case, and the process's memory. Not a test module."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from raw_client import Served, wait_for
from tts_runtime.soak import status_mib

SPEECH = "/v1/audio/speech"
# While a case runs: the largest engine item (3 x 400 phoneme ids at speed 0.25, up to some
# 4 minutes of audio with the small voice's random durations) has a working set of about
# 300 MiB (measured: 119 MiB ready, 396 MiB peak); bodies are capped at 136 KB, a response
# at 30 s of audio (2.6 MB of float32), the cache at 8 MiB. 512 MiB is that with room, and
# 40 times less than one such sentence took before items were bounded.
CASE_HEADROOM_MIB = 512
# Once idle (after one small request, whose run trims the heap): back near the ready level.
# Above it: the cache's 8 MiB, and the arenas Python's own allocator keeps after the largest
# input's front end (10,000 characters are some 100,000 small phoneme strings): up to 50 MiB
# measured. A leak of a few hundred KB per case over some 400 cases, or anything a case
# keeps (an audio array, a body), shows here.
IDLE_HEADROOM_MIB = 128

GOOD: dict[str, Any] = {"model": "tts-1", "input": "Hello there.", "voice": "default"}


def fuzz(examples: int) -> settings:
    """Bounded and reproducible: the same cases on every run and every machine."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


@dataclass
class Fuzzed:
    """The server under fuzz, and what its answers were."""

    served: Served
    client: httpx.Client
    ready_rss_mib: float
    peak_rss_mib: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    last: httpx.Response | None = None  # the answer to the last case

    def send(
        self,
        content: bytes,
        content_type: str | None = "application/json",
        *,
        method: str = "POST",
        path: str = SPEECH,
    ) -> int:
        headers = {} if content_type is None else {"content-type": content_type}
        response = self.client.request(method, path, content=content, headers=headers)
        self.last = response
        check_answer(response, path)
        ready = self.client.get("/readyz")
        assert ready.status_code == 200, f"not ready after the case: {ready.text[:300]}"
        rss = status_mib(self.served.pid, "VmRSS")
        self.peak_rss_mib = max(self.peak_rss_mib, rss)
        assert rss <= self.ready_rss_mib + CASE_HEADROOM_MIB, (
            f"RSS {rss:.0f} MiB, ready at {self.ready_rss_mib:.0f} MiB"
        )
        self.statuses[response.status_code] += 1
        return response.status_code

    def send_json(self, body: Any, *, ascii_only: bool = True) -> int:
        # surrogatepass: a lone surrogate that is not escaped goes out as the invalid
        # UTF-8 bytes it would take (ED A0 80), a decoder's problem to refuse.
        text = json.dumps(body, ensure_ascii=ascii_only)
        return self.send(text.encode("utf-8", errors="surrogatepass"))

    def idle_rss_mib(self) -> float:
        """RSS once the engine is idle: one small request runs (and trims the heap) after
        whatever a case left running, then the queue is empty."""
        assert self.client.post(SPEECH, json=GOOD).status_code == 200
        wait_for(lambda: self.client.get("/readyz").json()["queue_depth"] == 0, 30, "idle")
        time.sleep(0.5)  # the worker trims the heap after the run that answered
        return status_mib(self.served.pid, "VmRSS")

    def report(self, what: str) -> Counter[int]:
        """Prints and returns this test's statuses; checks that memory went back down and
        the log stayed clean."""
        seen, self.statuses = self.statuses, Counter()
        idle = self.idle_rss_mib()
        # VmHWM: the peak inside runs too, which RSS read between cases would miss
        self.peak_rss_mib = max(self.peak_rss_mib, status_mib(self.served.pid, "VmHWM"))
        print(
            f"\nfuzz {what}: {sum(seen.values())} cases, statuses {dict(sorted(seen.items()))}, "
            f"RSS ready {self.ready_rss_mib:.0f} MiB, peak {self.peak_rss_mib:.0f} MiB "
            f"(bound +{CASE_HEADROOM_MIB}), idle after {idle:.0f} MiB (bound +{IDLE_HEADROOM_MIB})"
        )
        assert self.peak_rss_mib <= self.ready_rss_mib + CASE_HEADROOM_MIB
        assert idle <= self.ready_rss_mib + IDLE_HEADROOM_MIB
        log = self.served.log_text()
        for sign in ("Traceback", "Logging error", "unexpected error"):
            assert sign not in log, f"{sign!r} in the server log:\n{log[-3000:]}"
        return seen


def check_answer(response: httpx.Response, path: str) -> None:
    status = response.status_code
    assert status < 500, f"{status}: {response.text[:500]}"
    assert response.headers.get("x-tts-pod"), "no X-TTS-Pod header"
    if status >= 400:
        assert response.headers["content-type"] == "application/json", response.headers
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"], error
    elif path == SPEECH:
        assert response.headers["content-type"].startswith("audio/"), response.headers
        assert response.content, "a 200 without audio"
