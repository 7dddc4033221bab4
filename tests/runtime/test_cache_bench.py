"""`tts-runtime cache-bench`: its Zipf workload, and one short run on the test voice with a
real redis-server, whose hit ratio must be the best the sequence allows."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from tts_runtime.cache_bench import ideal_hit_ratio, prompt_texts, zipf_sequence
from tts_runtime.cli import main


def test_prompts_are_distinct_sentences_the_same_for_a_seed() -> None:
    prompts = prompt_texts(200, seed=3)
    assert len(set(prompts)) == 200 and prompts == prompt_texts(200, seed=3)
    assert prompts != prompt_texts(200, seed=4)
    assert all(p.endswith(".") and p.count(".") == 1 and len(p.split()) >= 5 for p in prompts)


def test_the_sequence_follows_zipf_the_most_asked_prompt_first() -> None:
    sequence = zipf_sequence(200, 20_000, 1.1, seed=0)
    assert sequence == zipf_sequence(200, 20_000, 1.1, seed=0)
    counts = Counter(sequence)
    # P(rank 1) / P(rank 2) = 2 ** 1.1 = 2.14; P(rank 1) = 1 / H(200, 1.1) = 0.19
    assert 1.8 < counts[0] / counts[1] < 2.6
    assert 0.17 < counts[0] / 20_000 < 0.21
    assert counts.most_common(1)[0][0] == 0
    assert set(sequence) <= set(range(200))


def test_the_ideal_hit_ratio_counts_every_repeat() -> None:
    assert ideal_hit_ratio([0, 1, 0, 0, 2, 1]) == pytest.approx(0.5)
    assert ideal_hit_ratio([3, 4, 5]) == 0


@pytest.mark.slow
def test_a_short_run_hits_every_repeat_and_shares_through_redis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (`make host-packages` installs it)")
    report = tmp_path / "cache.md"
    args = ["cache-bench", "--test-voice", "small", "--no-calibration"]
    args += ["--prompts", "12", "--requests", "40", "--markdown", str(report)]
    assert main(args) == 0
    text = report.read_text()
    sequence = zipf_sequence(12, 40, 1.1, seed=0)
    distinct = len(set(sequence))
    assert f"| miss: synthesized | {distinct} |" in text
    assert f"| hit: in-process memory | {40 - distinct} |" in text
    assert f"| hit: Redis, made by the other replica | {distinct} |" in text
    ideal = f"{ideal_hit_ratio(sequence):.3f}"
    assert f"hit ratio {ideal} " in text and f"this sequence is {ideal}" in text
    assert "errors: 0" in text
    assert text in capsys.readouterr().out
