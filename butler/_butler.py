"""The `Butler`: one object over a repository's registry and datastore."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._config import (
    CONFIG_NAME,
    DEFAULT_BUSY_TIMEOUT,
    default_config,
    load_config,
    repo_root,
    resolve_db_url,
    write_config,
)
from ._errors import (
    CollectionTypeError,
    ConflictingDefinitionError,
    DatasetNotFoundError,
    DatastoreError,
    MissingCollectionError,
    RepositoryError,
)
from .collections import CollectionType
from .datasets import DatasetRef, DatasetType, FileDataset
from .datastore.file_datastore import FileDatastore
from .datastore.records import StoredFileInfo
from .dimensions import DataCoordinate, DimensionRecord, default_universe
from .timespan import Timespan

__all__ = ["Butler"]


def _as_tuple(collections: str | Iterable[str] | None) -> tuple[str, ...]:
    if collections is None:
        return ()
    if isinstance(collections, str):
        return (collections,)
    return tuple(collections)


class Butler:
    """Read and write datasets of a repository.

    Parameters
    ----------
    repo : `str` or `os.PathLike`
        Repository root (or its ``butler.yaml``).
    collections : `str` or iterable of `str`, optional
        Default collections to search (names or glob patterns) for `get`, `find_dataset` and
        the queries.
    run : `str`, optional
        Default RUN for `put` and `ingest` (created on first use); also searched first.
    writeable : `bool`, optional
        Open for writing (default true).

    Raises
    ------
    RepositoryError
        If ``repo`` does not exist, is not a repository, or has an incompatible schema.

    Examples
    --------
    >>> butler = Butler("repo", collections=["kast_blue/calib", "kast_blue/raw/all"])
    >>> raw = butler.get("raw", instrument="kast_blue", exposure=20150520012, detector=0)
    """

    def __init__(
        self,
        repo: str | os.PathLike,
        *,
        collections: str | Iterable[str] | None = None,
        run: str | None = None,
        writeable: bool | None = None,
    ) -> None:
        from .registry import Registry, make_database

        self.root: Path = repo_root(repo)
        self.config = load_config(self.root)
        reg_cfg = self.config["registry"]
        db = make_database(
            resolve_db_url(self.root, self.config),
            schema=reg_cfg.get("schema"),
            writeable=True if writeable is None else bool(writeable),
            busy_timeout=float(reg_cfg.get("busy_timeout", DEFAULT_BUSY_TIMEOUT)),
            must_exist=True,
        )
        self.registry: Registry = Registry.open(db, default_universe())
        self.datastore = FileDatastore(self.root, self.config.get("datastore") or {})
        self.datastore.bridge = self.registry.get_file_records
        self.run: str | None = run
        cols = _as_tuple(collections)
        if run is not None and run not in cols:
            cols = (run, *cols)
        self.collections: tuple[str, ...] = cols

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        repo: str | os.PathLike,
        *,
        db: str | None = None,
        overwrite: bool = False,
        templates: Mapping[str, str] | None = None,
        checksum: bool = False,
    ) -> Butler:
        """Create a new, empty repository and return a butler on it.

        Parameters
        ----------
        repo : path
            The root directory (created; it may exist if empty).
        db : `str`, optional
            Registry URL; default ``sqlite:///REPO/registry.sqlite3``. For PostgreSQL
            (``postgresql+psycopg://user@host:port/db``) the tables go in a schema of their own,
            named by ``?schema=NAME`` or derived from the repository path.
        overwrite : `bool`
            Replace an existing repository at ``repo`` (its registry and files are deleted).
        templates : mapping, optional
            File templates per dataset type or storage class (``butler.yaml``
            ``datastore.templates``).
        checksum : `bool`
            Record a blake2b checksum of every file and verify it on read.

        Raises
        ------
        RepositoryError
            If ``repo`` already is a repository (and not ``overwrite``), is a non-empty
            non-repository directory, or the database cannot be created. Nothing is left behind.
        """
        from .registry import Registry, make_database

        root = repo_root(repo)
        if (root / CONFIG_NAME).exists():
            if not overwrite:
                raise RepositoryError(
                    f"{root} is already a butler repository; choose another path or pass "
                    "overwrite=True (--overwrite)"
                )
            cls._destroy(root)
        elif root.exists() and not root.is_dir():
            raise RepositoryError(f"{root} is a file; give a directory path for the new repository")
        elif root.exists() and any(root.iterdir()):
            raise RepositoryError(
                f"{root} exists and is not empty; create the repository in a new or empty directory"
            )
        created_dir = not root.exists()
        config = default_config(root, db)
        if templates:
            config["datastore"]["templates"].update(dict(templates))
        if checksum:
            config["datastore"]["checksum"] = True
        FileDatastore(root, config["datastore"])  # validate templates before touching anything
        try:
            root.mkdir(parents=True, exist_ok=True)
            database = make_database(
                resolve_db_url(root, config), schema=config["registry"]["schema"], create=True
            )
            try:
                Registry.create(database, default_universe())
            finally:
                database.close()
            write_config(root, config)
        except BaseException as exc:
            if created_dir:
                shutil.rmtree(root, ignore_errors=True)
            else:
                for p in root.glob("registry.sqlite3*"):
                    p.unlink()
                (root / CONFIG_NAME).unlink(missing_ok=True)
            if isinstance(exc, RepositoryError):
                raise
            if isinstance(exc, Exception):
                raise RepositoryError(
                    f"cannot create repository {root}: {type(exc).__name__}: {exc}"
                ) from exc
            raise
        return cls(root)

    @classmethod
    def from_config(cls, repo: str | os.PathLike, **kwargs: Any) -> Butler:
        """Open a repository (the daf_butler spelling of ``Butler(repo, ...)``)."""
        return cls(repo, **kwargs)

    @staticmethod
    def _destroy(root: Path) -> None:
        cfg = load_config(root)
        url = resolve_db_url(root, cfg)
        if cfg["registry"].get("schema"):
            from .registry import make_database

            db = make_database(url, schema=cfg["registry"]["schema"])
            try:
                db.drop_schema()
            finally:
                db.close()
        for child in root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def close(self) -> None:
        """Close the database connection."""
        self.registry.db.close()

    def __enter__(self) -> Butler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Butler({str(self.root)!r}, collections={self.collections!r}, run={self.run!r})"

    # ------------------------------------------------------------------ helpers
    def _search(self, collections: str | Iterable[str] | None) -> tuple[str, ...]:
        cols = _as_tuple(collections) if collections is not None else self.collections
        if not cols:
            raise MissingCollectionError(
                "no collections to search: pass collections=... or create the Butler with collections=/run="
            )
        return cols

    def _query_collections(self, collections: str | Iterable[str] | None) -> tuple[str, ...] | None:
        """Return the collections for a query: those given, else the butler's, else `None` (all)."""
        return _as_tuple(collections) if collections is not None else (self.collections or None)

    def _dataset_type(self, dataset_type: str | DatasetType) -> DatasetType:
        return self.registry.get_dataset_type(dataset_type)

    def _ensure_run(self, run: str) -> None:
        try:
            ctype = self.registry.get_collection_type(run)
        except MissingCollectionError:
            self.registry.register_run(run)
            return
        if ctype is not CollectionType.RUN:
            raise CollectionTypeError(
                f"collection {run!r} is {ctype.name}; datasets can only be put into a RUN collection"
            )

    # ------------------------------------------------------------------ put / get
    def put(
        self,
        obj: Any,
        dataset_type_or_ref: str | DatasetType | DatasetRef,
        data_id: Mapping[str, Any] | None = None,
        *,
        run: str | None = None,
        **dims: Any,
    ) -> DatasetRef:
        """Store a dataset: write its file atomically and register it, in one operation.

        Parameters
        ----------
        obj : `object`
            The in-memory dataset (numpy array, dict, Table, Exposure ...).
        dataset_type_or_ref : `str`, `DatasetType` or `DatasetRef`
            A registered dataset type, or a resolved ref (its run and UUID are used).
        data_id : mapping, optional
            The data ID (with ``**dims``).
        run : `str`, optional
            The RUN (default: the butler's run). Created if missing.

        Returns
        -------
        ref : `DatasetRef`

        Raises
        ------
        MissingDatasetTypeError, DataIdError
        CollectionTypeError
            If the run is an existing non-RUN collection.
        ConflictingDefinitionError
            If the RUN already holds a dataset of this type and data ID. Nothing is written.
        DatastoreError
            If writing fails.
        """
        if isinstance(dataset_type_or_ref, DatasetRef):
            ref0 = dataset_type_or_ref
            dt = self._dataset_type(ref0.dataset_type)
            run = ref0.run
            coord = self.registry.expand_for_dataset_type(dt, ref0.data_id)
            ref = DatasetRef(dt, coord, run, ref0.id)
        else:
            dt = self._dataset_type(dataset_type_or_ref)
            run = run or self.run
            if run is None:
                raise CollectionTypeError(
                    "no RUN to put into: pass run=... or create the Butler with run=..."
                )
            values = dict(data_id or {})
            values.update(dims)
            coord = self.registry.expand_for_dataset_type(dt, values)
            ref = DatasetRef(dt, coord, run)
        with self.datastore.staged_write(obj, ref) as (info, commit):
            with self.registry.transaction():
                self._ensure_run(run)  # inside: a failed put leaves no new empty RUN behind
                self.registry.insert_refs([ref], [info])
                commit()
        return ref

    def get(
        self,
        dataset_type_or_ref: str | DatasetType | DatasetRef,
        data_id: Mapping[str, Any] | None = None,
        *,
        collections: str | Iterable[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        timespan: Timespan | None = None,
        **dims: Any,
    ) -> Any:
        """Read a dataset, by ref or by dataset type and data ID through the collections.

        For a calibration dataset type the data ID may hold an exposure: its timespan is the
        lookup time in CALIBRATION collections (and its physical_filter is used for a flat).

        Parameters
        ----------
        dataset_type_or_ref : `str`, `DatasetType` or `DatasetRef`
        data_id : mapping, optional
        collections : `str` or iterable of `str`, optional
            Default: the butler's collections.
        parameters : mapping, optional
            Read parameters the formatter supports (e.g. ``{"bbox": Box(...)}`` for Exposure,
            ``{"slices": ...}`` for numpy arrays, ``{"columns": [...]}`` for tables).
        timespan : `Timespan`, optional
            Explicit calibration lookup time.

        Raises
        ------
        DatasetNotFoundError
            If no dataset matches (the message lists the collections searched).
        DatastoreError
            If its file is missing or corrupted (the message names the dataset and path).
        """
        if isinstance(dataset_type_or_ref, DatasetRef):
            ref = dataset_type_or_ref
            info = self.registry.get_file_records([ref.id]).get(ref.id)
            if info is None:
                raise DatasetNotFoundError(
                    f"dataset {ref.dataset_type.name} {ref.data_id.required} (id {ref.id}) is not "
                    f"stored in {self.root}"
                )
            return self.datastore.read(ref, info, parameters)
        ref, info = self._find(dataset_type_or_ref, data_id, collections, timespan, dims)
        return self.datastore.read(ref, info, parameters)

    def _find(
        self,
        dataset_type: str | DatasetType,
        data_id: Mapping[str, Any] | None,
        collections: Any,
        timespan: Timespan | None,
        dims: Mapping[str, Any],
    ) -> tuple[DatasetRef, StoredFileInfo]:
        search = self._search(collections)
        found = self.registry.find_dataset_with_info(
            dataset_type, data_id, collections=search, timespan=timespan, **dims
        )
        name = dataset_type.name if isinstance(dataset_type, DatasetType) else dataset_type
        if found is None:
            values = dict(data_id or {})
            values.update(dims)
            raise DatasetNotFoundError(
                f"no {name} dataset with data ID {values} in collection(s) {list(search)}"
                + (f" for time {timespan}" if timespan is not None else "")
                + "; check the data ID and the collections (butler query-datasets)"
            )
        ref, info = found
        if info is None:
            raise DatastoreError(
                f"dataset {name} {ref.data_id.required} (run {ref.run!r}) is registered but has no file"
            )
        return ref, info

    def exists(
        self,
        dataset_type_or_ref: str | DatasetType | DatasetRef,
        data_id: Mapping[str, Any] | None = None,
        *,
        collections: str | Iterable[str] | None = None,
        timespan: Timespan | None = None,
        **dims: Any,
    ) -> bool:
        """Whether a dataset is registered and its file exists."""
        if isinstance(dataset_type_or_ref, DatasetRef):
            info = self.registry.get_file_records([dataset_type_or_ref.id]).get(dataset_type_or_ref.id)
            return info is not None and self.datastore.exists(info)
        try:
            _, info = self._find(dataset_type_or_ref, data_id, collections, timespan, dims)
        except (DatasetNotFoundError, DatastoreError):
            return False
        return self.datastore.exists(info)

    def find_dataset(
        self,
        dataset_type: str | DatasetType,
        data_id: Mapping[str, Any] | None = None,
        *,
        collections: str | Iterable[str] | None = None,
        timespan: Timespan | None = None,
        **dims: Any,
    ) -> DatasetRef | None:
        """Return the first matching dataset along the collections, or `None` (`Registry.find_dataset`)."""
        return self.registry.find_dataset(
            dataset_type, data_id, collections=self._search(collections), timespan=timespan, **dims
        )

    def get_dataset(self, id: Any) -> DatasetRef | None:
        """Return the dataset with a UUID (expanded data ID), or `None`."""
        return self.registry.get_dataset(id)

    def get_uri(self, ref: DatasetRef) -> Path:
        """Absolute path of a stored dataset's file.

        Raises
        ------
        DatasetNotFoundError
            If the dataset has no datastore record.
        """
        info = self.registry.get_file_records([ref.id]).get(ref.id)
        if info is None:
            raise DatasetNotFoundError(
                f"dataset {ref.dataset_type.name} {ref.data_id.required} (id {ref.id}) is not stored"
            )
        return self.datastore.abspath(info.path)

    # ------------------------------------------------------------------ queries
    def query_datasets(
        self,
        dataset_type: Any,
        *,
        collections: str | Iterable[str] | None = None,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        find_first: bool = True,
        limit: int | None = None,
        order_by: str | Sequence[str] | None = None,
        **dims: Any,
    ) -> list[DatasetRef]:
        """Return datasets matching a query (`Registry.query_datasets`); default: the butler's collections."""
        return self.registry.query_datasets(
            dataset_type,
            collections=self._query_collections(collections),
            where=where,
            bind=bind,
            data_id=data_id,
            find_first=find_first,
            limit=limit,
            order_by=order_by,
            **dims,
        )

    def query_data_ids(
        self,
        dimensions: str | Iterable[str],
        *,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        datasets: Any = None,
        collections: str | Iterable[str] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        **dims: Any,
    ) -> list[DataCoordinate]:
        """Return expanded data IDs matching a query (see `Registry.query_data_ids`)."""
        return self.registry.query_data_ids(
            dimensions,
            where=where,
            bind=bind,
            data_id=data_id,
            datasets=datasets,
            collections=self._query_collections(collections),
            order_by=order_by,
            limit=limit,
            **dims,
        )

    def query_dimension_records(
        self,
        element: str,
        *,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        **dims: Any,
    ) -> list[DimensionRecord]:
        """Dimension records matching a query (see `Registry.query_dimension_records`)."""
        return self.registry.query_dimension_records(
            element, where=where, bind=bind, data_id=data_id, order_by=order_by, limit=limit, **dims
        )

    # ------------------------------------------------------------------ ingest and removal
    def ingest(
        self,
        *datasets: FileDataset,
        transfer: str = "auto",
        run: str | None = None,
        formatter: str | None = None,
        id_generation: str = "unique",
    ) -> list[DatasetRef]:
        """Register existing files as datasets (one transaction; files transferred first).

        Parameters
        ----------
        *datasets : `FileDataset`
            Files and the datasets each holds.
        transfer : {"auto", "copy", "symlink", "hardlink", "move", "direct"}
            How files enter the datastore (``auto``: in place if under the root, else copy).
        run : `str`, optional
            RUN for refs without one (default: the butler's run); created if missing.
        formatter : `str`, optional
            Formatter dotted path for files without one.
        id_generation : {"unique", "dataid_type", "dataid_type_run"}
            With ``dataid_type`` re-ingesting the same file is a no-op.

        Returns
        -------
        refs : `list` of `DatasetRef`
            The datasets newly ingested (already-registered ones are skipped and not returned).

        Raises
        ------
        DatastoreError
            If a file is missing or cannot be transferred (transfers already made are undone).
        ConflictingDefinitionError, DataIdError, MissingDatasetTypeError
        """
        run_default = run or self.run
        plans: list[tuple[FileDataset, list[DatasetRef]]] = []
        for fd in datasets:
            refs = []
            for r in fd.refs if isinstance(fd.refs, list) else [fd.refs]:
                r_run = r.run or run_default
                if not r_run:
                    raise CollectionTypeError(
                        "no RUN to ingest into: pass run=... or create the Butler with run=..."
                    )
                dt = self._dataset_type(r.dataset_type)
                coord = self.registry.expand_for_dataset_type(dt, r.data_id)
                rid = (
                    r.id if id_generation == "unique" else DatasetRef.make_id(dt, coord, r_run, id_generation)
                )
                refs.append(DatasetRef(dt, coord, r_run, rid))
            plans.append((fd, refs))
        created: list[tuple[Path, str, Path]] = []
        out: list[DatasetRef] = []
        try:
            with self.registry.transaction():
                for run_name in {r.run for _, refs in plans for r in refs}:
                    self._ensure_run(run_name)
                all_refs = [r for _, refs in plans for r in refs]
                new = {r.id for r in self.registry.import_datasets(all_refs, skip_existing=True)}
                items: list[tuple[Any, StoredFileInfo]] = []
                for fd, refs in plans:
                    todo = [r for r in refs if r.id in new]
                    if not todo:
                        continue
                    fmt = fd.formatter or formatter
                    path, made = self.datastore.transfer(fd.path, todo[0], transfer, fmt)
                    if made is not None:
                        created.append((made, transfer, Path(fd.path).absolute()))
                    for r in todo:
                        items.append((r.id, self.datastore.file_info_for(path, r.dataset_type, fmt)))
                        out.append(r)
                self.registry.insert_file_records(items)
        except BaseException:
            for made, mode, src in created:
                if mode == "move":
                    shutil.move(made, src)
                else:
                    made.unlink(missing_ok=True)
            raise
        return out

    def register_outputs(self, items: Sequence[tuple[DatasetRef, StoredFileInfo]]) -> None:
        """Register datasets whose files workers already wrote (one transaction, batched inserts).

        Parameters
        ----------
        items : sequence of ``(DatasetRef, StoredFileInfo)``
            Refs with their predicted UUIDs and RUNs (created if missing) and the records the
            quantum-backed butler returned.

        Raises
        ------
        ConflictingDefinitionError
            If a dataset ID or (dataset type, data ID) is already in its RUN; nothing is registered.
        """
        if not items:
            return
        with self.registry.transaction():
            refs = [r for r, _ in items]
            for run in {r.run for r in refs}:
                self._ensure_run(run)
            inserted = self.registry.import_datasets(refs, skip_existing=False)
            if len(inserted) != len(refs):
                raise ConflictingDefinitionError("some outputs are already registered")
            self.registry.insert_file_records([(r.id, info) for r, info in items])

    def prune_datasets(
        self,
        refs: Iterable[DatasetRef],
        *,
        purge: bool = True,
        unstore: bool = True,
        disassociate: Iterable[str] = (),
    ) -> int:
        """Remove datasets.

        Parameters
        ----------
        refs : iterable of `DatasetRef`
        purge : `bool`
            Delete them from the registry and their files (default).
        unstore : `bool`
            Without ``purge``: delete only the files and datastore records.
        disassociate : iterable of `str`
            Without ``purge``: TAGGED collections to remove them from.

        Returns
        -------
        n : `int`
            Number of datasets affected.
        """
        refs = list(refs)
        if not refs:
            return 0
        infos = self.registry.get_file_records([r.id for r in refs])
        if purge:
            self.registry.remove_datasets(refs)
            self._delete_unreferenced([i.path for i in infos.values()])
            return len(refs)
        with self.registry.transaction():
            for tag in disassociate:
                self.registry.disassociate(tag, refs)
            if unstore:
                self.registry.remove_file_records([r.id for r in refs])
        if unstore:
            self._delete_unreferenced([i.path for i in infos.values()])
        return len(refs)

    def _delete_unreferenced(self, paths: list[str]) -> int:
        counts = self.registry.count_file_references(set(paths))
        return self.datastore.remove_files([p for p in set(paths) if counts.get(p, 0) == 0])

    def remove_runs(self, names: Iterable[str], *, unstore: bool = True, unlink: bool = False) -> int:
        """Remove RUN collections with their datasets and files.

        Parameters
        ----------
        names : iterable of `str`
            RUN collections.
        unstore : `bool`
            Delete their files too (default).
        unlink : `bool`
            Take the runs out of the CHAINED collections that contain them (LSST's
            ``remove-runs`` does, after confirmation) instead of refusing.

        Raises
        ------
        CollectionTypeError
            If a name is not a RUN.
        ConflictingDefinitionError
            If a run is still in a CHAINED collection and ``unlink`` is false (nothing is removed).

        Returns
        -------
        n : `int`
            Number of datasets removed.
        """
        names = list(names)
        parents_of: dict[str, list[str]] = {}
        for n in names:
            if self.registry.get_collection_type(n) is not CollectionType.RUN:
                raise CollectionTypeError(f"collection {n!r} is not a RUN; use remove-collections for it")
            parents = self.registry.get_collection_parent_chains(n)
            if parents and not unlink:
                raise ConflictingDefinitionError(
                    f"RUN {n!r} is in chained collection(s) {', '.join(parents)}; remove it from them first "
                    "(butler collection-chain --mode remove)"
                )
            parents_of[n] = parents
        paths: list[str] = []
        total = 0
        with self.registry.transaction():
            for n in names:
                for parent in parents_of[n]:
                    children = [c for c in self.registry.get_collection_chain(parent) if c != n]
                    self.registry.set_collection_chain(parent, children)
                count, run_paths = self.registry.run_contents(n)
                paths += run_paths
                total += count
                self.registry.remove_collection(n)
        if unstore:
            self._delete_unreferenced(paths)
        return total

    # ------------------------------------------------------------------ data exchange
    def export(
        self,
        directory: str | os.PathLike,
        dataset_types: str | Iterable[str] = "*",
        *,
        collections: str | Iterable[str] | None = None,
        where: str = "",
        find_first: bool = False,
        transfer: str = "auto",
    ) -> Any:
        """Export datasets with their files, records and collections (`butler.transfers`).

        Returns an `ExportReport`; see `butler.transfers.collect` and `write_export`.
        """
        from .transfers import collect, write_export

        contents = collect(self, dataset_types, collections=collections, where=where, find_first=find_first)
        return write_export(self, directory, contents, transfer=transfer)

    def import_(
        self,
        directory: str | os.PathLike,
        *,
        filename: str | os.PathLike | None = None,
        transfer: str = "auto",
        skip_dimensions: Iterable[str] = (),
    ) -> Any:
        """Import an export directory (idempotent, all or nothing); returns an `ImportReport`."""
        from .transfers import EXPORT_FILENAME, RepoContents, import_contents

        path = Path(filename) if filename is not None else Path(directory) / EXPORT_FILENAME
        if not path.is_absolute() and filename is not None:
            path = Path(directory) / path
        contents = RepoContents.from_yaml(path, self.registry.universe)
        return import_contents(
            self, contents, Path(directory), transfer=transfer, skip_dimensions=skip_dimensions
        )

    def transfer_from(self, source: Butler, dataset_types: str | Iterable[str] = "*", **kwargs: Any) -> Any:
        """Copy datasets from ``source`` into this repository (`butler.transfers.transfer_datasets`)."""
        from .transfers import transfer_datasets

        return transfer_datasets(source, self, dataset_types, **kwargs)

    def retrieve_artifacts(
        self, refs: Iterable[DatasetRef], destination: str | os.PathLike, **kwargs: Any
    ) -> list[Path]:
        """Copy the files of datasets into a directory (`butler.transfers.retrieve_artifacts`)."""
        from .transfers import retrieve_artifacts

        return retrieve_artifacts(self, refs, destination, **kwargs)
