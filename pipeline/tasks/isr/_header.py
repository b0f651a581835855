"""How `IsrTask` writes its header keywords into an exposure's `PropertyList`."""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Any

import numpy as np

__all__ = ["_card_value", "_hset"]


def _card_value(value: Any) -> Any:
    """Return ``value`` as stored in the header.

    Floats are rounded to 7 significant digits (so a ``HIERARCH`` card fits in 80 characters),
    non-finite floats become strings, numpy scalars Python scalars.
    """
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return float(f"{value:.7g}") if math.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _hset(metadata: MutableMapping[str, Any], key: str, value: Any) -> None:
    """Set a header keyword of an exposure's metadata (see `_card_value`)."""
    metadata[key] = _card_value(value)
