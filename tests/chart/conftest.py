from __future__ import annotations

import pytest
from chart_helpers import HELM_MISSING, Helm, find_helm


@pytest.fixture(scope="session")
def helm() -> Helm:
    binary = find_helm()
    if binary is None:
        pytest.skip(HELM_MISSING)
    return Helm(binary)
