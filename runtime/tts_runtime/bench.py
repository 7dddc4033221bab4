"""`tts-runtime bench`: the runtime with batch=1, with dynamic batching, and piper's
own HTTP server, on the same model, side by side in one run.

Each server runs in its own process on loopback; they are all up at once and
every concurrency level drives them in turn, so background load on a shared
machine hits all three alike. Clients send single-sentence requests (the typical
TTS API call) from a fixed list, a fixed number per level, and wait for the full
WAV. Printed: requests/s, audio-seconds/s, latency percentiles, mean batch size,
and the ratios dynamic:batch1 and dynamic:piper. A script, not a test: it prints
numbers, it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

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


CONTROL = "batch=1'"


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-path",
        type=Path,
        help="model directory or .onnx (default: build the test voice into a temp dir)",
    )
    parser.add_argument("--size", choices=["small", "medium"], default="medium")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="cpu")
    parser.add_argument("--precision", choices=["fp16", "fp32"], default="fp32")
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
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-queue-delay-ms", type=float, default=10.0)
    parser.add_argument(
        "--no-calibration",
        action="store_true",
        help="run the dynamic server with TTS_BATCH_CALIBRATION=false: it batches up to "
        "--max-batch-size whether or not that pays here (compare with a calibrated run)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip piper's own server")
    parser.add_argument(
        "--control",
        action="store_true",
        help="add a second, identical batch=1 server (an A/A control): the spread between "
        "the two is the noise floor of this machine",
    )
    parser.add_argument("--markdown", type=Path, help="also write the results as Markdown here")


def run_benchmark(args: argparse.Namespace) -> int:
    levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    with contextlib.ExitStack() as stack:
        if args.model_path is None:
            from tts_runtime.testmodel import write_test_model

            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tts-bench-")))
            model_path = write_test_model(tmp / args.size, size=args.size)
            print(f"built the {args.size} test voice in {model_path}", flush=True)
        else:
            model_path = args.model_path
        scaling = _engine_scaling(model_path, args)
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tts-bench-logs-")))
        targets = _start_targets(args, model_path, logs, stack)
        limit = httpx.get(f"{targets[1].url}/readyz", timeout=10).json().get("batch_limit")
        results = asyncio.run(_drive_all(targets, levels, args))
    report = _report(results, levels, [t.name for t in targets], args, model_path)
    report += "\n\n" + _scaling_report(scaling, limit)
    print(report)
    if args.markdown:
        args.markdown.write_text(report + "\n")
    return 0


# -- the engine alone ----------------------------------------------------------------


def _engine_scaling(model_path: Path, args: argparse.Namespace) -> list[tuple[int, float]]:
    """Seconds per item of the engine alone at growing batch sizes (identical typical
    sentences, no padding, no HTTP): the ceiling any batcher can reach here."""
    from tts_runtime.app import CALIBRATION_TEXT
    from tts_runtime.batcher import doublings
    from tts_runtime.engine import OnnxEngine
    from tts_runtime.engine_types import SynthesisItem
    from tts_runtime.text import TextFrontEnd

    engine = OnnxEngine.load(model_path, args.precision, args.device)
    item = SynthesisItem(TextFrontEnd(engine.config).phoneme_ids(CALIBRATION_TEXT))
    scales = engine.config.default_scales()
    engine.synthesize([item], scales)
    sizes = doublings(args.max_batch_size)
    best = dict.fromkeys(sizes, float("inf"))
    for _ in range(3):  # sizes alternate, so varying background load hits all alike
        for size in sizes:
            started = time.perf_counter()
            engine.synthesize([item] * size, scales)
            best[size] = min(best[size], (time.perf_counter() - started) / size)
    for size in sizes:
        print(f"engine alone, batch {size}: {best[size] * 1000:.1f} ms per item", flush=True)
    print(f"engine: {engine.provider}, {engine.precision}", flush=True)
    return list(best.items())


def _scaling_report(rows: list[tuple[int, float]], limit: object) -> str:
    lines = [
        "Engine alone (no HTTP, identical sentences, no padding): time per item by batch "
        f"size. The dynamic server's batch limit: {limit}.",
        "",
        "| batch | ms per item | items/s vs batch 1 |",
        "|--:|--:|--:|",
    ]
    base = rows[0][1]
    lines += [f"| {size} | {cost * 1000:.1f} | {base / cost:.2f}x |" for size, cost in rows]
    return "\n".join(lines)


# -- servers -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_targets(
    args: argparse.Namespace, model_path: Path, logs: Path, stack: contextlib.ExitStack
) -> list[Target]:
    targets = []
    runtimes = [("batch=1", 1), ("dynamic", args.max_batch_size)]
    if args.control:
        runtimes.append((CONTROL, 1))
    for name, batch in runtimes:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TTS_")}
        env.update(
            TTS_MODEL_PATH=str(model_path),
            TTS_HOST="127.0.0.1",
            TTS_PORT=str(port),
            TTS_DEVICE=args.device,
            TTS_PRECISION=args.precision,
            TTS_MAX_BATCH_SIZE=str(batch),
            TTS_BATCH_CALIBRATION=str(not args.no_calibration).lower(),
            TTS_MAX_QUEUE_DELAY_MS=str(args.max_queue_delay_ms),
            TTS_REQUEST_TIMEOUT_S="600",
            TTS_LOG_LEVEL="warning",
        )
        command = [sys.executable, "-m", "tts_runtime.cli", "serve"]
        targets.append(stack.enter_context(_serving(name, command, env, port, logs, True)))
    if not args.no_peer:
        onnx_file = model_path / "model.onnx" if model_path.is_dir() else model_path
        port = _free_port()
        command = [sys.executable, "-m", "piper.http_server", "-m", str(onnx_file)]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        if args.device == "cuda":
            command.append("--cuda")
        try:
            targets.append(
                stack.enter_context(_serving("piper", command, dict(os.environ), port, logs, False))
            )
        except RuntimeError as exc:
            print(f"piper's server did not start, comparing without it: {exc}", flush=True)
    return targets


@contextlib.contextmanager
def _serving(
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
    model_path: Path,
) -> str:
    header = [
        f"tts-runtime bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {_machine()}",
        f"model: {model_path} ({args.size if args.model_path is None else 'given'}), "
        f"device {args.device}, precision {args.precision}, dynamic max_batch_size "
        f"{args.max_batch_size}, max_queue_delay_ms {args.max_queue_delay_ms}, "
        f"batch calibration {'off' if args.no_calibration else 'on'}",
        "",
        "| server   |   c | reqs | err |  req/s | audio-s/s | p50 s |  p95 s |  p99 s | batch |",
        "|----------|----:|-----:|----:|-------:|--------:|-------:|-------:|-------:|------:|",
    ]
    lines = header + [_line(r) for r in results]
    lines += [
        "",
        "| c | throughput dynamic:batch=1 | p99 dynamic:batch=1 | p50 dynamic:batch=1 |"
        " throughput dynamic:piper | p99 dynamic:piper | A/A control throughput | A/A p99 |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|",
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
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
