"""Buffered HIERARCH header writes used by `IsrTask` (astropy ``Header.__setitem__`` is slow)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.io import fits

__all__ = ["_HeaderBuffer", "_hset"]


def _card_value(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return float(f"{value:.7g}") if math.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _bare(key: str) -> str:
    """``key`` without a leading ``"HIERARCH "`` (how `_HeaderBuffer` stores pending keys)."""
    return key[9:] if key.startswith("HIERARCH ") else key


def _hset(header: Any, key: str, value: Any) -> None:
    """Set a (HIERARCH) header keyword, rounding floats so the card fits in 80 characters.

    ``header`` is an astropy `~astropy.io.fits.Header` or a `_HeaderBuffer`.
    """
    key = _bare(key)
    if isinstance(header, _HeaderBuffer):
        header.pending[key] = _card_value(value)
    else:
        header[f"HIERARCH {key}"] = _card_value(value)


class _HeaderBuffer:
    """Collects header keywords during `IsrTask.run` and writes them in one batch.

    astropy's ``Header.__setitem__`` costs ~2 ms per new HIERARCH card (it searches the header);
    a 16-amplifier run writes ~250 keywords, so they are buffered and appended with
    ``Header.extend`` at the end. Reads fall through to the pending values, then the header.
    """

    def __init__(self, header: fits.Header) -> None:
        self.header = header
        self.pending: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        _hset(self, key, value)

    def __getitem__(self, key: str) -> Any:
        k = _bare(key)
        if k in self.pending:
            return self.pending[k]
        return self.header[key]

    def __contains__(self, key: str) -> bool:
        k = _bare(key)
        return k in self.pending or key in self.header

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def remove(self, key: str, ignore_missing: bool = False, remove_all: bool = False) -> None:
        self.pending.pop(_bare(key), None)
        self.header.remove(key, ignore_missing=ignore_missing, remove_all=remove_all)

    def copy(self) -> fits.Header:
        out = self.header.copy()
        _flush(out, self.pending)
        return out

    def flush(self) -> fits.Header:
        _flush(self.header, self.pending)
        self.pending = {}
        return self.header


def _flush(header: fits.Header, values: Mapping[str, Any]) -> None:
    new = []
    for key, value in values.items():
        if key in header:
            header[key] = value
        else:
            new.append(fits.Card(f"HIERARCH {key}" if (len(key) > 8 or " " in key) else key, value))
    if new:
        header.extend(new, unique=False, end=True)  # end=True: no O(n) index update per card
