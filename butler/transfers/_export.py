"""Choose what leaves a repository (`collect`) and write an export directory (`write_export`)."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import DatastoreError, RepositoryError
from ..collections import CollectionType, has_glob
from ._model import EXPORT_FILENAME, CollectionEntry, ExportedFile, RepoContents, record_to_row

if TYPE_CHECKING:
    from ..datasets import DatasetRef
    from ._repository import Repository

__all__ = ["EXPORT_TRANSFER_MODES", "ExportReport", "collect", "write_export"]

_LOG = logging.getLogger("butler.transfers")

EXPORT_TRANSFER_MODES = ("auto", "copy", "hardlink", "symlink", "relsymlink")
"""How files reach an export directory (``auto``: hard link when possible, else copy)."""


def _as_list(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


def _chain_closure(butler: Repository, names: list[str]) -> list[str]:
    """Names plus, for CHAINED ones, every collection they reach (each once, first seen first)."""
    reg = butler.registry
    out: list[str] = []
    seen: set[str] = set()
    stack = list(reversed(names))
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        out.append(n)
        if reg.get_collection_type(n) is CollectionType.CHAINED:
            stack.extend(reversed(reg.get_collection_chain(n)))
    return out


def collect(
    butler: Repository,
    dataset_types: str | Iterable[str] = "*",
    *,
    collections: str | Iterable[str] | None = None,
    where: str = "",
    find_first: bool = False,
) -> RepoContents:
    """Select datasets and everything needed to recreate them elsewhere.

    Parameters
    ----------
    butler : `Repository` (a `Butler`)
        The source repository.
    dataset_types : `str` or iterable of `str`
        Dataset type names or glob patterns (default: all).
    collections : `str` or iterable of `str`, optional
        Collections to search (names or glob patterns). Default: every collection.
    where : `str`
        Data query expression restricting the datasets.
    find_first : `bool`
        Only the first dataset per data ID along ``collections``.

    Returns
    -------
    contents : `RepoContents`
        The datasets with their files, the dimension records their data IDs use (and the
        records those depend on), their dataset types and RUNs, and the collections searched:
        CHAINED ones with their children, TAGGED ones with their datasets among those selected,
        CALIBRATION ones with the validity ranges of the selected datasets.

    Raises
    ------
    MissingCollectionError, MissingDatasetTypeError, InvalidQueryError
        For unknown names or a bad expression.
    """
    reg = butler.registry
    universe = reg.universe
    patterns = _as_list(collections)
    if patterns is None:
        named = reg.query_collections("*")
    else:
        named = []
        for p in patterns:
            named.extend(reg.query_collections(p) if has_glob(p) else [p])
        for n in named:
            reg.get_collection_type(n)  # MissingCollectionError for a bad name
    named = _chain_closure(butler, named)
    type_patterns = _as_list(dataset_types) or ["*"]
    refs = reg.query_datasets(
        type_patterns,
        collections=patterns,
        where=where,
        find_first=find_first and patterns is not None,
    )
    unique: dict[uuid.UUID, DatasetRef] = {}
    for r in refs:
        unique.setdefault(r.id, r)
    refs = sorted(unique.values(), key=lambda r: (r.dataset_type.name, r.run, r.data_id.key))
    out = RepoContents(universe.namespace, universe.version)

    # Files, one per path within a (dataset type, run) block.
    infos = reg.get_file_records([r.id for r in refs])
    by_path: dict[tuple[str, str, str], ExportedFile] = {}
    for r in refs:
        info = infos.get(r.id)
        if info is None:
            out.files.append(ExportedFile(None, "", [r]))
            continue
        key = (r.dataset_type.name, r.run, info.path)
        f = by_path.get(key)
        if f is None:
            f = by_path[key] = ExportedFile(info.path, info.formatter, [], info.file_size, info.checksum)
            out.files.append(f)
        f.refs.append(r)

    # Dimension records: those of the data IDs, closed over requires/implies.
    wanted: dict[str, dict[tuple, Any]] = {e: {} for e in universe.names}
    todo: list[Any] = []
    for r in refs:
        todo.extend(r.data_id.records.values())
    while todo:
        rec = todo.pop()
        el = rec.element
        key = tuple(rec.get(d) for d in el.requires) + (rec.data_id_value,)
        if key in wanted[el.name]:
            continue
        wanted[el.name][key] = rec
        for dep in el.requires + el.implies:
            value = rec.get(dep)
            if value is None:
                continue
            dep_el = universe[dep]
            parent = reg.get_dimension_record(
                dep, {**{d: rec.get(d) for d in dep_el.requires}, dep: value}
            )
            if parent is not None:
                todo.append(parent)
    for e in universe.names:
        if wanted[e]:
            out.records[e] = [record_to_row(rec) for _, rec in sorted(wanted[e].items(), key=_key_sort)]

    # Dataset types, runs and the collections searched.
    dts = {r.dataset_type.name: r.dataset_type for r in refs}
    out.dataset_types = [dts[n] for n in sorted(dts)]
    runs = sorted({r.run for r in refs})
    ids = set(unique)
    kinds = {n: reg.get_collection_type(n) for n in set(named) | set(runs)}
    ordered = runs + [n for n in named if n not in runs and kinds[n] is CollectionType.RUN]
    ordered += [n for n in named if kinds[n] in (CollectionType.TAGGED, CollectionType.CALIBRATION)]
    chains = [n for n in named if kinds[n] is CollectionType.CHAINED]
    for n in ordered:
        out.collections.append(CollectionEntry(n, kinds[n], reg.get_collection_doc(n)))
        if kinds[n] is CollectionType.TAGGED and refs:
            tagged = reg.query_datasets(sorted(dts), collections=[n], find_first=False)
            out.tags[n] = sorted((r.id for r in tagged if r.id in ids), key=str)
        elif kinds[n] is CollectionType.CALIBRATION:
            items = []
            for dt in out.dataset_types:
                if dt.is_calibration:
                    items += [
                        (ref.id, ts)
                        for ref, ts in reg.query_calibration_validity(n, dt.name)
                        if ref.id in ids
                    ]
            out.calibs[n] = items
    # Chains: children before parents, so an importer can create them in order.
    done: set[str] = set(ordered)
    pending = list(chains)
    while pending:
        progressed = False
        for n in list(pending):
            children = reg.get_collection_chain(n)
            if all(c in done for c in children):
                out.collections.append(
                    CollectionEntry(n, CollectionType.CHAINED, reg.get_collection_doc(n), tuple(children))
                )
                done.add(n)
                pending.remove(n)
                progressed = True
        if not progressed:  # pragma: no cover - the registry refuses cycles
            raise RepositoryError(f"cannot order chained collections {pending} (a cycle?)")
    out.check()
    _LOG.info(
        "selected %d dataset(s) in %d file(s), %d validity range(s), %d collection(s), %d record(s)",
        out.n_datasets,
        out.n_files,
        out.n_validity_ranges,
        len(out.collections),
        sum(len(v) for v in out.records.values()),
    )
    return out


def _key_sort(item: tuple[tuple, Any]) -> tuple:
    return tuple((0, v) if isinstance(v, (int, float)) else (1, str(v)) for v in item[0])


@dataclass
class ExportReport:
    """What `write_export` wrote.

    Attributes
    ----------
    directory : `pathlib.Path`
    n_datasets, n_files, n_validity_ranges : `int`
    n_bytes : `int`
        Total size of the exported files.
    """

    directory: Path
    n_datasets: int
    n_files: int
    n_validity_ranges: int
    n_bytes: int


def _place(src: Path, dest: Path, transfer: str) -> None:
    """Put one file into the export directory (copies via a temporary name)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if transfer in ("auto", "hardlink"):
        try:
            os.link(src.resolve(), dest)
            return
        except OSError as exc:
            if transfer == "hardlink":
                raise DatastoreError(f"cannot hard-link {src} to {dest}: {exc}; use --transfer copy") from exc
    if transfer == "symlink":
        os.symlink(src.resolve(), dest)
    elif transfer == "relsymlink":
        os.symlink(os.path.relpath(src.resolve(), dest.parent), dest)
    else:
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)


def _export_path(path: str) -> str:
    """Where a stored file goes inside the export directory (absolute paths under ``external/``)."""
    p = Path(path)
    return p.as_posix() if not p.is_absolute() else ("external" / Path(*p.parts[1:])).as_posix()


def write_export(
    butler: Repository, directory: str | os.PathLike[str], contents: RepoContents, *, transfer: str = "auto"
) -> ExportReport:
    """Write an export directory: the files and ``export.yaml``, all or nothing.

    Parameters
    ----------
    butler : `Repository` (a `Butler`)
        The source repository (its datastore holds the files).
    directory : path
        New or empty directory. Files keep their paths relative to the repository root.
    contents : `RepoContents`
        What `collect` selected.
    transfer : {"auto", "copy", "hardlink", "symlink", "relsymlink"}
        How files get there (``auto``: hard link if possible, else copy).

    Raises
    ------
    RepositoryError
        If ``directory`` exists and is not empty, or the mode is unknown.
    DatastoreError
        If a file is missing or cannot be placed; nothing is left behind.
    """
    if transfer not in EXPORT_TRANSFER_MODES:
        raise RepositoryError(
            f"unknown export transfer mode {transfer!r}; use one of {', '.join(EXPORT_TRANSFER_MODES)}"
        )
    final = Path(directory).absolute()
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise RepositoryError(f"{final} exists and is not an empty directory; export into a new directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.export-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    n_bytes = 0
    try:
        for f in contents.files:
            if f.path is None:
                continue
            src = butler.datastore.abspath(f.path)
            if not src.exists():
                r = f.refs[0]
                raise DatastoreError(
                    f"dataset {r.dataset_type.name} {r.data_id.required} (run {r.run!r}) has no file at "
                    f"{src}; restore it or remove the dataset before exporting"
                )
            _place(src, tmp / _export_path(f.path), transfer)
            _LOG.debug("exported %s (%s)", f.path, transfer)
            n_bytes += src.stat().st_size
        with open(tmp / EXPORT_FILENAME, "w", encoding="utf-8") as stream:
            contents.to_yaml(stream, path_of=lambda f: None if f.path is None else _export_path(f.path))
        if final.exists():
            final.rmdir()
        os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise DatastoreError(f"cannot write the export to {final}: {exc}") from exc
        raise
    return ExportReport(final, contents.n_datasets, contents.n_files, contents.n_validity_ranges, n_bytes)
