"""amp_offset sits beside isr, not above it: no module of it imports ISR (not even lazily)."""

from __future__ import annotations

import ast
from pathlib import Path

import pipeline.tasks.amp_offset as amp_offset_pkg


def _imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in ``path`` (function bodies too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_amp_offset_imports_no_isr_module():
    """The shared pieces (statistics, mask growth) come from pipeline.image."""
    files = sorted(Path(amp_offset_pkg.__file__).parent.glob("*.py"))
    assert len(files) >= 3
    for path in files:
        upward = {m for m in _imported_modules(path) if m.startswith("pipeline.tasks.isr")}
        assert not upward, f"{path.name} imports {sorted(upward)}"
