"""Text front end: sentence splitting and text -> Piper phoneme ids."""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

from tts_runtime.errors import ModelLoadError, UnspeakableInputError
from tts_runtime.phonemizer_pool import PhonemizerPool, WorkerStartError
from tts_runtime.voice import BOS, EOS, PAD, VoiceConfig

log = logging.getLogger(__name__)

# ASCII terminators end a sentence only before whitespace or the end ("3.14" stays whole);
# the full-width CJK ones always do (CJK text has no spaces).
_SENTENCE_END = re.compile(r"(?<=[.!?;])(?=\s|$)|(?<=[。！？；])")  # noqa: RUF001
_SOFT_BREAKS = ",，、"  # noqa: RUF001

# espeak-ng keeps global state (the current voice), so one phonemization at a time.
_ESPEAK_LOCK = threading.Lock()
# espeak-ng, as piper-tts bundles it, reads past a buffer and crashes the whole process
# (SIGSEGV) on a clause with some 30-50 dots followed by something other than whitespace,
# where a neighbour of the dot is not an ASCII letter or digit: "é.é.é.…", "a.;a.;…", a
# dot with a combining mark on it, repeated (found by tests/runtime/test_fuzz_api.py). A
# space after such a dot reads the same and keeps espeak-ng off that path; "3.14", "e.g."
# and "www.example.com" stay as they are.
_RISKY_DOT = re.compile(r"(?<![A-Za-z0-9])\.(?=\S)|\.(?=[^\sA-Za-z0-9])")

# espeak-ng, as piper-tts bundles it, overflows its stack stripping suffixes when one word
# stacks the same few letters again and again: "s's's'…", "Bob's's's…", "nessnessness…",
# "U.S.U.S.…" crash the process from about 50 repeats on (espeak-ng fixed the first in its
# pull request 2495), and so does a chain of some 100 single-letter abbreviations
# ("U.S.A.F.U.S.A.F.…"). Refused up front, being cheap to spot and no real word: a word
# that repeats one unit of 2-6 characters, a Latin letter among them, REPEATS_REFUSED
# times or more ("haha…" crashes nothing but is refused from 32 repeats; CJK text, which
# has no spaces, is left alone), and a word of ABBREVIATIONS_REFUSED letter-dot pairs in a
# row. These are the families fuzzing found, not all there are (a unit of 8 characters,
# "'s'sness" 30 times, still crashes espeak-ng): the phonemizer's worker processes
# (phonemizer_pool.py) are what keeps the server safe from the rest.
REPEATS_REFUSED = 32
ABBREVIATIONS_REFUSED = 48
_REPEATED_UNIT = re.compile(rf"(\S{{2,6}}?)\1{{{REPEATS_REFUSED - 1},}}")
_ABBREVIATION_CHAIN = re.compile(rf"(?:[A-Za-z]\.){{{ABBREVIATIONS_REFUSED},}}")

Phonemizer = Callable[[str], list[str]]


def refuse_known_crashes(text: str) -> None:
    """UnspeakableInputError when `text` holds a pattern known to crash espeak-ng."""
    for match in _REPEATED_UNIT.finditer(text):
        unit = match.group(1)
        if any("a" <= char <= "z" for char in unit.lower()):
            raise UnspeakableInputError(
                "refused",
                f"input repeats {unit!r} {len(match.group(0)) // len(unit)} times in one "
                f"word ({REPEATS_REFUSED} is the limit): such words crash the espeak-ng "
                "phonemizer; put spaces between the repeats or shorten them",
            )
    chain = _ABBREVIATION_CHAIN.search(text)
    if chain:
        raise UnspeakableInputError(
            "refused",
            f"input has {len(chain.group(0)) // 2} letter-dot abbreviations in a row in one "
            f"word ({ABBREVIATIONS_REFUSED - 1} is the limit): such words crash the espeak-ng "
            "phonemizer; put spaces between them",
        )


def split_sentences(text: str, max_chars: int) -> list[str]:
    """Split at sentence ends, then at commas/whitespace so no segment exceeds max_chars."""
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    segments: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        segments.extend(_split_long(sentence.strip(), max_chars))
    return segments


def _split_long(segment: str, max_chars: int) -> Iterable[str]:
    while len(segment) > max_chars:
        cut = _break_point(segment, max_chars)
        head, segment = segment[:cut].strip(), segment[cut:].strip()
        if head:
            yield head
    if segment:
        yield segment


def _break_point(segment: str, max_chars: int) -> int:
    """The largest cut <= max_chars at whitespace or just after a comma; else a hard cut."""
    for i in range(max_chars, 0, -1):
        if segment[i].isspace():
            return i
        if segment[i - 1] in _SOFT_BREAKS:
            return i
    return max_chars  # one long word: cut it rather than exceed the limit


class TextFrontEnd:
    """Turns text into the phoneme ids a Piper voice expects (BOS, PAD after each, EOS)."""

    def __init__(
        self, config: VoiceConfig, config_path: Path | None = None, *, workers: int = 0
    ) -> None:
        """`workers` > 0 runs espeak-ng in that many worker processes (what the server
        does: a crash then costs one request); 0 runs it in this process."""
        self._id_map = config.phoneme_id_map
        source = config_path or config.source or Path("model.onnx.json")
        self._pool: PhonemizerPool | None = None
        if config.phoneme_type == "espeak" and workers > 0:
            self._pool = _espeak_pool(config, source, workers)
            self._phonemize = _pooled_phonemizer(self._pool)
        else:
            self._phonemize = _make_phonemizer(config, source)

    @property
    def pool(self) -> PhonemizerPool | None:
        """The worker processes, when espeak-ng runs in them."""
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def phonemes(self, text: str) -> list[str]:
        return self._phonemize(text)

    def phoneme_ids(self, text: str) -> tuple[int, ...]:
        ids: list[int] = [*self._id_map[BOS], *self._id_map[PAD]]
        unknown: list[str] = []
        for phoneme in self._phonemize(text):
            known = self._id_map.get(phoneme)
            if known is None:
                unknown.append(phoneme)
                continue
            ids.extend(known)
            ids.extend(self._id_map[PAD])
        ids.extend(self._id_map[EOS])
        if unknown:
            log.warning("dropped symbols missing from the phoneme id map: %r", sorted(set(unknown)))
        return tuple(ids)


def _make_phonemizer(config: VoiceConfig, config_path: Path) -> Phonemizer:
    if config.phoneme_type == "text":
        # Piper's "text" voices: the phonemes are the NFD code points of the text.
        return lambda text: list(unicodedata.normalize("NFD", text))
    if config.phoneme_type == "espeak":
        return _espeak_phonemizer(config, config_path)
    raise ModelLoadError(
        config_path,
        f"phoneme_type {config.phoneme_type!r} is not supported by this runtime "
        "(it needs piper's g2pW Chinese phonemizer and its downloaded model)",
    )


def _espeak_phonemizer(config: VoiceConfig, config_path: Path) -> Phonemizer:
    try:
        from piper.phonemize_espeak import EspeakPhonemizer
    except ImportError as error:
        raise ModelLoadError(
            config_path,
            "phoneme_type espeak needs the optional piper-tts package (GPL-3.0, bundles "
            "espeak-ng): pip install --no-deps piper-tts",
        ) from error
    with _ESPEAK_LOCK:
        espeak = EspeakPhonemizer()
        try:
            espeak.phonemize(config.espeak_voice, "a")
        except Exception as error:
            raise ModelLoadError(
                config_path, f"espeak-ng cannot use voice {config.espeak_voice!r}: {error}"
            ) from error
    clusters = {tuple(c) for c in config.vowel_clusters} or None

    def phonemize(text: str) -> list[str]:
        text = _espeak_safe(text)
        with _ESPEAK_LOCK:
            return _joined(espeak.phonemize(config.espeak_voice, text, vowel_clusters=clusters))

    return phonemize


def _espeak_pool(config: VoiceConfig, config_path: Path, workers: int) -> PhonemizerPool:
    try:
        return PhonemizerPool(config.espeak_voice, config.vowel_clusters, workers)
    except WorkerStartError as error:
        raise ModelLoadError(config_path, str(error)) from error


def _pooled_phonemizer(pool: PhonemizerPool) -> Phonemizer:
    return lambda text: _joined(pool.phonemize(_espeak_safe(text)))


def _espeak_safe(text: str) -> str:
    """`text` as espeak-ng may read it: risky dots spaced, then known crash patterns
    refused (a spaced dot has already broken up "é.é.é…", so only what is left counts)."""
    text = _RISKY_DOT.sub(". ", text)
    refuse_known_crashes(text)
    return text


def _joined(sentences: list[list[str]]) -> list[str]:
    """The caller already split the text into segments: one sequence per segment."""
    joined: list[str] = []
    for sentence in sentences:
        if joined and sentence:
            joined.append(" ")
        joined.extend(sentence)
    return joined
