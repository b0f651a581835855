"""The registry schema version (``registry_schema/tables.yaml``), readable without SQLAlchemy."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from .._yaml import load_yaml_file

__all__ = ["schema_version"]


@lru_cache(maxsize=1)
def _tables_config() -> dict[str, Any]:
    import registry_schema

    return load_yaml_file(Path(registry_schema.__file__).parent / "tables.yaml")


def schema_version() -> int:
    """Return the version of ``tables.yaml``."""
    return int(_tables_config()["version"])
