"""Shared test setup: make the recipe packages importable and keep torch to the machine's cores."""
import sys
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_DIR.parent / "shared"
sys.path.insert(0, str(REPO_DIR))


@pytest.fixture(scope="session")
def shared_testdata() -> Path:
    path = SHARED_DIR / "testdata"
    if not path.is_dir():
        pytest.fail(f"reference test data not found at {path}: the repo must sit beside ../shared")
    return path
