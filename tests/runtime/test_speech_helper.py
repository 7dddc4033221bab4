"""The intelligibility helper's scoring (no recognizer needed): what counts as an error
and what does not."""

from __future__ import annotations

import numpy as np
import pytest
from speech import (
    PIECE_MAX_S,
    SENTENCES,
    foreign_words,
    normalise,
    pieces,
    span_error_rates,
    word_error_rate,
)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("The train leaves at 9.", "the train leaves at nine"),
        ("Twenty-one  people, don't they?", "twenty one people do not they"),
        ("It costs 1,500 or 2.5 each", "it costs one thousand five hundred or two point five each"),
        ("the 3rd of May", "the third of may"),
        ("50% off", "fifty percent off"),
    ],
)
def test_normalise_spells_numbers_and_drops_case_and_punctuation(
    written: str, expected: str
) -> None:
    assert normalise(written) == expected


def test_word_error_rate_ignores_spelling_choices_but_counts_real_errors() -> None:
    assert word_error_rate("The train leaves at nine.", " the train leaves at 9") == 0.0
    assert word_error_rate("The train leaves at nine.", "The rain leaves at nine.") == 0.2
    assert word_error_rate("The train leaves at nine.", "The train leaves") == 0.4  # clipped
    assert word_error_rate("The train leaves.", "") == 1.0


def test_span_error_rates_find_each_sentence_in_order() -> None:
    first, second, third = SENTENCES[:3]
    assert span_error_rates([first, second, third], f"{first} {second} {third}") == [0, 0, 0]
    missing = span_error_rates([first, second, third], f"{first} {third}")
    assert missing[0] == 0 and missing[1] == 1 and missing[2] == 0
    swapped = span_error_rates([first, second, third], f"{second} {first} {third}")
    assert max(swapped[:2]) > 0.5 and swapped[2] == 0


def test_foreign_words_are_a_neighbours_distinctive_words() -> None:
    own, neighbour = SENTENCES[0], SENTENCES[1]
    assert foreign_words(own, [neighbour], own) == set()
    assert foreign_words(own, [neighbour], own + " plants") == {"plants"}
    assert foreign_words(own, [neighbour], own + " to the") == set()  # function words


def test_the_sentence_set_is_large_and_distinct() -> None:
    assert len(SENTENCES) >= 20 and len(set(SENTENCES)) == len(SENTENCES)
    for sentence in SENTENCES:
        assert 7 <= len(normalise(sentence).split()) <= 14, sentence


def test_long_audio_is_cut_at_its_quietest_pause() -> None:
    rate = 16_000
    rng = np.random.default_rng(0)
    loud = rng.uniform(-0.5, 0.5, 60 * rate).astype(np.float32)
    loud[int(20.0 * rate) : int(20.3 * rate)] = 0.0  # a pause at 20 s
    loud[int(41.0 * rate) : int(41.3 * rate)] = 0.0  # and at 41 s
    cut = pieces(loud, rate)
    cuts_at = np.cumsum([len(p) for p in cut])[:-1] / rate
    assert len(cuts_at) == 2
    assert 20.0 <= cuts_at[0] <= 20.3 and 41.0 <= cuts_at[1] <= 41.3  # inside the pauses
    assert all(len(p) <= PIECE_MAX_S * rate for p in cut)
    assert np.array_equal(np.concatenate(cut), loud)  # nothing lost or repeated
    assert len(pieces(loud[: 10 * rate], rate)) == 1  # short audio stays whole
