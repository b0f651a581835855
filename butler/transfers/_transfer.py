"""Repository-to-repository transfer (``butler transfer-datasets``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._export import collect
from ._import import ImportReport, import_contents

if TYPE_CHECKING:
    from ._repository import Repository

__all__ = ["transfer_datasets"]


def transfer_datasets(
    source: Repository,
    dest: Repository,
    dataset_types: str | Iterable[str] = "*",
    *,
    collections: str | Iterable[str] | None = None,
    where: str = "",
    find_first: bool = False,
    transfer: str = "auto",
    register_dataset_types: bool = False,
    transfer_dimensions: bool = True,
) -> ImportReport:
    """Copy datasets, with what they need, from one repository into another.

    The selection is `collect`'s (datasets, their files, dimension records, dataset types,
    RUNs, and the TAGGED / CALIBRATION / CHAINED collections searched, with validity ranges);
    loading is `import_contents`' (one transaction, idempotent, all or nothing, every file
    checked against its size and checksum). Backends may differ (SQLite -> PostgreSQL).

    Parameters
    ----------
    source, dest : `Repository` (each a `Butler`)
    dataset_types : `str` or iterable of `str`
        Names or glob patterns (default: all).
    collections : `str` or iterable of `str`, optional
        Collections to search (default: all of them).
    where : `str`
        Data query expression.
    find_first : `bool`
        Only the first dataset per data ID along ``collections``.
    transfer : `str`
        File transfer mode into ``dest`` (``auto``: copy, as the files are outside its root).
    register_dataset_types : `bool`
        Register dataset types ``dest`` lacks (otherwise they are an error, as in LSST).
    transfer_dimensions : `bool`
        Insert the dimension records ``dest`` lacks (otherwise they must exist).

    Returns
    -------
    report : `ImportReport`

    Raises
    ------
    ConflictingDefinitionError, MissingDatasetTypeError, DatastoreError
        See `import_contents`; ``dest`` is left unchanged.
    """
    contents = collect(
        source, dataset_types, collections=collections, where=where, find_first=find_first
    )
    skip = () if transfer_dimensions else tuple(contents.records)
    return import_contents(
        dest,
        contents,
        source.root,
        transfer=transfer,
        skip_dimensions=skip,
        register_dataset_types=register_dataset_types,
    )
