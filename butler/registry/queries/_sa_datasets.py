"""SQLAlchemy Core renderer of `DatasetQueryShape` (the registry's dataset queries).

The sqlite3 text renderer of the same shape is `butler.registry.queries._datasets.render_sqlite_text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ...collections import CollectionType
from ...timespan import TIMESPAN_MAX, TIMESPAN_MIN
from ._datasets import DatasetQueryShape

__all__ = ["DatasetTables", "render_select", "render_subquery"]


@dataclass(frozen=True)
class DatasetTables:
    """The tables a dataset query reads (given by the registry's managers)."""

    dataset: sa.Table
    tags: sa.Table
    calibs: sa.Table


def render_subquery(shape: DatasetQueryShape, tables: DatasetTables, name: str = "ds") -> sa.Subquery:
    """Return the union subquery ``ds`` of a shape (see `DatasetQueryShape`), aliased ``name``."""
    d = tables.dataset
    rank = dict(shape.rank)

    def cols(coll_col: Any, vb: Any, ve: Any) -> list[Any]:
        rank_expr = sa.case(rank, value=coll_col, else_=len(rank)) if rank else sa.literal(0)
        return [
            d.c.id.label("dataset_id"),
            d.c.dataset_type_id,
            d.c.run_id,
            coll_col.label("collection_id"),
            rank_expr.label("rank"),
            d.c.data_id_key,
            d.c.ingest_date,
            sa.cast(vb, sa.BigInteger).label("validity_begin"),
            sa.cast(ve, sa.BigInteger).label("validity_end"),
            *[d.c[x] for x in shape.dimensions],
        ]

    def of_types(col: Any) -> Any:
        ids = shape.dataset_type_ids
        return col == ids[0] if len(ids) == 1 else col.in_(ids)

    unbounded = (sa.literal(TIMESPAN_MIN), sa.literal(TIMESPAN_MAX))
    parts: list[sa.Select] = []
    for m in shape.members:
        ids = list(m.collection_ids)
        if m.kind is CollectionType.RUN:
            parts.append(
                sa.select(*cols(d.c.run_id, *unbounded)).where(
                    of_types(d.c.dataset_type_id),
                    d.c.run_id.in_(ids) if len(ids) > 1 else d.c.run_id == ids[0],
                )
            )
            continue
        t = tables.tags if m.kind is CollectionType.TAGGED else tables.calibs
        validity = unbounded if m.kind is CollectionType.TAGGED else (t.c.validity_begin, t.c.validity_end)
        conds = [of_types(t.c.dataset_type_id), t.c.collection_id.in_(ids)]
        if m.kind is CollectionType.CALIBRATION and shape.timespan is not None:
            begin, end = shape.timespan
            conds += [t.c.validity_begin < end, sa.literal(begin) < t.c.validity_end]
        parts.append(
            sa.select(*cols(t.c.collection_id, *validity))
            .select_from(t.join(d, d.c.id == t.c.dataset_id))
            .where(*conds)
        )
    if not parts:
        # No collection to search: an empty result that still validates the expression.
        parts.append(sa.select(*cols(d.c.run_id, *unbounded)).where(sa.false()))
    sel = parts[0] if len(parts) == 1 else sa.union_all(*parts)
    return sel.subquery(name)


def render_select(
    shape: DatasetQueryShape,
    sub: sa.Subquery,
    from_clause: Any,
    clauses: Sequence[Any],
    orders: Sequence[tuple[Any, bool]],
    limit: int | None,
) -> sa.Select:
    """Return the SELECT of a shape's output columns (and find-first window columns).

    Parameters
    ----------
    shape : `DatasetQueryShape`
        The query.
    sub : `sqlalchemy.Subquery`
        Its union subquery (`render_subquery`).
    from_clause : SQLAlchemy FROM clause
        ``sub`` joined with the tables the WHERE expression and ORDER BY need.
    clauses : sequence of SQLAlchemy clauses
        The WHERE conditions.
    orders : sequence of ``(column, descending)``
        ORDER BY terms.
    limit : `int`, optional
        LIMIT.
    """
    order_labels = [col.label(f"o_{i}") for i, (col, _) in enumerate(orders)]
    extra = []
    if shape.find_first:
        key = [sub.c.dataset_type_id, sub.c.data_id_key] if shape.several_types else [sub.c.data_id_key]
        extra.append(sa.func.row_number().over(partition_by=key, order_by=sub.c.rank).label("rn"))
        if shape.check_ambiguity:
            extra.append(sa.func.count().over(partition_by=[*key, sub.c.rank]).label("nrank"))
    inner = sa.select(*[sub.c[c] for c in shape.output_columns], *order_labels, *extra).select_from(
        from_clause
    )
    if clauses:
        inner = inner.where(*clauses)
    if shape.find_first:
        ff = inner.subquery("ff")
        stmt = sa.select(ff).where(ff.c.rn == 1)
        order_exprs = [
            ff.c[f"o_{i}"].desc() if desc else ff.c[f"o_{i}"] for i, (_, desc) in enumerate(orders)
        ]
    else:
        stmt = inner
        order_exprs = [col.desc() if desc else col for col, desc in orders]
    if order_exprs:
        stmt = stmt.order_by(*order_exprs)
    if limit is not None and limit > 0:
        stmt = stmt.limit(limit)
    return stmt
