"""The ``butler`` command line: `cli` (the click group) and `main` (the console script)."""

from __future__ import annotations

from ._group import PLUGIN_GROUP, ButlerGroup
from .commands import cli, main

__all__ = ["PLUGIN_GROUP", "ButlerGroup", "cli", "main"]
