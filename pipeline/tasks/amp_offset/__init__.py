"""Amp offset (pedestal) correction: pure functions in `amp_offset`, glue in `AmpOffsetTask`."""

from __future__ import annotations

from .amp_offset import (
    get_amp_associations,
    get_amp_edges,
    get_amp_offsets,
    get_interface_offset,
    get_neighbors,
    neighbors_from_sides,
)
from .task import AmpOffsetConfig, AmpOffsetTask

__all__ = [
    "AmpOffsetConfig",
    "AmpOffsetTask",
    "get_amp_associations",
    "get_amp_edges",
    "get_amp_offsets",
    "get_interface_offset",
    "get_neighbors",
    "neighbors_from_sides",
]
