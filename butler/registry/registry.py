"""The registry: dimensions, dataset types, collections and datasets on SQLAlchemy Core.

`Registry` is a facade over the managers of `butler.registry.managers`, each of which owns its
tables; `butler.registry._query` builds the queries. Every method that changes the database runs
in one `Registry.transaction`; a failure rolls the whole operation back and clears the caches.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .._errors import CalibrationLookupError, ConflictingDefinitionError
from ..collections import CollectionType
from ..datasets import DatasetRef, DatasetType
from ..datastore.records import StoredFileInfo
from ..dimensions import DataCoordinate, DimensionRecord, DimensionUniverse
from ..timespan import Timespan
from ._query import DataIdQuery, DatasetFinder, RecordQuery, dataset_types_for_query, query_dataset_types
from .database import Database
from .managers import AttributesManager, CollectionRecord, RegistryManagers
from .managers.datastore_records import FileRecordColumns

__all__ = ["CalibrationLookupError", "CollectionRecord", "Registry"]

Collections = str | Iterable[str] | None  # collection names or glob patterns


class Registry:
    """The registry of a repository.

    Parameters
    ----------
    db : `Database`
        The opened database (tables must exist; see `Registry.create`).
    universe : `DimensionUniverse`
        The dimension universe.
    """

    def __init__(self, db: Database, universe: DimensionUniverse) -> None:
        self.db = db
        self.universe = universe
        self.managers = m = RegistryManagers.build(db, universe)
        self._dims, self._types, self._colls = m.dimensions, m.dataset_types, m.collections
        self._datasets, self._calibs, self._files = m.datasets, m.calibrations, m.datastore_records

    @classmethod
    def create(cls, db: Database, universe: DimensionUniverse) -> Registry:
        """Create the tables of a new registry and record its versions (`RepositoryError` if present)."""
        AttributesManager.create_tables(db)
        reg = cls(db, universe)
        with reg.transaction():
            reg.managers.attributes.initialize(universe)
        return reg

    @classmethod
    def open(cls, db: Database, universe: DimensionUniverse) -> Registry:
        """Open an existing registry (`RepositoryError` if missing or of an incompatible schema version)."""
        reg = cls(db, universe)
        reg.managers.attributes.check(universe)
        return reg

    @contextlib.contextmanager
    def transaction(self, *, savepoint: bool = False) -> Iterator[None]:
        """Open (or join) the registry's one transaction; roll back and clear the caches on any exception.

        Nested calls join the outer transaction (``savepoint=True`` isolates the inner block).
        Raises `RepositoryLockedError` (SQLite) if another writer held the lock past the busy timeout.
        """
        try:
            with self.db.transaction(write=True, savepoint=savepoint):
                yield
        except BaseException:
            self.managers.clear_caches()
            raise

    def get_dimension_record(self, element: str, data_id: Mapping[str, Any]) -> DimensionRecord | None:
        """Return the record of ``element`` for a data ID holding its key values (`None` if missing)."""
        return self._dims.get(element, data_id)

    def insert_dimension_data(
        self, element: str, *records: Mapping[str, Any], skip_existing: bool = False
    ) -> int:
        """Insert dimension records (one transaction); return how many were inserted.

        A record maps field -> value; the key may be given under the element's name (``exposure=5``
        for ``id=5``); temporal records take ``timespan``; ``physical_filter`` records add their
        missing ``band``. Raises `DataIdError` for a missing or unknown field or parent value,
        `ConflictingDefinitionError` for an existing key unless ``skip_existing`` skips it.
        """
        rows = [self._dims.normalize(self.universe[element], r) for r in records]
        if not rows:
            return 0
        with self.transaction():
            bands = {r["band"] for r in rows if r.get("band") is not None}
            if element == "physical_filter" and bands:
                self.insert_dimension_data("band", *({"name": b} for b in bands), skip_existing=True)
            return self._dims.insert(element, rows, skip_existing=skip_existing)

    def sync_dimension_data(
        self, element: str, record: Mapping[str, Any], *, update: bool = False
    ) -> bool | dict[str, Any]:
        """Insert a record if missing (True); if present, check it (False if identical).

        A record with the same key but other values of the given fields raises
        `ConflictingDefinitionError`, or with ``update`` (daf_butler's
        ``syncDimensionData(update=True)``) is overwritten: the old values are returned.
        """
        with self.transaction():
            found = self._dims.sync_existing(element, record, update=update)
            if found is None:
                self.insert_dimension_data(element, record)
                return True
            return found

    def expand_data_id(
        self,
        data_id: Mapping[str, Any] | None = None,
        *,
        dimensions: Iterable[str] | None = None,
        **dims: Any,
    ) -> DataCoordinate:
        """Validate a data ID against the universe and attach its dimension records.

        ``dimensions`` are those wanted in the result (default: those given); values of other
        dimensions derive implied ones (an ``exposure`` gives its ``physical_filter``), then are
        dropped. Raises `DataIdError` for an unknown dimension, a missing required one, an
        unregistered value or contradicting values.
        """
        return self._dims.expand_data_id(data_id, dimensions, dims)

    def expand_for_dataset_type(
        self, dataset_type: DatasetType, data_id: Mapping[str, Any]
    ) -> DataCoordinate:
        """Expand a data ID to exactly the dimensions of a dataset type (a `DataIdError` names the type)."""
        return self._dims.expand_for(dataset_type, data_id)

    def register_dataset_type(self, dataset_type: DatasetType) -> bool:
        """Register a dataset type; False if identical, `ConflictingDefinitionError` if another, exists."""
        from ..storage_classes import get_storage_class

        get_storage_class(dataset_type.storage_class)
        return self._types.register(dataset_type)

    def get_dataset_type(self, name: str | DatasetType) -> DatasetType:
        """Return a registered dataset type (`MissingDatasetTypeError` if not; a `DatasetType` must match)."""
        return self._types.entry(name)[1]

    def query_dataset_types(self, pattern: str | Iterable[str] = "*") -> list[DatasetType]:
        """Return registered dataset types whose names match glob pattern(s), sorted by name."""
        return self._types.query(pattern)

    def remove_dataset_type(self, name: str) -> None:
        """Remove a dataset type that has no datasets (else `ConflictingDefinitionError`)."""
        dt_id, _ = self._types.entry(name)
        with self.transaction():
            n = self._datasets.count_of_type(dt_id)
            if n:
                raise ConflictingDefinitionError(
                    f"dataset type {name!r} still has {n} datasets; remove them first"
                )
            self._types.remove(name, dt_id)

    def register_collection(
        self, name: str, type: CollectionType | str = CollectionType.TAGGED, doc: str = ""
    ) -> bool:
        """Register a collection (no-op if it exists with the same type); return whether it was created.

        Raises `ConflictingDefinitionError` if it exists with another type, `ValueError` for an
        empty name or one with a glob character.
        """
        return self._colls.register(name, CollectionType.from_name(type), doc)

    def register_run(self, name: str, doc: str = "") -> bool:
        """Register a RUN collection (no-op if it exists). Returns whether it was created."""
        return self.register_collection(name, CollectionType.RUN, doc)

    def get_collection_type(self, name: str) -> CollectionType:
        """Return a collection's type (`MissingCollectionError` if it does not exist)."""
        return self._colls.find(name).type

    def get_collection_doc(self, name: str) -> str:
        """Return a collection's documentation string."""
        return self._colls.doc(name)

    def get_collection_chain(self, parent: str) -> tuple[str, ...]:
        """Children of a CHAINED collection, in search order (`CollectionTypeError` if not CHAINED)."""
        return self._colls.chain(parent)

    def set_collection_chain(self, parent: str, children: Sequence[str], *, flatten: bool = False) -> None:
        """Define the children (names, in search order) of a CHAINED collection, creating it if missing.

        ``flatten`` replaces CHAINED children by their flattened contents. Raises
        `MissingCollectionError` for a missing child, `ConflictingDefinitionError` for a cycle.
        """
        self.register_collection(parent, CollectionType.CHAINED)
        with self.transaction():
            self._colls.set_chain(parent, children, flatten=flatten)

    def resolve_collections(
        self, collections: Collections, *, flatten: bool = True
    ) -> list[CollectionRecord]:
        """Expand names/glob patterns into the flattened search path (`MissingCollectionError` if none)."""
        return self._colls.resolve(collections, flatten=flatten)

    def query_collections(
        self,
        pattern: str | Iterable[str] = "*",
        types: Iterable[CollectionType | str] | CollectionType | str | None = None,
        flatten_chains: bool = False,
    ) -> list[str]:
        """Names of collections matching glob pattern(s) and types, sorted.

        With ``flatten_chains`` the matched CHAINED collections are replaced by their flattened
        children (and the children are filtered by ``types``).
        """
        return self._colls.query(pattern, types, flatten_chains)

    def get_collection_parent_chains(self, name: str) -> list[str]:
        """CHAINED collections that directly contain ``name``."""
        return self._colls.parent_chains(name)

    def remove_collection(self, name: str) -> None:
        """Remove a collection that is in no chain; a RUN takes its datasets (the caller deletes files)."""
        rec = self._colls.removable(name)
        with self.transaction():
            if rec.type is CollectionType.RUN:
                self._datasets.remove_run(rec.id)
            self._colls.remove(rec)

    def run_contents(self, run: str) -> tuple[int, list[str]]:
        """Return the number of datasets in a RUN and the paths of their files."""
        rec = self._colls.run(run)
        return self._datasets.count_in_run(rec.id), self._files.paths_of(self._datasets.ids_in_run(rec.id))

    def insert_datasets(
        self,
        dataset_type: DatasetType | str,
        data_ids: Iterable[Mapping[str, Any]],
        run: str,
        *,
        ids: Sequence[uuid.UUID] | None = None,
        id_generation: str = "unique",
    ) -> list[DatasetRef]:
        """Insert new datasets into an existing RUN (one transaction) and return their refs.

        ``ids`` default to ones made with ``id_generation`` (``unique``, ``dataid_type`` or
        ``dataid_type_run``, see `DatasetRef.make_id`). Raises `ConflictingDefinitionError` if a
        dataset of the type and data ID is already in the RUN or an ID exists.
        """
        dt = self.get_dataset_type(dataset_type)
        self._colls.run(run)
        coords = [self._dims.expand_for(dt, d) for d in data_ids]
        if ids is None:
            ids = [DatasetRef.make_id(dt, c, run, id_generation) for c in coords]
        refs = [DatasetRef(dt, c, run, i) for c, i in zip(coords, ids)]
        self.insert_refs(refs)
        return refs

    def insert_refs(
        self, refs: Sequence[DatasetRef], file_infos: Sequence[StoredFileInfo] | None = None
    ) -> None:
        """Insert refs with expanded data IDs and file records (`ConflictingDefinitionError` if present)."""
        with self.transaction():
            self._datasets.insert(refs)
            if file_infos is not None:
                self._files.insert(list(zip((r.id for r in refs), file_infos)))

    def import_datasets(self, refs: Iterable[DatasetRef], *, skip_existing: bool = True) -> list[DatasetRef]:
        """Insert datasets with their given IDs, creating their RUNs if needed (one transaction).

        Returns the refs inserted (expanded). ``skip_existing`` skips refs already registered with
        the same definition (re-ingest); otherwise, or for another definition, and for a dataset
        type and data ID already in the RUN, raises `ConflictingDefinitionError` (without
        ``skip_existing``, the insert's unique constraints find registered ids; no query first).
        """
        refs = list(refs)
        if not refs:
            return []
        with self.transaction():
            for run in {r.run for r in refs}:
                self.register_run(run)
            new = self._datasets.new_refs(refs, skip_existing=skip_existing)
            self.insert_refs(new)
        return new

    def get_dataset(self, id: uuid.UUID | str) -> DatasetRef | None:
        """Return the dataset with a UUID (expanded data ID), or `None`."""
        refs = self._datasets.refs_from_ids([uuid.UUID(str(id))])
        return refs[0] if refs else None

    def remove_datasets(self, refs: Iterable[DatasetRef]) -> None:
        """Delete datasets from the registry (with their tag/calib/file records). Files are the caller's."""
        with self.transaction():
            self._datasets.remove([r.id for r in refs])

    def insert_file_records(self, items: Sequence[tuple[uuid.UUID, StoredFileInfo]]) -> None:
        """Insert the datastore records of datasets."""
        with self.transaction():
            self._files.insert(items)

    def get_file_records(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredFileInfo]:
        """Datastore records of datasets (missing ids are absent from the result)."""
        return self._files.get(ids)

    def get_file_record_columns(self, ids: Sequence[uuid.UUID]) -> FileRecordColumns:
        """Datastore records of many datasets as columns, in one query (e.g. a graph's inputs).

        See `~butler.registry.managers.datastore_records.DatastoreRecordManager.get_columns`.
        """
        return self._files.get_columns(ids)

    def remove_file_records(self, ids: Sequence[uuid.UUID]) -> None:
        """Delete the datastore records of datasets (they stay registered; see `Butler.prune_datasets`)."""
        with self.transaction():
            self._files.remove(ids)

    def count_file_references(self, paths: Iterable[str]) -> dict[str, int]:
        """How many datasets use each path (files shared by several datasets are kept until the last goes)."""
        return self._files.count_references(paths)

    def associate(self, tag: str, refs: Iterable[DatasetRef]) -> None:
        """Add datasets to a TAGGED collection (skipping present ones; conflicting ones raise)."""
        rec = self._colls.find_typed(tag, CollectionType.TAGGED, "associate")
        with self.transaction():
            self._datasets.associate(rec, list(refs))

    def disassociate(self, tag: str, refs: Iterable[DatasetRef]) -> None:
        """Remove datasets from a TAGGED collection."""
        rec = self._colls.find_typed(tag, CollectionType.TAGGED, "disassociate")
        with self.transaction():
            self._datasets.disassociate(rec, [r.id for r in refs])

    def certify(self, collection: str, refs: Iterable[DatasetRef], timespan: Timespan) -> None:
        """Certify calibration datasets into a CALIBRATION collection for a validity range.

        Raises `CollectionTypeError` for a non-CALIBRATION collection or a non-calibration type,
        `ConflictingDefinitionError` (counting all, writing nothing) for overlapping ranges.
        """
        rec = self._colls.find_typed(collection, CollectionType.CALIBRATION, "certify")
        with self.transaction():
            self._calibs.certify(rec, list(refs), timespan)

    def decertify(
        self,
        collection: str,
        dataset_type: str | DatasetType,
        timespan: Timespan,
        *,
        data_ids: Iterable[Mapping[str, Any]] | None = None,
    ) -> int:
        """Remove a time range from certifications (trimming or splitting ranges); return how many changed.

        An empty ``timespan`` (begin = end) covers no instant: nothing changes and 0 is returned.
        """
        rec = self._colls.find_typed(collection, CollectionType.CALIBRATION, "decertify")
        dt_id, dt = self._types.entry(dataset_type)
        keys = None if data_ids is None else [dt.make_data_id(d).key for d in data_ids]
        with self.transaction():
            return self._calibs.decertify(rec, dt_id, timespan, keys)

    def query_calibration_validity(
        self, collection: str, dataset_type: str
    ) -> list[tuple[DatasetRef, Timespan]]:
        """Every certification of a dataset type in a CALIBRATION collection, by begin time."""
        certs = self._calibs.certifications(self._colls.find(collection), self._types.entry(dataset_type)[0])
        refs = {r.id: r for r in self._datasets.refs_from_ids(list({i for i, _ in certs}))}
        return [(refs[i], ts) for i, ts in certs]

    def find_dataset_with_info(
        self,
        dataset_type: DatasetType | str,
        data_id: Mapping[str, Any] | None,
        *,
        collections: Collections,
        timespan: Timespan | None = None,
        **dims: Any,
    ) -> tuple[DatasetRef, StoredFileInfo | None] | None:
        """Find a dataset like `find_dataset` and return its datastore record too (or `None`)."""
        search = self.resolve_collections(collections)
        return DatasetFinder(self.managers).find(
            self._types.entry(dataset_type), data_id, dims, search, timespan
        )

    def find_dataset(
        self,
        dataset_type: DatasetType | str,
        data_id: Mapping[str, Any] | None = None,
        *,
        collections: Collections,
        timespan: Timespan | None = None,
        **dims: Any,
    ) -> DatasetRef | None:
        """Find the first dataset of a type and data ID along the collection search path.

        ``data_id`` may hold more dimensions than the type (an exposure for a flat gives its
        physical_filter and, for calibrations, the lookup time unless ``timespan`` is given).
        Raises `CalibrationLookupError` if several validity ranges in a CALIBRATION collection match.
        """
        found = self.find_dataset_with_info(
            dataset_type, data_id, collections=collections, timespan=timespan, **dims
        )
        return None if found is None else found[0]

    def query_datasets(
        self,
        dataset_type: str | DatasetType | Iterable[str | DatasetType],
        *,
        collections: Collections = None,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        find_first: bool = True,
        limit: int | None = None,
        order_by: str | Sequence[str] | None = None,
        timespan: Timespan | None = None,
        **dims: Any,
    ) -> list[DatasetRef]:
        """Datasets (with expanded data IDs) of one or more types in collections, filtered by a query.

        Parameters
        ----------
        dataset_type : `str`, `DatasetType` or iterable of them
            Names may be glob patterns (``"cp*"``).
        collections : `str` or iterable of `str`
            Names or glob patterns (default: every collection, without find-first).
        where, bind : `str`, mapping
            Data query expression (middleware-reference §8), e.g. ``"exposure.observation_type =
            'flat' AND detector IN (0..3)"``, and the values of its ``:name`` placeholders.
        data_id, **dims : mapping
            Dimension values every result must have.
        find_first, limit, order_by, timespan
            First dataset per data ID along the search path; at most ``limit`` per dataset type;
            dimensions or ``element.field`` (``-`` for descending); calibrations valid in ``timespan``.

        Raises
        ------
        InvalidQueryError
            For a malformed expression or an unknown dimension/field.
        CalibrationLookupError
            With ``find_first`` when a data ID has several certified ranges and no ``timespan``.
        """
        dts = dataset_types_for_query(self._types, dataset_type, where, data_id, dims)
        search = self._colls.search_path(collections)
        find_first = find_first and collections is not None
        return query_dataset_types(  # several types: one UNION ALL, the same refs in the same order
            self.managers, dts, search, timespan=timespan, where=where, bind=bind, data_id=data_id,
            dims=dims, find_first=find_first, limit=limit, order_by=order_by,
        )

    def query_data_ids(
        self,
        dimensions: str | Iterable[str],
        *,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        datasets: str | Iterable[str] | None = None,
        collections: Collections = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        **dims: Any,
    ) -> list[DataCoordinate]:
        """Return the distinct, expanded data IDs of a set of dimensions that satisfy a query.

        ``dimensions`` (``["exposure", "detector"]``) are closed under requires/implies; with
        ``datasets``, only data IDs that have datasets of those types in ``collections`` are kept.
        The other arguments and the errors are those of `query_datasets`.
        """
        names = [dimensions] if isinstance(dimensions, str) else list(dimensions)
        dts = search = None
        if datasets is not None:
            dts = dataset_types_for_query(self._types, datasets, "", None, {}, patterns_filter=False)
            search = self._colls.search_path(collections)
        query = DataIdQuery(self.managers, names, datasets=dts, search=search)
        return query.run(where=where, bind=bind, data_id=data_id, dims=dims, order_by=order_by, limit=limit)

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
        """Return records of one dimension element that satisfy a query.

        Raises `DataIdError` if ``element`` is not a dimension, `InvalidQueryError` for a
        malformed expression or an unknown field.
        """
        self.universe[element]
        query = RecordQuery(self.managers, element)
        return query.run(where=where, bind=bind, data_id=data_id, dims=dims, order_by=order_by, limit=limit)
