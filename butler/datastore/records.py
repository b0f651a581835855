"""The datastore record of one stored dataset (a row of ``file_datastore_records``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np

__all__ = ["FileRecordColumns", "StoredFileInfo", "file_record_columns"]


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


class FileRecordColumns(NamedTuple):
    """The datastore records of many datasets as columns (`DatastoreRecordManager.get_columns`).

    Row ``k`` is the record of dataset ``ids[position[k]]`` of the ids asked for; datasets without
    a record have no row. Rows come in no particular order. Defined here, without SQLAlchemy, so
    that the registry and its read-only SQLite path (`butler.registry._sqlite_read_only`) return
    the same type.
    """

    #: Position of each row's dataset in the ids asked for, shape ``(n_rows,)``, int64.
    position: np.ndarray
    #: File path (relative to the repository root, or absolute for direct ingest), per row.
    path: list[str]
    #: Dotted path of the formatter class, per row.
    formatter: list[str]
    #: Storage class name, per row.
    storage_class: list[str]
    #: blake2b hex digest or `None`, per row.
    checksum: list[str | None]
    #: File size in bytes (``-1``: unknown), per row.
    file_size: list[int]

    def to_dict(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredFileInfo]:
        """Return the records as `StoredFileInfo` by dataset id (the form of `DatastoreRecordManager.get`).

        Parameters
        ----------
        ids : sequence of `uuid.UUID`
            The ids the columns were read for (``position`` points into them).

        Returns
        -------
        records : `dict` [`uuid.UUID`, `StoredFileInfo`]
        """
        return {ids[i]: StoredFileInfo(p, f, sc, c, n) for i, p, f, sc, c, n in
                zip(self.position.tolist(), self.path, self.formatter, self.storage_class, self.checksum,
                    self.file_size)}


def file_record_columns(rows: Sequence[Sequence[Any]]) -> FileRecordColumns:
    """Make `FileRecordColumns` of ``(position, path, formatter, storage class, checksum, size)`` rows."""
    import numpy as np  # here: importing this module must not import numpy (the butler CLI)

    if not rows:
        return FileRecordColumns(np.zeros(0, np.int64), [], [], [], [], [])
    pos, path, fmt, sc, checksum, size = (list(c) for c in zip(*rows))
    return FileRecordColumns(np.asarray(pos, dtype=np.int64), path, fmt, sc, checksum, size)
