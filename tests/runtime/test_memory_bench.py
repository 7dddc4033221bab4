"""`tts-runtime memory`: the batch plan, the round-robin schedule and the report
arithmetic from given numbers; then one small real run of two modes through the
worker protocol on the small test voice."""

from __future__ import annotations

import argparse
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from tts_runtime.bench import BenchModel
from tts_runtime.cli import main
from tts_runtime.engine_types import MEMORY_MODES, SynthesisScales
from tts_runtime.memory_bench import (
    SEGMENT_CHARS,
    WORKER_COMMAND,
    ModeResult,
    Sample,
    add_arguments,
    comparison_lines,
    drive,
    plan_batches,
    quarter_batches,
    report,
    results_table,
    schedule,
    summarize,
    workers,
)
from tts_runtime.soak import SPEEDS, WORDS


def memory_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def sample(batches: int, rss: float, hwm: float, seconds: float = 1.0) -> Sample:
    return Sample(batches, batches * 8, seconds, audio_seconds=10.0, rss_mib=rss, hwm_mib=hwm)


def result(mode: str, end: float, audio_rate: float, peak: float = 1000.0) -> ModeResult:
    return ModeResult(mode, 250, 400, end, peak, seconds=10.0, audio_seconds=10.0 * audio_rate)


# -- the batch plan -----------------------------------------------------------------


def test_the_plan_is_the_same_for_a_seed_and_differs_across_seeds() -> None:
    assert plan_batches(12, 8, seed=5) == plan_batches(12, 8, seed=5)
    assert plan_batches(12, 8, seed=5) != plan_batches(12, 8, seed=6)
    assert plan_batches(4, 8, seed=5) == plan_batches(12, 8, seed=5)[:4]


def test_batches_hold_batch_size_server_sized_segments_of_real_words() -> None:
    plan = plan_batches(48, 8, seed=0)
    assert len(plan) == 48 and all(len(batch.segments) == 8 for batch in plan)
    segments = [s for batch in plan for s in batch.segments]
    assert all(0 < len(s) <= SEGMENT_CHARS == 400 for s in segments)
    assert all(s[0].isupper() and s.endswith(".") for s in segments)
    assert {w.strip(".").lower() for s in segments for w in s.split()} <= set(WORDS)
    # Sentences of soak's texts: short ones (a text's tail) up to 14 words, many lengths.
    lengths = Counter(len(s.split()) for s in segments)
    assert max(lengths) == 14 and min(lengths) <= 3 and len(lengths) >= 10


def test_each_batch_has_one_speed_and_all_speeds_occur() -> None:
    speeds = [batch.speed for batch in plan_batches(48, 8, seed=0)]
    assert set(speeds) == set(SPEEDS) == {0.75, 1.0, 1.25, 1.5}


def test_scales_at_a_speed_divide_the_length_scale_by_the_speed_only() -> None:
    defaults = SynthesisScales(noise_scale=0.667, length_scale=1.2, noise_w=0.8)
    fast = defaults.at_speed(1.5)
    assert (fast.noise_scale, fast.noise_w) == (0.667, 0.8)
    assert fast.length_scale == pytest.approx(1.2 / 1.5)
    assert defaults.at_speed(1.0) == defaults


# -- the schedule -------------------------------------------------------------------


def test_schedule_rotates_the_first_mode_and_cuts_the_last_round() -> None:
    assert schedule(["a", "b", "c"], 8, 3) == [
        (3, ["a", "b", "c"]),
        (3, ["b", "c", "a"]),
        (2, ["c", "a", "b"]),
    ]
    rounds = schedule(list(MEMORY_MODES), 48, 4)
    assert sum(count for count, _ in rounds) == 48
    assert Counter(order[0] for _, order in rounds) == dict.fromkeys(MEMORY_MODES, 4)


class FakeWorker:
    """Records the order of the calls instead of running an engine."""

    def __init__(self, mode: str, calls: list[tuple[str, int]]) -> None:
        self.mode, self.calls = mode, calls

    def run(self, batches: int) -> Sample:
        self.calls.append((self.mode, batches))
        return sample(batches, rss=100.0, hwm=100.0)


def test_drive_runs_one_worker_at_a_time_in_the_schedules_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[tuple[str, int]] = []
    fakes = {mode: FakeWorker(mode, calls) for mode in ("x", "y")}
    samples = drive(fakes, total=5, chunk=2)  # type: ignore[arg-type]
    assert calls == [("x", 2), ("y", 2), ("y", 2), ("x", 2), ("x", 1), ("y", 1)]
    assert [s.batches for s in samples["x"]] == [2, 2, 1]
    assert capsys.readouterr().out.splitlines()[-1] == "   5/5 batches: RSS MiB x 100, y 100"


# -- the arithmetic -----------------------------------------------------------------


def test_summarize_takes_rss_at_the_first_quarter_the_end_and_the_peak() -> None:
    samples = [
        sample(4, rss=300, hwm=310, seconds=2.0),
        sample(4, rss=320, hwm=340, seconds=3.0),
        sample(4, rss=330, hwm=340, seconds=1.0),
        sample(4, rss=336, hwm=350, seconds=2.0),
    ]
    assert quarter_batches(samples, 16) == 4
    assert quarter_batches(samples, 20) == 8  # a quarter is 5: the next chunk's end
    r = summarize("shrink", 240, samples, 16)
    assert (r.load, r.quarter, r.end, r.peak) == (240, 300, 336, 350)
    assert r.growth == pytest.approx(1.12)
    assert r.total_growth == pytest.approx(1.4)
    assert (r.seconds, r.audio_seconds) == (8.0, 40.0)
    assert r.cost == pytest.approx(0.2) and r.audio_rate == pytest.approx(5.0)
    assert summarize("shrink", 240, samples, 20).quarter == 320


def test_table_has_a_row_per_mode_with_ratios_against_grow() -> None:
    results = [result("shrink", 332, audio_rate=4.85), result("grow", 3300, audio_rate=5.0)]
    table = results_table(results, quarter_at=12)
    assert table[0].startswith("| mode | RSS load MiB | RSS after 12 batches | RSS end |")
    assert "speed vs grow" in table[0]
    assert table[2] == ("| shrink | 250 | 400 | 332 | 1000 | 0.83 | 1.33 | 0.206 | 4.85 | 0.97x |")
    assert table[3].startswith("| grow | 250 | 400 | 3300 |") and table[3].endswith("| 1.00x |")
    assert comparison_lines(results) == [
        "- shrink: 0.97x the speed of grow, 0.10x its RSS at the end, 1.00x its peak"
    ]


def test_without_grow_the_first_mode_is_the_reference() -> None:
    results = [result("no-arena", 750, audio_rate=4.0), result("shrink", 330, audio_rate=5.0)]
    assert "speed vs no-arena" in results_table(results, quarter_at=2)[0]
    assert comparison_lines(results) == [
        "- shrink: 1.25x the speed of no-arena, 0.44x its RSS at the end, 1.00x its peak"
    ]


def test_report_header_names_date_machine_model_and_plan() -> None:
    args = memory_args("--batches", "16", "--batch-size", "4", "--chunk", "2", "--seed", "3")
    text = report(
        [result("grow", 900, 5.0)],
        4,
        args,
        BenchModel(Path("m"), "joe"),
        "CPUExecutionProvider fp32",
    )
    first, second, third = text.splitlines()[:3]
    assert first.startswith("tts-runtime memory, 20") and " UTC on " in first and "CPUs" in first
    assert second == "model: joe; engine CPUExecutionProvider fp32, each mode in its own process"
    assert third.startswith("16 batches of 4 segments (seed 3: texts of 3-150 words")
    assert "run 2 at a time round-robin" in third


def test_modes_option_defaults_to_all_and_refuses_unknown_or_repeated_modes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert memory_args().modes == list(MEMORY_MODES)
    assert memory_args("--modes", "grow, shrink").modes == ["grow", "shrink"]
    for bad in ("shrink,huge", "shrink,shrink", ","):
        with pytest.raises(SystemExit):
            memory_args("--modes", bad)
        assert "expected distinct modes" in capsys.readouterr().err


# -- real workers -------------------------------------------------------------------


def test_two_modes_through_the_worker_protocol(
    small_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = memory_args("--batches", "4", "--batch-size", "2", "--modes", "shrink,no-arena")
    with workers(args.modes, small_model_dir, args, tmp_path) as started:
        loaded = [w.read() for w in started]
        replies = [w.run(3) for w in started] + [w.run(3) for w in started]
    for message in loaded:
        assert message["provider"] == "CPUExecutionProvider" and message["precision"] == "fp32"
        assert 0 < message["rss_mib"] <= message["hwm_mib"]
    for reply in replies:
        assert reply.rss_mib <= reply.hwm_mib and reply.seconds > 0 and reply.audio_seconds > 0
    # 3 batches of 2, then the one batch left of the 4 planned.
    assert [(r.batches, r.items) for r in replies] == [(3, 6), (3, 6), (1, 2), (1, 2)]
    assert all(w.process.returncode == 0 for w in started)  # EOF ended them

    markdown = tmp_path / "memory.md"
    argv = ["memory", "--model-path", str(small_model_dir), "--markdown", str(markdown)]
    argv += ["--modes", "shrink,no-arena", "--batches", "4", "--batch-size", "2", "--chunk", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "shrink: loaded, RSS" in out and "no-arena: loaded, RSS" in out
    rows = [line for line in markdown.read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| shrink", "| no-arena"]
    assert "- no-arena: " in markdown.read_text() and markdown.read_text() in out + "\n"


def test_a_worker_that_cannot_load_fails_the_run_with_its_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-voice"
    assert main(["memory", "--model-path", str(missing), "--modes", "grow"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tts-runtime memory: the grow worker exited (exit 1):")
    assert f"cannot load model file {missing}: no such file or directory" in err
    assert "Traceback" not in err


def test_a_worker_refuses_a_bad_command(small_model_dir: Path, tmp_path: Path) -> None:
    command = [*WORKER_COMMAND, "--worker", "shrink", "--model-path", str(small_model_dir)]
    command += ["--batches", "1", "--batch-size", "1"]
    done = subprocess.run(
        command, input="walk 2\n", capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1
    assert done.stdout.count("\n") == 1  # the load reply only
    assert "expected 'run K', got 'walk 2'" in done.stderr
