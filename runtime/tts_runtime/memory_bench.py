"""`tts-runtime memory`: how much memory each onnxruntime memory mode holds, and what
it costs in speed, side by side in one run.

The modes (engine_types.MEMORY_MODES) differ in what onnxruntime keeps between runs:
"grow" keeps the largest arena blocks it ever needed, "shrink" returns them after
every run, "no-arena" mallocs every tensor. Resident memory is per process, so each
mode runs the engine alone (no HTTP) in its own worker process; the parent only
sends commands and collects numbers. Every worker gets the same deterministic
batches: texts of 3-150 words (log-uniform, as in `soak`) split into segments the
way the server splits them, consecutive segments grouped into batches, one speed
per batch. Printed per mode: VmRSS after load, after the first quarter of the
batches (by then most input shapes have been seen) and at the end, the peak
(VmHWM), and seconds of compute per second of audio.

Side by side because a shared machine's background load changes speed from minute
to minute: the workers take turns, a few batches each, and the mode that goes
first rotates every round, so that load falls on all modes alike and the speed
ratios stay meaningful. A measurement, not a test: it exits 0 whatever the numbers;
only a worker that fails exits 1.

Worker protocol (`python -m tts_runtime.memory_bench --worker MODE ...`): after
loading, one JSON line (RSS, provider, precision); then for every "run K" line on
stdin, the next K batches of the plan and one JSON line (a Sample); EOF ends it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from tts_runtime.bench import BenchModel, add_voice_arguments, choose_model, machine_description
from tts_runtime.engine_types import (
    MEMORY_MODES,
    MemoryMode,
    SynthesisEngine,
    SynthesisItem,
    SynthesisScales,
)
from tts_runtime.settings import RuntimeSettings
from tts_runtime.soak import SPEEDS, positive_int, random_text, status_mib, word_count
from tts_runtime.text import split_sentences

# Segments as long as the server cuts them by default (TTS_MAX_SEGMENT_CHARS).
SEGMENT_CHARS: int = RuntimeSettings.model_fields["max_segment_chars"].default
REFERENCE_MODE = "grow"  # onnxruntime's defaults: the speed the others are compared with
TAIL_CHARS = 2000
WORKER_COMMAND = (sys.executable, "-m", "tts_runtime.memory_bench")


class WorkerError(Exception):
    """A worker exited or answered nonsense; the message ends with its stderr tail."""


# -- the batch plan -----------------------------------------------------------------


@dataclass(frozen=True)
class PlannedBatch:
    """One batch as text: what every mode runs, before the voice's front end."""

    segments: tuple[str, ...]
    speed: float


def plan_batches(count: int, size: int, seed: int) -> list[PlannedBatch]:
    """`count` batches of `size` consecutive segments, one speed each; the same for
    the same seed (a shorter plan is a prefix of a longer one)."""
    rng = random.Random(seed)
    segments = _segments(rng)
    return [
        PlannedBatch(tuple(itertools.islice(segments, size)), rng.choice(SPEEDS))
        for _ in range(count)
    ]


def _segments(rng: random.Random) -> Iterator[str]:
    """An endless stream of server-sized segments of soak-like texts."""
    while True:
        yield from split_sentences(random_text(rng, word_count(rng)), SEGMENT_CHARS)


# -- the worker (one process per mode) ----------------------------------------------


@dataclass(frozen=True)
class Sample:
    """A worker's answer to "run K": what those K batches took, and its memory after."""

    batches: int
    items: int
    seconds: float
    audio_seconds: float
    rss_mib: float
    hwm_mib: float


EngineBatch = tuple[list[SynthesisItem], SynthesisScales]


def _worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tts_runtime.memory_bench",
        description="One mode's worker of `tts-runtime memory`; commands on stdin.",
    )
    parser.add_argument("--worker", choices=MEMORY_MODES, required=True)
    parser.add_argument("--model-path", type=Path, required=True)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="cpu")
    parser.add_argument("--precision", choices=["fp16", "fp32"], default="fp32")
    parser.add_argument("--batches", type=positive_int, required=True)
    parser.add_argument("--batch-size", type=positive_int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def worker_main(argv: Sequence[str] | None = None) -> int:
    from tts_runtime.engine import OnnxEngine
    from tts_runtime.errors import ModelLoadError
    from tts_runtime.text import TextFrontEnd

    args = _worker_parser().parse_args(argv)
    replies = _replies_stream()
    try:
        engine = OnnxEngine.load(args.model_path, args.precision, args.device, args.worker)
    except ModelLoadError as exc:
        print(exc, file=sys.stderr)
        return 1
    # Phonemized before the load RSS is taken: espeak's memory belongs to the load.
    front_end = TextFrontEnd(engine.config)
    defaults = engine.config.default_scales()
    plan = plan_batches(args.batches, args.batch_size, args.seed)
    pending = iter([_engine_batch(front_end.phoneme_ids, defaults, batch) for batch in plan])
    _reply(replies, {**_memory(), "provider": engine.provider, "precision": engine.precision})
    for line in sys.stdin:
        count = _run_count(line)
        _reply(replies, dataclasses.asdict(_run(engine, itertools.islice(pending, count))))
    return 0


def _replies_stream() -> IO[str]:
    """The replies get a private copy of stdout, and fd 1 then points at stderr:
    whatever a native library prints cannot break a JSON line."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return replies


def _reply(replies: IO[str], message: dict[str, Any]) -> None:
    replies.write(json.dumps(message) + "\n")
    replies.flush()


def _run_count(line: str) -> int:
    words = line.split()
    if len(words) != 2 or words[0] != "run" or not words[1].isdigit():
        raise SystemExit(f"memory worker: expected 'run K', got {line.strip()!r}")
    return int(words[1])


def _engine_batch(
    phoneme_ids: Callable[[str], tuple[int, ...]], defaults: SynthesisScales, batch: PlannedBatch
) -> EngineBatch:
    items = [SynthesisItem(phoneme_ids(segment)) for segment in batch.segments]
    return items, defaults.at_speed(batch.speed)


def _run(engine: SynthesisEngine, batches: Iterable[EngineBatch]) -> Sample:
    """Run the batches; only the engine's own time counts, not the bookkeeping."""
    count = items = 0
    seconds = audio_seconds = 0.0
    for batch_items, scales in batches:
        started = time.perf_counter()
        audios = engine.synthesize(batch_items, scales)
        seconds += time.perf_counter() - started
        audio_seconds += sum(len(audio) for audio in audios) / engine.sample_rate
        count += 1
        items += len(batch_items)
    return Sample(count, items, seconds, audio_seconds, **_memory())


def _memory() -> dict[str, float]:
    pid = os.getpid()
    return {"rss_mib": status_mib(pid, "VmRSS"), "hwm_mib": status_mib(pid, "VmHWM")}


# -- the parent: workers side by side -----------------------------------------------


@dataclass
class Worker:
    """One mode's worker process, its pipes, and the file its stderr goes to."""

    mode: str
    process: subprocess.Popen[str]
    log: Path

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise WorkerError(self._failure("exited"))
        try:
            return cast(dict[str, Any], json.loads(line))
        except json.JSONDecodeError:
            raise WorkerError(self._failure(f"answered {line.strip()!r}")) from None

    def run(self, batches: int) -> Sample:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(f"run {batches}\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(self._failure("exited")) from None
        try:
            return Sample(**self.read())
        except TypeError as exc:
            raise WorkerError(self._failure(f"answered without a sample ({exc})")) from None

    def _failure(self, what: str) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        tail = self.log.read_text(errors="replace")[-TAIL_CHARS:]
        return f"the {self.mode} worker {what} (exit {self.process.poll()}):\n{tail}"


@contextlib.contextmanager
def workers(
    modes: Sequence[MemoryMode], model_path: Path, args: argparse.Namespace, logs: Path
) -> Iterator[list[Worker]]:
    """All workers at once, each loading its engine; closing stdin ends them."""
    started: list[Worker] = []
    try:
        for mode in modes:
            started.append(_start(mode, model_path, args, logs))
        yield started
    finally:
        for worker in started:
            _stop(worker)


def _start(mode: MemoryMode, model_path: Path, args: argparse.Namespace, logs: Path) -> Worker:
    command = [*WORKER_COMMAND, "--worker", mode, "--model-path", str(model_path)]
    command += ["--device", args.device, "--precision", args.precision, "--seed", str(args.seed)]
    command += ["--batches", str(args.batches), "--batch-size", str(args.batch_size)]
    log = logs / f"{mode}.log"
    with log.open("w") as err:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
        )
    return Worker(mode, process, log)


def _stop(worker: Worker) -> None:
    if worker.process.stdin is not None:
        with contextlib.suppress(BrokenPipeError):
            worker.process.stdin.close()
    try:
        worker.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        worker.process.wait()
    if worker.process.stdout is not None:
        worker.process.stdout.close()


def schedule(modes: Sequence[str], total: int, chunk: int) -> list[tuple[int, list[str]]]:
    """(batches each mode runs, order of the modes) per round: `chunk` batches a turn
    (fewer in the last round), the first mode rotating from round to round."""
    rounds = []
    for number, start in enumerate(range(0, total, chunk)):
        first = number % len(modes)
        rounds.append((min(chunk, total - start), [*modes[first:], *modes[:first]]))
    return rounds


def drive(by_mode: dict[str, Worker], total: int, chunk: int) -> dict[str, list[Sample]]:
    """Round-robin: one worker at a time, so the modes never compete for the CPU."""
    samples: dict[str, list[Sample]] = {mode: [] for mode in by_mode}
    done = 0
    for count, order in schedule(list(by_mode), total, chunk):
        for mode in order:
            samples[mode].append(by_mode[mode].run(count))
        done += count
        rss = ", ".join(f"{mode} {s[-1].rss_mib:.0f}" for mode, s in samples.items())
        print(f"{done:>4}/{total} batches: RSS MiB {rss}", flush=True)
    return samples


# -- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeResult:
    """One mode's memory (VmRSS and VmHWM, MiB) and speed over the whole plan."""

    mode: str
    load: float
    quarter: float  # after the first quarter of the batches (at a chunk's end)
    end: float
    peak: float
    seconds: float
    audio_seconds: float

    @property
    def growth(self) -> float:
        """End vs first quarter: above 1 means it still grows once most shapes were seen."""
        return self.end / self.quarter

    @property
    def total_growth(self) -> float:
        return self.end / self.load

    @property
    def cost(self) -> float:
        """Seconds of compute per second of audio (lower is faster)."""
        return self.seconds / self.audio_seconds

    @property
    def audio_rate(self) -> float:
        return self.audio_seconds / self.seconds


def quarter_batches(samples: Sequence[Sample], total: int) -> int:
    """Batches done at the first sample at or past a quarter of `total`."""
    quarter = math.ceil(total / 4)
    return next(
        done for done in itertools.accumulate(s.batches for s in samples) if done >= quarter
    )


def summarize(mode: str, load: float, samples: Sequence[Sample], total: int) -> ModeResult:
    at = quarter_batches(samples, total)
    done = list(itertools.accumulate(s.batches for s in samples))
    return ModeResult(
        mode=mode,
        load=load,
        quarter=samples[done.index(at)].rss_mib,
        end=samples[-1].rss_mib,
        peak=max(s.hwm_mib for s in samples),
        seconds=sum(s.seconds for s in samples),
        audio_seconds=sum(s.audio_seconds for s in samples),
    )


def reference(results: Sequence[ModeResult]) -> ModeResult:
    """ "grow" (onnxruntime's defaults) when it ran, else the first mode."""
    return next((r for r in results if r.mode == REFERENCE_MODE), results[0])


def results_table(results: Sequence[ModeResult], quarter_at: int) -> list[str]:
    base = reference(results)
    lines = [
        f"| mode | RSS load MiB | RSS after {quarter_at} batches | RSS end | peak (VmHWM) | "
        f"end / after {quarter_at} | end / load | s per audio-s | audio-s/s | "
        f"speed vs {base.mode} |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {r.mode} | {r.load:.0f} | {r.quarter:.0f} | {r.end:.0f} | {r.peak:.0f} | "
        f"{r.growth:.2f} | {r.total_growth:.2f} | {r.cost:.3f} | {r.audio_rate:.2f} | "
        f"{r.audio_rate / base.audio_rate:.2f}x |"
        for r in results
    ]
    return lines


def comparison_lines(results: Sequence[ModeResult]) -> list[str]:
    """One line per mode other than the reference: its speed and its final RSS."""
    base = reference(results)
    return [
        f"- {r.mode}: {r.audio_rate / base.audio_rate:.2f}x the speed of {base.mode}, "
        f"{r.end / base.end:.2f}x its RSS at the end, {r.peak / base.peak:.2f}x its peak"
        for r in results
        if r is not base
    ]


def report(
    results: Sequence[ModeResult],
    quarter_at: int,
    args: argparse.Namespace,
    model: BenchModel,
    engine: str,
) -> str:
    header = [
        f"tts-runtime memory, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine_description()}",
        f"model: {model.label}; engine {engine}, each mode in its own process",
        f"{args.batches} batches of {args.batch_size} segments (seed {args.seed}: texts of "
        f"3-150 words cut at {SEGMENT_CHARS} characters, one speed of "
        f"{'/'.join(f'{s:g}' for s in SPEEDS)} per batch), run {args.chunk} at a time "
        "round-robin, the first mode rotating",
        "",
    ]
    return "\n".join([*header, *results_table(results, quarter_at), "", *comparison_lines(results)])


# -- the command --------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_voice_arguments(parser)  # not the server options: no server runs here
    parser.add_argument(
        "--modes",
        type=modes_list,
        default=list(MEMORY_MODES),
        help=f"comma list of memory modes (default {','.join(MEMORY_MODES)})",
    )
    parser.add_argument("--batches", type=positive_int, default=48, help="batches per mode")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="segments per batch")
    parser.add_argument(
        "--chunk", type=positive_int, default=4, help="batches each mode runs per turn"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch plan")
    parser.add_argument("--markdown", type=Path, help="also write the results as Markdown here")


def modes_list(value: str) -> list[MemoryMode]:
    modes = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MEMORY_MODES]
    if unknown or not modes or len(set(modes)) != len(modes):
        raise argparse.ArgumentTypeError(
            f"expected distinct modes out of {', '.join(MEMORY_MODES)}, got {value!r}"
        )
    return cast(list[MemoryMode], modes)


def run_memory(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        model = choose_model(args, stack)
        print(f"model: {model.label}", flush=True)
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tts-memory-")))
        try:
            started = stack.enter_context(workers(args.modes, model.path, args, logs))
            loads, engine = _loaded(started)
            samples = drive({w.mode: w for w in started}, args.batches, args.chunk)
        except WorkerError as exc:
            print(f"tts-runtime memory: {exc}", file=sys.stderr, flush=True)
            return 1
    results = [summarize(mode, loads[mode], samples[mode], args.batches) for mode in samples]
    text = report(
        results, quarter_batches(samples[args.modes[0]], args.batches), args, model, engine
    )
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


def _loaded(started: Sequence[Worker]) -> tuple[dict[str, float], str]:
    """Waits for every worker's load; returns RSS after load per mode, and the engine."""
    loads = {}
    engine = ""
    for worker in started:
        message = worker.read()
        loads[worker.mode] = float(message["rss_mib"])
        engine = f"{message['provider']} {message['precision']}"
        print(
            f"{worker.mode}: loaded, RSS {loads[worker.mode]:.0f} MiB (pid {worker.process.pid})",
            flush=True,
        )
    return loads, engine


if __name__ == "__main__":
    sys.exit(worker_main())
