"""Butler look-ups shared by the flows, the report and the plots (missing things are empty)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["collection_exists", "query"]


def collection_exists(butler: Any, name: str) -> bool:
    try:
        butler.registry.get_collection_type(name)
    except Exception:  # noqa: BLE001 - the registry's missing-collection error
        return False
    return True


def query(butler: Any, dataset_type: str, collections: Sequence[str], where: str = "") -> list[Any]:
    """Datasets of a type in collections (every match), [] when the type or collection is unknown."""
    try:
        return list(
            butler.query_datasets(dataset_type, collections=list(collections), where=where, find_first=False)
        )
    except Exception:  # noqa: BLE001 - MissingDatasetTypeError / MissingCollectionError: nothing yet
        return []
