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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from ...timespan import TIMESPAN_MAX, TIMESPAN_MIN

if TYPE_CHECKING:
    from sqlalchemy.sql import ColumnElement

__all__ = [
    "ColumnKind",
    "ColumnResolver",
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
    column: ColumnElement | None = None
    timespan: tuple[ColumnElement, ColumnElement] | None = None

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
