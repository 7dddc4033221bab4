"""`tts-runtime cache-bench`: what the response cache buys, measured in one run.

A Zipf-distributed request sequence over a fixed set of prompts (by default 1,000
requests over 200 prompts, s = 1.1: a few prompts are asked for again and again, most
rarely, as with greetings, menu prompts and notifications in real traffic) goes to one
runtime with the in-process cache on. Every response says in X-TTS-Cache whether it was a
hit, so the run yields, side by side, the latency of a synthesis (each prompt's first
request) and of a memory hit, and the hit ratio, which it compares with the best any cache
could do on that sequence (every repeat a hit). With a redis-server binary on the machine
a Redis is started on loopback and a second runtime, with no in-process cache, then asks
for every prompt the first one made: each is a Redis hit, a response made by another
replica. A script, not a test: it prints numbers, it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import redis

from tts_runtime.bench import (
    RUNTIME_COMMAND,
    Target,
    add_server_arguments,
    choose_model,
    free_port,
    machine_description,
    runtime_env,
    serving,
)
from tts_runtime.soak import WORDS, positive_int

MIN_WORDS, MAX_WORDS = 5, 14
# Room for every response of the run: the sequence, not the bound, decides the hit ratio.
MEMORY_BYTES = 1 << 30
# Read from the first replica after the sequence.
COUNTED = ("tts_cache_hits_total", "tts_cache_misses_total", "tts_cache_entries", "tts_cache_bytes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    parser.add_argument("--prompts", type=positive_int, default=200, help="distinct prompts")
    parser.add_argument("--requests", type=positive_int, default=1000)
    parser.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent s (> 0)")
    parser.add_argument("--concurrency", type=positive_int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seed of prompts and sequence")
    parser.add_argument(
        "--no-redis", action="store_true", help="skip the Redis tier (second replica)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the results as Markdown here")


# -- the workload --------------------------------------------------------------------


def prompt_texts(count: int, seed: int) -> list[str]:
    """`count` distinct one-sentence prompts of MIN_WORDS..MAX_WORDS words."""
    rng = random.Random(seed)
    prompts: dict[str, None] = {}
    while len(prompts) < count:
        words = [rng.choice(WORDS) for _ in range(rng.randint(MIN_WORDS, MAX_WORDS))]
        prompts[" ".join(words).capitalize() + "."] = None
    return list(prompts)


def zipf_sequence(prompts: int, requests: int, s: float, seed: int) -> list[int]:
    """Prompt indexes drawn with P(rank k) proportional to 1 / k**s, k = 1..prompts."""
    weights = np.arange(1, prompts + 1, dtype=np.float64) ** -s
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(prompts, size=requests, p=weights / weights.sum())]


def ideal_hit_ratio(sequence: list[int]) -> float:
    """The best any cache can do on `sequence`: every request but each prompt's first."""
    return 1 - len(set(sequence)) / len(sequence)


# -- Redis on loopback ---------------------------------------------------------------


def redis_server_command(binary: str, port: int, workdir: Path) -> list[str]:
    """A throw-away redis-server: loopback only, no persistence."""
    return [
        binary,
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)),
        *("--save", "", "--appendonly", "no", "--loglevel", "warning"),
    ]


def wait_for_redis(port: int, process: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    while True:
        with contextlib.suppress(redis.RedisError):
            if client.ping():
                return
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server not answering on port {port}")
        time.sleep(0.02)


@contextlib.contextmanager
def local_redis(binary: str, workdir: Path) -> Iterator[str]:
    """A redis-server on a free loopback port for the block; yields its URL."""
    port = free_port()
    with (workdir / "redis.log").open("wb") as out:
        process = subprocess.Popen(
            redis_server_command(binary, port, workdir), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_redis(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- load ----------------------------------------------------------------------------


@dataclass
class Answers:
    """Latency in seconds per X-TTS-Cache value."""

    by_state: dict[str, list[float]] = field(default_factory=lambda: {"hit": [], "miss": []})
    errors: int = 0
    seconds: float = 0.0

    def record(self, state: str, latency: float) -> None:
        self.by_state.setdefault(state, []).append(latency)

    @property
    def hits(self) -> list[float]:
        return self.by_state["hit"]

    @property
    def misses(self) -> list[float]:
        return self.by_state["miss"]


async def _drive(url: str, texts: list[str], concurrency: int) -> Answers:
    answers = Answers()
    pending = iter(texts)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def client_loop() -> None:
            for text in pending:
                body = {"model": "tts-1", "input": text, "voice": "default"}
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/audio/speech", json=body)
                    response.raise_for_status()
                except httpx.HTTPError:
                    answers.errors += 1
                    continue
                state = response.headers.get("x-tts-cache", "none")
                answers.record(state, time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        answers.seconds = time.perf_counter() - started
    return answers


def drive(url: str, texts: list[str], concurrency: int) -> Answers:
    return asyncio.run(_drive(url, texts, concurrency))


def metric(url: str, name: str) -> float:
    """The sum of a series' samples on /metrics (all its labels)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- the command ---------------------------------------------------------------------


def cache_env(
    args: argparse.Namespace, model: Path, port: int, memory: int, url: str | None
) -> dict[str, str]:
    env = runtime_env(args, model, port, args.max_batch_size)
    env["TTS_CACHE_MAX_BYTES"] = str(memory)
    if url is not None:
        env["TTS_CACHE_REDIS_URL"] = url
    return env


def run_cache_bench(args: argparse.Namespace) -> int:
    prompts = prompt_texts(args.prompts, args.seed)
    sequence = zipf_sequence(args.prompts, args.requests, args.zipf_s, args.seed)
    texts = [prompts[i] for i in sequence]
    binary = None if args.no_redis else shutil.which("redis-server")
    with contextlib.ExitStack() as stack:
        model = choose_model(args, stack)
        print(f"model: {model.label}", flush=True)
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tts-cache-bench-")))
        url = stack.enter_context(local_redis(binary, logs)) if binary else None
        if url is None:
            print("no redis-server (or --no-redis): the Redis tier is not measured", flush=True)

        def start(name: str, memory: int) -> Target:
            port = free_port()
            env = cache_env(args, model.path, port, memory, url)
            command = list(RUNTIME_COMMAND)
            return stack.enter_context(serving(name, command, env, port, logs, True))

        first = start("cached", MEMORY_BYTES)
        print(f"{len(texts)} requests over {args.prompts} prompts ...", flush=True)
        zipf = drive(first.url, texts, args.concurrency)
        counted = [metric(first.url, name) for name in COUNTED]
        shared = None
        if url is not None:
            second = start("redis-only", 0)
            time.sleep(0.5)  # the first replica's last writes to Redis run after its response
            seen = list(dict.fromkeys(texts))
            print(f"second replica: {len(seen)} prompts the first one made ...", flush=True)
            shared = drive(second.url, seen, args.concurrency)
    report = cache_report(args, model.label, sequence, zipf, shared, counted)
    print(report)
    if args.markdown:
        args.markdown.write_text(report + "\n")
    return 0


def _ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.1f}" if values else "-"


def _row(name: str, values: list[float]) -> str:
    mean = f"{statistics.fmean(values) * 1000:.1f}" if values else "-"
    return f"| {name} | {len(values)} | {_ms(values, 50)} | {_ms(values, 95)} | {mean} |"


def _ratio(slow: list[float], fast: list[float]) -> str:
    if not slow or not fast:
        return "-"
    return f"{statistics.median(slow) / statistics.median(fast):.0f}x"


def cache_report(
    args: argparse.Namespace,
    label: str,
    sequence: list[int],
    zipf: Answers,
    shared: Answers | None,
    counted: list[float],
) -> str:
    """`counted`: the first replica's COUNTED series after the sequence."""
    hits, misses, entries, held = counted
    answered = len(zipf.hits) + len(zipf.misses)
    measured = len(zipf.hits) / answered if answered else float("nan")
    synthesis_all = statistics.fmean(zipf.misses) * len(sequence) if zipf.misses else float("nan")
    lines = [
        f"tts-runtime cache-bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on "
        f"{machine_description()}",
        f"model: {label}, device {args.device}, precision {args.precision}; "
        f"{len(sequence)} requests, Zipf s={args.zipf_s} over {args.prompts} prompts "
        f"({len(set(sequence))} of them asked for), concurrency {args.concurrency}, "
        f"seed {args.seed}",
        "",
        "| response | count | p50 ms | p95 ms | mean ms |",
        "|---|--:|--:|--:|--:|",
        _row("miss: synthesized", zipf.misses),
        _row("hit: in-process memory", zipf.hits),
    ]
    if shared is not None:
        lines.append(_row("hit: Redis, made by the other replica", shared.hits))
        if shared.misses:
            lines.append(_row("second replica: miss", shared.misses))
    lines += [
        "",
        f"- hit ratio {measured:.3f} (X-TTS-Cache; tts_cache_hits_total {hits:.0f}, "
        f"tts_cache_misses_total {misses:.0f}); the best any cache can do on this "
        f"sequence is {ideal_hit_ratio(sequence):.3f} (every repeat a hit)",
        f"- synthesis / memory hit, p50: {_ratio(zipf.misses, zipf.hits)}",
    ]
    if shared is not None:
        lines.append(f"- synthesis / Redis hit, p50: {_ratio(zipf.misses, shared.hits)}")
    lines += [
        f"- the whole sequence took {zipf.seconds:.1f} s; all from the model it would take "
        f"about {synthesis_all:.0f} s (requests x mean synthesis latency): "
        f"{synthesis_all / zipf.seconds:.1f}x",
        f"- the in-process cache held {entries:.0f} responses, {held / (1 << 20):.1f} MiB "
        f"(tts_cache_bytes); errors: {zipf.errors + (shared.errors if shared else 0)}",
    ]
    return "\n".join(lines)
