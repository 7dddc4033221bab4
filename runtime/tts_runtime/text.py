"""Text front end: sentence splitting and text -> Piper phoneme ids."""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

from tts_runtime.errors import ModelLoadError
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

Phonemizer = Callable[[str], list[str]]


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

    def __init__(self, config: VoiceConfig, config_path: Path | None = None) -> None:
        self._id_map = config.phoneme_id_map
        source = config_path or config.source or Path("model.onnx.json")
        self._phonemize = _make_phonemizer(config, source)

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
        text = _RISKY_DOT.sub(". ", text)
        with _ESPEAK_LOCK:
            sentences = espeak.phonemize(config.espeak_voice, text, vowel_clusters=clusters)
        # The caller already split the text into segments; keep one sequence per segment.
        joined: list[str] = []
        for sentence in sentences:
            if joined and sentence:
                joined.append(" ")
            joined.extend(sentence)
        return joined

    return phonemize
