"""Shared pytest fixtures for ccdflow's test suite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "bench"
# The toy tasks (bench/_toy_tasks.py) are imported by dotted path, here and in worker processes
# (pool workers, Parsl workers, ``pipetask`` subprocesses), so bench/ and the checkout are on
# both paths for the whole session.
for _path in (str(BENCH), str(REPO_ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in [str(BENCH), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p
)
#: Where the real data are unless ``--data-dir`` / ``$CCDFLOW_DATA_DIR`` say otherwise: the
#: ``shared`` directory beside the checkout (the layout CI uses).
DEFAULT_DATA_DIR = REPO_ROOT / ".." / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--data-dir``: the directory of the real data (raw/kast_blue, raw/efosc2, headers/)."""
    parser.addoption(
        "--data-dir",
        default=os.environ.get("CCDFLOW_DATA_DIR", str(DEFAULT_DATA_DIR)),
        help="real data directory (default $CCDFLOW_DATA_DIR, else ../shared/data beside the checkout)",
    )


@pytest.fixture(scope="session")
def shared_data(request: pytest.FixtureRequest) -> Path:
    """Path to the real raw data (``--data-dir``; by default ``../shared/data``).

    Skips the test when the directory is absent (a local checkout without it); CI always has
    it, and ``.ci/run`` exports ``CCDFLOW_REQUIRE_SHARED=1`` so a missing directory fails there.
    """
    data_dir = Path(request.config.getoption("data_dir")).resolve()
    if not data_dir.is_dir():
        if os.environ.get("CCDFLOW_REQUIRE_SHARED"):
            pytest.fail(f"{data_dir} is missing; CI needs ../shared beside the repository")
        pytest.skip(f"{data_dir} not present")
    return data_dir


@pytest.fixture(scope="session")
def megacam_header_template(request: pytest.FixtureRequest) -> Path | None:
    """Return a real MegaCam primary header dump for the raw simulator (`None` without the data)."""
    path = Path(request.config.getoption("data_dir")) / "headers" / "megacam" / "1927963o.fits.header"
    return path if path.is_file() else None


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
