"""The size limits of the restructuring: the registry facade and IsrTask stay thin.

The registry's behaviour lives in its managers (`butler.registry.managers`) and IsrTask's
numerical steps in pure functions beside it; these two modules only wire them together.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("module", "limit"),
    [("butler/registry/registry.py", 500), ("pipeline/tasks/isr/isr_task.py", 700)],
)
def test_module_stays_within_its_line_limit(module: str, limit: int) -> None:
    """Each orchestration module has at most ``limit`` lines."""
    n_lines = len((ROOT / module).read_text().splitlines())
    assert n_lines <= limit, f"{module} has {n_lines} lines (limit {limit}): move the logic into a module of its own"
