"""Hunts for texts that crash espeak-ng as piper-tts bundles it, and keeps them.

Each candidate is phonemized by raw espeak-ng (no runtime guard) in a forked child, so a
crash ends only the child; the crashing texts are written to
tests/runtime/data/espeak_crashes.json, which test_fuzz_front_end.py sends through a real
server as regression cases. Candidates are drawn from the families fuzzing has found so
far (stacked suffixes and possessives, abbreviation chains, dots beside non-ASCII) and
from random mixtures of scripts, digits and punctuation.

    .venv/bin/python hack/espeak_crash_hunt.py --count 5000 --seed 21
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

CORPUS = Path(__file__).resolve().parent.parent / "tests/runtime/data/espeak_crashes.json"
SUFFIXES = ["'s", "s'", "ness", "less", "ly", "ing", "ed", "ment", "ful", "able", "ism", "'d"]
BASES = ["Bob", "s", "kind", "nessness", "x", "walk", "hope", "dark", "U.S.", "A.B."]
ABBREVIATIONS = ["U.S.", "e.g.", "i.e.", "A.", "Dr.", "St.", "U.K.", "p.m.", "No."]
SCRIPTS = [(0x41, 0x7A), (0xC0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF)]
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~…—–·"  # noqa: RUF001


FAMILIES = ("suffix stack", "mixed suffix stack", "abbreviation chain", "dot run", "mixture")


def candidate(rng: random.Random) -> tuple[str, str]:
    """(family, text)."""
    family = rng.randrange(len(FAMILIES))
    return FAMILIES[family], _text(family, rng)


def _text(family: int, rng: random.Random) -> str:
    if family == 0:  # a word with one suffix stacked
        return rng.choice(BASES) + rng.choice(SUFFIXES) * rng.randrange(20, 140)
    if family == 1:  # a word with several suffixes stacked
        return rng.choice(BASES) + "".join(rng.choices(SUFFIXES, k=rng.randrange(20, 140)))
    if family == 2:  # abbreviation chains, sometimes with a separator
        joiner = rng.choice(["", "", "'", "-", ","])
        return joiner.join(rng.choices(ABBREVIATIONS, k=rng.randrange(20, 140)))
    if family == 3:  # a dot between non-ASCII neighbours, repeated
        low, high = rng.choice(SCRIPTS[1:])
        unit = chr(rng.randint(low, high)) + rng.choice([".", ".;", "..", ".'"])
        return unit * rng.randrange(20, 140)
    pieces = []
    for _ in range(rng.randrange(1, 40)):
        kind = rng.randrange(4)
        if kind == 0:
            low, high = rng.choice(SCRIPTS)
            pieces.append("".join(chr(rng.randint(low, high)) for _ in range(rng.randrange(1, 12))))
        elif kind == 1:
            pieces.append(str(rng.randrange(10 ** rng.randrange(1, 12))))
        elif kind == 2:
            pieces.append("".join(rng.choices(PUNCTUATION, k=rng.randrange(1, 8))))
        else:
            pieces.append(rng.choice(SUFFIXES + ABBREVIATIONS))
    return rng.choice(["", " "]).join(pieces)


def crashes(text: str) -> bool:
    """Whether raw espeak-ng dies on `text`, in a forked child."""
    pid = os.fork()
    if pid == 0:
        try:
            from piper.phonemize_espeak import EspeakPhonemizer

            EspeakPhonemizer().phonemize("en-us", text)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--keep", type=int, default=8, help="most new crashes kept per family")
    args = parser.parse_args()
    from piper.phonemize_espeak import EspeakPhonemizer

    EspeakPhonemizer().phonemize("en-us", "a")  # loaded once, shared by every child
    rng = random.Random(args.seed)
    corpus: list[dict[str, str]] = json.loads(CORPUS.read_text()) if CORPUS.exists() else []
    known = {case["text"] for case in corpus}
    found: dict[str, list[str]] = {family: [] for family in FAMILIES}
    started = time.monotonic()
    for _ in range(args.count):
        family, text = candidate(rng)
        if text not in known and text not in found[family] and crashes(text):
            found[family].append(text)
    elapsed = time.monotonic() - started
    counts = {family: len(texts) for family, texts in found.items()}
    print(f"{args.count} candidates in {elapsed:.0f} s: crashes by family {counts}")
    for family, texts in found.items():
        corpus.extend({"family": family, "text": text} for text in texts[: args.keep])
    CORPUS.write_text(json.dumps(corpus, ensure_ascii=False, indent=1) + "\n")
    print(f"{len(corpus)} texts in {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
