"""espeak-ng phonemization in a few worker processes, so that no text can end the server.

Each worker (tts_runtime.phonemizer_worker) holds one espeak-ng. A request's thread takes
an idle worker, sends one segment and reads its phonemes. When the worker dies on that
text (espeak-ng's memory-safety bugs end it with SIGSEGV) or takes longer than
PHONEMIZE_TIMEOUT_S, the text is answered with UnspeakableInputError (a 400 for that one
request) and a fresh worker takes the dead one's place; every other request goes on, on
the other workers, with no restart and no readiness flap.

The workers also take espeak-ng off the server's own interpreter: two segments are
phonemized at once on two cores, where one process could run one (espeak-ng keeps global
state, so it needs a lock per process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterable
from typing import IO, Any

from tts_runtime.errors import UnspeakableInputError

log = logging.getLogger(__name__)

# espeak-ng phonemizes a 400-character segment in a few milliseconds; a worker silent for
# this long is stuck on its text and is replaced.
PHONEMIZE_TIMEOUT_S = 10.0
# How long a new worker may take to import espeak-ng and say it is ready.
START_TIMEOUT_S = 60.0


class WorkerStartError(Exception):
    """A worker could not start (espeak-ng missing, or the voice unknown to it)."""


class _Worker:
    """One worker process and its pipes; used by one thread at a time."""

    def __init__(self, voice: str, clusters: list[list[str]]) -> None:
        command = [sys.executable, "-m", "tts_runtime.phonemizer_worker", voice]
        self._process = subprocess.Popen(
            [*command, json.dumps(clusters)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._stdin: IO[bytes] = self._process.stdin  # type: ignore[assignment]
        self._stdout: IO[bytes] = self._process.stdout  # type: ignore[assignment]
        try:
            hello = self._read(START_TIMEOUT_S)
        except (_DiedError, _SilentError) as exc:
            self.stop()
            raise WorkerStartError(f"the espeak-ng worker did not start: {exc}") from None
        if "error" in hello:
            self.stop()
            raise WorkerStartError(f"espeak-ng cannot use voice {voice!r}: {hello['error']}")

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def phonemize(self, text: str, timeout_s: float) -> list[list[str]]:
        try:
            self._stdin.write(json.dumps({"text": text}).encode() + b"\n")
            self._stdin.flush()
        except OSError:
            raise _DiedError(self._exit_status()) from None
        answer = self._read(timeout_s)
        if "error" in answer:
            raise UnspeakableInputError(
                "failed", f"the text front end (espeak-ng) refused this input: {answer['error']}"
            )
        sentences: list[list[str]] = answer["sentences"]
        return sentences

    def _read(self, timeout_s: float) -> dict[str, Any]:
        readable, _, _ = select.select([self._stdout], [], [], timeout_s)
        if not readable:
            raise _SilentError(f"no answer within {timeout_s:g} s")
        line = self._stdout.readline()
        if not line.endswith(b"\n"):  # end of file: the process is gone
            raise _DiedError(self._exit_status())
        message: dict[str, Any] = json.loads(line)
        return message

    def _exit_status(self) -> str:
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "its pipe closed"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def stop(self) -> None:
        """Ends the process (its stdin closed first: a clean exit), and reaps it."""
        with contextlib.suppress(OSError):  # a dead worker's pipe may be broken
            self._stdin.close()
        try:
            self._process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._stdout.close()


class _DiedError(Exception):
    pass


class _SilentError(Exception):
    pass


def _stop_all(workers: Iterable[_Worker]) -> None:
    for worker in list(workers):
        worker.stop()


class PhonemizerPool:
    """`size` espeak-ng workers for one voice; `phonemize` is safe to call from any thread."""

    def __init__(
        self,
        voice: str,
        vowel_clusters: list[list[str]],
        size: int,
        timeout_s: float = PHONEMIZE_TIMEOUT_S,
    ) -> None:
        if size < 1:
            raise ValueError("a phonemizer pool needs at least one worker")
        self._voice = voice
        self._clusters = vowel_clusters
        self._timeout_s = timeout_s
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self.restarts = 0
        try:
            for _ in range(size):
                self._add(_Worker(voice, vowel_clusters))
        except WorkerStartError:
            _stop_all(self._all)
            raise
        # Workers end with the pool, or with the process at the latest.
        self._finalizer = weakref.finalize(self, _stop_all, self._all)

    def _add(self, worker: _Worker) -> None:
        with self._lock:
            self._all.add(worker)
        self._idle.put(worker)

    def phonemize(self, text: str) -> list[list[str]]:
        """The text's phonemes, one list per sentence; UnspeakableInputError when the
        worker died on it or hung."""
        worker = self._idle.get()
        if not worker.alive():  # died between requests (say, the OOM killer): not this text
            worker = self._replace(worker, "had died while idle")
        try:
            sentences = worker.phonemize(text, self._timeout_s)
        except (_DiedError, _SilentError) as exc:
            crashed = isinstance(exc, _DiedError)
            what = "died" if crashed else "was stuck"
            self._idle.put(self._replace(worker, f"{what} ({exc}) on a {len(text)}-character text"))
            if crashed:
                raise UnspeakableInputError(
                    "crashed",
                    "the text front end (espeak-ng) crashed on this input, so it was not "
                    f"spoken ({exc}); nothing else was affected. Rephrase it: long runs "
                    "of repeated suffixes, apostrophes or abbreviations in one word are "
                    "the known causes",
                ) from None
            raise UnspeakableInputError(
                "timed_out",
                "the text front end (espeak-ng) took longer than "
                f"{self._timeout_s:g} s on this input and was stopped; rephrase it or "
                "send it in shorter pieces",
            ) from None
        except BaseException:
            self._idle.put(worker)
            raise
        self._idle.put(worker)
        return sentences

    def _replace(self, dead: _Worker, what: str) -> _Worker:
        """A new worker in `dead`'s place (not yet idle: the caller puts it back)."""
        log.warning("espeak-ng worker %d %s; starting a new one", dead.pid, what)
        dead.stop()
        with self._lock:
            self._all.discard(dead)
        started = time.monotonic()
        while True:
            try:
                worker = _Worker(self._voice, self._clusters)
                break
            except WorkerStartError as exc:  # e.g. out of memory for a moment
                log.error("%s; retrying in 1 s", exc)
                time.sleep(1)
        self.restarts += 1
        log.info("espeak-ng worker %d started in %.2f s", worker.pid, time.monotonic() - started)
        with self._lock:
            self._all.add(worker)
        return worker

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return sorted(worker.pid for worker in self._all)

    def close(self) -> None:
        self._finalizer()
