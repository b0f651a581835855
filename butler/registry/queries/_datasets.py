"""The shape of a dataset query, described once and rendered twice (SQLAlchemy and sqlite3 text).

A query for the datasets of one dataset type along a collection search path is always the same
shape:

1. a subquery ``ds``: the UNION ALL of the type's members of each kind of collection in the
   path (RUN: the ``dataset`` rows; TAGGED: ``dataset_tags`` joined to ``dataset``;
   CALIBRATION: ``dataset_calibs`` joined to ``dataset``, optionally only ranges overlapping a
   timespan), each row with its collection's search ``rank`` and validity range
   (`DatasetQueryShape.SUBQUERY_COLUMNS` then the dimension columns);
2. a SELECT of `DatasetQueryShape.output_columns` from ``ds`` joined with the dimension tables
   the WHERE expression needs, filtered by it;
3. with find-first, ``row_number()`` over (data ID, rank) keeps the first dataset per data ID,
   and ``count(*)`` over (data ID, rank) finds data IDs with several certified ranges;
4. after fetching, `DatasetQueryShape.finish` reports that ambiguity and drops the duplicate
   rows of a dataset found in several collections.

`DatasetQueryShape` holds the decisions (which kinds, ranks, find-first or not);
`butler.registry.queries._sa_datasets` renders it as SQLAlchemy Core for the registry and
`render_sqlite_text` below as SQL text with ``?`` parameters for the CLI's stdlib ``sqlite3`` fast
path (no SQLAlchemy import), just as one expression compiler has two backends. The differential
test ``tests/butler/test_cli_fast.py`` checks that both give the same output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ...collections import CollectionType
from ...timespan import TIMESPAN_MAX, TIMESPAN_MIN
from ._ast import referenced_identifiers
from ._errors import ExpressionError
from ._parser import parse_expression

__all__ = [
    "CollectionMembers",
    "DatasetQueryShape",
    "SearchEntry",
    "query_dimensions",
    "render_sqlite_text",
]


class SearchEntry(Protocol):
    """A collection of a search path: its id and type (a registry `CollectionRecord`)."""

    @property
    def id(self) -> int:
        """The collection id."""
        ...

    @property
    def type(self) -> CollectionType:
        """The collection type."""
        ...


@dataclass(frozen=True)
class CollectionMembers:
    """The collections of one kind in a search path, whose members form one part of the union."""

    kind: CollectionType
    collection_ids: tuple[int, ...]


_KINDS = (CollectionType.RUN, CollectionType.TAGGED, CollectionType.CALIBRATION)


@dataclass(frozen=True)
class DatasetQueryShape:
    """What a dataset query selects, independent of how it is rendered.

    Attributes
    ----------
    dataset_type_ids : `tuple` [`int`, ...]
        The dataset type's id; several dataset types of the same dimensions can be queried
        together (rows of each type are then found first, deduplicated and checked for
        ambiguity within their type: the windows partition by type too).
    dimensions : `tuple` [`str`, ...]
        Required then implied dimensions of the dataset type(s) (columns of the dataset table).
    members : `tuple` [`CollectionMembers`, ...]
        RUN, TAGGED and CALIBRATION parts of the union, in that order, only those present.
    rank : `tuple` [`tuple` [`int`, `int`], ...]
        ``(collection id, position in the search path)``; empty when the path has one entry.
    timespan : `tuple` [`int`, `int`] or `None`
        Keep only calibration ranges overlapping ``[begin, end)`` (TAI ns).
    find_first : `bool`
        Keep the first dataset per data ID in search order (``row_number()``).
    check_ambiguity : `bool`
        Count the ranges of one data ID in one CALIBRATION collection (``count(*)``).
    deduplicate : `bool`
        Drop repeated rows of a dataset found in several collections or certified for several
        validity ranges (no find-first).
    """

    SUBQUERY_COLUMNS = (
        "dataset_id",
        "dataset_type_id",
        "run_id",
        "collection_id",
        "rank",
        "data_id_key",
        "ingest_date",
        "validity_begin",
        "validity_end",
    )
    """The columns of the union subquery ``ds``, before the dimension columns."""

    dataset_type_ids: tuple[int, ...]
    dimensions: tuple[str, ...]
    members: tuple[CollectionMembers, ...]
    rank: tuple[tuple[int, int], ...]
    timespan: tuple[int, int] | None
    find_first: bool
    check_ambiguity: bool
    deduplicate: bool

    @classmethod
    def build(
        cls,
        dataset_type_id: int | Sequence[int],
        dimensions: Sequence[str],
        search: Iterable[SearchEntry],
        *,
        timespan: tuple[int, int] | None = None,
        find_first: bool = False,
    ) -> DatasetQueryShape:
        """Decide the shape of a query over a (flattened) search path; CHAINED entries are skipped.

        Parameters
        ----------
        dataset_type_id : `int` or sequence of `int`
            The dataset type's id, or the ids of several types with the same dimensions.
        dimensions : sequence of `str`
            Their required then implied dimensions.
        search : iterable of `SearchEntry`
            The search path in order.
        timespan : `tuple` [`int`, `int`], optional
            Keep only calibration ranges overlapping it (TAI ns).
        find_first : `bool`
            Keep the first dataset per data ID along the path.
        """
        path = [c for c in search if c.type is not CollectionType.CHAINED]
        by_kind: dict[CollectionType, list[int]] = {}
        for c in path:
            by_kind.setdefault(c.type, []).append(c.id)
        has_calib = CollectionType.CALIBRATION in by_kind
        do_ff = find_first and (len(path) > 1 or has_calib)
        ids = (dataset_type_id,) if isinstance(dataset_type_id, int) else tuple(dataset_type_id)
        return cls(
            dataset_type_ids=ids,
            dimensions=tuple(dimensions),
            members=tuple(CollectionMembers(k, tuple(by_kind[k])) for k in _KINDS if k in by_kind),
            rank=tuple((c.id, i) for i, c in enumerate(path)) if len(path) > 1 else (),
            timespan=timespan,
            find_first=do_ff,
            check_ambiguity=do_ff and has_calib,
            # a dataset certified for several validity ranges is listed once, as in LSST
            deduplicate=not do_ff and (len(path) > 1 or has_calib),
        )

    @property
    def several_types(self) -> bool:
        """Whether the query is for more than one dataset type (windows partition by type too)."""
        return len(self.dataset_type_ids) > 1

    @property
    def output_columns(self) -> tuple[str, ...]:
        """The columns of a result row: dataset id, dataset type id, RUN id, then the dimensions."""
        return ("dataset_id", "dataset_type_id", "run_id", *self.dimensions)

    def ambiguous_count(self, rows: Sequence[Sequence[Any]], keys: Sequence[str]) -> int:
        """Return the number of ranges of the first ambiguous calibration data ID (0: none)."""
        if not self.check_ambiguity:
            return 0
        i = list(keys).index("nrank")
        for r in rows:
            if r[i] > 1:
                return int(r[i])
        return 0

    def finish(self, rows: list[Any], keys: Sequence[str]) -> list[Any]:
        """Drop the repeated rows of datasets found in several collections or validity ranges (first kept)."""
        if not self.deduplicate:
            return rows
        i = list(keys).index("dataset_id")
        seen: set = set()
        return [r for r in rows if not (r[i] in seen or seen.add(r[i]))]  # type: ignore[func-returns-value]


def query_dimensions(
    universe: Iterable[str] | Any, where: str, data_id: Mapping[str, Any] | None, dims: Mapping[str, Any]
) -> set[str]:
    """Return the dimensions a query's expression and data ID constraints name.

    A malformed expression names none here (the compiler reports it).
    """
    names = set(data_id or {}) | set(dims)
    if where and where.strip():
        try:
            idents = referenced_identifiers(parse_expression(where))
        except ExpressionError:
            idents = []
        names |= {i.split(".")[0] for i in idents}
    return {n for n in names if n in universe}


# ---------------------------------------------------------------------- sqlite3 text renderer
def _render_subquery_text(shape: DatasetQueryShape) -> tuple[str, list[Any]]:
    params: list[Any] = []
    dim_cols = "".join(f", d.{x} AS {x}" for x in shape.dimensions)

    def head(coll: str, vb: str, ve: str, vparams: Sequence[int]) -> str:
        if shape.rank:
            rank_sql = "CASE " + coll + "".join(" WHEN ? THEN ?" for _ in shape.rank) + " ELSE ? END"
            for cid, i in shape.rank:
                params.extend((cid, i))
            params.append(len(shape.rank))
        else:
            rank_sql = "0"
        params.extend(vparams)
        return (
            f"SELECT d.id AS dataset_id, d.dataset_type_id AS dataset_type_id, d.run_id AS run_id, "
            f"{coll} AS collection_id, {rank_sql} AS rank, d.data_id_key AS data_id_key, "
            f"d.ingest_date AS ingest_date, CAST({vb} AS BIGINT) AS validity_begin, "
            f"CAST({ve} AS BIGINT) AS validity_end{dim_cols}"
        )

    n_types = len(shape.dataset_type_ids)
    type_sql = "= ?" if n_types == 1 else f"IN ({', '.join('?' * n_types)})"
    parts: list[str] = []
    for m in shape.members:
        marks = ", ".join("?" * len(m.collection_ids))
        if m.kind is CollectionType.RUN:
            sql = head("d.run_id", "?", "?", (TIMESPAN_MIN, TIMESPAN_MAX))
            sql += f" FROM dataset AS d WHERE d.dataset_type_id {type_sql} AND d.run_id IN ({marks})"
        else:
            table = "dataset_tags" if m.kind is CollectionType.TAGGED else "dataset_calibs"
            if m.kind is CollectionType.TAGGED:
                sql = head("t.collection_id", "?", "?", (TIMESPAN_MIN, TIMESPAN_MAX))
            else:
                sql = head("t.collection_id", "t.validity_begin", "t.validity_end", ())
            sql += (
                f" FROM {table} AS t JOIN dataset AS d ON d.id = t.dataset_id "
                f"WHERE t.dataset_type_id {type_sql} AND t.collection_id IN ({marks})"
            )
        params.extend((*shape.dataset_type_ids, *m.collection_ids))
        if m.kind is CollectionType.CALIBRATION and shape.timespan is not None:
            sql += " AND t.validity_begin < ? AND ? < t.validity_end"
            params.extend((shape.timespan[1], shape.timespan[0]))
        parts.append(sql)
    if not parts:
        parts.append(head("d.run_id", "?", "?", (TIMESPAN_MIN, TIMESPAN_MAX)) + " FROM dataset AS d WHERE 0")
    return " UNION ALL ".join(parts), params


def render_sqlite_text(
    shape: DatasetQueryShape, joins: Sequence[str], where: tuple[str, Sequence[Any]] | None
) -> tuple[str, list[Any], tuple[str, ...]]:
    """Render a dataset query as SQLite text with ``?`` parameters.

    Parameters
    ----------
    shape : `DatasetQueryShape`
        The query.
    joins : sequence of `str`
        ``JOIN ... ON ...`` clauses of the tables the WHERE expression needs (on ``ds``).
    where : `tuple` [`str`, sequence], optional
        The compiled WHERE expression's SQL and parameters.

    Returns
    -------
    sql : `str`
    params : `list`
    columns : `tuple` [`str`, ...]
        The names of the result columns.
    """
    sub_sql, params = _render_subquery_text(shape)
    columns = shape.output_columns
    cols = ", ".join(f"ds.{c}" for c in columns)
    extra: tuple[str, ...] = ()
    window = ""
    if shape.find_first:
        key = "ds.dataset_type_id, ds.data_id_key" if shape.several_types else "ds.data_id_key"
        window = f", row_number() OVER (PARTITION BY {key} ORDER BY ds.rank) AS rn"
        extra = ("rn",)
        if shape.check_ambiguity:
            window += f", count(*) OVER (PARTITION BY {key}, ds.rank) AS nrank"
            extra += ("nrank",)
    sql = f"SELECT {cols}{window} FROM ({sub_sql}) AS ds" + "".join(joins)
    if where is not None:
        sql += f" WHERE {where[0]}"
        params += list(where[1])
    if shape.find_first:
        sql = f"SELECT * FROM ({sql}) AS ff WHERE ff.rn = 1"
    return sql, params, columns + extra
