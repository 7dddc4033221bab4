"""`tts-runtime soak`: one runtime server under a long, mixed load, its memory watched.

A leak shows as resident memory (VmRSS) that keeps growing once the server has
seen every kind of request. So: RSS when ready, RSS after the first report (by
then the allocator and onnxruntime's arenas have seen most input shapes), RSS at
the end, each read between waves of requests with none in flight, and the peak
(VmHWM). The mix is deterministic for a seed: input
lengths drawn log-uniformly from 3 to 150 words (short requests dominate, as in
real traffic), several speeds (each its own batch scales) and mostly WAV with
the other encoders in the mix. A measurement, not a test: missed targets still
exit 0; only a server that does not start or dies exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tts_runtime.bench import (
    RUNTIME_COMMAND,
    Target,
    add_server_arguments,
    choose_model,
    free_port,
    runtime_env,
    serving,
)

MIN_WORDS = 3
MAX_WORDS = 150
SPEEDS = (0.75, 1.0, 1.25, 1.5)
# Mostly wav; every other encoder too, so a leak in any of them shows.
FORMAT_WEIGHTS = {"wav": 16, "pcm": 1, "flac": 1, "mp3": 1, "opus": 1}
GROWTH_LIMIT = 1.1  # last RSS vs RSS at the first report
TOTAL_LIMIT = 1.6  # last RSS vs RSS when ready

# Real English words, so the espeak phonemizer does real work on every request.
_WORD_TEXT = (
    "the a an and or but if when while after before because since until so then "
    "i you he she we they it this that these those my your our their his her "
    "is are was were be been have has had do does did will would can could should "
    "may might must go goes went come came make made take took give gave see saw "
    "know knew think thought say said tell told find found call called work worked "
    "read wrote open close start stop leave arrive wait walk run drive ride fly "
    "time day night morning evening week month year hour minute moment today "
    "people man woman child family friend teacher doctor driver neighbour customer "
    "house home room door window kitchen garden street road city town village "
    "country river lake sea mountain forest field bridge station train bus car "
    "ship plane ticket letter book paper phone message order price money bank "
    "shop market school office hospital library museum park table chair bed "
    "water coffee tea bread apple dinner lunch breakfast weather rain snow wind "
    "sun moon light music song picture story question answer problem idea plan "
    "good new old great small large long short early late high low young happy "
    "quiet busy cold warm bright dark green blue red white black quick slow "
    "always never often sometimes soon again still already almost really very "
    "here there tomorrow yesterday together inside outside near far away "
    "in on at by for with about from into over under between through across "
    "please thank sorry welcome hello goodbye yes no maybe perhaps certainly"
)
WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True)
class SoakMemory:
    """Resident memory of the server at the moments the targets compare, in MiB."""

    requests: int
    ready: float
    first_count: int  # requests done at the first report
    first: float
    last: float
    peak: float

    def summary(self) -> str:
        return (
            f"soak: {self.requests} requests, RSS ready={self.ready:.0f} MiB "
            f"after{self.first_count}={self.first:.0f} MiB last={self.last:.0f} MiB"
        )

    def verdict(self) -> str:
        growth = self.last / self.first
        total = self.last / self.ready
        return (
            f"last <= {GROWTH_LIMIT} x after{self.first_count}: "
            f"{_yes(growth <= GROWTH_LIMIT)} ({growth:.2f}); "
            f"last <= {TOTAL_LIMIT} x ready: {_yes(total <= TOTAL_LIMIT)} ({total:.2f}); "
            f"peak (VmHWM) {self.peak:.0f} MiB"
        )


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    parser.add_argument("--requests", type=positive_int, default=1000)
    parser.add_argument("--concurrency", type=positive_int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the request mix")
    parser.add_argument(
        "--report-every", type=positive_int, default=100, help="print RSS after this many requests"
    )


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


# -- the request mix ----------------------------------------------------------------


def soak_requests(n: int, seed: int, voice: str = "default") -> list[dict[str, object]]:
    """`n` speech request bodies, the same for the same seed."""
    rng = random.Random(seed)
    formats, weights = list(FORMAT_WEIGHTS), list(FORMAT_WEIGHTS.values())
    return [
        {
            "model": "tts-1",
            "input": random_text(rng, word_count(rng)),
            "voice": voice,
            "speed": rng.choice(SPEEDS),
            "response_format": rng.choices(formats, weights)[0],
            "stream": False,
        }
        for _ in range(n)
    ]


def word_count(rng: random.Random) -> int:
    """Log-uniform in MIN_WORDS..MAX_WORDS: as many requests of 3-6 words as of 75-150."""
    drawn = round(math.exp(rng.uniform(math.log(MIN_WORDS), math.log(MAX_WORDS))))
    return min(MAX_WORDS, max(MIN_WORDS, drawn))


def random_text(rng: random.Random, words: int) -> str:
    """`words` words in sentences of 4-14 words, so long inputs split into several
    segments the way prose does."""
    chosen = [rng.choice(WORDS) for _ in range(words)]
    sentences = []
    while chosen:
        length = rng.randint(4, 14)
        sentences.append(" ".join(chosen[:length]).capitalize() + ".")
        chosen = chosen[length:]
    return " ".join(sentences)


# -- memory -------------------------------------------------------------------------


def status_mib(pid: int, key: str) -> float:
    """A kB field of /proc/PID/status (VmRSS, VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {key} (has the process exited?)")


@dataclass
class _Progress:
    """Counts finished requests and prints RSS at every report point.

    The load runs in waves of `every` requests and RSS is read between waves, when no
    request is in flight: a reading taken mid-batch would add whatever that batch happens
    to be using (a hundred MiB and more for eight long segments) and hide the trend. What
    a batch uses while it runs shows in the peak (VmHWM) instead."""

    process: subprocess.Popen[bytes]
    every: int
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    reports: list[tuple[int, float]] = field(default_factory=list)  # (done, RSS MiB)
    died: bool = False

    def record(self, error: str | None) -> None:
        self.done += 1
        if error is not None:
            self.errors[error] += 1
        if self.process.poll() is not None:
            self.died = True

    def report(self) -> None:
        """RSS now (call between waves: nothing in flight)."""
        rss = status_mib(self.process.pid, "VmRSS")
        self.reports.append((self.done, rss))
        print(
            f"{self.done:>6} requests  RSS {rss:.0f} MiB  "
            f"{time.perf_counter() - self.started:.0f} s  errors {self.errors.total()}",
            flush=True,
        )


# -- load ---------------------------------------------------------------------------


async def _send_all(
    url: str,
    bodies: list[dict[str, object]],
    concurrency: int,
    progress: _Progress,
) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        for start in range(0, len(bodies), progress.every):
            await _wave(client, bodies[start : start + progress.every], concurrency, progress)
            if progress.died:
                return
            progress.report()


async def _wave(
    client: httpx.AsyncClient,
    bodies: list[dict[str, object]],
    concurrency: int,
    progress: _Progress,
) -> None:
    """Send `bodies` from `concurrency` clients; returns when the last one is answered."""
    pending = iter(bodies)

    async def client_loop() -> None:
        for body in pending:
            if progress.died:
                return
            progress.record(await _send(client, body))

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))


async def _send(client: httpx.AsyncClient, body: dict[str, object]) -> str | None:
    """None for a 2xx answer, else what went wrong ("HTTP 429", "ReadTimeout")."""
    try:
        response = await client.post("/v1/audio/speech", json=body)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return None if response.is_success else f"HTTP {response.status_code}"


def _errors_line(errors: Counter[str]) -> str:
    if not errors:
        return "errors: none"
    kinds = ", ".join(f"{kind}: {count}" for kind, count in errors.most_common())
    return f"errors: {errors.total()} ({kinds})"


# -- the command --------------------------------------------------------------------


def run_soak(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        model = choose_model(args, stack)
        print(f"model: {model.label}", flush=True)
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tts-soak-logs-")))
        port = free_port()
        env = runtime_env(args, model.path, port, args.max_batch_size)
        try:
            target = stack.enter_context(
                serving("runtime", list(RUNTIME_COMMAND), env, port, logs, True)
            )
        except RuntimeError as exc:
            return _died(f"the server did not start: {exc}")
        return _soak(target, args)


def _soak(target: Target, args: argparse.Namespace) -> int:
    ready = status_mib(target.process.pid, "VmRSS")
    print(f"ready: RSS {ready:.0f} MiB (pid {target.process.pid})", flush=True)
    voices = httpx.get(f"{target.url}/v1/audio/voices", timeout=30).json()["data"]
    bodies = soak_requests(args.requests, args.seed, voices[0]["id"])
    progress = _Progress(target.process, args.report_every)
    asyncio.run(_send_all(target.url, bodies, args.concurrency, progress))
    if progress.died or target.process.poll() is not None:
        tail = target.log.read_text(errors="replace")[-2000:]
        return _died(f"the server died after {progress.done} requests:\n{tail}")
    memory = SoakMemory(
        requests=progress.done,
        ready=ready,
        first_count=progress.reports[0][0],
        first=progress.reports[0][1],
        last=progress.reports[-1][1],
        peak=status_mib(target.process.pid, "VmHWM"),
    )
    print(_errors_line(progress.errors))
    print(memory.summary())
    print(memory.verdict(), flush=True)
    return 0


def _died(message: str) -> int:
    print(f"tts-runtime soak: {message}", file=sys.stderr, flush=True)
    return 1
