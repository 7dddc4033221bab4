"""Fixtures for the operator unit tests."""

from __future__ import annotations

import pytest
from op_helpers import EXAMPLES, load_yaml
from tts_operator.models import TTSServiceSpec


@pytest.fixture
def minimal_spec() -> TTSServiceSpec:
    return TTSServiceSpec.model_validate(load_yaml(EXAMPLES / "minimal.yaml")["spec"])


@pytest.fixture
def full_spec() -> TTSServiceSpec:
    return TTSServiceSpec.model_validate(load_yaml(EXAMPLES / "full.yaml")["spec"])
