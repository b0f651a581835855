"""Read-only ``query-datasets`` on a SQLite repository with the stdlib ``sqlite3`` module.

The ``butler`` CLI is a short-lived process: importing SQLAlchemy alone costs about 0.3 s of
the 0.4 s budget of a query. For the common ``butler query-datasets REPO TYPE --collections C
--where ...`` on a SQLite repository this module answers without importing SQLAlchemy. It
compiles the ``--where`` expression with the same compiler as the registry
(`butler.registry.queries.compile_expression`, SQL-text backend with ``?`` placeholders) and
renders the same `butler.registry.queries._datasets.DatasetQueryShape` as the registry's
`butler.registry._query.DatasetQuery`, with the sqlite3 text renderer instead of SQLAlchemy.

It is the SQLite backend's read-only fast path: `butler.registry.backends.SqliteBackend.open_read_only_fast`
opens a `SqliteFastRegistry` (reached through `butler.registry.backends.open_read_only_fast`).
It never reports an error itself: anything it does not handle exactly like the registry
(a URL with options, an unknown name, a bad expression, ``--order-by``/``--limit``, an ambiguous
calibration) raises `FastPathUnavailableError`, and the caller runs the SQLAlchemy path, which gives
the canonical result or error message. Set ``BUTLER_CLI_FAST=0`` to always use that path.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config import ROOT_TOKEN
from .._errors import FastPathUnavailableError
from ..collections import CollectionType, flatten_chains, glob_filter, has_glob
from ..datasets import DatasetType
from ..dimensions import DimensionRecord, DimensionUniverse, default_universe
from ..timespan import TIMESPAN_MAX, TIMESPAN_MIN, Timespan
from ._schema_version import schema_version
from ._sqlite_uri import sqlite_read_only_uri
from .queries import (
    DIMENSION_KIND,
    SQLITE_TEXT,
    DimensionColumnResolver,
    ResolvedColumn,
    SqlText,
    compile_expression,
    parse_expression,
)
from .queries._datasets import (
    DatasetQueryShape,
    _render_subquery_text,
    query_dimensions,
    render_sqlite_text,
)

__all__ = ["FastPathUnavailableError", "FastRef", "SqliteFastRegistry"]


@dataclass(frozen=True)
class FastRef:
    """What the CLI prints of a dataset: type name, RUN name, UUID and data ID values.

    ``data_id`` holds the required and implied dimension values that are not NULL (like an
    expanded `DataCoordinate` of the registry path).
    """

    dataset_type: DatasetType
    run: str
    id: uuid.UUID
    data_id: Mapping[str, Any]


@dataclass
class _Collection:
    id: int
    name: str
    type: CollectionType


class SqliteFastRegistry:
    """A read-only ``sqlite3`` connection to a SQLite registry with its collections and dataset types.

    A stand-in for `Registry` in the CLI's listings (``query_collections``,
    ``get_collection_type``, ``get_collection_chain``, ``query_dataset_types``) and its
    `query_datasets`, with the registry's results; ``close()`` closes it.

    Parameters
    ----------
    root : `pathlib.Path`
        Repository root.
    url : `str`
        The registry URL of its ``butler.yaml`` (``sqlite:///<root>/registry.sqlite3``).

    Raises
    ------
    FastPathUnavailableError
        When the repository must be opened with `Butler` (a URL with options, no registry file,
        another schema version ...); the `Butler` then reports any error.
    """

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        prefix = "sqlite:///"
        if not url.startswith(prefix) or "?" in url:
            raise FastPathUnavailableError("not a plain SQLite registry")
        path = Path(url[len(prefix) :].replace(ROOT_TOKEN, str(self.root)))
        if not path.is_file():
            raise FastPathUnavailableError(f"no registry file {path}")
        try:
            self.conn = sqlite3.connect(sqlite_read_only_uri(path), uri=True, timeout=5.0)
            attrs = dict(self.conn.execute("SELECT name, value FROM butler_attributes").fetchall())
        except sqlite3.Error as exc:
            raise FastPathUnavailableError(str(exc)) from None
        self.universe: DimensionUniverse = default_universe()
        if attrs.get("schema_version") != str(schema_version()) or attrs.get("dimensions_version") != str(
            self.universe.version
        ):
            raise FastPathUnavailableError("schema version mismatch")
        self.collections = {
            name: _Collection(cid, name, CollectionType(ctype))
            for cid, name, ctype in self.conn.execute(
                "SELECT collection_id, name, type FROM collection ORDER BY name"
            )
        }
        self.by_id = {c.id: c for c in self.collections.values()}
        self.close = self.conn.close
        self.chains: dict[int, list[int]] = {}
        for parent, child in self.conn.execute(
            "SELECT parent, child FROM collection_chain ORDER BY parent, position"
        ):
            self.chains.setdefault(parent, []).append(child)

    # -- collections (as Registry.resolve_collections / _flatten) -------------------------------
    def _get(self, name: str) -> _Collection:
        rec = self.collections.get(name)
        if rec is None:
            raise FastPathUnavailableError(f"no collection {name!r}")
        return rec

    def flatten(self, names: Sequence[str]) -> list[_Collection]:
        """Return the collections of ``names`` with CHAINED ones expanded in search order.

        Raises
        ------
        FastPathUnavailableError
            If a name is unknown or a chain nests too deep (the registry path then answers).
        """
        flat = flatten_chains(
            names,
            lambda n: self._get(n).type is CollectionType.CHAINED,
            lambda n: [self.by_id[c].name for c in self.chains.get(self._get(n).id, [])],
            lambda n: FastPathUnavailableError("chain too deep"),
        )
        return [self.collections[n] for n in flat]

    def resolve_collections(self, collections: Sequence[str]) -> list[_Collection]:
        """Return the collections named by ``collections`` (glob patterns expanded), flattened.

        Raises
        ------
        FastPathUnavailableError
            If a name is unknown (the registry path then gives its own error).
        """
        names: list[str] = []
        for c in collections:
            if has_glob(c):
                names.extend(glob_filter(c, list(self.collections)))
            else:
                self._get(c)
                names.append(c)
        return self.flatten(names)

    # -- the read-only Registry methods the listing commands use (same names and results) -----
    def query_collections(
        self,
        pattern: str | Sequence[str] = "*",
        types: Sequence[str | CollectionType] | None = None,
        flatten_chains: bool = False,
    ) -> list[str]:
        """As `Registry.query_collections`."""
        names = glob_filter(pattern, list(self.collections))  # sorted by name
        want = set(CollectionType) if types is None else {CollectionType.from_name(t) for t in types}
        if flatten_chains:
            names = [c.name for c in self.flatten(names)] if names else []
        return [n for n in names if self._get(n).type in want]

    def get_collection_type(self, name: str) -> CollectionType:
        """As `Registry.get_collection_type`."""
        return self._get(name).type

    def get_collection_chain(self, parent: str) -> tuple[str, ...]:
        """As `Registry.get_collection_chain`."""
        rec = self._get(parent)
        if rec.type is not CollectionType.CHAINED:
            raise FastPathUnavailableError(f"{parent!r} is not CHAINED")
        return tuple(self.by_id[c].name for c in self.chains.get(rec.id, []))

    def query_dataset_types(self, pattern: str | Sequence[str] = "*") -> list[DatasetType]:
        """As `Registry.query_dataset_types` (sorted by name)."""
        rows = self._dataset_type_rows()
        keep = set(glob_filter(pattern, [r[1] for r in rows]))
        return [self._dataset_type(r) for r in rows if r[1] in keep]

    # -- dataset types ---------------------------------------------------------------------------
    def _dataset_type_rows(self) -> list[tuple]:
        """Return ``(id, name, dimensions, storage class, is_calibration)`` of every type, by name."""
        return self.conn.execute(
            "SELECT dataset_type_id, name, dimensions, storage_class, is_calibration FROM dataset_type "
            "ORDER BY name"
        ).fetchall()

    def _dataset_type(self, row: tuple) -> DatasetType:
        _, name, dims, storage_class, is_calib = row
        return DatasetType(
            name, [d for d in dims.split(",") if d], storage_class, bool(is_calib), universe=self.universe
        )

    def dataset_types(self, patterns: Sequence[str]) -> list[tuple[int, DatasetType]]:
        """Return ``(dataset_type_id, DatasetType)`` of the registered types matching ``patterns``.

        Raises
        ------
        FastPathUnavailableError
            If a plain name is not registered (the registry path then gives its own error).
        """
        rows = self._dataset_type_rows()
        by_name = {r[1]: r for r in rows}
        chosen: list[tuple] = []
        for p in patterns:
            if has_glob(p):
                keep = set(glob_filter(p, [r[1] for r in rows]))
                chosen += [r for r in rows if r[1] in keep]
            elif p in by_name:
                chosen.append(by_name[p])
            else:
                raise FastPathUnavailableError(f"no dataset type {p!r}")
        return [(r[0], self._dataset_type(r)) for r in chosen]

    def query_datasets(
        self,
        dataset_types: Sequence[str],
        *,
        collections: Sequence[str] | None,
        where: str = "",
        find_first: bool = False,
        with_uris: bool = False,
    ) -> tuple[list[FastRef], dict[uuid.UUID, str], tuple[str, ...]]:
        """Datasets of the given types in collections, as `Registry.query_datasets` finds them.

        Parameters
        ----------
        dataset_types : sequence of `str`
            Names or glob patterns.
        collections : sequence of `str` or `None`
            Names or glob patterns; `None` = every RUN, TAGGED and CALIBRATION collection, no
            find-first.
        where : `str`
            Data query expression.
        find_first : `bool`
            First dataset per data ID along the search path.
        with_uris : `bool`
            Also return each dataset's absolute file path.

        Returns
        -------
        refs : `list` [`FastRef`]
            Unsorted, in the registry path's per-type order.
        uris : `dict` [`uuid.UUID`, `str`]
            Absolute file paths (empty unless ``with_uris``).
        dimension_order : `tuple` [`str`, ...]
            The universe's dimension names in order.

        Raises
        ------
        FastPathUnavailableError
            Whenever the SQLAlchemy registry must answer instead (including every error case).
        """
        try:
            return _query(self, dataset_types, collections, where, find_first, with_uris)
        except sqlite3.Error as exc:
            raise FastPathUnavailableError(str(exc)) from None

    def query_dimension_records(
        self, element: str, *, where: str = "", limit: int | None = None
    ) -> list[DimensionRecord]:
        """Return the records of one dimension element, as `Registry.query_dimension_records` finds them.

        Parameters
        ----------
        element : `str`
            Dimension element name.
        where : `str`
            Data query expression.
        limit : `int`, optional
            At most this many records (in the registry's default order: the element's keys).

        Returns
        -------
        records : `list` [`DimensionRecord`]
            In the registry's order.

        Raises
        ------
        FastPathUnavailableError
            Whenever the SQLAlchemy registry must answer instead (including every error case).
        """
        try:
            return _records(self, element, where, limit)
        except FastPathUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - the registry path reports it
            raise FastPathUnavailableError(str(exc)) from None

    def query_data_ids(
        self,
        dimensions: Sequence[str],
        *,
        where: str = "",
        datasets: Sequence[str] | None = None,
        collections: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Return data IDs of dimensions as `Registry.query_data_ids` finds them.

        Parameters
        ----------
        dimensions : sequence of `str`
            Dimension names (closed under requires/implies).
        where : `str`
            Data query expression.
        datasets : sequence of `str`, optional
            Only data IDs with datasets of these types (names or glob patterns) in ``collections``.
        collections : sequence of `str`, optional
            Collections searched for ``datasets`` (`None`: every RUN, TAGGED and CALIBRATION one).
        limit : `int`, optional
            At most this many data IDs (in the registry's default order: the required dimensions).

        Returns
        -------
        data_ids : `list` [`dict` [`str`, `typing.Any`]]
            Required then implied dimension values that are not NULL, in the registry's order
            (what ``dict(data_coordinate)`` gives on the registry path).

        Raises
        ------
        FastPathUnavailableError
            Whenever the SQLAlchemy registry must answer instead (including every error case).
        """
        try:
            return _data_ids(self, dimensions, where, datasets, collections, limit)
        except FastPathUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - the registry path reports it
            raise FastPathUnavailableError(str(exc)) from None


class _Resolver(DimensionColumnResolver):
    """`DimensionColumnResolver` over the dataset subquery ``ds`` (SQL text), as `QueryContext`."""

    sql_backend = SQLITE_TEXT

    def __init__(
        self,
        universe: DimensionUniverse,
        dims: Sequence[str],
        dataset_type: str,
        conn: sqlite3.Connection | None = None,
    ) -> None:
        self.conn = conn
        self.universe = universe
        self.dims = tuple(dims)
        self.dataset_type = dataset_type
        self.joins: list[str] = []
        self.joined: set[str] = set()
        self.dataset_fields = {dataset_type: self.dataset_field}

    def table(self, element: str) -> str:
        alias = f"t_{element}"
        if element not in self.joined:
            el = self.universe[element]
            on = [f"{alias}.{r} = ds.{r}" for r in el.requires]
            on.append(f"{alias}.{el.primary_key.name} = ds.{element}")
            self.joins.append(f' JOIN "{element}" AS {alias} ON {" AND ".join(on)}')
            self.joined.add(element)
        return alias

    def dim_col(self, d: str) -> SqlText:
        if d not in self.dims:
            raise FastPathUnavailableError(d)
        return SqlText(f"ds.{d}", (), DIMENSION_KIND[self.universe[d].primary_key.type])

    def element_bounds(self, element: str, column: str) -> tuple[Any, Any, Any]:
        """``(min, max, smallest nonzero |value|)`` of a column (the compiler's overflow check)."""
        if self.conn is None:
            raise FastPathUnavailableError("arithmetic on a column")
        row = self.conn.execute(
            f"SELECT min({column}), max({column}), min(CASE WHEN {column} != 0 THEN abs({column}) END) "
            f'FROM "{element}"'
        ).fetchone()
        return (row[0], row[1], row[2])

    def element_column(self, element: str, field: str, kind: str) -> SqlText:
        return SqlText(f"{self.table(element)}.{field}", (), kind)

    def element_timespan(self, element: str) -> tuple[SqlText, SqlText]:
        t = self.table(element)
        begin = SqlText(f"coalesce({t}.timespan_begin, ?)", (TIMESPAN_MIN,))
        return begin, SqlText(f"coalesce({t}.timespan_end, ?)", (TIMESPAN_MAX,))

    def dataset_field(self, field: str) -> ResolvedColumn:
        name = self.dataset_type
        if field in ("id", "dataset_id"):
            return ResolvedColumn("uuid", name, column=SqlText("ds.dataset_id", (), "uuid"))
        if field == "ingest_date":
            return ResolvedColumn("datetime", name, column=SqlText("ds.ingest_date", (), "datetime"))
        if field in ("run", "collection"):
            alias = f"coll_{field}"
            if alias not in self.joined:
                col = "run_id" if field == "run" else "collection_id"
                self.joins.append(f" JOIN collection AS {alias} ON {alias}.collection_id = ds.{col}")
                self.joined.add(alias)
            return ResolvedColumn("str", name, column=SqlText(f"{alias}.name", (), "str"))
        if field == "timespan":
            return ResolvedColumn(
                "timespan",
                name,
                timespan=(SqlText("ds.validity_begin", (), "time"), SqlText("ds.validity_end", (), "time")),
            )
        raise FastPathUnavailableError(f"{name}.{field}")


def _query_dimensions(universe: DimensionUniverse, where: str) -> set[str]:
    if where and where.strip():
        try:
            parse_expression(where)
        except Exception:  # noqa: BLE001 - reported by the registry path
            raise FastPathUnavailableError("bad expression") from None
    return query_dimensions(universe, where, None, {})


def _query(
    r: SqliteFastRegistry,
    patterns: Sequence[str],
    collections: Sequence[str] | None,
    where: str,
    find_first: bool,
    with_uris: bool,
) -> tuple[list[FastRef], dict[uuid.UUID, str], tuple[str, ...]]:
    u = r.universe
    dts = r.dataset_types(patterns)
    if any(has_glob(p) for p in patterns):
        needed = _query_dimensions(u, where)
        dts = [(i, dt) for i, dt in dts if needed <= set(dt.dimensions + dt.implied)]
    if collections is None:
        wanted = (CollectionType.RUN, CollectionType.TAGGED, CollectionType.CALIBRATION)
        search = [c for c in r.collections.values() if c.type in wanted]
        find_first = False
    else:
        search = r.resolve_collections(collections)
    out: list[FastRef] = []
    for dt_id, dt in dts:
        dims = dt.dimensions + dt.implied
        rows, _ = dataset_rows(r, dt_id, dt, search, where, find_first)
        n = len(dims)
        for row in rows:
            values = {d: v for d, v in zip(dims, row[3 : 3 + n]) if v is not None}
            out.append(FastRef(dt, r.by_id[row[2]].name, uuid.UUID(hex=row[0]), values))
    uris: dict[uuid.UUID, str] = {}
    if with_uris and out:
        ids = [ref.id.hex for ref in out]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = (
                "SELECT dataset_id, path FROM file_datastore_records "
                f"WHERE dataset_id IN ({', '.join('?' * len(chunk))})"
            )
            for did, path in r.conn.execute(q, chunk):
                uris[uuid.UUID(hex=did)] = path if os.path.isabs(path) else str(r.root / path)
    return out, uris, u.names


def dataset_rows(
    r: SqliteFastRegistry,
    dt_id: int,
    dt: DatasetType,
    search: Sequence[Any],
    where: str,
    find_first: bool,
) -> tuple[list[tuple[Any, ...]], tuple[str, ...]]:
    """Run the SQL of `DatasetQuery.run` for one dataset type (no bind, data ID, order or limit).

    Parameters
    ----------
    r : `SqliteFastRegistry`
        The open registry.
    dt_id : `int`
        The dataset type's id.
    dt : `DatasetType`
        Its definition.
    search : sequence of collection records
        The flattened search path (``id`` and ``type`` of each collection).
    where : `str`
        Data query expression (blank: none).
    find_first : `bool`
        First dataset per data ID along the path.

    Returns
    -------
    rows : `list` [`tuple`]
        The result rows, deduplicated as the registry does (`DatasetQueryShape.finish`).
    keys : `tuple` [`str`, ...]
        Their column names: ``dataset_id``, ``dataset_type_id``, ``run_id``, the dimensions ...

    Raises
    ------
    FastPathUnavailableError
        When the expression cannot be compiled here or a calibration lookup is ambiguous.
    """
    dims = dt.dimensions + dt.implied
    resolver = _Resolver(r.universe, dims, dt.name, r.conn)
    try:
        clause = compile_expression(where, resolver) if where and where.strip() else None
    except FastPathUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - the registry path reports it
        raise FastPathUnavailableError(str(exc)) from None
    shape = DatasetQueryShape.build(dt_id, dims, search, find_first=find_first)
    where_sql = None if clause is None else (clause.sql, clause.params)
    sql, params, keys = render_sqlite_text(shape, resolver.joins, where_sql)
    rows = r.conn.execute(sql, params).fetchall()
    if shape.ambiguous_count(rows, keys):
        raise FastPathUnavailableError("ambiguous calibration")
    return shape.finish(rows, keys), keys


class _TableResolver(_Resolver):
    """`_Resolver` over dimension tables, as the registry's `QueryContext` of record and data-ID queries.

    ``columns`` maps the dimensions whose columns are known (``t_<element>.<column>``) and
    ``tables`` the elements whose table is already in the FROM clause; any other dimension is
    found through the table of a dimension that implies it, joined like `QueryContext.table`.
    """

    def __init__(
        self,
        universe: DimensionUniverse,
        dims: Sequence[str],
        conn: sqlite3.Connection,
        columns: dict[str, str],
        tables: set[str],
    ) -> None:
        super().__init__(universe, dims, "", conn)
        self.dataset_fields = {}
        self.columns = columns
        self.joined = set(tables)

    def dim_col(self, d: str) -> SqlText:
        col = self.columns.get(d)
        if col is None:
            if d not in self.dims:
                raise FastPathUnavailableError(f"{d} is not a dimension of this query")
            for e in self.universe.names:
                if e in self.dims and d in self.universe[e].implies:
                    col = f"{self.table(e)}.{d}"
                    break
            else:
                raise FastPathUnavailableError(f"no column for {d}")
            self.columns[d] = col
        return SqlText(col, (), DIMENSION_KIND[self.universe[d].primary_key.type])

    def table(self, element: str) -> str:
        alias = f"t_{element}"
        if element not in self.joined:
            el = self.universe[element]
            on = [f"{alias}.{r} = {self.dim_col(r).sql}" for r in el.requires]
            on.append(f"{alias}.{el.primary_key.name} = {self.dim_col(element).sql}")
            self.joined.add(element)
            self.joins.append(f' JOIN "{element}" AS {alias} ON {" AND ".join(on)}')
        return alias


def _where(resolver: _TableResolver, where: str) -> tuple[str, list[Any]]:
    """Compile ``where`` (blank: no clause) into `` WHERE ...`` SQL text and its parameters."""
    if not where or not where.strip():
        return "", []
    clause = compile_expression(where, resolver)
    return f" WHERE {clause.sql}", list(clause.params)


def _limit(limit: int | None) -> str:
    return f" LIMIT {int(limit)}" if limit is not None and limit > 0 else ""


def _records(r: SqliteFastRegistry, element: str, where: str, limit: int | None) -> list[DimensionRecord]:
    """See `SqliteFastRegistry.query_dimension_records` (the SQL of `RecordQuery.run`)."""
    u = r.universe
    if element not in u:
        raise FastPathUnavailableError(f"no element {element!r}")
    el = u[element]
    required, implied = u.group([element])
    t = f"t_{element}"
    columns = {d: f"{t}.{d}" for d in (*el.requires, *el.implies)}
    columns[element] = f"{t}.{el.primary_key.name}"
    resolver = _TableResolver(u, required + implied, r.conn, columns, {element})
    where_sql, params = _where(resolver, where)
    fields = [f for f in el.record_fields if f != "timespan"]
    select = fields + (["timespan_begin", "timespan_end"] if el.temporal else [])
    keys = [*el.requires, el.primary_key.name]
    quoted = [f'{t}."{c}"' for c in select]
    sql = (
        f'SELECT {", ".join(quoted)} FROM "{element}" AS {t}'
        + "".join(resolver.joins)
        + where_sql
        + f" ORDER BY {', '.join(f'{t}.{k}' for k in keys)}"
        + _limit(limit)
    )
    out = []
    n = len(fields)
    for row in r.conn.execute(sql, params).fetchall():
        values = dict(zip(fields, row[:n]))
        if el.temporal:
            b, e = row[n], row[n + 1]
            values["timespan"] = None if b is None and e is None else Timespan.from_ns(b, e)
        out.append(DimensionRecord(el, values))
    return out


def _data_ids(
    r: SqliteFastRegistry,
    dimensions: Sequence[str],
    where: str,
    datasets: Sequence[str] | None,
    collections: Sequence[str] | None,
    limit: int | None,
) -> list[dict[str, Any]]:
    """See `SqliteFastRegistry.query_data_ids` (the SQL of `DataIdQuery.run`)."""
    rows, required, implied = data_id_rows(r, dimensions, where, datasets, collections, limit)
    all_dims = required + implied
    out = []
    for row in rows:
        if None in row:
            out.append({d: v for d, v in zip(all_dims, row) if v is not None})
        else:
            out.append(dict(zip(all_dims, row)))
    return out


def data_id_rows(
    r: SqliteFastRegistry,
    dimensions: Sequence[str],
    where: str,
    datasets: Sequence[str] | None,
    collections: Sequence[str] | None,
    limit: int | None,
) -> tuple[list[tuple[Any, ...]], tuple[str, ...], tuple[str, ...]]:
    """Run the SQL of `DataIdQuery.run` and return its rows with the required and implied dimensions.

    Returns
    -------
    rows : `list` [`tuple`]
        The values of the required then implied dimensions (`None` = unknown), ordered by the
        required ones.
    required, implied : `tuple` [`str`, ...]
        The dimensions of the query, universe order.

    Raises
    ------
    FastPathUnavailableError
        For anything the SQLAlchemy registry must answer (see `SqliteFastRegistry.query_data_ids`).
    """
    u = r.universe
    if not dimensions or any(d not in u for d in dimensions):
        raise FastPathUnavailableError("no or unknown dimensions")
    required, implied = u.group(dimensions)
    if not required:
        raise FastPathUnavailableError("no required dimension")
    columns: dict[str, str] = {}
    from_parts: list[str] = []
    for d in required:
        el = u[d]
        alias = f"t_{d}"
        on = [f"{alias}.{q} = {columns[q]}" for q in el.requires]
        columns[d] = f"{alias}.{el.primary_key.name}"
        if not from_parts:
            from_parts.append(f'"{d}" AS {alias}')
        else:
            from_parts.append(f' JOIN "{d}" AS {alias} ON {" AND ".join(on) if on else "1 = 1"}')
    all_dims = required + implied
    resolver = _TableResolver(u, all_dims, r.conn, columns, set(required))
    where_sql, where_params = _where(resolver, where)
    params: list[Any] = []  # of the semi-joins (the only joins with parameters), in join order
    exists: list[str] = []
    if datasets is not None:
        dts = r.dataset_types(datasets)
        if collections is None:
            kinds = (CollectionType.RUN, CollectionType.TAGGED, CollectionType.CALIBRATION)
            search = [c for c in r.collections.values() if c.type in kinds]
        else:
            search = r.resolve_collections(collections)
        for i, (dt_id, dt) in enumerate(dts):
            dt_dims = dt.dimensions + dt.implied
            sub_sql, sub_params = _render_subquery_text(DatasetQueryShape.build(dt_id, dt_dims, search))
            common = [x for x in dt_dims if x in all_dims]
            if not common:  # uncorrelated: any dataset of the type at all
                exists.append(f"EXISTS (SELECT 1 FROM ({sub_sql}) AS ds{i})")
                where_params += sub_params
                continue
            cond = " AND ".join(f"have{i}.{x} = {resolver.dim_col(x).sql}" for x in common)
            distinct = ", ".join(f"ds{i}.{x} AS {x}" for x in common)
            resolver.joins.append(
                f" JOIN (SELECT DISTINCT {distinct} FROM ({sub_sql}) AS ds{i}) AS have{i} ON {cond}"
            )
            params += sub_params
    if exists:
        conds = ([f"({where_sql[len(' WHERE ') :]})"] if where_sql else []) + exists
        where_sql = " WHERE " + " AND ".join(conds)
    params += where_params
    cols = [resolver.dim_col(d).sql for d in all_dims]
    sql = (
        f"SELECT {', '.join(cols)} FROM "
        + "".join(from_parts)
        + "".join(resolver.joins)
        + where_sql
        + f" ORDER BY {', '.join(columns[d] for d in required)}"
        + _limit(limit)
    )
    return r.conn.execute(sql, params).fetchall(), required, implied
