"""YAML reading with libyaml when available (several times faster than the pure-Python loader)."""

from __future__ import annotations

from typing import IO, Any

__all__ = ["load_yaml"]


def load_yaml(stream: IO[str] | str) -> Any:
    """Parse YAML safely (``yaml.CSafeLoader`` if PyYAML was built with libyaml)."""
    import yaml

    return yaml.load(stream, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
