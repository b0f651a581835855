"""The datastore record of one stored dataset (a row of ``file_datastore_records``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["StoredFileInfo"]


@dataclass(frozen=True)
class StoredFileInfo:
    """Where a dataset's file is and how to read it.

    Attributes
    ----------
    path : `str`
        Path relative to the repository root (absolute for ``direct`` ingest outside it).
    formatter : `str`
        Dotted path of the formatter class that wrote (or reads) the file.
    storage_class : `str`
        Storage class name.
    checksum : `str` or `None`
        blake2b hex digest of the file, when the datastore computes checksums.
    file_size : `int`
        Size of the file in bytes (``-1`` if unknown).
    """

    path: str
    formatter: str
    storage_class: str
    checksum: str | None = None
    file_size: int = -1

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoredFileInfo:
        """Inverse of `to_dict`."""
        return cls(**d)
