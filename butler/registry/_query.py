"""SQL construction for registry queries (datasets, data IDs, dimension records, find by data ID).

A `QueryContext` is the `ColumnResolver` handed to the expression compiler
(`butler.registry.queries`): it maps identifiers to columns and joins the dimension tables an
expression, an ``order_by`` or a data ID constraint needs, each at most once. The tables come
from the registry's managers (`butler.registry.managers`); results are built by them too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from .._errors import CalibrationLookupError, DataIdError, InvalidQueryError
from ..collections import CollectionType, has_glob
from ..datasets import DatasetRef, DatasetType
from ..datastore.records import StoredFileInfo
from ..dimensions import DataCoordinate, DimensionRecord
from ..timespan import TIMESPAN_MAX, TIMESPAN_MIN, Timespan
from ..utils import bulk_objects
from .managers import CollectionRecord, DatasetTypeManager, RegistryManagers
from .queries import (
    DimensionColumnResolver,
    ExpressionError,
    ResolvedColumn,
    compile_expression,
    parse_expression,
    referenced_identifiers,
)
from .queries._datasets import DatasetQueryShape, query_dimensions
from .queries._sa_backend import SQLALCHEMY
from .queries._sa_datasets import DatasetTables, render_select, render_subquery

__all__ = [
    "DataIdQuery",
    "DatasetFinder",
    "DatasetQuery",
    "QueryContext",
    "RecordQuery",
    "dataset_types_for_query",
    "query_dataset_types",
]


def _has_pattern(dataset_type: Any) -> bool:
    if isinstance(dataset_type, str):
        return has_glob(dataset_type)
    if isinstance(dataset_type, DatasetType):
        return False
    return any(isinstance(x, str) and has_glob(x) for x in dataset_type)


def dataset_types_for_query(
    types: DatasetTypeManager,
    dataset_type: str | DatasetType | Iterable[str | DatasetType],
    where: str,
    data_id: Mapping[str, Any] | None,
    dims: Mapping[str, Any],
    *,
    patterns_filter: bool = True,
) -> list[DatasetType]:
    """Return the dataset types a query names (glob patterns expanded).

    With ``patterns_filter``, types matched by a pattern that lack a dimension the query's
    expression or data ID names are skipped.
    """
    items = [dataset_type] if isinstance(dataset_type, (str, DatasetType)) else list(dataset_type)
    out: list[DatasetType] = []
    for x in items:
        if isinstance(x, str) and has_glob(x):
            out += types.query(x)
        else:
            out.append(types.entry(x)[1])
    if patterns_filter and _has_pattern(items):
        needed = query_dimensions(types.universe, where, data_id, dims)
        out = [dt for dt in out if needed <= set(dt.dimensions + dt.implied)]
    return out


class QueryContext(DimensionColumnResolver):
    """Resolves identifiers to columns and records the joins they need (`DimensionColumnResolver`).

    Parameters
    ----------
    managers : `RegistryManagers`
        The registry's managers (the tables to join).
    dimensions : sequence of `str`
        Every dimension (required and implied) the query's rows have.
    """

    sql_backend = SQLALCHEMY

    def __init__(self, managers: RegistryManagers, dimensions: Sequence[str]) -> None:
        self.managers = managers
        self.universe = managers.dimensions.universe
        self.dims = tuple(dimensions)
        self.dim_cols: dict[str, Any] = {}
        self.tables: dict[str, Any] = {}
        self.joins: list[tuple[Any, Any]] = []
        self.dataset_fields: dict[str, Any] = {}
        self._bounds: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    # -- columns and joins ----------------------------------------------------------------------
    def dim_col(self, d: str) -> Any:
        """Column holding dimension ``d``'s value (joins the table that implies it if needed)."""
        col = self.dim_cols.get(d)
        if col is not None:
            return col
        if d not in self.dims:
            raise InvalidQueryError(
                f"dimension {d!r} is not part of this query; its dimensions are "
                f"{', '.join(self.dims) or '(none)'}"
            )
        for e in self.universe.names:
            if e in self.dims and d in self.universe[e].implies:
                col = self.table(e).c[d]
                self.dim_cols[d] = col
                return col
        raise InvalidQueryError(f"cannot find a column for dimension {d!r}")

    def table(self, element: str) -> Any:
        """Return the (aliased) table of a dimension element, joined on its key columns."""
        t = self.tables.get(element)
        if t is not None:
            return t
        el = self.universe[element]
        alias = self.managers.dimensions.table(element).alias(f"t_{element}")
        on = [alias.c[r] == self.dim_col(r) for r in el.requires]
        on.append(alias.c[el.primary_key.name] == self.dim_col(element))
        self.tables[element] = alias
        self.joins.append((alias, sa.and_(*on)))
        return alias

    def element_bounds(self, element: str, column: str) -> tuple[Any, Any, Any]:
        """Return ``(min, max, smallest nonzero |value|)`` of a column of an element's table."""
        cache = self._bounds
        found = cache.get((element, column))
        if found is None:
            c = self.managers.dimensions.table(element).c[column]
            if isinstance(c.type, sa.Boolean):
                found = (0, 1, 1)
            else:
                stmt = sa.select(
                    sa.func.min(c), sa.func.max(c), sa.func.min(sa.case((c != 0, sa.func.abs(c))))
                )
                row = self.managers.db.fetchall(stmt)[0]
                found = (row[0], row[1], row[2])
            cache[(element, column)] = found
        return found

    def from_clause(self, base: Any) -> Any:
        """Return ``base`` joined with every table the query needed."""
        j = base
        for t, on in self.joins:
            j = j.join(t, on)
        return j

    def element_column(self, element: str, field: str, kind: str) -> Any:
        """Return the column of metadata ``field`` of ``element`` (joins its table)."""
        return self.table(element).c[field]

    def element_timespan(self, element: str) -> tuple[Any, Any]:
        """Return ``(begin, end)`` of a temporal element, unbounded ends as TIMESPAN_MIN/MAX."""
        t = self.table(element)
        begin = sa.func.coalesce(t.c.timespan_begin, TIMESPAN_MIN)
        return begin, sa.func.coalesce(t.c.timespan_end, TIMESPAN_MAX)

    # -- where / data ID / order_by ---------------------------------------------------------------
    def compile_where(self, where: str | None, bind: Mapping[str, Any] | None) -> Any:
        """Compile a query expression into a clause (or `None` when blank).

        Raises
        ------
        InvalidQueryError
            With the expression and a caret at the problem.
        """
        if not where or not where.strip():
            return None
        try:
            tree = parse_expression(where)
            return compile_expression(tree, self, bind=bind, text=where)
        except ExpressionError as exc:
            raise InvalidQueryError(str(exc)) from None
        except InvalidQueryError as exc:
            notes = getattr(exc, "__notes__", [])
            raise InvalidQueryError("\n".join([str(exc), *notes])) from None

    def filters(
        self,
        data_id: Mapping[str, Any] | None,
        dims: Mapping[str, Any] | None,
        where: str,
        bind: Mapping[str, Any] | None,
    ) -> list[Any]:
        """Return the clauses of a query's data ID constraints and ``where`` expression (see `constrain`)."""
        clauses = self.constrain(data_id, dims or {})
        w = self.compile_where(where, bind)
        if w is not None:
            clauses.append(w)
        return clauses

    def constrain(self, data_id: Mapping[str, Any] | None, dims: Mapping[str, Any]) -> list[Any]:
        """Equality clauses for data ID values.

        Raises
        ------
        DataIdError
            For a name that is not a dimension of the query, or a badly typed value.
        """
        values = dict(data_id or {})
        values.update(dims)
        out = []
        for k, v in values.items():
            if v is None:
                continue
            if k not in self.universe:
                raise DataIdError(
                    f"data ID key {k!r} is not a dimension; dimensions are {', '.join(self.universe.names)}"
                )
            if k not in self.dims:
                raise DataIdError(
                    f"{k!r} is not a dimension of this query ({', '.join(self.dims) or 'none'})"
                )
            out.append(self.dim_col(k) == self.universe.coerce_value(k, v))
        return out

    def order_columns(self, order_by: str | Sequence[str] | None) -> list[tuple[Any, bool]]:
        """Resolve ``order_by`` terms (``-`` prefix = descending) to ``(column, descending)``."""
        if not order_by:
            return []
        if isinstance(order_by, str):
            order_by = [t for t in order_by.split(",") if t.strip()]
        out: list[tuple[Any, bool]] = []
        for term in order_by:
            term = term.strip()
            desc = term.startswith("-")
            rc = self.resolve(term.lstrip("-+"))
            col = rc.timespan[0] if rc.kind == "timespan" and rc.timespan is not None else rc.column
            out.append((col, desc))
        return out



def _make_coords(
    managers: RegistryManagers,
    required: tuple[str, ...],
    implied: tuple[str, ...],
    rows: Sequence[tuple],
    keys: Sequence[str],
) -> list[DataCoordinate]:
    """Build expanded data IDs from row tuples (columns named by ``keys``) of dimension values.

    Records are read for the whole batch when first asked for (`DimensionRecordManager.lazy_coordinates`).
    """
    u = managers.dimensions.universe
    dims = required + implied
    pos = {k: i for i, k in enumerate(keys)}
    get_values, rec_getters = managers.dimensions.lazy_coordinates(required, dims, rows, pos)
    lazy = DataCoordinate._expanded_lazily
    return [lazy(u, required, dims, get_values, rec_getters, r) for r in rows]


def _finish(
    stmt: Any,
    clauses: Sequence[Any],
    orders: Sequence[tuple[Any, bool]],
    default_order: Sequence[Any],
    limit: int | None,
) -> Any:
    """Add the WHERE clauses, ORDER BY (``orders``, else ``default_order``) and LIMIT to a SELECT."""
    if clauses:
        stmt = stmt.where(*clauses)
    stmt = stmt.order_by(*([c.desc() if desc else c for c, desc in orders] or default_order))
    if limit is not None and limit > 0:
        stmt = stmt.limit(limit)
    return stmt


class DatasetQuery:
    """Query datasets of one dataset type in a collection search path.

    Parameters
    ----------
    managers : `RegistryManagers`
        The registry's managers (and their database).
    dataset_type : `DatasetType`
    search : sequence of `CollectionRecord`
        Flattened search path (no CHAINED entries needed; they are skipped).
    timespan : `Timespan`, optional
        Keep calibrations whose validity overlaps it.
    also : sequence of `DatasetType`
        More dataset types of the same dimensions to query in the same statement (see
        `query_dataset_types`); the ``where`` expression and ``order_by`` then cannot name
        dataset fields (``raw.run``), which exist for the first type only.
    """

    def __init__(
        self,
        managers: RegistryManagers,
        dataset_type: DatasetType,
        search: Sequence[CollectionRecord],
        *,
        timespan: Timespan | None = None,
        also: Sequence[DatasetType] = (),
    ) -> None:
        self.managers = managers
        self.db = managers.db
        self.dataset_type = dataset_type
        self.dt_id = managers.dataset_types.entry(dataset_type)[0]
        self.types = [(self.dt_id, dataset_type)] + [managers.dataset_types.entry(dt) for dt in also]
        self.search = list(search)
        self.timespan = timespan
        self.dims = dataset_type.dimensions + dataset_type.implied
        if any(dt.dimensions + dt.implied != self.dims for _, dt in self.types):
            raise ValueError("dataset types queried together must have the same dimensions")

    def shape(self, *, find_first: bool = False) -> DatasetQueryShape:
        """Return the query's `DatasetQueryShape` (what the SQLAlchemy and sqlite3 renderers render)."""
        ts = None if self.timespan is None else (self.timespan.begin_ns, self.timespan.end_ns)
        ids = [i for i, _ in self.types]
        return DatasetQueryShape.build(ids, self.dims, self.search, timespan=ts, find_first=find_first)

    def subquery(self, name: str = "ds", shape: DatasetQueryShape | None = None) -> Any:
        """Return the union of the dataset rows in each kind of collection, with a search ``rank``.

        With no collection to search it is an empty selection (which still lets the ``where``
        expression be checked). ``name`` is the subquery's alias.
        """
        m = self.managers
        tables = DatasetTables(m.datasets.table, m.datasets.tags_table, m.calibrations.table)
        return render_subquery(shape or self.shape(), tables, name)

    def context(self, sub: Any) -> QueryContext:
        """Return a `QueryContext` over the dataset subquery (dimension columns come from it)."""
        ctx = QueryContext(self.managers, self.dims)
        for x in self.dims:
            ctx.dim_cols[x] = sub.c[x]
        name = self.dataset_type.name
        collection_table = self.managers.collections.table

        def dataset_field(field: str) -> ResolvedColumn:
            if field in ("id", "dataset_id"):
                return ResolvedColumn("uuid", name, column=sub.c.dataset_id)
            if field == "ingest_date":
                return ResolvedColumn("datetime", name, column=sub.c.ingest_date)
            if field in ("run", "collection"):
                key = f"coll_{field}"
                if key not in ctx.tables:
                    c = collection_table.alias(key)
                    ctx.tables[key] = c
                    ctx.joins.append(
                        (c, c.c.collection_id == (sub.c.run_id if field == "run" else sub.c.collection_id))
                    )
                return ResolvedColumn("str", name, column=ctx.tables[key].c.name)
            if field == "timespan":
                return ResolvedColumn("timespan", name, timespan=(sub.c.validity_begin, sub.c.validity_end))
            raise InvalidQueryError(
                f"dataset type {name!r} has no field {field!r}; use run, collection, dataset_id, "
                "ingest_date or timespan"
            )

        if len(self.types) == 1:
            ctx.dataset_fields[name] = dataset_field
        return ctx

    def statement(
        self,
        *,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        dims: Mapping[str, Any] | None = None,
        find_first: bool = True,
        limit: int | None = None,
        order_by: str | Sequence[str] | None = None,
    ) -> tuple[DatasetQueryShape, Any, tuple[bool, ...]]:
        """Return the query's shape, its SELECT and whether each ORDER BY term is descending.

        The ORDER BY terms are also the SELECT's columns ``o_0``, ``o_1`` ... (`render_select`).
        """
        shape = self.shape(find_first=find_first)
        sub = self.subquery(shape=shape)
        ctx = self.context(sub)
        clauses = ctx.filters(data_id, dims, where, bind)
        orders = ctx.order_columns(order_by)
        stmt = render_select(shape, sub, ctx.from_clause(sub), clauses, orders, limit)
        return shape, stmt, tuple(desc for _, desc in orders)

    def refs(self, shape: DatasetQueryShape, rows: list[Any], keys: Sequence[str]) -> list[DatasetRef]:
        """Build the refs of the fetched rows of `statement` (ambiguity check, duplicates dropped).

        Raises
        ------
        CalibrationLookupError
            If a find-first search in a CALIBRATION collection matched several validity ranges.
        """
        return [ref for refs in self.refs_by_type(shape, rows, keys) for ref in refs]

    def refs_by_type(
        self, shape: DatasetQueryShape, rows: list[Any], keys: Sequence[str]
    ) -> list[list[DatasetRef]]:
        """Build the refs of each dataset type of the query (in the order of ``self.types``).

        A type's rows keep the order the database returned them in.

        Raises
        ------
        CalibrationLookupError
            If a find-first search in a CALIBRATION collection matched several validity ranges
            (for the first such type).
        """
        if len(self.types) == 1:
            per_type = [rows]
        else:
            i_type = list(keys).index("dataset_type_id")
            buckets: dict[int, list[Any]] = {i: [] for i, _ in self.types}
            for r in rows:
                buckets[r[i_type]].append(r)
            per_type = [buckets[i] for i, _ in self.types]
        for (_, dt), type_rows in zip(self.types, per_type):
            n = shape.ambiguous_count(type_rows, keys)
            if n:
                raise CalibrationLookupError(
                    f"find-first search of {dt.name} in a CALIBRATION collection "
                    f"matched {n} validity ranges for one data ID; give a timespan, or use find_first=False"
                )
        build = self.managers.datasets.rows_to_refs
        return [build(shape.finish(r, keys), dt, keys) for (_, dt), r in zip(self.types, per_type)]

    def run(
        self,
        *,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        dims: Mapping[str, Any] | None = None,
        find_first: bool = True,
        limit: int | None = None,
        order_by: str | Sequence[str] | None = None,
    ) -> list[DatasetRef]:
        """Execute the query (see `Registry.query_datasets`)."""
        shape, stmt, _ = self.statement(
            where=where, bind=bind, data_id=data_id, dims=dims, find_first=find_first, limit=limit,
            order_by=order_by,
        )
        with bulk_objects():
            rows, keys = self.db.fetch_tuples(stmt)
            return self.refs(shape, rows, keys)


def _names_only_dimensions(universe: Any, where: str, order_by: str | Sequence[str] | None) -> bool:
    """Whether ``where`` and ``order_by`` name dimensions and their fields only (no dataset fields).

    A malformed expression counts as naming something else (its error is the per-type one).
    """
    heads: list[str] = []
    if where and where.strip():
        try:
            heads += [i.split(".")[0] for i in referenced_identifiers(parse_expression(where))]
        except ExpressionError:
            return False
    if isinstance(order_by, str):
        order_by = [t for t in order_by.split(",") if t.strip()]
    terms = list(order_by or ())
    heads += [t.strip().lstrip("-+").split(".")[0] for t in terms]
    return all(h in universe for h in heads)


def query_dataset_types(
    managers: RegistryManagers,
    dataset_types: Sequence[DatasetType],
    search: Sequence[CollectionRecord],
    *,
    timespan: Timespan | None = None,
    where: str = "",
    bind: Mapping[str, Any] | None = None,
    data_id: Mapping[str, Any] | None = None,
    dims: Mapping[str, Any] | None = None,
    find_first: bool = True,
    limit: int | None = None,
    order_by: str | Sequence[str] | None = None,
) -> list[DatasetRef]:
    """Query several dataset types in one statement; the refs of each type in turn.

    `Registry.query_datasets` of several types is defined as one `DatasetQuery` per type, the
    results concatenated; this returns the same refs in the same order from one SELECT:

    - types of the same dimensions form one `DatasetQuery` (``dataset_type_id IN (...)``; the
      find-first and ambiguity windows partition by type too) when ``where`` and ``order_by``
      name only dimensions (a dataset field such as ``raw.run`` exists for its own type only:
      then every type is its own query);
    - these queries are the parts of a UNION ALL (a ``part`` column; dimensions a part lacks
      are typed NULLs), ordered by part and then by ``order_by`` (its columns ``o_i``);
    - rows are split by dataset type in Python; a type's rows keep the order the database gave
      them (ordered by ``order_by`` when given, as each type's own query orders them).

    With ``limit`` (at most ``limit`` per type) each type runs alone, as it does for one type.
    Any error makes the types run one by one again, so the error raised is the one the first
    failing type raises on its own.

    Parameters
    ----------
    managers : `RegistryManagers`
        The registry's managers.
    dataset_types : sequence of `DatasetType`
        The types, in the order of the result.
    search : sequence of `CollectionRecord`
        Flattened search path.
    timespan, where, bind, data_id, dims, find_first, limit, order_by
        As for `DatasetQuery.run`.

    Returns
    -------
    refs : `list` [`DatasetRef`]
        The refs of the first type, then of the second ...

    Raises
    ------
    CalibrationLookupError, InvalidQueryError, DataIdError
        As `DatasetQuery.run` for the first type (in order) that raises them.
    """
    kw: dict[str, Any] = dict(
        where=where, bind=bind, data_id=data_id, dims=dims, find_first=find_first, order_by=order_by
    )

    def one_by_one() -> list[DatasetRef]:
        out: list[DatasetRef] = []
        for dt in dataset_types:
            out += DatasetQuery(managers, dt, search, timespan=timespan).run(limit=limit, **kw)
        return out

    if limit is not None or len(dataset_types) < 2:
        return one_by_one()
    groups: dict[Any, list[DatasetType]] = {}
    if _names_only_dimensions(managers.dimensions.universe, where, order_by):
        for dt in dataset_types:
            groups.setdefault(dt.dimensions + dt.implied, []).append(dt)
    else:
        groups = {i: [dt] for i, dt in enumerate(dataset_types)}
    def together() -> dict[str, list[DatasetRef]]:
        queries = [
            DatasetQuery(managers, g[0], search, timespan=timespan, also=g[1:]) for g in groups.values()
        ]
        found: dict[str, list[DatasetRef]] = {}
        for start in range(0, len(queries), QUERIES_PER_STATEMENT):
            found.update(_run_union(managers, queries[start : start + QUERIES_PER_STATEMENT], kw))
        return found

    refs: dict[str, list[DatasetRef]] | None
    try:
        refs = together()
    except Exception:
        refs = None
    if refs is None:
        return one_by_one()  # raises what the first failing type raises alone
    return [ref for dt in dataset_types for ref in refs[dt.name]]


#: `DatasetQuery` parts per UNION ALL statement of `query_dataset_types` (SQLite allows 500).
QUERIES_PER_STATEMENT = 100


def _run_union(
    managers: RegistryManagers, queries: Sequence[DatasetQuery], kw: Mapping[str, Any]
) -> dict[str, list[DatasetRef]]:
    """Run several `DatasetQuery` as one UNION ALL; return the refs of each dataset type by name."""
    parts = [(q, *q.statement(**kw)) for q in queries]
    dataset_table = managers.datasets.table
    dims: list[str] = []
    for _, shape, _, _ in parts:
        dims += [d for d in shape.dimensions if d not in dims]
    descending = parts[0][3]  # the same order_by for every part
    extra = ["nrank"] if parts[0][1].check_ambiguity else []  # the same search path for every part
    selects = []
    for i, (_, shape, stmt, _) in enumerate(parts):
        p = stmt.order_by(None).subquery(f"p{i}")
        cols = [sa.literal(i, sa.Integer).label("part")]
        cols += [p.c[c] for c in ("dataset_id", "dataset_type_id", "run_id")]
        cols += [
            p.c[d] if d in shape.dimensions else sa.cast(sa.null(), dataset_table.c[d].type).label(d)
            for d in dims
        ]
        cols += [p.c[f"o_{j}"] for j in range(len(descending))] + [p.c[c] for c in extra]
        selects.append(sa.select(*cols))
    union = sa.union_all(*selects).subquery("u") if len(selects) > 1 else selects[0].subquery("u")
    stmt = sa.select(union)
    if descending:
        orders = [union.c[f"o_{j}"] for j in range(len(descending))]
        stmt = stmt.order_by(union.c.part, *[o.desc() if d else o for o, d in zip(orders, descending)])
    with bulk_objects():
        rows, keys = managers.db.fetch_tuples(stmt)
        by_part: list[list[Any]] = [[] for _ in parts]
        for r in rows:  # a part's rows keep the order the database gave them
            by_part[r[0]].append(r)
        out: dict[str, list[DatasetRef]] = {}
        for (query, shape, _, _), part_rows in zip(parts, by_part):
            for (_, dt), refs in zip(query.types, query.refs_by_type(shape, part_rows, keys)):
                out[dt.name] = refs
        return out


class DataIdQuery:
    """Query the data IDs of a set of dimensions (optionally constrained by existing datasets)."""

    def __init__(
        self,
        managers: RegistryManagers,
        dimensions: Sequence[str],
        *,
        datasets: Sequence[DatasetType] | None = None,
        search: Sequence[CollectionRecord] | None = None,
    ) -> None:
        self.managers = managers
        self.db = managers.db
        self.required, self.implied = managers.dimensions.universe.group(dimensions)
        self.datasets = datasets or []
        self.search = search or []

    def run(
        self,
        *,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        dims: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[DataCoordinate]:
        """Execute the query (see `Registry.query_data_ids`)."""
        m = self.managers
        u = m.dimensions.universe
        all_dims = self.required + self.implied
        ctx = QueryContext(m, all_dims)
        base = None
        for d in self.required:
            el = u[d]
            t = m.dimensions.table(d).alias(f"t_{d}")
            on = [t.c[r] == ctx.dim_cols[r] for r in el.requires]
            ctx.tables[d] = t
            ctx.dim_cols[d] = t.c[el.primary_key.name]
            if base is None:
                base = t
            else:
                ctx.joins.append((t, sa.and_(*on) if on else sa.true()))
        if base is None:
            return [DataCoordinate.empty(u)]
        clauses = ctx.filters(data_id, dims, where, bind)
        for i, dt in enumerate(self.datasets):
            sub = DatasetQuery(m, dt, self.search).subquery(f"ds{i}")
            common = [x for x in dt.dimensions + dt.implied if x in all_dims]
            if not common:  # uncorrelated: any dataset of the type at all
                clauses.append(sa.exists(sa.select(sa.literal(1)).select_from(sub)))
                continue
            # Semi-join: the distinct data IDs that have a dataset, materialized once, joined on
            # the common dimensions (a correlated EXISTS re-ran the union per candidate row).
            have = sa.select(*[sub.c[x] for x in common]).distinct().subquery(f"have{i}")
            on = [have.c[x] == ctx.dim_col(x) for x in common]
            ctx.joins.append((have, sa.and_(*on)))
        orders = ctx.order_columns(order_by)
        cols = [ctx.dim_col(d).label(d) for d in all_dims]
        # No DISTINCT: the base is the product of dimension tables (unique keys), every other join
        # is on a full key (1:1) or on a DISTINCT subquery's every column (at most one match).
        stmt = sa.select(*cols).select_from(ctx.from_clause(base))
        stmt = _finish(stmt, clauses, orders, [ctx.dim_col(d) for d in self.required], limit)
        with bulk_objects():
            rows, keys = self.db.fetch_tuples(stmt)
            return _make_coords(m, self.required, self.implied, rows, keys)


class RecordQuery:
    """Query the records of one dimension element."""

    def __init__(self, managers: RegistryManagers, element: str) -> None:
        self.managers = managers
        self.db = managers.db
        self.element = element

    def run(
        self,
        *,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        dims: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[DimensionRecord]:
        """Execute the query (see `Registry.query_dimension_records`)."""
        dm = self.managers.dimensions
        el = dm.universe[self.element]
        required, implied = dm.universe.group([self.element])
        ctx = QueryContext(self.managers, required + implied)
        t = dm.table(self.element).alias(f"t_{self.element}")
        ctx.tables[self.element] = t
        for r in el.requires:
            ctx.dim_cols[r] = t.c[r]
        for i in el.implies:
            ctx.dim_cols[i] = t.c[i]
        ctx.dim_cols[self.element] = t.c[el.primary_key.name]
        clauses = ctx.filters(data_id, dims, where, bind)
        orders = ctx.order_columns(order_by)
        stmt = sa.select(t).select_from(ctx.from_clause(t))
        key_cols = [t.c[k] for k in list(el.requires) + [el.primary_key.name]]
        stmt = _finish(stmt, clauses, orders, key_cols, limit)
        return [dm.row_to_record(el, row) for row in self.db.fetchall(stmt)]


class DatasetFinder:
    """Find one dataset by dataset type and data ID along a search path (`Registry.find_dataset`).

    One query per kind of collection in the path (RUN, TAGGED, CALIBRATION), each returning the
    dataset with its datastore record; the first match in search order wins.

    Parameters
    ----------
    managers : `RegistryManagers`
        The registry's managers (and their database).
    """

    def __init__(self, managers: RegistryManagers) -> None:
        self.managers = managers
        self.db = managers.db

    def find(
        self,
        entry: tuple[int, DatasetType],
        data_id: Mapping[str, Any] | None,
        dims: Mapping[str, Any],
        search: Sequence[CollectionRecord],
        timespan: Timespan | None,
    ) -> tuple[DatasetRef, StoredFileInfo | None] | None:
        """Return the first dataset of a data ID in ``search`` with its datastore record, or `None`.

        ``entry`` is the dataset type's ``(id, definition)``. ``data_id`` and ``dims`` may hold more
        dimensions than the dataset type (an exposure for a flat gives its physical_filter and,
        for a calibration, the lookup time when ``timespan`` is `None`).

        Raises
        ------
        CalibrationLookupError
            If more than one validity range in a CALIBRATION collection matches.
        """
        dt_id, dataset_type = entry
        expand = self.managers.dimensions
        values = {**(data_id or {}), **dims}
        full = (
            expand.expand_data_id(values, None, {})
            if (dataset_type.is_calibration and timespan is None)
            else None
        )
        coord = expand.expand_for(
            dataset_type, full if full is not None else ((data_id or {}) if not dims else values)
        )
        if dataset_type.is_calibration and timespan is None and full is not None:
            timespan = full.timespan
        m = self.managers
        rank = {c.id: i for i, c in enumerate(search)}
        by_kind: dict[CollectionType, list[int]] = {}
        for c in search:
            by_kind.setdefault(c.type, []).append(c.id)
        best = None
        for kind, cids in by_kind.items():
            if kind is CollectionType.CHAINED:
                continue
            params: dict[str, Any] = {"dt": dt_id, "key": coord.key}
            if kind is CollectionType.CALIBRATION:
                if timespan is None:
                    params["begin"], params["end"] = TIMESPAN_MIN, TIMESPAN_MAX
                else:
                    params["begin"], params["end"] = timespan.begin_ns, timespan.end_ns
            rows = m.datasets.find_rows(
                kind, params, cids, calibs=m.calibrations.table, files=m.datastore_records.table
            )
            if kind is CollectionType.CALIBRATION:
                per_coll: dict[int, list] = {}
                for r in rows:
                    per_coll.setdefault(r[0], []).append(r)
                rows = []
                for cid, rs in per_coll.items():
                    if len(rs) > 1:
                        what = "no time was given" if timespan is None else f"the time span {timespan}"
                        raise CalibrationLookupError(
                            f"ambiguous calibration lookup of {dataset_type.name} {coord.required} in "
                            f"{m.collections.by_id(cid).name!r}: "
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
            dataset_type,
            coord,
            m.collections.by_id(run_id).name,
            did if isinstance(did, uuid.UUID) else uuid.UUID(did),
        )
        info = None if path is None else StoredFileInfo(path, formatter, sc, checksum, size)
        return ref, info
