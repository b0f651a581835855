"""Shared pytest fixtures for ccdflow's test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the real raw data in ``../shared/data``.

    Skips the test when the directory is absent (a local checkout without it); CI always has
    it, and ``.ci/run`` exports ``CCDFLOW_REQUIRE_SHARED=1`` so a missing directory fails there.
    """
    if not SHARED_DATA.is_dir():
        if os.environ.get("CCDFLOW_REQUIRE_SHARED"):
            pytest.fail(f"{SHARED_DATA} is missing; CI needs ../shared beside the repository")
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a PostgreSQL server for the registry tests (``BUTLER_TEST_POSTGRES_URL``).

    Skips when unset locally; ``.ci/run`` sets ``CCDFLOW_REQUIRE_POSTGRES=1`` so CI fails instead.
    """
    url = os.environ.get("BUTLER_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CCDFLOW_REQUIRE_POSTGRES"):
            pytest.fail("BUTLER_TEST_POSTGRES_URL is not set but CI requires the PostgreSQL tests")
        pytest.skip("BUTLER_TEST_POSTGRES_URL not set")
    return url
