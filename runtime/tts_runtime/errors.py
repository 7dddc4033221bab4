"""Errors the runtime raises at start-up, when a model cannot be served."""

from __future__ import annotations

from pathlib import Path


class ModelLoadError(Exception):
    """A model (or its voice config) cannot be loaded; says which file and why.

    The server stops with a non-zero exit on this error, printing str(error)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"cannot load model file {path}: {problem}")
