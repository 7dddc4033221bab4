"""Which cluster the e2e tests run on: E2E_PROVIDER=local (default) or kind.

A module of its own: test files cannot import it from conftest, because tests/ has
conftest modules too and only one of them is `conftest` in sys.modules.
"""

from __future__ import annotations

import os

PROVIDER = os.environ.get("E2E_PROVIDER", "local")
