"""Dimension records: the tables of the dimension elements, their caches and data ID expansion.

Small dimension tables (instrument, band, physical_filter, detector) are cached client-side in
full; records of the other elements (exposure, day_obs, ...) are cached as they are read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..._errors import ConflictingDefinitionError, DataIdError
from ...datasets import DatasetType
from ...dimensions import DataCoordinate, DimensionElement, DimensionRecord, DimensionUniverse
from ...timespan import Timespan
from ...utils import RecordKeyGetter, tuple_getter
from ..database import Database

__all__ = ["SMALL_ELEMENTS", "BatchRecords", "DimensionRecordManager"]

SMALL_ELEMENTS = ("instrument", "band", "physical_filter", "detector")
"""Dimension tables cached client-side in full."""



class BatchRecords(Mapping[tuple, DimensionRecord]):
    """The records of one dimension element for a batch of query rows, read on first use.

    The first lookup reads the records every row of the batch needs in a few queries
    (`DimensionRecordManager.prefetch`) and keeps a snapshot of the element's cache, so later
    changes to the registry's caches (a rolled-back transaction clears them) do not reach it.

    Parameters
    ----------
    manager : `DimensionRecordManager`
        Reads the records.
    element : `str`
        The dimension element.
    rows : sequence of row tuples
        The query rows (kept until the first lookup).
    get_key : callable
        Row -> the element's record key (required values, then its own).
    """

    __slots__ = ("_element", "_get_key", "_lock", "_manager", "_records", "_rows")

    def __init__(
        self,
        manager: DimensionRecordManager,
        element: str,
        rows: Sequence[Sequence[Any]],
        get_key: RecordKeyGetter,
    ) -> None:
        self._manager: DimensionRecordManager | None = manager
        self._element = element
        self._rows: Sequence[Sequence[Any]] | None = rows
        self._get_key = get_key
        self._records: dict[tuple, DimensionRecord] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[tuple, DimensionRecord]:
        with self._lock:
            if self._records is None:
                manager, rows, element = self._manager, self._rows, self._element
                assert manager is not None and rows is not None
                if element in SMALL_ELEMENTS:
                    manager.prefetch(element, ())
                else:
                    manager.prefetch(element, {k for k in map(self._get_key, rows) if k[-1] is not None})
                self._records = manager.snapshot(element)
                self._manager = self._rows = None
            return self._records

    @property
    def loaded(self) -> bool:
        """Whether the records were read."""
        return self._records is not None

    def get(self, key: tuple, default: Any = None) -> Any:
        """Return the record of ``key`` (`None` if there is none); the first call reads them all."""
        records = self._records
        if records is None:
            records = self._load()
        return records.get(key, default)

    def __getitem__(self, key: tuple) -> DimensionRecord:
        records = self._records
        if records is None:
            records = self._load()
        return records[key]

    def __iter__(self) -> Iterator[tuple]:
        records = self._records
        return iter(records if records is not None else self._load())

    def __len__(self) -> int:
        records = self._records
        return len(records if records is not None else self._load())


class DimensionRecordManager:
    """Owner of the dimension element tables.

    Parameters
    ----------
    db : `Database`
        The opened database.
    universe : `DimensionUniverse`
        The dimension universe.
    """

    def __init__(self, db: Database, universe: DimensionUniverse) -> None:
        self.db = db
        self.universe = universe
        self._tables = db.registry_schema.dimensions
        self._records: dict[str, dict[tuple, DimensionRecord]] = {e: {} for e in universe.names}
        self._complete: set[str] = set()
        self._stmts: dict[str, sa.Select] = {}
        self._expanded: dict[tuple, DataCoordinate] = {}

    def table(self, element: str) -> sa.Table:
        """Return the table of a dimension element (for the query builders)."""
        return self._tables[element]

    def clear_caches(self) -> None:
        """Forget every cached record and expanded data ID (after a rolled-back transaction)."""
        for d in self._records.values():
            d.clear()
        self._complete.clear()
        self._expanded.clear()

    # -- reading ----------------------------------------------------------------------------------
    @staticmethod
    def record_key(el: DimensionElement, values: Mapping[str, Any]) -> tuple:
        """Return the cache key of ``el``'s record in a data ID: required values, then its own."""
        return tuple(values[r] for r in el.requires) + (values[el.name],)

    def row_to_record(self, el: DimensionElement, row: sa.Row) -> DimensionRecord:
        """Build a `DimensionRecord` from a row of ``el``'s table."""
        m = row._mapping
        values = {f: m[f] for f in el.record_fields if f != "timespan"}
        if el.temporal:
            b, e = m["timespan_begin"], m["timespan_end"]
            values["timespan"] = None if b is None and e is None else Timespan.from_ns(b, e)
        return DimensionRecord(el, values)

    def _load_complete(self, element: str) -> None:
        el = self.universe[element]
        cache = self._records[element]
        for row in self.db.fetchall(sa.select(self._tables[element])):
            rec = self.row_to_record(el, row)
            cache[tuple(rec.get(r) for r in el.requires) + (rec.data_id_value,)] = rec
        self._complete.add(element)

    def get(self, element: str, data_id: Mapping[str, Any]) -> DimensionRecord | None:
        """Return the record of ``element`` for a data ID holding its key values, or `None`. Cached."""
        el = self.universe[element]
        key = self.record_key(el, data_id)
        cache = self._records[element]
        rec = cache.get(key)
        if rec is not None:
            return rec
        if element in SMALL_ELEMENTS:
            # A miss reloads the whole (small) table once: another process may have added it.
            self._load_complete(element)
            return cache.get(key)
        t = self._tables[element]
        cols = list(el.requires) + [el.primary_key.name]
        stmt = self._stmts.get(element)
        if stmt is None:
            stmt = sa.select(t).where(*[t.c[c] == sa.bindparam(f"k_{c}") for c in cols])
            self._stmts[element] = stmt
        rows = self.db.fetchall(stmt, {f"k_{c}": v for c, v in zip(cols, key)})
        if not rows:
            return None
        rec = self.row_to_record(el, rows[0])
        cache[key] = rec
        return rec

    def prefetch(self, element: str, keys: Iterable[tuple]) -> None:
        """Load many records of an element in a few queries (small elements: the whole table once)."""
        el = self.universe[element]
        cache = self._records[element]
        if element in SMALL_ELEMENTS:
            if element not in self._complete:
                self._load_complete(element)
            return
        missing = {k for k in keys if k not in cache}
        if not missing:
            return
        t = self._tables[element]
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
                for row in self.db.fetchall(stmt):
                    rec = self.row_to_record(el, row)
                    cache[prefix + (rec.data_id_value,)] = rec

    def snapshot(self, element: str) -> dict[tuple, DimensionRecord]:
        """Return a copy of the cached records of an element (a failed transaction clears the live cache)."""
        return dict(self._records[element])

    def lazy_coordinates(
        self,
        required: tuple[str, ...],
        dims: tuple[str, ...],
        rows: Sequence[Sequence[Any]],
        position: Mapping[str, int],
    ) -> tuple[RecordKeyGetter, tuple[tuple[str, Mapping[tuple, DimensionRecord], RecordKeyGetter], ...]]:
        """Return getters for `DataCoordinate._expanded_lazily`; records are read when first asked for.

        Each dimension's records for the whole batch of ``rows`` are read (`prefetch`) the first
        time any data ID of the batch needs its records, then kept as a snapshot of the cache, as
        an eager prefetch at query time would have kept them: a query whose data IDs are only
        compared, hashed or printed reads no record at all.

        Parameters
        ----------
        required : `tuple` [`str`, ...]
            The required dimensions of the data IDs.
        dims : `tuple` [`str`, ...]
            Required then implied dimensions.
        rows : sequence of row tuples
            Rows holding the dimension values.
        position : mapping [`str`, `int`]
            Column position of each dimension in the rows.

        Returns
        -------
        get_values : callable
            Row -> the values of ``dims``.
        record_getters : `tuple`
            ``(dimension, records by key, row -> key)`` per dimension; the records are a
            `BatchRecords`.
        """
        u = self.universe
        getters = []
        for d in dims:
            get_key = tuple_getter([position[q] for q in u[d].requires] + [position[d]])
            getters.append((d, BatchRecords(self, d, rows, get_key), get_key))
        return tuple_getter([position[d] for d in dims]), tuple(getters)

    # -- writing ----------------------------------------------------------------------------------
    def normalize(self, el: DimensionElement, record: Mapping[str, Any]) -> dict[str, Any]:
        """Return the table row of a record given as field -> value (checked and coerced).

        Raises
        ------
        DataIdError
            If a field is unknown, or a required or non-nullable one is missing.
        """
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

    def insert(self, element: str, rows: list[dict[str, Any]], *, skip_existing: bool) -> int:
        """Insert normalized rows (inside the caller's transaction); return how many were new.

        Raises
        ------
        ConflictingDefinitionError
            If a key exists and ``skip_existing`` is false.
        DataIdError
            If a row refers to a value that is not registered.
        """
        el = self.universe[element]
        t = self._tables[element]
        keycols = list(el.requires) + [el.primary_key.name]
        existing = self._existing_keys(t, keycols, [tuple(r[c] for c in keycols) for r in rows])
        if existing:
            if not skip_existing:
                raise ConflictingDefinitionError(
                    f"{element} record(s) {sorted(existing)[:5]} already exist; use skip_existing=True "
                    "(or sync_dimension_data) to keep them"
                )
            rows = [r for r in rows if tuple(r[c] for c in keycols) not in existing]
        inserted = len(rows)
        if rows:
            try:
                with self.db.transaction(savepoint=True):
                    if skip_existing and self.db.dialect_name == "postgresql":
                        # Another process may insert the same keys between the check above and
                        # this statement (two ingests of one night): skip those rows too.
                        from sqlalchemy.dialects.postgresql import insert as pg_insert

                        stmt = pg_insert(t).on_conflict_do_nothing(index_elements=keycols)
                        result = self.db.execute(stmt.returning(t.c[keycols[-1]]), rows)
                        inserted = len(result.fetchall())
                    else:
                        self.db.execute(sa.insert(t), rows)
            except sa.exc.IntegrityError as exc:
                raise self._insert_error(element, el, t, keycols, rows, exc) from None
        self._records[element].clear()
        self._complete.discard(element)
        self._expanded.clear()
        return inserted

    def _insert_error(
        self,
        element: str,
        el: DimensionElement,
        t: sa.Table,
        keycols: list[str],
        rows: list[dict[str, Any]],
        exc: sa.exc.IntegrityError,
    ) -> Exception:
        """Tell a key that another process inserted meanwhile from a value that is not registered."""
        keys = [tuple(r[c] for c in keycols) for r in rows]
        existing = self._existing_keys(t, keycols, keys)
        if existing:
            return ConflictingDefinitionError(
                f"{element} record(s) {sorted(existing)[:5]} were inserted by another process at the "
                "same time; use skip_existing=True (or sync_dimension_data) to keep them"
            )
        if len(set(keys)) < len(keys):
            return ConflictingDefinitionError(f"the {element} records to insert repeat a key")
        return DataIdError(
            f"cannot insert {element} records: a value they refer to (one of "
            f"{', '.join(el.requires + el.implies)}) is not registered ({exc.orig})"
        )

    def sync_existing(
        self, element: str, record: Mapping[str, Any], *, update: bool
    ) -> bool | dict[str, Any] | None:
        """Compare a record with the registered one of the same key (`Registry.sync_dimension_data`).

        Returns
        -------
        result : `None`, `False` or `dict`
            `None` if no record has the key, `False` if the given fields match, else (with
            ``update``, after overwriting them) the old values of the fields that differed.

        Raises
        ------
        ConflictingDefinitionError
            If given fields differ and ``update`` is false (names the fields).
        """
        el = self.universe[element]
        row = self.normalize(el, record)
        pk = el.primary_key.name
        existing = self.get(element, {**row, element: row[pk]})
        if existing is None:
            return None
        old = self.normalize(el, existing.to_dict())
        # Compare only the fields the caller gave (the key may be given under the element name).
        given = {pk if k == element else k for k in record}
        if "timespan" in given:
            given |= {"timespan_begin", "timespan_end"}
        diffs = [k for k in row if k in given and row[k] != old.get(k)]
        if not diffs:
            return False
        if not update:
            raise ConflictingDefinitionError(
                f"{element} {row[pk]!r} already exists with different "
                + ", ".join(f"{k} ({old[k]!r} != {row[k]!r})" for k in diffs)
            )
        t = self._tables[element]
        keycols = list(el.requires) + [pk]
        self.db.execute(
            sa.update(t).where(*[t.c[c] == row[c] for c in keycols]).values({k: row[k] for k in diffs})
        )
        self._records[element].clear()
        self._complete.discard(element)
        self._expanded.clear()
        return {k: old.get(k) for k in diffs}

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

    # -- data IDs ---------------------------------------------------------------------------------
    def expand_data_id(
        self, data_id: Mapping[str, Any] | None, dimensions: Iterable[str] | None, dims: Mapping[str, Any]
    ) -> DataCoordinate:
        """Validate a data ID and attach its records (see `Registry.expand_data_id`)."""
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
                rec = self.get(d, values)
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

    def expand_for(self, dataset_type: DatasetType, data_id: Mapping[str, Any]) -> DataCoordinate:
        """Expand a data ID to exactly the dimensions of a dataset type (a `DataIdError` names the type)."""
        if (
            isinstance(data_id, DataCoordinate)
            and data_id.dimensions == dataset_type.dimensions
            and data_id.has_records()
        ):
            return data_id
        try:
            return self.expand_data_id(data_id, dataset_type.dimensions, {})
        except DataIdError as exc:
            raise DataIdError(f"dataset type {dataset_type.name!r}: {exc}") from None
