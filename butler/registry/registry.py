"""The registry: dimensions, dataset types, collections and datasets on SQLAlchemy Core.

Every method that changes the database runs in one `Registry.transaction`; a failure rolls the
whole operation back. Small dimension tables (instrument, band, physical_filter, detector) are
cached client-side in full; exposure and day_obs records are cached as they are read. Collection
and dataset type definitions are cached too (they are immutable once created).
"""

from __future__ import annotations

import contextlib
import datetime
import operator
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .._errors import (
    ButlerError,
    CollectionTypeError,
    ConflictingDefinitionError,
    DataIdError,
    MissingCollectionError,
    MissingDatasetTypeError,
    RepositoryError,
)
from ..collections import CollectionType, flatten_chains, glob_filter, has_glob
from ..datasets import DatasetRef, DatasetType
from ..datastore.records import StoredFileInfo
from ..dimensions import DataCoordinate, DimensionElement, DimensionRecord, DimensionUniverse
from ..timespan import TIMESPAN_MAX, TIMESPAN_MIN, Timespan
from .database import Database
from .schema import schema_version

__all__ = ["CalibrationLookupError", "CollectionRecord", "Registry"]

_SMALL_ELEMENTS = ("instrument", "band", "physical_filter", "detector")
"""Dimension tables cached client-side in full."""


class CalibrationLookupError(ButlerError, LookupError):
    """A calibration lookup matched more than one validity range (or had no time to look up)."""


@dataclass(frozen=True)
class CollectionRecord:
    """A collection's id, name and type."""

    id: int
    name: str
    type: CollectionType


def _now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest of ``candidates`` to a mistyped ``name``.

    Uses `difflib.get_close_matches` (ratio >= 0.75); returns ``""`` when nothing is close.
    """
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry:
    """The registry of a repository.

    Parameters
    ----------
    db : `Database`
        The opened database (tables must exist; see `Registry.create`).
    universe : `DimensionUniverse`
        The dimension universe.

    Notes
    -----
    Construct with `Registry.create` (new repository) or `Registry.open`.
    """

    def __init__(self, db: Database, universe: DimensionUniverse) -> None:
        self.db = db
        self.universe = universe
        s = db.registry_schema
        self._t = s.tables
        self._dim_tables = s.dimensions
        self._collections_by_name: dict[str, CollectionRecord] = {}
        self._collections_by_id: dict[int, CollectionRecord] = {}
        self._dataset_types: dict[str, tuple[int, DatasetType]] = {}
        self._dataset_types_by_id: dict[int, DatasetType] = {}
        self._records: dict[str, dict[tuple, DimensionRecord]] = {e: {} for e in universe.names}
        self._complete: set[str] = set()
        self._stmts: dict[Any, Any] = {}
        self._expanded: dict[tuple, DataCoordinate] = {}

    # ------------------------------------------------------------------ creation / opening
    @classmethod
    def create(cls, db: Database, universe: DimensionUniverse) -> Registry:
        """Create the tables of a new registry and record the schema versions.

        Raises
        ------
        RepositoryError
            If the database already holds a registry.
        """
        existing = db.table_names()
        if "butler_attributes" in existing:
            raise RepositoryError(
                f"the database {db.engine.url!r} (schema {db.schema}) already holds a registry; "
                "use another database/schema or remove it first"
            )
        db.create_tables()
        reg = cls(db, universe)
        with reg.transaction():
            db.execute(
                sa.insert(reg._t["butler_attributes"]),
                [
                    {"name": "schema_version", "value": str(schema_version())},
                    {"name": "dimensions_version", "value": str(universe.version)},
                    {"name": "dimensions_namespace", "value": universe.namespace},
                    {"name": "created", "value": _now_utc().isoformat()},
                ],
            )
        return reg

    @classmethod
    def open(cls, db: Database, universe: DimensionUniverse) -> Registry:
        """Open an existing registry, checking its schema versions.

        Raises
        ------
        RepositoryError
            If the database holds no registry, or one with an incompatible schema version.
        """
        reg = cls(db, universe)
        try:
            rows = db.fetchall(sa.select(reg._t["butler_attributes"]))
        except sa.exc.DBAPIError as exc:
            raise RepositoryError(
                f"the database {db.engine.url!r} holds no ccdflow registry (or cannot be read): {exc.orig}"
            ) from None
        attrs = {r.name: r.value for r in rows}
        want = {"schema_version": str(schema_version()), "dimensions_version": str(universe.version)}
        for k, v in want.items():
            if attrs.get(k) != v:
                raise RepositoryError(
                    f"the repository's registry has {k} {attrs.get(k)!r} but this ccdflow needs {v!r}; "
                    "open it with the ccdflow version that created it, or migrate it"
                )
        return reg

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def transaction(self, *, savepoint: bool = False) -> Iterator[None]:
        """Open (or join) the registry's one transaction.

        Nested calls join the outer transaction (``savepoint=True`` isolates the inner block).
        On any exception everything done inside is rolled back and the caches are cleared.

        Raises
        ------
        RepositoryLockedError
            (SQLite) another writer held the lock longer than the busy timeout.
        """
        try:
            with self.db.transaction(write=True, savepoint=savepoint):
                yield
        except BaseException:
            self._clear_caches()
            raise

    def _clear_caches(self) -> None:
        self._collections_by_name.clear()
        self._collections_by_id.clear()
        self._dataset_types.clear()
        self._dataset_types_by_id.clear()
        for d in self._records.values():
            d.clear()
        self._complete.clear()
        self._expanded.clear()

    def _fetchall(self, stmt: Any, params: Any = None) -> Sequence[sa.Row]:
        return self.db.fetchall(stmt, params)

    # ------------------------------------------------------------------ dimension records
    def _record_key(self, el: DimensionElement, values: Mapping[str, Any]) -> tuple:
        return tuple(values[r] for r in el.requires) + (values[el.name],)

    def _row_to_record(self, el: DimensionElement, row: sa.Row) -> DimensionRecord:
        m = row._mapping
        values = {f: m[f] for f in el.record_fields if f != "timespan"}
        if el.temporal:
            b, e = m["timespan_begin"], m["timespan_end"]
            values["timespan"] = None if b is None and e is None else Timespan.from_ns(b, e)
        return DimensionRecord(el, values)

    def _load_complete(self, element: str) -> None:
        el = self.universe[element]
        cache = self._records[element]
        for row in self._fetchall(sa.select(self._dim_tables[element])):
            rec = self._row_to_record(el, row)
            cache[tuple(rec.get(r) for r in el.requires) + (rec.data_id_value,)] = rec
        self._complete.add(element)

    def get_dimension_record(self, element: str, data_id: Mapping[str, Any]) -> DimensionRecord | None:
        """Return the record of ``element`` for a data ID (which has the element's key values).

        Returns `None` when no such record exists. Cached.
        """
        el = self.universe[element]
        key = self._record_key(el, data_id)
        cache = self._records[element]
        rec = cache.get(key)
        if rec is not None:
            return rec
        if element in _SMALL_ELEMENTS:
            # A miss reloads the whole (small) table once: another process may have added it.
            self._load_complete(element)
            return cache.get(key)
        t = self._dim_tables[element]
        cols = list(el.requires) + [el.primary_key.name]
        stmt = self._stmts.get(f"rec:{element}")
        if stmt is None:
            stmt = sa.select(t).where(*[t.c[c] == sa.bindparam(f"k_{c}") for c in cols])
            self._stmts[f"rec:{element}"] = stmt
        rows = self._fetchall(stmt, {f"k_{c}": v for c, v in zip(cols, key)})
        if not rows:
            return None
        rec = self._row_to_record(el, rows[0])
        cache[key] = rec
        return rec

    def _prefetch_records(self, element: str, keys: Iterable[tuple]) -> None:
        """Load many records of a large element in a few queries (for query results)."""
        el = self.universe[element]
        cache = self._records[element]
        if element in _SMALL_ELEMENTS:
            if element not in self._complete:
                self._load_complete(element)
            return
        missing = {k for k in keys if k not in cache}
        if not missing:
            return
        t = self._dim_tables[element]
        # Group by the required (governor) prefix and query by primary-key IN lists.
        by_prefix: dict[tuple, list] = {}
        for k in missing:
            by_prefix.setdefault(k[:-1], []).append(k[-1])
        pk = el.primary_key.name
        for prefix, ids in by_prefix.items():
            for i in range(0, len(ids), 5000):
                chunk = ids[i : i + 5000]
                stmt = sa.select(t).where(
                    *[t.c[r] == v for r, v in zip(el.requires, prefix)], t.c[pk].in_(chunk)
                )
                for row in self._fetchall(stmt):
                    rec = self._row_to_record(el, row)
                    cache[prefix + (rec.data_id_value,)] = rec

    def _normalize_record(self, el: DimensionElement, record: Mapping[str, Any]) -> dict[str, Any]:
        rec = dict(record)
        pk = el.primary_key.name
        if el.name in rec and pk not in rec:
            rec[pk] = rec.pop(el.name)
        elif el.name in rec and el.name != pk:
            rec.pop(el.name)
        known = set(el.record_fields)
        unknown = [k for k in rec if k not in known and k not in ("timespan_begin", "timespan_end")]
        if unknown:
            raise DataIdError(
                f"{el.name} records have no field(s) {', '.join(unknown)}; fields: "
                f"{', '.join(el.record_fields)}"
            )
        row: dict[str, Any] = {}
        for d in el.requires:
            if rec.get(d) is None:
                raise DataIdError(f"{el.name} record {record!r} lacks its required dimension {d!r}")
            row[d] = self.universe.coerce_value(d, rec[d])
        if rec.get(pk) is None:
            raise DataIdError(f"{el.name} record {record!r} lacks its key field {pk!r}")
        row[pk] = self.universe.coerce_value(el.name, rec[pk])
        for d in el.implies:
            row[d] = None if rec.get(d) is None else self.universe.coerce_value(d, rec[d])
        for f in el.metadata:
            v = rec.get(f.name)
            if v is None and not f.nullable:
                raise DataIdError(f"{el.name} record {record!r} lacks the non-nullable field {f.name!r}")
            if v is not None and f.pytype in (int, float):
                v = f.pytype(v)
            row[f.name] = v
        if el.temporal:
            ts = rec.get("timespan")
            if isinstance(ts, (tuple, list)):
                # [begin_ns, end_ns] from DimensionRecord.to_dict, or (Time, Time).
                if all(x is None or isinstance(x, int) for x in ts):
                    ts = Timespan.from_ns(*ts)
                else:
                    ts = Timespan(*ts)
            elif isinstance(ts, Mapping):
                ts = Timespan.from_dict(ts)
            if ts is None and ("timespan_begin" in rec or "timespan_end" in rec):
                row["timespan_begin"], row["timespan_end"] = (
                    rec.get("timespan_begin"),
                    rec.get("timespan_end"),
                )
            else:
                row["timespan_begin"] = None if ts is None else ts.begin_ns
                row["timespan_end"] = None if ts is None else ts.end_ns
        return row

    def insert_dimension_data(
        self, element: str, *records: Mapping[str, Any], skip_existing: bool = False
    ) -> int:
        """Insert dimension records (one transaction).

        Parameters
        ----------
        element : `str`
            Dimension element name (``"exposure"``).
        *records : `dict`
            Field -> value; the key field may be given under the element's name
            (``exposure=5`` for ``id=5``); temporal records take ``timespan`` (a `Timespan`).
            ``physical_filter`` records add their ``band`` record when it is missing.
        skip_existing : `bool`
            Silently skip records whose key already exists (otherwise an error).

        Returns
        -------
        n : `int`
            Number of records inserted.

        Raises
        ------
        DataIdError
            If a record lacks a required field, or names an unknown field or parent value.
        ConflictingDefinitionError
            If a record with the same key exists and ``skip_existing`` is false.
        """
        el = self.universe[element]
        rows = [self._normalize_record(el, r) for r in records]
        if not rows:
            return 0
        t = self._dim_tables[element]
        keycols = list(el.requires) + [el.primary_key.name]
        with self.transaction():
            if element == "physical_filter":
                bands = {r["band"] for r in rows if r.get("band") is not None}
                if bands:
                    self.insert_dimension_data("band", *({"name": b} for b in bands), skip_existing=True)
            existing = self._existing_keys(t, keycols, [tuple(r[c] for c in keycols) for r in rows])
            if existing:
                if not skip_existing:
                    raise ConflictingDefinitionError(
                        f"{element} record(s) {sorted(existing)[:5]} already exist; use skip_existing=True "
                        "(or sync_dimension_data) to keep them"
                    )
                rows = [r for r in rows if tuple(r[c] for c in keycols) not in existing]
            if rows:
                try:
                    with self.db.transaction(savepoint=True):
                        self.db.execute(sa.insert(t), rows)
                except sa.exc.IntegrityError as exc:
                    raise DataIdError(
                        f"cannot insert {element} records: a value they refer to (one of "
                        f"{', '.join(el.requires + el.implies)}) is not registered ({exc.orig})"
                    ) from None
            self._records[element].clear()
            self._complete.discard(element)
            self._expanded.clear()
        return len(rows)

    def _existing_keys(self, t: sa.Table, keycols: list[str], keys: list[tuple]) -> set[tuple]:
        if not keys:
            return set()
        found: set[tuple] = set()
        if len(keycols) == 1:
            for i in range(0, len(keys), 5000):
                chunk = [k[0] for k in keys[i : i + 5000]]
                found |= {
                    (r[0],)
                    for r in self.db.execute(sa.select(t.c[keycols[0]]).where(t.c[keycols[0]].in_(chunk)))
                }
            return found
        by_prefix: dict[tuple, list] = {}
        for k in keys:
            by_prefix.setdefault(k[:-1], []).append(k[-1])
        for prefix, ids in by_prefix.items():
            for i in range(0, len(ids), 5000):
                stmt = sa.select(*[t.c[c] for c in keycols]).where(
                    *[t.c[c] == v for c, v in zip(keycols[:-1], prefix)],
                    t.c[keycols[-1]].in_(ids[i : i + 5000]),
                )
                found |= {tuple(r) for r in self.db.execute(stmt)}
        return found

    def sync_dimension_data(
        self, element: str, record: Mapping[str, Any], *, update: bool = False
    ) -> bool | dict[str, Any]:
        """Insert a record if it is missing; check it matches if present.

        Parameters
        ----------
        element : `str`
        record : mapping
        update : `bool`
            Overwrite the fields given that differ (daf_butler's ``syncDimensionData(update=True)``).

        Returns
        -------
        inserted : `bool` or `dict`
            True if the record was inserted, False if an identical one existed; with ``update``,
            the old values of the fields that were changed (a `dict`), if any.

        Raises
        ------
        ConflictingDefinitionError
            If a record with the same key exists with different values (names the fields) and
            ``update`` is false.
        """
        el = self.universe[element]
        row = self._normalize_record(el, record)
        with self.transaction():
            existing = self.get_dimension_record(element, {**row, element: row[el.primary_key.name]})
            if existing is None:
                self.insert_dimension_data(element, record)
                return True
            old = self._normalize_record(el, existing.to_dict())
            # Compare only the fields the caller gave (the key may be given under the element name).
            given = {el.primary_key.name if k == element else k for k in record}
            if "timespan" in given:
                given |= {"timespan_begin", "timespan_end"}
            diffs = [k for k in row if k in given and row[k] != old.get(k)]
            if diffs and update:
                t = self._dim_tables[element]
                keycols = list(el.requires) + [el.primary_key.name]
                self.db.execute(
                    sa.update(t)
                    .where(*[t.c[c] == row[c] for c in keycols])
                    .values({k: row[k] for k in diffs})
                )
                self._records[element].clear()
                self._complete.discard(element)
                self._expanded.clear()
                return {k: old.get(k) for k in diffs}
            if diffs:
                raise ConflictingDefinitionError(
                    f"{element} {row[el.primary_key.name]!r} already exists with different "
                    + ", ".join(f"{k} ({old[k]!r} != {row[k]!r})" for k in diffs)
                )
            return False

    def expand_data_id(
        self,
        data_id: Mapping[str, Any] | None = None,
        *,
        dimensions: Iterable[str] | None = None,
        **dims: Any,
    ) -> DataCoordinate:
        """Validate a data ID against the universe and attach its dimension records.

        Parameters
        ----------
        data_id : mapping, optional
            Dimension -> value (a `DataCoordinate` or a dict).
        dimensions : iterable of `str`, optional
            The dimensions wanted in the result (default: those given). Values of dimensions
            outside this set are used to derive implied ones (an ``exposure`` gives its
            ``physical_filter``), then dropped.
        **dims
            More dimension values.

        Returns
        -------
        data_id : `DataCoordinate`
            With required and implied values and one record per dimension.

        Raises
        ------
        DataIdError
            If a dimension name is unknown, a required dimension is missing, a value is not
            registered, or given values contradict each other.
        """
        values: dict[str, Any] = {}
        records: dict[str, DimensionRecord] = {}
        if isinstance(data_id, DataCoordinate):
            values.update(data_id.to_simple())
            records.update(data_id.records)
        elif data_id:
            values.update(data_id)
        values.update(dims)
        values = {k: v for k, v in values.items() if v is not None}
        for k in list(values):
            if k not in self.universe:
                raise DataIdError(
                    f"data ID key {k!r} is not a dimension; dimensions are {', '.join(self.universe.names)}"
                )
            values[k] = self.universe.coerce_value(k, values[k])
        if dimensions is not None:
            dimensions = tuple(dimensions)
        memo_key = (dimensions, frozenset(values.items()))
        hit = self._expanded.get(memo_key)
        if hit is not None:
            return hit
        required, implied = self.universe.group(dimensions if dimensions is not None else values.keys())
        given_req, given_imp = self.universe.group(values.keys())
        todo = [d for d in self.universe.names if d in set(required + implied + given_req + given_imp)]
        changed = True
        while changed:
            changed = False
            for d in todo:
                if d in records or d not in values:
                    continue
                el = self.universe[d]
                if any(r not in values for r in el.requires):
                    continue
                rec = self.get_dimension_record(d, values)
                if rec is None:
                    key = {r: values[r] for r in el.requires}
                    key[d] = values[d]
                    raise DataIdError(
                        f"no {d} record for {key}; register it first (unknown value {values[d]!r})"
                    )
                records[d] = rec
                changed = True
                for imp in el.implies:
                    v = rec.get(imp)
                    if v is None:
                        continue
                    if imp in values and values[imp] != v:
                        raise DataIdError(
                            f"data ID has {imp}={values[imp]!r} but {d} {values[d]!r} implies {imp}={v!r}"
                        )
                    values[imp] = v
        missing = [d for d in required if d not in values]
        if missing:
            raise DataIdError(
                f"data ID {values} is missing required dimension(s) {', '.join(missing)} (needed: "
                f"{', '.join(required)})"
            )
        out_vals = {d: values[d] for d in required}
        for d in implied:
            if d in values:
                out_vals[d] = values[d]
        out_recs = {d: records[d] for d in required + implied if d in records}
        result = DataCoordinate(self.universe, required, out_vals, out_recs)
        if len(self._expanded) > 50_000:
            self._expanded.clear()
        self._expanded[memo_key] = result
        return result

    # ------------------------------------------------------------------ dataset types
    def register_dataset_type(self, dataset_type: DatasetType) -> bool:
        """Register a dataset type.

        Returns
        -------
        inserted : `bool`
            False if an identical definition already existed.

        Raises
        ------
        ConflictingDefinitionError
            If the name exists with another definition (both definitions are shown).
        """
        from ..storage_classes import get_storage_class

        get_storage_class(dataset_type.storage_class)
        try:
            existing = self.get_dataset_type(dataset_type.name)
        except MissingDatasetTypeError:
            existing = None
        if existing is not None:
            if existing != dataset_type:
                raise ConflictingDefinitionError(
                    f"dataset type {dataset_type.name!r} is already registered as {existing}, not "
                    f"{dataset_type}; "
                    "use another name or remove the old one"
                )
            return False
        t = self._t["dataset_type"]
        with self.transaction():
            try:
                with self.db.transaction(savepoint=True):
                    self.db.execute(
                        sa.insert(t).values(
                            name=dataset_type.name,
                            dimensions=",".join(dataset_type.dimensions),
                            storage_class=dataset_type.storage_class,
                            is_calibration=dataset_type.is_calibration,
                        )
                    )
            except sa.exc.IntegrityError:
                self._dataset_types.clear()
                if self.get_dataset_type(dataset_type.name) != dataset_type:
                    raise ConflictingDefinitionError(
                        f"dataset type {dataset_type.name!r} was registered concurrently with "
                        "another definition"
                    ) from None
                return False
        return True

    def _row_to_dataset_type(self, row: sa.Row) -> DatasetType:
        dims = [d for d in row.dimensions.split(",") if d]
        return DatasetType(
            row.name, dims, row.storage_class, bool(row.is_calibration), universe=self.universe
        )

    def _dataset_type_entry(self, name: str | DatasetType) -> tuple[int, DatasetType]:
        key = name.name if isinstance(name, DatasetType) else name
        entry = self._dataset_types.get(key)
        if entry is None:
            t = self._t["dataset_type"]
            rows = self._fetchall(sa.select(t).where(t.c.name == key))
            if not rows:
                names = self._fetchall(sa.select(t.c.name))
                raise MissingDatasetTypeError(
                    f"dataset type {key!r} is not registered{_did_you_mean(key, [r.name for r in names])}; "
                    "register it first (butler register-dataset-type, or pipetask --register-dataset-types)"
                )
            entry = (rows[0].dataset_type_id, self._row_to_dataset_type(rows[0]))
            self._dataset_types[key] = entry
            self._dataset_types_by_id[entry[0]] = entry[1]
        if isinstance(name, DatasetType) and name != entry[1]:
            raise ConflictingDefinitionError(f"dataset type {name} does not match the registered {entry[1]}")
        return entry

    def get_dataset_type(self, name: str) -> DatasetType:
        """Return a registered dataset type.

        Raises
        ------
        MissingDatasetTypeError
            If it is not registered.
        """
        return self._dataset_type_entry(name)[1]

    def query_dataset_types(self, pattern: str | Iterable[str] = "*") -> list[DatasetType]:
        """Return registered dataset types whose names match glob pattern(s), sorted by name."""
        t = self._t["dataset_type"]
        rows = self._fetchall(sa.select(t).order_by(t.c.name))
        names = glob_filter(pattern, [r.name for r in rows])
        keep = set(names)
        return [self._row_to_dataset_type(r) for r in rows if r.name in keep]

    def remove_dataset_type(self, name: str) -> None:
        """Remove a dataset type that has no datasets.

        Raises
        ------
        ConflictingDefinitionError
            If datasets of the type exist.
        """
        dt_id, _ = self._dataset_type_entry(name)
        d = self._t["dataset"]
        with self.transaction():
            n = self.db.execute(
                sa.select(sa.func.count()).select_from(d).where(d.c.dataset_type_id == dt_id)
            ).scalar()
            if n:
                raise ConflictingDefinitionError(
                    f"dataset type {name!r} still has {n} datasets; remove them first"
                )
            self.db.execute(
                sa.delete(self._t["dataset_type"]).where(self._t["dataset_type"].c.dataset_type_id == dt_id)
            )
        self._dataset_types.pop(name, None)

    # ------------------------------------------------------------------ collections
    def _collection(self, name: str) -> CollectionRecord:
        rec = self._collections_by_name.get(name)
        if rec is None:
            t = self._t["collection"]
            rows = self._fetchall(sa.select(t).where(t.c.name == name))
            if not rows:
                names = self._fetchall(sa.select(t.c.name))
                raise MissingCollectionError(
                    f"collection {name!r} does not exist{_did_you_mean(name, [r.name for r in names])}; "
                    "see `butler query-collections` for the existing ones"
                )
            rec = CollectionRecord(rows[0].collection_id, rows[0].name, CollectionType(rows[0].type))
            self._collections_by_name[name] = rec
            self._collections_by_id[rec.id] = rec
        return rec

    def _collection_by_id(self, cid: int) -> CollectionRecord:
        rec = self._collections_by_id.get(cid)
        if rec is None:
            t = self._t["collection"]
            row = self._fetchall(sa.select(t).where(t.c.collection_id == cid))[0]
            rec = CollectionRecord(row.collection_id, row.name, CollectionType(row.type))
            self._collections_by_name[rec.name] = rec
            self._collections_by_id[cid] = rec
        return rec

    def register_collection(
        self, name: str, type: CollectionType | str = CollectionType.TAGGED, doc: str = ""
    ) -> bool:
        """Register a collection (no-op if it exists with the same type).

        Returns
        -------
        inserted : `bool`

        Raises
        ------
        ConflictingDefinitionError
            If it exists with another type.
        ValueError
            If the name is empty or contains a glob character.
        """
        type = CollectionType.from_name(type)
        if not name or has_glob(name) or name != name.strip():
            raise ValueError(
                f"invalid collection name {name!r}: it must be non-empty, without *?[ or surrounding spaces"
            )
        try:
            existing = self._collection(name)
        except MissingCollectionError:
            existing = None
        if existing is not None:
            if existing.type != type:
                raise ConflictingDefinitionError(
                    f"collection {name!r} already exists as {existing.type.name}, not {type.name}"
                )
            return False
        with self.transaction():
            cid = self.db.execute(
                sa.insert(self._t["collection"]).values(name=name, type=int(type), doc=doc or None)
            ).inserted_primary_key[0]
            if type is CollectionType.RUN:
                self.db.execute(
                    sa.insert(self._t["run"]).values(
                        collection_id=cid,
                        host=socket.gethostname()[:128],
                        timespan_begin=time_to_ns_now(),
                        timespan_end=None,
                    )
                )
        return True

    def register_run(self, name: str, doc: str = "") -> bool:
        """Register a RUN collection (no-op if it exists). Returns whether it was created."""
        return self.register_collection(name, CollectionType.RUN, doc)

    def get_collection_type(self, name: str) -> CollectionType:
        """Return a collection's type.

        Raises
        ------
        MissingCollectionError
            If it does not exist.
        """
        return self._collection(name).type

    def get_collection_doc(self, name: str) -> str:
        """Return a collection's documentation string."""
        t = self._t["collection"]
        rows = self._fetchall(sa.select(t.c.doc).where(t.c.collection_id == self._collection(name).id))
        return rows[0].doc or ""

    def get_collection_chain(self, parent: str) -> tuple[str, ...]:
        """Children of a CHAINED collection, in search order.

        Raises
        ------
        CollectionTypeError
            If ``parent`` is not CHAINED.
        """
        rec = self._collection(parent)
        if rec.type is not CollectionType.CHAINED:
            raise CollectionTypeError(f"collection {parent!r} is {rec.type.name}, not CHAINED")
        t = self._t["collection_chain"]
        rows = self._fetchall(sa.select(t.c.child).where(t.c.parent == rec.id).order_by(t.c.position))
        return tuple(self._collection_by_id(r.child).name for r in rows)

    def set_collection_chain(self, parent: str, children: Sequence[str], *, flatten: bool = False) -> None:
        """Define the children of a CHAINED collection (creating it if missing).

        Parameters
        ----------
        parent : `str`
        children : sequence of `str`
            Collection names (no patterns), in search order.
        flatten : `bool`
            Replace CHAINED children by their flattened contents.

        Raises
        ------
        MissingCollectionError
            If a child does not exist.
        ConflictingDefinitionError
            If the chain would contain itself (a cycle).
        """
        self.register_collection(parent, CollectionType.CHAINED)
        rec = self._collection(parent)
        if rec.type is not CollectionType.CHAINED:
            raise CollectionTypeError(f"collection {parent!r} is {rec.type.name}, not CHAINED")
        if isinstance(children, str):
            children = [children]
        kids = [self._collection(c) for c in children]
        if flatten:
            kids = [self._collection(n) for n in self._flatten([c.name for c in kids])]
        for k in kids:
            if k.name == parent or (
                k.type is CollectionType.CHAINED and parent in self._flatten([k.name], keep_chains=True)
            ):
                raise ConflictingDefinitionError(
                    f"chain {parent!r} cannot contain {k.name!r}: that would be a cycle"
                )
        seen: set[int] = set()
        kids = [k for k in kids if not (k.id in seen or seen.add(k.id))]
        t = self._t["collection_chain"]
        with self.transaction():
            self.db.execute(sa.delete(t).where(t.c.parent == rec.id))
            if kids:
                self.db.execute(
                    sa.insert(t),
                    [{"parent": rec.id, "position": i, "child": k.id} for i, k in enumerate(kids)],
                )

    def _flatten(self, names: Iterable[str], *, keep_chains: bool = False) -> list[str]:
        return flatten_chains(
            names,
            lambda n: self._collection(n).type is CollectionType.CHAINED,
            self.get_collection_chain,
            lambda n: ConflictingDefinitionError(f"collection chain through {n!r} is too deep (a cycle?)"),
            keep_chains=keep_chains,
        )

    def _search_path(self, collections: str | Iterable[str] | None) -> list[CollectionRecord]:
        """Return the flattened search path; `None` = every RUN, TAGGED and CALIBRATION collection."""
        if collections is None:
            kinds = [CollectionType.RUN, CollectionType.TAGGED, CollectionType.CALIBRATION]
            return [self._collection(n) for n in self.query_collections("*", types=kinds)]
        return self.resolve_collections(collections)

    def resolve_collections(
        self, collections: str | Iterable[str] | None, *, flatten: bool = True
    ) -> list[CollectionRecord]:
        """Expand collection names/glob patterns into the flattened search path.

        Raises
        ------
        MissingCollectionError
            If a name (not a pattern) does not exist, or nothing was given.
        """
        if collections is None:
            raise MissingCollectionError(
                "no collections to search; pass collections=... (or set Butler(collections=...))"
            )
        if isinstance(collections, str):
            collections = [collections]
        names: list[str] = []
        for c in collections:
            if has_glob(c):
                names.extend(self.query_collections(c))
            else:
                self._collection(c)
                names.append(c)
        if not flatten:
            return [self._collection(n) for n in names]
        return [self._collection(n) for n in self._flatten(names)]

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
        t = self._t["collection"]
        rows = self._fetchall(sa.select(t.c.collection_id, t.c.name, t.c.type).order_by(t.c.name))
        for r in rows:
            rec = CollectionRecord(r.collection_id, r.name, CollectionType(r.type))
            self._collections_by_name[rec.name] = rec
            self._collections_by_id[rec.id] = rec
        names = glob_filter(pattern, [r.name for r in rows])
        if types is not None:
            if isinstance(types, (str, CollectionType)):
                types = [types]
            want = {CollectionType.from_name(x) for x in types}
        else:
            want = set(CollectionType)
        if flatten_chains:
            names = self._flatten(names)
        return [n for n in names if self._collection(n).type in want]

    def get_collection_parent_chains(self, name: str) -> list[str]:
        """CHAINED collections that directly contain ``name``."""
        t = self._t["collection_chain"]
        rows = self._fetchall(sa.select(t.c.parent).where(t.c.child == self._collection(name).id))
        return sorted(self._collection_by_id(r.parent).name for r in rows)

    def remove_collection(self, name: str) -> None:
        """Remove a collection; a RUN takes its datasets (and their tag/calib/file records) with it.

        The caller deletes files (see `Butler.remove_runs`).

        Raises
        ------
        ConflictingDefinitionError
            If the collection is a child of a CHAINED collection.
        """
        rec = self._collection(name)
        parents = self.get_collection_parent_chains(name)
        if parents:
            raise ConflictingDefinitionError(
                f"collection {name!r} is in chained collection(s) {', '.join(parents)}; remove it "
                "from them first"
            )
        d = self._t["dataset"]
        with self.transaction():
            if rec.type is CollectionType.RUN:
                self.db.execute(sa.delete(d).where(d.c.run_id == rec.id))
            self.db.execute(
                sa.delete(self._t["collection"]).where(self._t["collection"].c.collection_id == rec.id)
            )
        self._collections_by_name.pop(name, None)
        self._collections_by_id.pop(rec.id, None)

    # ------------------------------------------------------------------ datasets
    def _run_record(self, run: str) -> CollectionRecord:
        rec = self._collection(run)
        if rec.type is not CollectionType.RUN:
            raise CollectionTypeError(
                f"collection {run!r} is {rec.type.name}; datasets can only be put into a RUN collection"
            )
        return rec

    def _expand_for(self, dataset_type: DatasetType, data_id: Mapping[str, Any]) -> DataCoordinate:
        if (
            isinstance(data_id, DataCoordinate)
            and data_id.dimensions == dataset_type.dimensions
            and data_id.has_records()
        ):
            return data_id
        try:
            return self.expand_data_id(data_id, dimensions=dataset_type.dimensions)
        except DataIdError as exc:
            raise DataIdError(f"dataset type {dataset_type.name!r}: {exc}") from None

    def _dataset_rows(self, dt_id: int, refs: Sequence[DatasetRef], run_id: int) -> list[dict[str, Any]]:
        now = _now_utc()
        names = self.universe.names
        rows = []
        for ref in refs:
            row = dict.fromkeys(names)
            row.update(ref.data_id.to_simple())
            row["id"] = ref.id
            row["dataset_type_id"] = dt_id
            row["run_id"] = run_id
            row["ingest_date"] = now
            row["data_id_key"] = ref.data_id.key
            rows.append(row)
        return rows

    def insert_datasets(
        self,
        dataset_type: DatasetType | str,
        data_ids: Iterable[Mapping[str, Any]],
        run: str,
        *,
        ids: Sequence[uuid.UUID] | None = None,
        id_generation: str = "unique",
    ) -> list[DatasetRef]:
        """Insert new datasets into a RUN (one transaction).

        Parameters
        ----------
        dataset_type : `DatasetType` or `str`
            A registered dataset type.
        data_ids : iterable of mapping
            Their data IDs (expanded here).
        run : `str`
            An existing RUN collection.
        ids : sequence of `uuid.UUID`, optional
            Dataset IDs to use (default: generated with ``id_generation``).
        id_generation : `str`
            ``unique``, ``dataid_type`` or ``dataid_type_run`` (`DatasetRef.make_id`).

        Returns
        -------
        refs : `list` of `DatasetRef`

        Raises
        ------
        MissingDatasetTypeError, MissingCollectionError, CollectionTypeError, DataIdError
        ConflictingDefinitionError
            If a dataset with the same dataset type and data ID is already in the RUN, or an ID exists.
        """
        dt_id, dt = self._dataset_type_entry(dataset_type)
        self._run_record(run)
        coords = [self._expand_for(dt, d) for d in data_ids]
        if ids is None:
            ids = [DatasetRef.make_id(dt, c, run, id_generation) for c in coords]
        refs = [DatasetRef(dt, c, run, i) for c, i in zip(coords, ids)]
        self._insert_refs(refs)
        return refs

    def _insert_refs(
        self, refs: Sequence[DatasetRef], file_infos: Sequence[StoredFileInfo] | None = None
    ) -> None:
        by_type_run: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(refs):
            by_type_run.setdefault((r.dataset_type.name, r.run), []).append(i)
        with self.transaction():
            for (dt_name, run), idx in by_type_run.items():
                dt_id, _ = self._dataset_type_entry(dt_name)
                run_id = self._run_record(run).id
                rows = self._dataset_rows(dt_id, [refs[i] for i in idx], run_id)
                try:
                    with self.db.transaction(savepoint=not self.db.statement_atomic):
                        self._execute_many("insert_dataset", self._t["dataset"], rows)
                except sa.exc.IntegrityError as exc:
                    raise self._diagnose_conflict(
                        dt_name, dt_id, run, run_id, [refs[i] for i in idx], exc
                    ) from None
                self.db.note_inserts(self._t["dataset"], len(rows))
            if file_infos is not None:
                self.insert_file_records(list(zip((r.id for r in refs), file_infos)))

    def _execute_many(self, key: str, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """INSERT rows with a precompiled statement (raw cursor on SQLite, SQLAlchemy elsewhere)."""
        cols = list(rows[0])
        factory = lambda: sa.insert(table).values({c: sa.bindparam(c) for c in cols})  # noqa: E731
        if not self.db.fast_executemany((key, tuple(cols)), factory, rows):
            self.db.execute(sa.insert(table), rows)

    def _diagnose_conflict(
        self, dt_name: str, dt_id: int, run: str, run_id: int, refs: Sequence[DatasetRef], exc: Exception
    ) -> Exception:
        d = self._t["dataset"]
        keys = [r.data_id.key for r in refs]
        dup = self.db.execute(
            sa.select(d.c.data_id_key).where(
                d.c.dataset_type_id == dt_id, d.c.run_id == run_id, d.c.data_id_key.in_(keys[:5000])
            )
        ).fetchall()
        if dup:
            first = next(r for r in refs if r.data_id.key == dup[0][0])
            return ConflictingDefinitionError(
                f"a {dt_name} dataset with data ID {first.data_id.required} is already in RUN {run!r} "
                f"({len(dup)} conflict(s)); a RUN holds one dataset per dataset type and data ID - "
                "use another run or remove the old dataset"
            )
        ids = self.db.execute(sa.select(d.c.id).where(d.c.id.in_([r.id for r in refs][:5000]))).fetchall()
        if ids:
            return ConflictingDefinitionError(f"dataset id {ids[0][0]} is already registered")
        if len(set(keys)) < len(keys):
            return ConflictingDefinitionError(
                f"the {dt_name} datasets to insert into RUN {run!r} repeat a data ID"
            )
        return ConflictingDefinitionError(
            f"cannot insert {dt_name} datasets into {run!r}: {getattr(exc, 'orig', exc)}"
        )

    def import_datasets(self, refs: Iterable[DatasetRef], *, skip_existing: bool = True) -> list[DatasetRef]:
        """Insert datasets with their given IDs, creating their RUNs if needed (one transaction).

        Parameters
        ----------
        refs : iterable of `DatasetRef`
        skip_existing : `bool`
            Skip refs whose ID is already registered with the same dataset type, run and data
            ID (re-ingest of the same file); otherwise that is a conflict.

        Returns
        -------
        inserted : `list` of `DatasetRef`
            The refs actually inserted (expanded data IDs).

        Raises
        ------
        ConflictingDefinitionError
            If an ID exists with another definition, or a (dataset type, data ID) is already in the RUN.
        """
        refs = list(refs)
        if not refs:
            return []
        with self.transaction():
            for run in {r.run for r in refs}:
                self.register_run(run)
            expanded = [
                r
                if r.data_id.has_full() and r.data_id.has_records()
                else r.replace(data_id=self._expand_for(r.dataset_type, r.data_id))
                for r in refs
            ]
            for r in expanded:
                self._dataset_type_entry(r.dataset_type)
            existing = self._existing_datasets([r.id for r in expanded])
            new = []
            for r in expanded:
                old = existing.get(r.id)
                if old is None:
                    new.append(r)
                    continue
                dt_id, run_id, key = old
                if (
                    skip_existing
                    and dt_id == self._dataset_type_entry(r.dataset_type)[0]
                    and run_id == self._collection(r.run).id
                    and key == r.data_id.key
                ):
                    continue
                raise ConflictingDefinitionError(
                    f"dataset id {r.id} already exists with another definition than {r}"
                )
            self._insert_refs(new)
        return new

    def _existing_datasets(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[int, int, str]]:
        d = self._t["dataset"]
        out = {}
        for i in range(0, len(ids), 5000):
            for row in self.db.execute(
                sa.select(d.c.id, d.c.dataset_type_id, d.c.run_id, d.c.data_id_key).where(
                    d.c.id.in_(ids[i : i + 5000])
                )
            ):
                out[row.id] = (row.dataset_type_id, row.run_id, row.data_id_key)
        return out

    def get_dataset(self, id: uuid.UUID | str) -> DatasetRef | None:
        """Return the dataset with a UUID (expanded data ID), or `None`."""
        refs = self._refs_from_ids([uuid.UUID(str(id))])
        return refs[0] if refs else None

    def _refs_from_ids(self, ids: Sequence[uuid.UUID]) -> list[DatasetRef]:
        d = self._t["dataset"]
        rows = []
        for i in range(0, len(ids), 5000):
            rows += self._fetchall(sa.select(d).where(d.c.id.in_(ids[i : i + 5000])))
        order = {x: i for i, x in enumerate(ids)}
        rows.sort(key=lambda r: order[r.id])
        return self._rows_to_refs(rows)

    def _rows_to_refs(
        self, rows: Sequence[Any], dataset_type: DatasetType | None = None, keys: Sequence[str] | None = None
    ) -> list[DatasetRef]:
        """Build expanded refs from rows of dataset_id (or id), dataset_type_id, run_id and dimension columns.

        ``rows`` are SQLAlchemy rows, or plain tuples with their column names in ``keys``.
        """
        if not rows:
            return []
        if keys is None:
            keys = list(rows[0]._mapping.keys())
            rows = [tuple(r) for r in rows]
        pos = {k: i for i, k in enumerate(keys)}
        u = self.universe
        i_id = pos["dataset_id"] if "dataset_id" in pos else pos["id"]
        i_type, i_run = pos["dataset_type_id"], pos["run_id"]
        types: dict[int, DatasetType] = {}
        for r in rows:
            tid = r[i_type]
            if tid not in types:
                types[tid] = dataset_type if dataset_type is not None else self._dataset_type_by_id(tid)
        # Per dataset type: dimension names, their column positions and record-key positions.
        plans: dict[int, tuple] = {}
        for tid, dt in types.items():
            dims = dt.dimensions + dt.implied
            dpos = [pos[d] for d in dims]
            rec_keys = [(d, tuple(pos[q] for q in u[d].requires) + (pos[d],)) for d in dims]
            plans[tid] = (dt, dims, dpos, rec_keys)
            for d, kp in rec_keys:
                if d in _SMALL_ELEMENTS:
                    if d not in self._complete:
                        self._load_complete(d)
                else:
                    keys = set(map(_tuple_getter(kp), rows))
                    self._prefetch_records(d, {k for k in keys if k[-1] is not None})
        # Snapshots of the record caches (a failed transaction clears the live ones): the data
        # IDs look their records up lazily, on first use, with C-speed key getters.
        snapshots = {d: dict(self._records[d]) for plan in plans.values() for d, _ in plan[3]}
        getters = {}
        for tid, (dt, dims, dpos, rec_keys) in plans.items():
            getters[tid] = (
                dt,
                dims,
                _tuple_getter(dpos),
                tuple((d, snapshots[d], _tuple_getter(kp)) for d, kp in rec_keys),
            )
        runs = {
            rid: self._collection_by_id(rid).name for rid in {r[i_run] for r in rows}
        }
        # The loop builds DataCoordinate (lazy records), UUID and DatasetRef objects directly:
        # the values come from the registry's own rows, so the constructors' checks are skipped
        # (~3 us per ref instead of ~15; see DataCoordinate._expanded_lazily; a DatasetRef's
        # fields are put in its __dict__ like a frozen dataclass's __init__ does).
        UUID = uuid.UUID
        new = object.__new__
        setattr_ = object.__setattr__
        unknown = uuid.SafeUUID.unknown
        lazy = DataCoordinate._expanded_lazily
        out = []
        append = out.append
        for r in rows:
            dt, dims, get_values, rec_getters = getters[r[i_type]]
            coord = lazy(u, dt.dimensions, dims, get_values, rec_getters, r)
            did = r[i_id]
            if not isinstance(did, UUID):  # SQLite: 32 hex digits
                hex_id = did
                did = new(UUID)
                setattr_(did, "int", int(hex_id, 16))
                setattr_(did, "is_safe", unknown)
            ref = new(DatasetRef)
            d = ref.__dict__
            d["dataset_type"] = dt
            d["data_id"] = coord
            d["run"] = runs[r[i_run]]
            d["id"] = did
            append(ref)
        return out

    def _dataset_type_by_id(self, tid: int) -> DatasetType:
        dt = self._dataset_types_by_id.get(tid)
        if dt is None:
            t = self._t["dataset_type"]
            row = self._fetchall(sa.select(t).where(t.c.dataset_type_id == tid))[0]
            dt = self._row_to_dataset_type(row)
            self._dataset_types[dt.name] = (tid, dt)
            self._dataset_types_by_id[tid] = dt
        return dt

    def remove_datasets(self, refs: Iterable[DatasetRef]) -> None:
        """Delete datasets from the registry (with their tag/calib/file records). Files are the caller's."""
        d = self._t["dataset"]
        ids = [r.id for r in refs]
        with self.transaction():
            for i in range(0, len(ids), 5000):
                self.db.execute(sa.delete(d).where(d.c.id.in_(ids[i : i + 5000])))

    # ------------------------------------------------------------------ datastore records (bridge)
    def insert_file_records(self, items: Sequence[tuple[uuid.UUID, StoredFileInfo]]) -> None:
        """Insert ``file_datastore_records`` rows."""
        if not items:
            return
        with self.transaction():
            self._execute_many(
                "insert_file",
                self._t["file_datastore_records"],
                [
                    {
                        "dataset_id": i,
                        "path": f.path,
                        "formatter": f.formatter,
                        "storage_class": f.storage_class,
                        "checksum": f.checksum,
                        "file_size": f.file_size,
                    }
                    for i, f in items
                ],
            )

    def get_file_records(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredFileInfo]:
        """Datastore records of datasets (missing ids are absent from the result)."""
        t = self._t["file_datastore_records"]
        out = {}
        if len(ids) == 1:
            rows = self.db.fast_fetch(
                "file_record",
                lambda: sa.select(t).where(t.c.dataset_id == sa.bindparam("id")),
                {"id": ids[0]},
            )
            if rows is not None:
                for _, path, formatter, sc, checksum, size in rows:
                    out[ids[0]] = StoredFileInfo(path, formatter, sc, checksum, size)
                return out
        for i in range(0, len(ids), 5000):
            for r in self._fetchall(sa.select(t).where(t.c.dataset_id.in_(list(ids[i : i + 5000])))):
                out[r.dataset_id] = StoredFileInfo(
                    r.path, r.formatter, r.storage_class, r.checksum, r.file_size
                )
        return out

    def count_file_references(self, paths: Iterable[str]) -> dict[str, int]:
        """How many datasets use each path (files shared by several datasets are kept until the last goes)."""
        t = self._t["file_datastore_records"]
        paths = list(paths)
        out = dict.fromkeys(paths, 0)
        for i in range(0, len(paths), 5000):
            stmt = (
                sa.select(t.c.path, sa.func.count())
                .where(t.c.path.in_(paths[i : i + 5000]))
                .group_by(t.c.path)
            )
            for p, n in self._fetchall(stmt):
                out[p] = n
        return out

    # ------------------------------------------------------------------ TAGGED / CALIBRATION
    def associate(self, tag: str, refs: Iterable[DatasetRef]) -> None:
        """Add datasets to a TAGGED collection (already-present datasets are skipped).

        Raises
        ------
        CollectionTypeError
            If ``tag`` is not TAGGED.
        ConflictingDefinitionError
            If the tag already holds another dataset with the same dataset type and data ID.
        """
        rec = self._collection(tag)
        if rec.type is not CollectionType.TAGGED:
            raise CollectionTypeError(
                f"collection {tag!r} is {rec.type.name}; associate needs a TAGGED collection"
            )
        t = self._t["dataset_tags"]
        refs = list(refs)
        with self.transaction():
            existing = {}
            for row in self.db.execute(
                sa.select(t.c.dataset_id, t.c.dataset_type_id, t.c.data_id_key).where(
                    t.c.collection_id == rec.id
                )
            ):
                existing[(row.dataset_type_id, row.data_id_key)] = row.dataset_id
            rows = []
            for r in refs:
                dt_id, _ = self._dataset_type_entry(r.dataset_type)
                k = (dt_id, r.data_id.key)
                if k in existing:
                    if existing[k] != r.id:
                        raise ConflictingDefinitionError(
                            f"TAGGED collection {tag!r} already holds another {r.dataset_type.name} "
                            f"for {r.data_id.required}"
                        )
                    continue
                existing[k] = r.id
                rows.append(
                    {
                        "collection_id": rec.id,
                        "dataset_id": r.id,
                        "dataset_type_id": dt_id,
                        "data_id_key": r.data_id.key,
                    }
                )
            if rows:
                self.db.execute(sa.insert(t), rows)

    def disassociate(self, tag: str, refs: Iterable[DatasetRef]) -> None:
        """Remove datasets from a TAGGED collection."""
        rec = self._collection(tag)
        if rec.type is not CollectionType.TAGGED:
            raise CollectionTypeError(
                f"collection {tag!r} is {rec.type.name}; disassociate needs a TAGGED collection"
            )
        t = self._t["dataset_tags"]
        ids = [r.id for r in refs]
        with self.transaction():
            self.db.execute(sa.delete(t).where(t.c.collection_id == rec.id, t.c.dataset_id.in_(ids)))

    def certify(self, collection: str, refs: Iterable[DatasetRef], timespan: Timespan) -> None:
        """Certify calibration datasets into a CALIBRATION collection for a validity range.

        Raises
        ------
        CollectionTypeError
            If the collection is not CALIBRATION or a dataset type is not a calibration.
        ConflictingDefinitionError
            If a range overlaps an existing one for the same dataset type and data ID (all
            conflicts are counted; nothing is written).
        """
        rec = self._collection(collection)
        if rec.type is not CollectionType.CALIBRATION:
            raise CollectionTypeError(
                f"collection {collection!r} is {rec.type.name}; certify needs a CALIBRATION collection"
            )
        refs = list(refs)
        t = self._t["dataset_calibs"]
        b, e = timespan.begin_ns, timespan.end_ns
        with self.transaction():
            self.db.lock_tables(t)
            rows = []
            seen: set[tuple[int, str]] = set()
            for r in refs:
                dt_id, dt = self._dataset_type_entry(r.dataset_type)
                if not dt.is_calibration:
                    raise CollectionTypeError(
                        f"dataset type {dt.name!r} is not a calibration type; register it with "
                        "is_calibration=True"
                    )
                k = (dt_id, r.data_id.key)
                if k in seen:
                    raise ConflictingDefinitionError(
                        f"two {dt.name} datasets for {r.data_id.required} certified for the same range"
                    )
                seen.add(k)
                rows.append(
                    {
                        "collection_id": rec.id,
                        "dataset_id": r.id,
                        "dataset_type_id": dt_id,
                        "data_id_key": r.data_id.key,
                        "validity_begin": b,
                        "validity_end": e,
                    }
                )
            conflicts = []
            for dt_id in {r["dataset_type_id"] for r in rows}:
                keys = [r["data_id_key"] for r in rows if r["dataset_type_id"] == dt_id]
                for i in range(0, len(keys), 5000):
                    conflicts += self.db.execute(
                        sa.select(t.c.data_id_key, t.c.validity_begin, t.c.validity_end).where(
                            t.c.collection_id == rec.id,
                            t.c.dataset_type_id == dt_id,
                            t.c.data_id_key.in_(keys[i : i + 5000]),
                            t.c.validity_begin < e,
                            sa.literal(b) < t.c.validity_end,
                        )
                    ).fetchall()
            if conflicts:
                c = conflicts[0]
                raise ConflictingDefinitionError(
                    f"{len(conflicts)} validity range conflict(s) in {collection!r}: e.g. data ID "
                    f"{c.data_id_key} is "
                    f"already certified for {Timespan.from_ns(c.validity_begin, c.validity_end)}, "
                    f"which overlaps {timespan}; "
                    "decertify the old range first"
                )
            if rows:
                self.db.execute(sa.insert(t), rows)

    def decertify(
        self,
        collection: str,
        dataset_type: str | DatasetType,
        timespan: Timespan,
        *,
        data_ids: Iterable[Mapping[str, Any]] | None = None,
    ) -> int:
        """Remove a time range from certifications, trimming or splitting ranges that overlap it.

        Returns
        -------
        n : `int`
            Number of validity ranges that were changed or removed.
        """
        rec = self._collection(collection)
        if rec.type is not CollectionType.CALIBRATION:
            raise CollectionTypeError(
                f"collection {collection!r} is {rec.type.name}; decertify needs a CALIBRATION collection"
            )
        dt_id, dt = self._dataset_type_entry(dataset_type)
        t = self._t["dataset_calibs"]
        conds = [
            t.c.collection_id == rec.id,
            t.c.dataset_type_id == dt_id,
            t.c.validity_begin < timespan.end_ns,
            sa.literal(timespan.begin_ns) < t.c.validity_end,
        ]
        if data_ids is not None:
            conds.append(t.c.data_id_key.in_([dt.make_data_id(d).key for d in data_ids]))
        with self.transaction():
            self.db.lock_tables(t)
            rows = self.db.execute(sa.select(t).where(*conds)).fetchall()
            new = []
            for r in rows:
                for part in Timespan.from_ns(r.validity_begin, r.validity_end).difference(timespan):
                    new.append(
                        {
                            "collection_id": r.collection_id,
                            "dataset_id": r.dataset_id,
                            "dataset_type_id": r.dataset_type_id,
                            "data_id_key": r.data_id_key,
                            "validity_begin": part.begin_ns,
                            "validity_end": part.end_ns,
                        }
                    )
            if rows:
                self.db.execute(sa.delete(t).where(t.c.calib_id.in_([r.calib_id for r in rows])))
            if new:
                self.db.execute(sa.insert(t), new)
        return len(rows)

    def query_calibration_validity(
        self, collection: str, dataset_type: str
    ) -> list[tuple[DatasetRef, Timespan]]:
        """Every certification of a dataset type in a CALIBRATION collection, by begin time."""
        rec = self._collection(collection)
        dt_id, dt = self._dataset_type_entry(dataset_type)
        t = self._t["dataset_calibs"]
        rows = self._fetchall(
            sa.select(t)
            .where(t.c.collection_id == rec.id, t.c.dataset_type_id == dt_id)
            .order_by(t.c.validity_begin)
        )
        refs = {r.id: r for r in self._refs_from_ids(list({r.dataset_id for r in rows}))}
        return [(refs[r.dataset_id], Timespan.from_ns(r.validity_begin, r.validity_end)) for r in rows]

    # ------------------------------------------------------------------ find
    def _find_stmt(self, kind: CollectionType, n: int) -> Any:
        """Return the find-by-data-ID query for ``n`` collections of one kind (built once per shape)."""
        key = ("find", kind, n)
        stmt = self._stmts.get(key)
        if stmt is not None:
            return stmt
        d = self._t["dataset"]
        f = self._t["file_datastore_records"]
        cids = [sa.bindparam(f"c{i}") for i in range(n)]
        cols = [d.c.id, d.c.run_id, f.c.path, f.c.formatter, f.c.storage_class, f.c.checksum, f.c.file_size]
        if kind is CollectionType.RUN:
            stmt = (
                sa.select(d.c.run_id.label("collection_id"), *cols)
                .select_from(d.outerjoin(f, f.c.dataset_id == d.c.id))
                .where(
                    d.c.dataset_type_id == sa.bindparam("dt"),
                    d.c.data_id_key == sa.bindparam("key"),
                    d.c.run_id.in_(cids),
                )
            )
        elif kind is CollectionType.TAGGED:
            t = self._t["dataset_tags"]
            stmt = (
                sa.select(t.c.collection_id, *cols)
                .select_from(t.join(d, d.c.id == t.c.dataset_id).outerjoin(f, f.c.dataset_id == d.c.id))
                .where(
                    t.c.dataset_type_id == sa.bindparam("dt"),
                    t.c.data_id_key == sa.bindparam("key"),
                    t.c.collection_id.in_(cids),
                )
            )
        else:
            t = self._t["dataset_calibs"]
            stmt = (
                sa.select(t.c.collection_id, *cols, t.c.validity_begin, t.c.validity_end)
                .select_from(t.join(d, d.c.id == t.c.dataset_id).outerjoin(f, f.c.dataset_id == d.c.id))
                .where(
                    t.c.dataset_type_id == sa.bindparam("dt"),
                    t.c.data_id_key == sa.bindparam("key"),
                    t.c.collection_id.in_(cids),
                    t.c.validity_begin < sa.bindparam("end"),
                    sa.bindparam("begin") < t.c.validity_end,
                )
            )
        self._stmts[key] = stmt
        return stmt

    def _run_find(self, kind: CollectionType, params: dict[str, Any], cids: list[int]) -> list[tuple]:
        n = len(cids)
        for i, c in enumerate(cids):
            params[f"c{i}"] = c
        rows = self.db.fast_fetch(("find", kind, n), lambda: self._find_stmt(kind, n), params)
        if rows is None:
            rows = [tuple(r) for r in self._fetchall(self._find_stmt(kind, n), params)]
        return rows

    def find_dataset_with_info(
        self,
        dataset_type: DatasetType | str,
        data_id: Mapping[str, Any] | None,
        *,
        collections: str | Iterable[str] | None,
        timespan: Timespan | None = None,
        **dims: Any,
    ) -> tuple[DatasetRef, StoredFileInfo | None] | None:
        """Find a dataset like `find_dataset` and return its datastore record too (or `None`)."""
        dt_id, dt = self._dataset_type_entry(dataset_type)
        values = dict(data_id or {})
        values.update(dims)
        full = self.expand_data_id(values) if (dt.is_calibration and timespan is None) else None
        coord = self._expand_for(dt, full if full is not None else (data_id if not dims else values))
        if dt.is_calibration and timespan is None and full is not None:
            timespan = full.timespan
        search = self.resolve_collections(collections)
        rank = {c.id: i for i, c in enumerate(search)}
        by_kind: dict[CollectionType, list[int]] = {}
        for c in search:
            by_kind.setdefault(c.type, []).append(c.id)
        best = None
        for kind, cids in by_kind.items():
            if kind is CollectionType.CHAINED:
                continue
            params: dict[str, Any] = {"dt": dt_id, "key": coord.key, "cids": cids}
            if kind is CollectionType.CALIBRATION:
                if timespan is None:
                    params["begin"], params["end"] = TIMESPAN_MIN, TIMESPAN_MAX
                else:
                    params["begin"], params["end"] = timespan.begin_ns, timespan.end_ns
            rows = self._run_find(kind, params, cids)
            if kind is CollectionType.CALIBRATION:
                per_coll: dict[int, list] = {}
                for r in rows:
                    per_coll.setdefault(r[0], []).append(r)
                rows = []
                for cid, rs in per_coll.items():
                    if len(rs) > 1:
                        what = "no time was given" if timespan is None else f"the time span {timespan}"
                        raise CalibrationLookupError(
                            f"ambiguous calibration lookup of {dt.name} {coord.required} in "
                            f"{self._collection_by_id(cid).name!r}: "
                            f"{len(rs)} validity ranges match {what}; give an exposure (or "
                            "timespan) inside one range"
                        )
                    rows.append(rs[0])
            for r in rows:
                if best is None or rank[r[0]] < rank[best[0]]:
                    best = r
        if best is None:
            return None
        _, did, run_id, path, formatter, sc, checksum, size = best[:8]
        ref = DatasetRef(
            dt,
            coord,
            self._collection_by_id(run_id).name,
            did if isinstance(did, uuid.UUID) else uuid.UUID(did),
        )
        info = None if path is None else StoredFileInfo(path, formatter, sc, checksum, size)
        return ref, info

    def find_dataset(
        self,
        dataset_type: DatasetType | str,
        data_id: Mapping[str, Any] | None = None,
        *,
        collections: str | Iterable[str] | None,
        timespan: Timespan | None = None,
        **dims: Any,
    ) -> DatasetRef | None:
        """Find the first dataset of a type and data ID along the collection search path.

        Parameters
        ----------
        dataset_type : `DatasetType` or `str`
        data_id : mapping, optional
            May hold more dimensions than the dataset type (e.g. an exposure for a flat: its
            physical_filter is derived, and for calibrations its timespan is the lookup time).
        collections : `str` or iterable of `str`
            Names or glob patterns; CHAINED collections are searched in order.
        timespan : `Timespan`, optional
            Lookup time for CALIBRATION collections (default: the data ID's exposure timespan).

        Returns
        -------
        ref : `DatasetRef` or `None`

        Raises
        ------
        MissingDatasetTypeError, MissingCollectionError, DataIdError
        CalibrationLookupError
            If more than one validity range in a CALIBRATION collection matches.
        """
        found = self.find_dataset_with_info(
            dataset_type, data_id, collections=collections, timespan=timespan, **dims
        )
        return None if found is None else found[0]

    # ------------------------------------------------------------------ queries
    def query_datasets(
        self,
        dataset_type: str | DatasetType | Iterable[str | DatasetType],
        *,
        collections: str | Iterable[str] | None = None,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        find_first: bool = True,
        limit: int | None = None,
        order_by: str | Sequence[str] | None = None,
        timespan: Timespan | None = None,
        **dims: Any,
    ) -> list[DatasetRef]:
        """Datasets of one or more types in collections, filtered by a query expression.

        Parameters
        ----------
        dataset_type : `str`, `DatasetType` or iterable of them
            Names may be glob patterns (``"cp*"``).
        collections : `str` or iterable of `str`
            Names or glob patterns (default: every collection, without find-first).
        where : `str`
            Data query expression (middleware-reference §8), e.g.
            ``"exposure.observation_type = 'flat' AND detector IN (0..3)"``.
        bind : mapping, optional
            Values of ``:name`` placeholders in ``where``.
        data_id : mapping, optional
            Dimension values every result must have (like ``**dims``).
        find_first : `bool`
            Keep only the first dataset per data ID along the search path.
        limit : `int`, optional
            Return at most this many (per dataset type).
        order_by : `str` or sequence of `str`
            Dimensions or ``element.field``; ``-`` prefix for descending.
        timespan : `Timespan`, optional
            Keep only calibrations whose validity overlaps this span.

        Returns
        -------
        refs : `list` of `DatasetRef`
            With expanded data IDs.

        Raises
        ------
        MissingDatasetTypeError, MissingCollectionError, DataIdError
        InvalidQueryError
            For a malformed expression or an unknown dimension/field.
        CalibrationLookupError
            With ``find_first`` over a CALIBRATION collection when a data ID has several
            certified ranges and no ``timespan`` picks one.
        """
        from ._query import DatasetQuery

        dts = self._resolve_dataset_types(dataset_type)
        if _has_pattern(dataset_type):
            # Types matched by a pattern that lack a dimension the query names are skipped.
            needed = self._query_dimensions(where, data_id, dims)
            dts = [dt for dt in dts if needed <= set(dt.dimensions + dt.implied)]
        search = self._search_path(collections)
        if collections is None:
            find_first = False
        out: list[DatasetRef] = []
        for dt in dts:
            q = DatasetQuery(self, dt, search, timespan=timespan)
            out += q.run(
                where=where,
                bind=bind,
                data_id=data_id,
                dims=dims,
                find_first=find_first,
                limit=limit,
                order_by=order_by,
            )
        return out

    def _query_dimensions(
        self, where: str, data_id: Mapping[str, Any] | None, dims: Mapping[str, Any]
    ) -> set[str]:
        """Dimensions named by a query's expression and data ID constraints."""
        from .queries import ExpressionError, parse_expression, referenced_identifiers

        names = set(data_id or {}) | set(dims)
        if where and where.strip():
            try:
                idents = referenced_identifiers(parse_expression(where))
            except ExpressionError:
                idents = []  # reported when the query is compiled
            names |= {i.split(".")[0] for i in idents}
        return {n for n in names if n in self.universe}

    def _resolve_dataset_types(self, dataset_type: Any) -> list[DatasetType]:
        if isinstance(dataset_type, (str, DatasetType)):
            dataset_type = [dataset_type]
        out: list[DatasetType] = []
        for x in dataset_type:
            if isinstance(x, str) and has_glob(x):
                out += self.query_dataset_types(x)
            else:
                out.append(self.get_dataset_type(x) if isinstance(x, str) else self._dataset_type_entry(x)[1])
        return out

    def query_data_ids(
        self,
        dimensions: str | Iterable[str],
        *,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        datasets: str | Iterable[str] | None = None,
        collections: str | Iterable[str] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        **dims: Any,
    ) -> list[DataCoordinate]:
        """Return data IDs of a set of dimensions that exist in the registry and satisfy a query.

        Parameters
        ----------
        dimensions : `str` or iterable of `str`
            The dimensions (``["exposure", "detector"]``); closed under requires/implies.
        where, bind, data_id, order_by, limit, **dims
            As for `query_datasets`.
        datasets : `str` or iterable of `str`, optional
            Keep only data IDs for which datasets of these types exist in ``collections``.
        collections : `str` or iterable of `str`, optional
            Needed with ``datasets``.

        Returns
        -------
        data_ids : `list` of `DataCoordinate`
            Expanded, distinct.

        Raises
        ------
        DataIdError, InvalidQueryError, MissingDatasetTypeError, MissingCollectionError
        """
        from ._query import DataIdQuery

        if isinstance(dimensions, str):
            dimensions = [dimensions]
        dts = None
        search = None
        if datasets is not None:
            dts = self._resolve_dataset_types(datasets)
            search = self._search_path(collections)
        q = DataIdQuery(self, list(dimensions), datasets=dts, search=search)
        return q.run(where=where, bind=bind, data_id=data_id, dims=dims, order_by=order_by, limit=limit)

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

        Raises
        ------
        DataIdError
            If ``element`` is not a dimension.
        InvalidQueryError
            For a malformed expression or an unknown field.
        """
        from ._query import RecordQuery

        self.universe[element]
        q = RecordQuery(self, element)
        return q.run(where=where, bind=bind, data_id=data_id, dims=dims, order_by=order_by, limit=limit)


def _tuple_getter(positions: Sequence[int]) -> Any:
    """Return a function mapping a row tuple to the tuple of its values at ``positions``."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:
        i = positions[0]
        return lambda r: (r[i],)
    return lambda r: ()


def _has_pattern(dataset_type: Any) -> bool:
    if isinstance(dataset_type, str):
        return has_glob(dataset_type)
    if isinstance(dataset_type, DatasetType):
        return False
    return any(isinstance(x, str) and has_glob(x) for x in dataset_type)


def time_to_ns_now() -> int:
    """Return the current time in TAI ns (TAI-UTC taken as 37 s, exact since 2017)."""
    import time

    return time.time_ns() + 37_000_000_000
