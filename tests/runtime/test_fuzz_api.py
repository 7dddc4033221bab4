"""Fuzzed edges of the HTTP API (issue 12): one real `tts-runtime serve` gets arbitrary JSON,
hostile text, extreme numbers and wrong types, raw bytes and odd content types, any method on
any path, drawn by hypothesis. After every case: the status is below 500 (a 4xx carries
OpenAI's JSON error shape, a 200 carries audio), /readyz answers 200, and the process's RSS
is within CASE_HEADROOM_MIB of what it was when ready. After each test: RSS is back within
IDLE_HEADROOM_MIB of it (nothing accumulates) and the log holds no traceback.

The server is the small random test voice behind the production text front end (espeak-ng,
as Piper voices use) with the response cache on: both are places a hostile string reaches.
It accepts inputs of up to 10,000 characters, so 10,000 punctuation marks reach the front
end, makes at most 30 s of audio per request, so a long hostile input costs little, and runs
one item per batch, so the largest working set does not depend on the calibration's timing.

What fuzzing found, now refused at the edge with a 400 and pinned below by @example:
- an integer of more than 4300 digits anywhere in the body was a 500 (json.loads raises a
  plain ValueError past sys.get_int_max_str_digits(), not JSONDecodeError);
- a lone surrogate in `input` (the JSON escape "\\ud800") was a 500 with the cache on (the
  cache key encodes the text as UTF-8) and with espeak-ng (which takes UTF-8);
- NUL in `input` was a 500 with espeak-ng ("embedded null character");
- a dot with a combining mark on it, some 50 times (".\u0301" repeated; "é.é.é.…" too),
  crashed the whole server process with SIGSEGV inside espeak-ng; the front end now puts a
  space after such a dot (text._RISKY_DOT, test_front_end_edges.py);
- memory was bounded only by the segment length times how many phonemes a character makes:
  400 characters of CJK or emoji at speed 0.25 (espeak-ng reads each as "chinese letter",
  "grinning face") made over an hour of audio in one engine run, 20 GB with the small test
  voice, and an OOM kill for any pod. Items now hold at most 3 phoneme ids per character of
  TTS_MAX_SEGMENT_CHARS (speech.ITEM_IDS_PER_CHAR); the same input peaks under 400 MiB.

Runs are reproducible (derandomized, no example database); each test prints how many cases
ran, the statuses they got and the peak RSS (`pytest -s` shows it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fuzzing import GOOD, SPEECH, Fuzzed, fuzz
from hypothesis import example, given
from hypothesis import strategies as st
from raw_client import serve
from tts_runtime.soak import status_mib

pytestmark = pytest.mark.slow

MAX_INPUT_CHARS = 10_000
MAX_AUDIO_SECONDS = 30
CACHE_MAX_BYTES = 8 << 20
FIELDS = ("model", "input", "voice", "response_format", "speed", "stream", "instructions")
FORMATS = ("wav", "pcm", "flac", "mp3", "opus")


@pytest.fixture(scope="module")
def server(espeak_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    with (
        serve(
            espeak_model_dir,
            tmp_path_factory.mktemp("fuzz"),
            max_input_chars=str(MAX_INPUT_CHARS),
            max_audio_seconds=str(MAX_AUDIO_SECONDS),
            cache_max_bytes=str(CACHE_MAX_BYTES),
            batch_calibration="false",
            max_batch_size="1",
        ) as served,
        httpx.Client(base_url=served.base, timeout=60) as client,
    ):
        assert client.post(SPEECH, json=GOOD).status_code == 200  # warm: caches, threadpool
        yield Fuzzed(served, client, ready_rss_mib=status_mib(served.pid, "VmRSS"))


# -- arbitrary JSON ------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=25,
)


@st.composite
def speech_like(draw: st.DrawFn) -> dict[str, Any]:
    """A speech body whose fields, some or all, hold arbitrary JSON, with unknown keys too."""
    body = dict(GOOD) if draw(st.booleans()) else {}
    for name in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=4)):
        body[name] = draw(JSON_VALUES)
    body.update(draw(st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=2)))
    return body


def test_arbitrary_json_never_gets_a_5xx(server: Fuzzed) -> None:
    @fuzz(120)
    @given(body=JSON_VALUES | speech_like())
    @example(body={**GOOD, "voice": {"id": "default", "x": [{"y": None}]}})
    @example(body={**GOOD, "sped": 1.0})
    def case(body: Any) -> None:
        server.send_json(body)

    case()
    seen = server.report("arbitrary JSON")
    assert seen[400] > 50, "the strategy should mostly draw bodies the API refuses"


# -- hostile text --------------------------------------------------------------------

PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿…—–·•。！？；，、「」"  # noqa: RUF001
WORDS = st.sampled_from(
    ["Hello", "there", "mañana", "naïve", "Καλημέρα", "שלום", "مرحبا", "你好", "3.14", "e.g."]
)
COMBINING = st.characters(categories=["Mn", "Me"])
PIECES = st.one_of(
    WORDS,
    st.sampled_from([" ", ". ", "? ", "\n"]),
    st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Co"]), max_size=5),
    st.text(COMBINING, min_size=1, max_size=40),
    # Hebrew, Arabic, Syriac, Thaana... and the marks that turn text right to left
    st.text(st.characters(min_codepoint=0x0590, max_codepoint=0x08FF), min_size=1, max_size=30),
    st.sampled_from(["\u200f", "\u202b", "\u202e", "\u2067", "\u2069"]),
    st.text(st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF), max_size=10),
    st.sampled_from(["👩‍👩‍👧‍👦", "👍🏽", "🇺🇦", "❤️", "\u200d", "\ufe0f"]),
    st.characters(categories=["Cs"]),  # a lone surrogate: no UTF-8 form
    st.text(max_size=20),
)
HOSTILE_TEXT = st.one_of(
    st.lists(PIECES, min_size=1, max_size=12).map("".join),
    # runs of punctuation marks: 10,000 of them is the input limit here
    st.builds(
        lambda marks, n: (marks * n)[:n],
        st.text(st.sampled_from(PUNCTUATION), min_size=1, max_size=6),
        st.sampled_from([10_000, MAX_INPUT_CHARS + 1, 4096, 401, 1]),
    ),
    # letters under piles of combining marks
    st.builds(
        lambda base, marks, n: ((base + marks) * n)[:MAX_INPUT_CHARS],
        st.sampled_from(["a", "Z", " ", "."]),
        st.text(COMBINING, min_size=1, max_size=20),
        st.integers(1, 400),
    ),
)


@st.composite
def hostile_requests(draw: st.DrawFn) -> dict[str, Any]:
    return {
        **GOOD,
        "input": draw(HOSTILE_TEXT),
        "response_format": draw(st.sampled_from(FORMATS)),
        "speed": draw(st.floats(0.25, 4.0)),
        "stream": draw(st.booleans()),
    }


def test_hostile_text_never_gets_a_5xx(server: Fuzzed) -> None:
    @fuzz(80)
    @given(body=hostile_requests(), ascii_only=st.booleans())
    @example(body={**GOOD, "input": "Hello \ud800 there."}, ascii_only=True)
    @example(body={**GOOD, "input": "Hello \udfff there."}, ascii_only=False)
    @example(body={**GOOD, "input": "Hello\x00there."}, ascii_only=True)
    @example(body={**GOOD, "input": "!" * 10_000}, ascii_only=True)
    @example(body={**GOOD, "input": ".\u0301" * 60 + " " + "é." * 60}, ascii_only=True)
    @example(body={**GOOD, "input": "你好" * 200, "speed": 0.25}, ascii_only=False)
    @example(
        body={**GOOD, "input": "😀 " * 200 + ". " + "1 2 " * 100, "speed": 0.25}, ascii_only=True
    )
    @example(
        body={**GOOD, "input": "\u202eHello there.\u202c 👩‍👩‍👧‍👦 a\u0301\u0301"}, ascii_only=False
    )
    def case(body: dict[str, Any], ascii_only: bool) -> None:
        server.send_json(body, ascii_only=ascii_only)

    case()
    seen = server.report("hostile text")
    assert seen[200] >= 10 and seen[400] >= 10, "hostile text should be both spoken and refused"


# -- extreme numbers and wrong types, as raw JSON tokens -----------------------------

TOKENS = st.sampled_from(
    [
        *("NaN", "-NaN", "Infinity", "-Infinity", "1e308", "-1e308", "1e309", "1e-400", "5e-324"),
        *("-0.0", "-0", "0", "4", "4.0000000000000001", "0.25", "0.2499999999999999", "1E2"),
        *("9" * 5000, "-" + "9" * 5000, "1" + "0" * 4300, "1e99999", "0.1e1"),
        *("00", "1.", ".5", "+1", "0x10", "1_000", "\u0661"),  # not JSON numbers
        *("true", "false", "null", '"1.0"', "[]", "[1.0]", "{}", '{"id": 1}', '{"id": {}}'),
        *('"default"', '"\\ud800"', '"\\u0000"', '"\\udc00\\ud800"', '""', '" "'),
    ]
)
RAW_NUMBERS = (
    st.integers(-(2**256), 2**256).map(str)
    | st.floats().map(lambda x: json.dumps(x))  # NaN, Infinity as Python's json writes them
)


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """GOOD's fields as raw JSON text, with some replaced by an extreme or wrong token."""
    fields = {name: json.dumps(value) for name, value in GOOD.items()}
    for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
        fields[name] = draw(TOKENS | RAW_NUMBERS)
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


def test_extreme_numbers_and_wrong_types_never_get_a_5xx(server: Fuzzed) -> None:
    @fuzz(80)
    @given(content=raw_bodies())
    @example(
        content=b'{"model": "tts-1", "input": "Hi.", "voice": "default", "speed": '
        + b"9" * 5000
        + b"}"
    )
    @example(content=b'{"model": "tts-1", "input": "Hi.", "voice": "default", "speed": NaN}')
    @example(content=b'{"model": "tts-1", "input": "Hi.", "voice": "default", "speed": -0.0}')
    def case(content: bytes) -> None:
        server.send(content)

    case()
    seen = server.report("extreme numbers and wrong types")
    assert seen[400] > 40


# -- raw bytes and content types -----------------------------------------------------

GOOD_BYTES = json.dumps(GOOD).encode()
MAX_BODY_BYTES = 16 * 1024 + 12 * MAX_INPUT_CHARS
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
CONTENT_TYPES = st.one_of(
    st.just("application/json"),  # most cases reach the body's parser
    st.just("application/json"),
    st.none(),
    st.sampled_from(
        [
            *("application/json", "application/json; charset=utf-8", "Application/JSON"),
            *("application/json;charset=latin-1", "application/json; boundary=x", "text/json"),
            *("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"),
            *("application/jsonx", "application/json+x", "", "*/*", ";", "application/json;;"),
        ]
    ),
    HEADER_TEXT.filter(lambda s: s == s.strip()),  # what a client can send at all
)
INVALID_UTF8 = st.sampled_from(
    [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]
)
RAW_CONTENT = st.one_of(
    st.binary(max_size=512),
    # one invalid UTF-8 sequence somewhere in a good body
    st.builds(
        lambda bad, at: GOOD_BYTES[:at] + bad + GOOD_BYTES[at:],
        INVALID_UTF8,
        st.integers(0, len(GOOD_BYTES)),
    ),
    # a good body cut short
    st.integers(0, len(GOOD_BYTES) - 1).map(lambda at: GOOD_BYTES[:at]),
    # a good body in another Unicode encoding (json.loads detects UTF-16/32 and a BOM)
    st.sampled_from(["utf-16", "utf-16-be", "utf-32", "utf-8-sig", "latin-1"]).map(
        lambda codec: json.dumps({**GOOD, "input": "Ça va?"}, ensure_ascii=False).encode(codec)
    ),
    # deep and wide nesting
    st.builds(
        lambda opener, closer, n: opener * n + b"1" + closer * n,
        st.sampled_from([b"[", b'{"a": ', b'{"input": [']),
        st.sampled_from([b"]", b"}", b"]}"]),
        st.sampled_from([2, 32, 33, 1000, 50_000]),
    ),
    st.integers(1, 20_000).map(lambda n: b"[" + b"{}," * n + b"{}]"),
    # bodies about the cap: 413 before they are read, or just under it
    st.sampled_from([MAX_BODY_BYTES - 100, MAX_BODY_BYTES + 1, 4 * MAX_BODY_BYTES]).map(
        lambda size: b'{"input": "' + b"a" * (size - 13) + b'"}'
    ),
    st.sampled_from([b"", b" ", b"\x00" * 100, b"null", b"\xef\xbb\xbf", b'"x"', b"{}"]),
)


def test_raw_bytes_and_content_types_never_get_a_5xx(server: Fuzzed) -> None:
    @fuzz(80)
    @given(content=RAW_CONTENT, content_type=CONTENT_TYPES)
    @example(content=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
    @example(content=b'{"input": "\xed\xa0\x80"}', content_type="application/json")
    def case(content: bytes, content_type: str | None) -> None:
        server.send(content, content_type)

    case()
    seen = server.report("raw bytes and content types")
    assert seen[400] > 10 and seen[415] > 10


PATHS = st.one_of(
    st.sampled_from(
        [
            *(SPEECH, SPEECH + "/", "/v1/models", "/v1/audio/voices", "/", "/v1", "/v1/audio"),
            *(SPEECH + "?stream=true", "/%00", "/v1/%2e%2e/models", "/" + "a" * 4000),
            *("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"),
        ]
    ),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60).map(
        lambda s: "/" + s.replace("#", "").replace("?", "").lstrip("/")
    ),
)


def test_any_method_on_any_path_gets_a_json_answer(server: Fuzzed) -> None:
    @fuzz(40)
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        path=PATHS,
        content=st.sampled_from([b"", GOOD_BYTES, b"{"]),
    )
    def case(method: str, path: str, content: bytes) -> None:
        server.send(content, method=method, path=path)

    case()
    seen = server.report("methods and paths")
    assert seen[404] > 5 and seen[405] > 5
