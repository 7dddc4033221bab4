"""One espeak-ng phonemizer in a process of its own (`python -m tts_runtime.phonemizer_worker`).

espeak-ng is C code with open memory-safety bugs: some texts crash it (SIGSEGV), and a
crash in the serving process would lose every request in flight. The runtime sends each
text here instead (tts_runtime.phonemizer_pool), so a crash costs one request and one
restart of this small process.

Protocol, one JSON object per line each way:
  start:    argv[1] is the espeak voice, argv[2] the vowel clusters as JSON; the worker
            phonemizes "a" and writes {"ready": true} (or {"error": ...} and exits 1)
  request:  {"text": "..."}
  answer:   {"sentences": [["h", "ə", ...], ...]} or {"error": "..."}
The worker exits when its stdin closes. It imports only piper's espeak bridge and the
standard library, so it starts in a fraction of a second.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    voice = argv[1]
    clusters = {tuple(cluster) for cluster in json.loads(argv[2])} or None
    try:
        from piper.phonemize_espeak import EspeakPhonemizer

        espeak = EspeakPhonemizer()
        espeak.phonemize(voice, "a")
    except Exception as error:  # reported to the parent, which names the voice
        _answer({"error": f"{type(error).__name__}: {error}"})
        return 1
    _answer({"ready": True})
    for line in sys.stdin:
        text = json.loads(line)["text"]
        try:
            sentences = espeak.phonemize(voice, text, vowel_clusters=clusters)
        except Exception as error:  # a Python-level failure: one request's, not ours
            _answer({"error": f"{type(error).__name__}: {error}"})
            continue
        _answer({"sentences": sentences})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
