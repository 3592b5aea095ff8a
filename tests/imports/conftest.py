from __future__ import annotations

import pytest


@pytest.fixture
def backend() -> str:
    """Imports run on the filesystem store: the store pipeline's backends have their own
    tests, and these stay fast."""
    return "filesystem"
