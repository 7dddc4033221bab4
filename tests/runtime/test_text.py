from __future__ import annotations

import json
import logging
import random
import sys
from pathlib import Path

import pytest
from tts_runtime.errors import ModelLoadError, UnspeakableInputError
from tts_runtime.testmodel import make_voice_config, phoneme_id_map
from tts_runtime.text import TextFrontEnd, refuse_known_crashes, split_sentences
from tts_runtime.voice import VoiceConfig, load_voice_config

IDS = phoneme_id_map()


def ids_of(*symbols: str) -> list[int]:
    return [IDS[s][0] for s in symbols]


def test_text_voice_maps_characters_with_bos_pad_eos() -> None:
    front = TextFrontEnd(make_voice_config())
    assert front.phoneme_ids("hi") == tuple(ids_of("^", "_", "h", "_", "i", "_", "$"))


def test_text_voice_decomposes_accents_like_piper() -> None:
    # NFD: "é" is "e" followed by the combining acute accent U+0301.
    front = TextFrontEnd(make_voice_config())
    assert front.phoneme_ids("é") == tuple(ids_of("^", "_", "e", "_", "\u0301", "_", "$"))


def test_unknown_symbols_are_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    front = TextFrontEnd(make_voice_config())
    with caplog.at_level(logging.WARNING, logger="tts_runtime.text"):
        ids = front.phoneme_ids("a☃b")
    assert ids == tuple(ids_of("^", "_", "a", "_", "b", "_", "$"))
    assert "☃" in caplog.text


def test_multi_id_phonemes_keep_all_their_ids() -> None:
    id_map = {"_": [0], "^": [1], "$": [2], "a": [3, 4]}
    config = VoiceConfig(sample_rate=16000, phoneme_type="text", phoneme_id_map=id_map)
    assert TextFrontEnd(config).phoneme_ids("a") == (1, 0, 3, 4, 0, 2)


def test_pinyin_voices_are_refused_at_load_naming_the_config(tmp_path: Path) -> None:
    path = tmp_path / "zh.onnx.json"
    config = make_voice_config().model_copy(update={"phoneme_type": "pinyin"})
    path.write_text(json.dumps(config.to_piper_json()))
    with pytest.raises(ModelLoadError, match="pinyin") as caught:
        TextFrontEnd(load_voice_config(path))
    assert caught.value.path == path


def test_espeak_without_piper_is_a_clear_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "piper.phonemize_espeak", None)  # import fails
    config = make_voice_config().model_copy(update={"phoneme_type": "espeak"})
    with pytest.raises(ModelLoadError, match="piper-tts"):
        TextFrontEnd(config)


def test_espeak_phonemizes_with_piper_bundled_espeak_ng() -> None:
    pytest.importorskip("piper.phonemize_espeak", reason="optional piper-tts is not installed")
    config = make_voice_config().model_copy(update={"phoneme_type": "espeak"})
    front = TextFrontEnd(config)
    phonemes = front.phonemes("Hello world.")
    assert "\u02c8" in phonemes and "h" in phonemes  # IPA stress mark, not letters
    ids = front.phoneme_ids("Hello world.")
    assert ids[:2] == tuple(ids_of("^", "_")) and ids[-1] == IDS["$"][0]


def test_espeak_rejects_an_unknown_voice_at_load() -> None:
    pytest.importorskip("piper.phonemize_espeak", reason="optional piper-tts is not installed")
    config = make_voice_config().model_copy(
        update={"phoneme_type": "espeak", "espeak_voice": "no-such-voice"}
    )
    with pytest.raises(ModelLoadError, match="no-such-voice"):
        TextFrontEnd(config)


def test_espeak_in_worker_processes_gives_the_same_ids_as_in_process() -> None:
    pytest.importorskip("piper.phonemize_espeak", reason="optional piper-tts is not installed")
    config = make_voice_config().model_copy(update={"phoneme_type": "espeak"})
    pooled = TextFrontEnd(config, workers=2)
    try:
        assert pooled.pool is not None and len(pooled.pool.pids) == 2
        for text in ("Hello world.", "Dr. Smith paid $3.50 on 5/6.", "Ça va? Très bien."):
            assert pooled.phoneme_ids(text) == TextFrontEnd(config).phoneme_ids(text)
    finally:
        pooled.close()
    assert TextFrontEnd(config).pool is None  # workers=0: in this process
    assert TextFrontEnd(make_voice_config(), workers=2).pool is None  # no espeak-ng to guard


@pytest.mark.parametrize(
    "text",
    [
        "s'" * 71,
        "Bob's" + "'s" * 70,
        "nessnessness" + "ness" * 68,
        "U.S." * 100,
        "U.S.A.F." * 30,
        "ha" * 32,
    ],
)
def test_words_of_the_known_crash_families_are_refused(text: str) -> None:
    with pytest.raises(UnspeakableInputError) as raised:
        refuse_known_crashes(f"Before {text} after.")
    assert raised.value.reason == "refused"
    assert "espeak-ng" in str(raised.value)


@pytest.mark.parametrize(
    "text",
    [
        "ha" * 31,  # one below the limit
        "s' " * 200,  # the same units, spaced
        "U.S. " * 100,
        "".join(f"{letter}." for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),  # 26 of 48
        "你好" * 200,  # CJK has no spaces: left alone
        "-" * 300,  # no letter in the unit
        "Noooooooooooooooooooooooooooooooooooooooooooooooo!",  # one letter is no unit
        "https://example.com/a/very/long/path/that/keeps/going/and/going/index.html",
        "www.example.com 3.14.15.92 e.g. i.e. U.S.A.",
    ],
)
def test_ordinary_and_near_miss_text_is_not_refused(text: str) -> None:
    refuse_known_crashes(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("One; two", ["One;", "two"]),
        ("Pi is 3.14 exactly.", ["Pi is 3.14 exactly."]),
        ("你好。今天好吗？很好！是；", ["你好。", "今天好吗？", "很好！", "是；"]),  # noqa: RUF001
        ("  \n ", []),
        ("No terminator", ["No terminator"]),
    ],
)
def test_split_sentences_at_sentence_ends(text: str, expected: list[str]) -> None:
    assert split_sentences(text, max_chars=400) == expected


def test_long_sentence_splits_at_commas_and_spaces() -> None:
    text = "alpha beta, gamma delta epsilon."
    assert split_sentences(text, max_chars=12) == ["alpha beta,", "gamma delta", "epsilon."]


def test_a_word_longer_than_the_limit_is_cut() -> None:
    assert split_sentences("abcdefghij", max_chars=4) == ["abcd", "efgh", "ij"]


def test_no_segment_exceeds_the_limit_and_no_text_is_lost() -> None:
    rng = random.Random(7)
    alphabet = "abc defg,.!? ;。"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        limit = rng.randint(1, 30)
        segments = split_sentences(text, limit)
        assert all(0 < len(s) <= limit for s in segments)
        assert "".join("".join(s.split()) for s in segments) == "".join(text.split())


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError):
        split_sentences("a", 0)
