"""Text the HTTP fuzz (test_fuzz_api.py) found dangerous, checked at the front end: dots that
crashed espeak-ng, and sentences whose phonemes made an engine run of unbounded size."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from tts_runtime.settings import RuntimeSettings
from tts_runtime.speech import ITEM_IDS_PER_CHAR, _segment_ids
from tts_runtime.state import Runtime
from tts_runtime.text import TextFrontEnd
from tts_runtime.voice import load_voice_config

# Each of these, about 100 to 300 characters, killed the server process with SIGSEGV inside
# espeak-ng before text.py put a space after such dots.
CRASHED_ESPEAK = ["é." * 100, ".\u0301" * 100, "ä.b." * 50, "a.;" * 100, ".\u0610 " * 100]

PHONEMIZE = """
import json, sys
from pathlib import Path
if sys.argv[1] == "raw":
    from piper.phonemize_espeak import EspeakPhonemizer
    phonemize = lambda text: EspeakPhonemizer().phonemize("en-us", text)
else:
    from tts_runtime.text import TextFrontEnd
    from tts_runtime.voice import load_voice_config
    phonemize = TextFrontEnd(load_voice_config(Path(sys.argv[1]))).phonemes
for text in json.loads(sys.argv[2]):
    phonemize(text)
"""


def phonemize_apart(config: str, texts: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Phonemize `texts` in a process of their own, where a crash cannot take pytest down."""
    command = [sys.executable, "-c", PHONEMIZE, config, json.dumps(texts)]
    return subprocess.run(command, capture_output=True, timeout=120, check=False)


def test_the_front_end_survives_the_dots_that_crashed_espeak_ng(espeak_model_dir: Path) -> None:
    ours = phonemize_apart(str(espeak_model_dir / "model.onnx.json"), CRASHED_ESPEAK)
    assert ours.returncode == 0, (ours.returncode, ours.stderr.decode()[-2000:])
    # The crash is memory corruption, so one input may survive a run: any of them will do.
    raw = phonemize_apart("raw", CRASHED_ESPEAK)
    assert raw.returncode != 0, (
        "espeak-ng no longer crashes on these: the _RISKY_DOT workaround in text.py can go"
    )


@dataclass
class _FrontEndOnly:
    """What _segment_ids uses of a Runtime."""

    settings: RuntimeSettings
    front_end: TextFrontEnd
    empty_ids: tuple[int, ...]


@pytest.fixture
def runtime(espeak_model_dir: Path) -> Runtime:
    front_end = TextFrontEnd(load_voice_config(espeak_model_dir / "model.onnx.json"))
    stub = _FrontEndOnly(
        RuntimeSettings(model_path=espeak_model_dir), front_end, front_end.phoneme_ids("")
    )
    return cast(Runtime, stub)


def test_a_sentence_of_dense_text_is_split_into_items_of_bounded_ids(runtime: Runtime) -> None:
    """400 CJK characters are "chinese letter" 400 times to espeak-ng: some 6,600 ids, which
    at speed 0.25 made over an hour of audio in one engine run (20 GB with the small voice)."""
    dense = "你好" * 200
    whole = runtime.front_end.phoneme_ids(dense)
    items = _segment_ids(runtime, dense, 0)
    limit = ITEM_IDS_PER_CHAR * runtime.settings.max_segment_chars
    assert len(whole) > 4 * limit
    assert len(items) > 4 and all(len(item.phoneme_ids) <= limit for item in items)
    # nothing lost: the pieces say at least what the whole did (espeak-ng reads a shorter
    # run of these more fully); 3 ids of each are BOS, EOS and a PAD
    assert sum(len(item.phoneme_ids) - 3 for item in items) >= len(whole) - 3


def test_ordinary_prose_stays_one_item_per_sentence(runtime: Runtime) -> None:
    sentence = ("The early train to the coast was full of students this morning, " * 7)[:399]
    items = _segment_ids(runtime, sentence + ".", 0)
    assert [item.phoneme_ids for item in items] == [runtime.front_end.phoneme_ids(sentence + ".")]
