"""Load `RepoContents` into a repository: one registry transaction, files placed atomically."""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import (
    ConflictingDefinitionError,
    DatastoreError,
    MissingCollectionError,
    MissingDatasetTypeError,
)
from ..collections import CollectionType
from ..timespan import Timespan
from ._model import RepoContents, record_to_row

if TYPE_CHECKING:
    from ..datasets import DatasetRef
    from ._repository import Repository

__all__ = ["IMPORT_TRANSFER_MODES", "ImportReport", "import_contents"]

_LOG = logging.getLogger("butler.transfers")

IMPORT_TRANSFER_MODES = ("auto", "copy", "hardlink", "symlink", "move", "direct")
"""How files enter the destination datastore (``auto``: in place if under its root, else copy)."""


@dataclass
class ImportReport:
    """What `import_contents` did.

    Attributes
    ----------
    n_datasets : `int`
        Datasets newly registered.
    n_skipped : `int`
        Datasets already present with the same ID and definition (left alone).
    n_files : `int`
        Files placed into the datastore.
    n_bytes : `int`
        Their total size.
    n_records : `int`
        Dimension records inserted.
    n_validity_ranges : `int`
        Certifications added to CALIBRATION collections.
    collections : `list` of `str`
        Collections created.
    dataset_types : `list` of `str`
        Dataset types registered.
    """

    n_datasets: int = 0
    n_skipped: int = 0
    n_files: int = 0
    n_bytes: int = 0
    n_records: int = 0
    n_validity_ranges: int = 0
    collections: list[str] = field(default_factory=list)
    dataset_types: list[str] = field(default_factory=list)


def _describe(ref: DatasetRef) -> str:
    return f"{ref.dataset_type.name} {ref.data_id.required} (run {ref.run!r}, id {ref.id})"


def _records(butler: Repository, contents: RepoContents, skip: set[str], report: ImportReport) -> None:
    """Insert missing dimension records; refuse records that exist with other values."""
    reg = butler.registry
    for element, rows in contents.records.items():
        if element in skip or not rows:
            continue
        el = reg.universe[element]
        keycols = list(el.requires) + [el.primary_key.name]
        existing = {
            tuple(row[c] for c in keycols): row
            for row in (record_to_row(r) for r in reg.query_dimension_records(element))
        }
        missing = []
        for row in rows:
            key = tuple(reg.universe.coerce_value(c if c != el.primary_key.name else element, row[c])
                        for c in keycols)
            old = existing.get(key)
            if old is None:
                missing.append(row)
                continue
            diffs = [k for k in row if k in old and row[k] != old[k]]
            if diffs:
                what = ", ".join(f"{k}: {_short(old[k])} in the repository, {_short(row[k])} in the import"
                                 for k in diffs)
                raise ConflictingDefinitionError(
                    f"{element} {dict(zip(keycols, key))} already exists with different values ({what}); "
                    "nothing was imported. Import into another repository, or skip these records "
                    "(--skip-dimensions) if the repository's are right"
                )
        if missing:
            report.n_records += reg.insert_dimension_data(element, *missing)
        _LOG.debug("%s: %d record(s) inserted, %d present", element, len(missing), len(rows) - len(missing))


def _short(value: Any) -> str:
    s = repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


def _collections(butler: Repository, contents: RepoContents, report: ImportReport) -> None:
    """Create RUN, TAGGED and CALIBRATION collections (chains come last, after their children)."""
    reg = butler.registry
    for c in contents.collections:
        if c.type is CollectionType.CHAINED:
            continue
        try:
            created = reg.register_collection(c.name, c.type, c.doc)
        except ConflictingDefinitionError as exc:
            raise ConflictingDefinitionError(f"cannot import collection {c.name!r}: {exc}") from None
        if created:
            report.collections.append(c.name)


def _chains(butler: Repository, contents: RepoContents, report: ImportReport) -> None:
    reg = butler.registry
    for c in contents.collections:
        if c.type is not CollectionType.CHAINED:
            continue
        try:
            ctype = reg.get_collection_type(c.name)
        except MissingCollectionError:
            ctype = None
        if ctype is None:
            reg.register_collection(c.name, CollectionType.CHAINED, c.doc)
            reg.set_collection_chain(c.name, list(c.children))
            report.collections.append(c.name)
            continue
        if ctype is not CollectionType.CHAINED:
            raise ConflictingDefinitionError(
                f"cannot import chained collection {c.name!r}: the repository has a {ctype.name} "
                "collection of that name; nothing was imported"
            )
        have = list(reg.get_collection_chain(c.name))
        if have != list(c.children):
            raise ConflictingDefinitionError(
                f"cannot import chained collection {c.name!r}: the repository's chain is {have}, the "
                f"import's is {list(c.children)}; nothing was imported. Change one of them first "
                "(butler collection-chain)"
            )


def _dataset_types(butler: Repository, contents: RepoContents, register: bool, report: ImportReport) -> None:
    reg = butler.registry
    for dt in contents.dataset_types:
        try:
            have = reg.get_dataset_type(dt.name)
        except MissingDatasetTypeError:
            if not register:
                raise MissingDatasetTypeError(
                    f"dataset type {dt.name!r} is not registered in {butler.root}; pass "
                    "--register-dataset-types (register_dataset_types=True) to register it"
                ) from None
            reg.register_dataset_type(dt)
            report.dataset_types.append(dt.name)
            continue
        if have != dt:
            raise ConflictingDefinitionError(
                f"dataset type {dt.name!r} is {have} in {butler.root} but {dt} in the import; nothing "
                "was imported"
            )


def _find_dataset_conflict(butler: Repository, refs: list[DatasetRef]) -> None:
    """Raise naming a dataset whose (type, data ID) is already in its RUN under another ID.

    Run after a failed import (the registry is unchanged), to name the culprit exactly; one
    query per (dataset type, RUN), so it is not run on every import.
    """
    reg = butler.registry
    by_block: dict[tuple[str, str], list[DatasetRef]] = {}
    for r in refs:
        by_block.setdefault((r.dataset_type.name, r.run), []).append(r)
    for (dt_name, run), block in by_block.items():
        try:
            found = reg.query_datasets(dt_name, collections=[run], find_first=False)
        except (MissingCollectionError, MissingDatasetTypeError):
            continue
        have = {x.data_id.key: x.id for x in found}
        for r in block:
            old = have.get(r.data_id.key)
            if old is not None and old != r.id:
                raise ConflictingDefinitionError(
                    f"cannot import dataset {_describe(r)}: RUN {run!r} already holds {dt_name} "
                    f"{r.data_id.required} as dataset {old}; nothing was imported. Remove it first "
                    "(butler prune-datasets) or import into another repository"
                )


def import_contents(
    butler: Repository,
    contents: RepoContents,
    base: str | Path | None,
    *,
    transfer: str = "auto",
    skip_dimensions: Iterable[str] = (),
    register_dataset_types: bool = True,
    verify_checksums: bool = True,
) -> ImportReport:
    """Recreate exported (or transferred) datasets, collections and certifications in a repository.

    Idempotent: what already exists identically is left alone, so importing twice changes
    nothing the second time. All or nothing: one registry transaction; files are placed
    atomically (temporary name + rename) and removed again if anything fails.

    Parameters
    ----------
    butler : `Repository` (a `Butler`)
        The destination (writeable).
    contents : `RepoContents`
    base : path or `None`
        Directory the relative file paths of ``contents`` are relative to (the export directory
        or the source repository root).
    transfer : {"auto", "copy", "hardlink", "symlink", "move", "direct"}
        How files enter the destination datastore.
    skip_dimensions : iterable of `str`
        Dimension elements whose records are not imported (they must exist already).
    register_dataset_types : `bool`
        Register missing dataset types (else they are an error).
    verify_checksums : `bool`
        Check every placed file against the exported size and (when known) checksum.

    Returns
    -------
    report : `ImportReport`

    Raises
    ------
    ConflictingDefinitionError
        If a dimension record, dataset type, collection, chain, dataset or validity range
        already exists with another definition (the message names it). Nothing is changed.
    DatastoreError
        If a file is missing, cannot be placed, or does not match its size/checksum.
    """
    if transfer not in IMPORT_TRANSFER_MODES:
        raise DatastoreError(
            f"unknown import transfer mode {transfer!r}; use one of {', '.join(IMPORT_TRANSFER_MODES)}"
        )
    contents.check()
    reg = butler.registry
    report = ImportReport()
    dataset_conflict: ConflictingDefinitionError | None = None
    created: list[tuple[Path, Path | None]] = []  # (file made in the datastore, source if moved)
    base_path = None if base is None else Path(base).absolute()
    try:
        with reg.transaction():
            _records(butler, contents, set(skip_dimensions), report)
            _dataset_types(butler, contents, register_dataset_types, report)
            _collections(butler, contents, report)
            all_refs = list(contents.iter_refs())
            try:
                new = {r.id: r for r in reg.import_datasets(all_refs, skip_existing=True)}
            except ConflictingDefinitionError as exc:
                dataset_conflict = exc
                raise
            report.n_datasets = len(new)
            report.n_skipped = len(all_refs) - len(new)
            _LOG.info("%d new dataset(s), %d already present", report.n_datasets, report.n_skipped)
            items = []
            for f in contents.files:
                todo = [new[r.id] for r in f.refs if r.id in new]
                if not todo or f.path is None:
                    continue
                src = Path(f.path)
                if not src.is_absolute():
                    if base_path is None:
                        raise DatastoreError(f"relative file path {f.path} but no base directory given")
                    src = base_path / src
                if not src.exists():
                    raise DatastoreError(
                        f"the file of dataset {_describe(todo[0])} is missing: {src}; nothing was imported"
                    )
                path, made = butler.datastore.transfer(src, todo[0], transfer, f.formatter or None)
                if made is not None:
                    created.append((made, src if transfer == "move" else None))
                info = butler.datastore.file_info_for(path, todo[0].dataset_type, f.formatter or None)
                if verify_checksums:
                    _verify(f, info, butler.datastore.abspath(path), todo[0])
                _LOG.debug("placed %s -> %s (%s)", src, path, transfer)
                report.n_files += 1
                report.n_bytes += max(info.file_size, 0)
                items += [(r.id, info) for r in todo]
            reg.insert_file_records(items)
            _chains(butler, contents, report)
            refs_by_id = {r.id: r for r in all_refs}
            for coll, ids in contents.tags.items():
                reg.associate(coll, [refs_by_id[i] for i in ids])
            for coll, pairs in contents.calibs.items():
                report.n_validity_ranges += _certify(butler, coll, pairs, refs_by_id)
    except BaseException as exc:
        _LOG.info("import failed (%s); removing the %d file(s) placed", type(exc).__name__, len(created))
        for made, moved_from in reversed(created):
            if moved_from is not None:
                shutil.move(made, moved_from)
            else:
                made.unlink(missing_ok=True)
        if dataset_conflict is not None and exc is dataset_conflict:
            # Everything was rolled back: find and name the dataset that clashes.
            _find_dataset_conflict(butler, all_refs)
            raise ConflictingDefinitionError(f"cannot import: {exc}; nothing was imported") from None
        raise
    return report


def _blake2b(path: Path) -> str:
    """Hex blake2b (32-byte digest) of a file, the datastore's checksum."""
    import hashlib

    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(f: Any, info: Any, path: Path, ref: DatasetRef) -> None:
    if f.file_size >= 0 and info.file_size != f.file_size:
        raise DatastoreError(
            f"the file of dataset {_describe(ref)} has {info.file_size} bytes at {path}, but "
            f"{f.file_size} in the source (truncated or changed?); nothing was imported"
        )
    if f.checksum:
        got = info.checksum or _blake2b(path)
        if got != f.checksum:
            raise DatastoreError(
                f"the file of dataset {_describe(ref)} at {path} does not match its checksum in the "
                "source (corrupted?); nothing was imported"
            )


def _certify(
    butler: Repository, collection: str, pairs: list[tuple[uuid.UUID, Timespan]], refs: dict[uuid.UUID, Any]
) -> int:
    """Certify the validity ranges the collection lacks; identical ones are skipped."""
    reg = butler.registry
    by_type: dict[str, list[tuple[uuid.UUID, Timespan]]] = {}
    for i, ts in pairs:
        by_type.setdefault(refs[i].dataset_type.name, []).append((i, ts))
    n = 0
    for dt_name, items in by_type.items():
        have = {(r.id, ts) for r, ts in reg.query_calibration_validity(collection, dt_name)}
        by_span: dict[Timespan, list[Any]] = {}
        for i, ts in items:
            if (i, ts) not in have:
                by_span.setdefault(ts, []).append(refs[i])
        for ts, span_refs in sorted(by_span.items()):
            try:
                reg.certify(collection, span_refs, ts)
            except ConflictingDefinitionError as exc:
                raise ConflictingDefinitionError(
                    f"cannot import the validity range {ts} of {dt_name} {span_refs[0].data_id.required} "
                    f"in {collection!r}: {exc}; nothing was imported"
                ) from None
            n += len(span_refs)
    return n
