"""The interface between the query-expression compiler and the registry.

The compiler (:func:`~butler.registry.queries.compile_expression`) knows nothing about tables.
Each identifier it meets in an expression (``exposure``, ``exposure.obs_id``,
``detector.purpose``, ``exposure.timespan``, ``instrument``, ``band``, ``raw.run`` ...) is
handed to a :class:`ColumnResolver` that the registry implements; the resolver answers with a
:class:`ResolvedColumn` naming the SQLAlchemy column (or the pair of timespan columns) and the
value kind the compiler type-checks against.

Timespans are stored as two ``BIGINT`` columns holding TAI nanoseconds since
1970-01-01T00:00:00 TAI, half-open ``[begin, end)``; an unbounded begin is ``-(2**62)`` and an
unbounded end is ``2**62`` (see :data:`TIMESPAN_MIN` / :data:`TIMESPAN_MAX`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ..._errors import InvalidQueryError
from ...timespan import TIMESPAN_MAX, TIMESPAN_MIN

if TYPE_CHECKING:
    from sqlalchemy.sql import ColumnElement

    from ...dimensions import DimensionUniverse
    from ._text_backend import SqlText

    SqlColumn = ColumnElement[Any] | SqlText
    """A column of either renderer: a SQLAlchemy column or SQL text (the sqlite3 fast path)."""

__all__ = [
    "ColumnKind",
    "ColumnResolver",
    "DIMENSION_KIND",
    "DimensionColumnResolver",
    "ResolvedColumn",
    "TIMESPAN_MAX",
    "TIMESPAN_MIN",
]

#: The value kinds a resolved identifier can have.
#:
#: ``"int"``, ``"float"``, ``"str"``: scalar columns; ``"uuid"``: dataset IDs (compared with
#: ``UUID('...')`` literals, string literals or :class:`uuid.UUID` bind values);
#: ``"timespan"``: a ``(begin, end)`` pair of BIGINT TAI-nanosecond columns; ``"time"``: a single
#: BIGINT TAI-nanosecond column (e.g. one bound of a timespan); ``"datetime"``: a SQL
#: ``DATETIME``/``TIMESTAMP`` column holding naive UTC (e.g. ``ingest_date``).
ColumnKind = Literal["int", "float", "str", "timespan", "time", "uuid", "datetime"]


@dataclass(frozen=True)
class ResolvedColumn:
    """What an identifier in a query expression refers to.

    Exactly one of ``column`` and ``timespan`` is set: ``timespan`` when ``kind == "timespan"``,
    ``column`` otherwise.

    Parameters
    ----------
    kind : `ColumnKind`
        Value kind the compiler type-checks against (see :data:`ColumnKind`).
    element : `str`
        The dimension element (``"exposure"``) or dataset type (``"raw"``) the column belongs
        to; used in error messages.
    column : `sqlalchemy.sql.ColumnElement`, optional
        The scalar column (for every kind except ``"timespan"``).
    timespan : `tuple` [`sqlalchemy.sql.ColumnElement`, `sqlalchemy.sql.ColumnElement`], optional
        ``(begin, end)`` BIGINT columns in TAI ns, half-open (for ``kind == "timespan"``).

    Raises
    ------
    ValueError
        If the columns given do not match ``kind``.
    """

    kind: ColumnKind
    element: str
    column: SqlColumn | None = None
    timespan: tuple[SqlColumn, SqlColumn] | None = None

    def __post_init__(self) -> None:
        if self.kind == "timespan":
            if self.timespan is None or self.column is not None:
                raise ValueError("ResolvedColumn(kind='timespan') needs timespan=(begin, end) and no column")
        elif self.column is None or self.timespan is not None:
            raise ValueError(f"ResolvedColumn(kind={self.kind!r}) needs column= and no timespan")


@runtime_checkable
class ColumnResolver(Protocol):
    """Maps identifiers in a query expression to columns; implemented by the registry.

    The resolver is called once per distinct identifier of an expression, in order of
    appearance, while compiling. It may record what was asked for (to add joins).
    """

    def resolve(self, identifier: str) -> ResolvedColumn:
        """Return the column an identifier refers to.

        Parameters
        ----------
        identifier : `str`
            As written in the expression, lower-cased keywords aside: a dimension name
            (``"exposure"``, ``"instrument"``, ``"band"`` → its primary key), ``"element.field"``
            (``"exposure.obs_id"``, ``"exposure.timespan"``, ``"detector.purpose"``) or a
            dataset field (``"raw.run"``, ``"raw.dataset_id"``, ``"raw.ingest_date"``).

        Returns
        -------
        resolved : `ResolvedColumn`
            The column and its kind.

        Raises
        ------
        Exception
            Whatever error the registry chooses for an unknown name (e.g. its
            ``InvalidQueryError``); the compiler lets it propagate, adding a note that shows the
            expression with a caret under the identifier.
        """
        ...


#: Value kind of each column type of the dimension universe (``registry_schema/dimensions.yaml``).
DIMENSION_KIND: dict[str, ColumnKind] = {
    "string": "str",
    "text": "str",
    "int": "int",
    "float": "float",
    "bool": "int",
}


class DimensionColumnResolver:
    """`ColumnResolver` of dimensions, element fields and dataset fields over a universe.

    The name lookup shared by the registry's SQLAlchemy `QueryContext` and the CLI's SQL-text
    fast path (`butler.registry._sqlite_fast`); subclasses only say where the columns are.
    They set ``universe``, ``dims`` (every dimension of the query's rows) and
    ``dataset_fields`` (dataset type name -> ``field -> ResolvedColumn``) and implement
    `dim_col`, `element_column` and `element_timespan`.
    """

    universe: DimensionUniverse
    dims: tuple[str, ...]
    dataset_fields: dict[str, Callable[[str], ResolvedColumn]]

    def dim_col(self, d: str) -> Any:
        """Return the column holding dimension ``d``'s value (an error if not in ``dims``)."""
        raise NotImplementedError

    def element_column(self, element: str, field: str, kind: ColumnKind) -> Any:
        """Return the column of metadata ``field`` of dimension element ``element``."""
        raise NotImplementedError

    def element_timespan(self, element: str) -> tuple[Any, Any]:
        """Return ``(begin, end)`` of a temporal element, unbounded ends as TIMESPAN_MIN/MAX."""
        raise NotImplementedError

    def element_bounds(self, element: str, column: str) -> tuple[Any, Any, Any]:
        """Return ``(min, max, smallest nonzero |value|)`` of a column of an element's table.

        Each is `None` when the table has no (nonzero) value. Used by the compiler to refuse
        arithmetic that can overflow (see `numeric_bounds`).
        """
        raise NotImplementedError

    def numeric_bounds(self, identifier: str) -> tuple[Any, Any, Any] | None:
        """Return ``(min, max, smallest nonzero |value|)`` of a numeric identifier's values.

        The values are those stored in the repository (the dimension table holding the key or
        field), a superset of any query's rows. `None` for identifiers without such a table.

        Parameters
        ----------
        identifier : `str`
            A dimension (``detector``) or ``element.field`` (``exposure.exposure_time``).

        Returns
        -------
        bounds : `tuple` or `None`
            See `element_bounds`.
        """
        u = self.universe
        if "." not in identifier:
            return (
                self.element_bounds(identifier, u[identifier].primary_key.name) if identifier in u else None
            )
        head, _, field = identifier.partition(".")
        if head in self.dataset_fields or head not in u:
            return None
        el = u[head]
        if field == el.primary_key.name:
            return self.element_bounds(head, field)
        if field in el.requires or field in el.implies:
            return self.element_bounds(field, u[field].primary_key.name)
        if any(f.name == field for f in el.metadata):
            return self.element_bounds(head, field)
        return None

    def resolve(self, identifier: str) -> ResolvedColumn:
        """Return the column an expression identifier refers to.

        Raises
        ------
        InvalidQueryError
            For an unknown dimension, element, field or dataset type.
        """
        u = self.universe
        if "." not in identifier:
            if identifier in u:
                pk = u[identifier].primary_key
                return ResolvedColumn(DIMENSION_KIND[pk.type], identifier, column=self.dim_col(identifier))
            raise InvalidQueryError(
                f"unknown dimension {identifier!r} in query expression; dimensions of this query: "
                f"{', '.join(self.dims) or '(none)'} (fields are written element.field, e.g. exposure.obs_id)"
            )
        head, _, field = identifier.partition(".")
        if head in self.dataset_fields:
            return self.dataset_fields[head](field)
        if head not in u:
            known = ", ".join(list(self.dims) + list(self.dataset_fields))
            raise InvalidQueryError(
                f"unknown dimension element or dataset type {head!r} in {identifier!r}; known here: {known}"
            )
        el = u[head]
        if head not in self.dims:
            raise InvalidQueryError(
                f"{identifier!r}: {head!r} is not a dimension of this query "
                f"({', '.join(self.dims) or 'none'})"
            )
        if field == el.primary_key.name:
            return ResolvedColumn(DIMENSION_KIND[el.primary_key.type], head, column=self.dim_col(head))
        if field in el.requires or field in el.implies:
            return ResolvedColumn(DIMENSION_KIND[u[field].primary_key.type], head, column=self.dim_col(field))
        if field == "timespan" and el.temporal:
            return ResolvedColumn("timespan", head, timespan=self.element_timespan(head))
        for f in el.metadata:
            if f.name == field:
                kind = DIMENSION_KIND[f.type]
                return ResolvedColumn(kind, head, column=self.element_column(head, field, kind))
        raise InvalidQueryError(
            f"{head} has no field {field!r}; its fields are {', '.join(el.record_fields)}"
        )
