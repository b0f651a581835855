"""The dimension universe, dimension records and data IDs (`DataCoordinate`).

The universe is read from ``registry_schema/dimensions.yaml`` (see that file for the meaning of
``requires``/``implies``). A *dimension group* is a set of dimensions closed under ``requires``
and ``implies``; its *required* dimensions are those no other member implies (they identify a
data ID), the rest are *implied* (their values follow from records). This mirrors
daf_butler's ``DimensionGroup`` (middleware-reference §1.1) on a smaller universe.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._errors import DataIdError
from ._yaml import load_yaml_file
from .timespan import Timespan

__all__ = [
    "DataCoordinate",
    "DimensionElement",
    "DimensionField",
    "DimensionRecord",
    "DimensionUniverse",
    "default_universe",
]

_PY_TYPES: dict[str, type] = {"string": str, "text": str, "int": int, "float": float, "bool": bool}


@dataclass(frozen=True)
class DimensionField:
    """One key or metadata field of a dimension element (from ``dimensions.yaml``)."""

    name: str
    type: str
    doc: str = ""
    length: int | None = None
    nullable: bool = False

    @property
    def pytype(self) -> builtins.type:
        """The Python type of the field's values."""
        return _PY_TYPES[self.type]


@dataclass(frozen=True)
class DimensionElement:
    """A dimension: its key field, the dimensions it requires/implies and its metadata fields."""

    name: str
    doc: str
    keys: tuple[DimensionField, ...]
    requires: tuple[str, ...]
    implies: tuple[str, ...]
    metadata: tuple[DimensionField, ...]
    temporal: bool = False
    index: int = field(default=0, compare=False)

    @property
    def primary_key(self) -> DimensionField:
        """The field whose value a data ID holds for this dimension (``name`` or ``id``)."""
        return self.keys[0]

    @property
    def record_fields(self) -> tuple[str, ...]:
        """Names of the attributes of a record of this element, in table-column order."""
        names = list(self.requires) + [k.name for k in self.keys] + list(self.implies)
        names += [f.name for f in self.metadata]
        if self.temporal:
            names.append("timespan")
        return tuple(names)


class DimensionUniverse:
    """All dimension elements of a repository, in dependency (universe) order.

    Parameters
    ----------
    config : `dict`
        The parsed ``dimensions.yaml``.

    Raises
    ------
    ValueError
        If an element requires or implies an unknown or later element.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.version: int = int(config["version"])
        self.namespace: str = str(config.get("namespace", ""))
        elements: dict[str, DimensionElement] = {}
        for i, (name, spec) in enumerate(config["elements"].items()):
            for dep in list(spec.get("requires", [])) + list(spec.get("implies", [])):
                if dep not in elements:
                    raise ValueError(f"dimension {name!r} depends on {dep!r}, which is not defined before it")
            elements[name] = DimensionElement(
                name=name,
                doc=spec.get("doc", ""),
                keys=tuple(DimensionField(**k) for k in spec["keys"]),
                requires=tuple(spec.get("requires", [])),
                implies=tuple(spec.get("implies", [])),
                metadata=tuple(DimensionField(**f) for f in spec.get("fields", []) or []),
                temporal=bool(spec.get("temporal", False)),
                index=i,
            )
        self.elements: dict[str, DimensionElement] = elements
        self.names: tuple[str, ...] = tuple(elements)
        self._group_cache: dict[frozenset[str], tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def __getitem__(self, name: str) -> DimensionElement:
        try:
            return self.elements[name]
        except KeyError:
            raise DataIdError(
                f"unknown dimension {name!r}; known dimensions are {', '.join(self.names)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.elements

    def sorted(self, names: Iterable[str]) -> tuple[str, ...]:
        """Return dimension names in universe order (raises `DataIdError` on unknown names)."""
        s = set(names)
        for n in s:
            self[n]
        return tuple(n for n in self.names if n in s)

    def group(self, names: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Close a set of dimensions and split it into ``(required, implied)``, universe order.

        Parameters
        ----------
        names : iterable of `str`
            Dimension names (any subset of the universe).

        Returns
        -------
        required, implied : `tuple` of `str`
            ``required`` identifies a data ID of the group; ``implied`` follow from records.

        Raises
        ------
        DataIdError
            If a name is not a dimension.
        """
        key = frozenset(names)
        cached = self._group_cache.get(key)
        if cached is not None:
            return cached
        full: set[str] = set()
        todo = list(key)
        while todo:
            n = todo.pop()
            if n in full:
                continue
            el = self[n]
            full.add(n)
            todo.extend(el.requires)
            todo.extend(el.implies)
        implied_by_others = {i for n in full for i in self.elements[n].implies}
        required = tuple(n for n in self.names if n in full and n not in implied_by_others)
        implied = tuple(n for n in self.names if n in full and n in implied_by_others)
        self._group_cache[key] = (required, implied)
        return required, implied

    def coerce_value(self, dimension: str, value: Any) -> Any:
        """Convert a data ID value to its dimension's key type (``'5'`` -> 5 for int keys).

        Raises
        ------
        DataIdError
            If the value cannot be converted.
        """
        pk = self[dimension].primary_key
        t = pk.pytype
        if type(value) is t:
            return value
        try:
            if t is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                if isinstance(value, bool):
                    raise ValueError
                return int(value)
            if t is str:
                if not isinstance(value, str):
                    raise ValueError
                return value
            return t(value)
        except (TypeError, ValueError):
            raise DataIdError(
                f"data ID value {value!r} for dimension {dimension!r} is not a valid {pk.type} "
                f"(the {dimension}.{pk.name} field)"
            ) from None

    def __repr__(self) -> str:
        return f"DimensionUniverse(version={self.version}, elements={list(self.names)})"


@lru_cache(maxsize=4)
def _load_universe(path: str) -> DimensionUniverse:

    return DimensionUniverse(load_yaml_file(path))


def default_universe() -> DimensionUniverse:
    """Return the universe of ``registry_schema/dimensions.yaml`` (cached)."""
    import registry_schema

    return _load_universe(str(Path(registry_schema.__file__).parent / "dimensions.yaml"))


class DimensionRecord:
    """A row of a dimension table with read-only attribute access (``rec.obs_id``).

    Parameters
    ----------
    element : `DimensionElement`
        The element the record belongs to.
    values : `dict`
        Field name -> value; temporal records hold ``timespan`` as a `Timespan`.
    """

    __slots__ = ("_element", "_values")

    def __init__(self, element: DimensionElement, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_element", element)
        object.__setattr__(self, "_values", dict(values))

    @property
    def element(self) -> DimensionElement:
        """The dimension element of this record."""
        return self._element

    @property
    def data_id_value(self) -> Any:
        """The value a data ID holds for this record's dimension."""
        return self._values[self._element.primary_key.name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f"{self._element.name} records have no field {name!r}; fields: "
                f"{', '.join(self._element.record_fields)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("dimension records are read-only")

    def get(self, name: str, default: Any = None) -> Any:
        """Return a field value, or ``default`` when absent."""
        return self._values.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; a timespan becomes ``[begin_ns, end_ns]`` (TAI ns since 1970)."""
        d = dict(self._values)
        ts = d.get("timespan")
        if isinstance(ts, Timespan):
            d["timespan"] = [ts.begin_ns, ts.end_ns]
        return d

    @classmethod
    def from_dict(cls, element: DimensionElement, d: Mapping[str, Any]) -> DimensionRecord:
        """Inverse of `to_dict` (also accepts a `Timespan` or ``{begin, end}`` ISO dict)."""
        values = dict(d)
        ts = values.get("timespan")
        if isinstance(ts, (list, tuple)):
            values["timespan"] = Timespan.from_ns(ts[0], ts[1])
        elif isinstance(ts, Mapping):
            values["timespan"] = Timespan.from_dict(ts)
        return cls(element, values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DimensionRecord):
            return NotImplemented
        return self._element.name == other._element.name and self._values == other._values

    def __hash__(self) -> int:
        return hash((self._element.name, self.data_id_value))

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self._values.items() if k != "camera_yaml")
        return f"{self._element.name}({body})"


class DataCoordinate(Mapping[str, Any]):
    """An immutable data ID: dimension name -> value, optionally with its dimension records.

    Equality and hashing use the required dimensions and their values only. After expansion
    (`Registry.expand_data_id`) the mapping also holds the implied dimensions and
    `records` holds one `DimensionRecord` per dimension.

    Use `make` or the registry to build one; the constructor does no validation.
    """

    __slots__ = ("_dims", "_vmap", "_records", "_key", "_universe", "_lazy", "_lazy_values")

    def __init__(
        self,
        universe: DimensionUniverse,
        dimensions: tuple[str, ...],
        values: dict[str, Any],
        records: dict[str, DimensionRecord] | None = None,
    ) -> None:
        self._universe = universe
        self._dims = dimensions
        self._vmap: dict[str, Any] | None = values
        self._records = records
        self._key: str | None = None
        self._lazy: tuple | None = None
        self._lazy_values: tuple | None = None

    @classmethod
    def _expanded_lazily(
        cls,
        universe: DimensionUniverse,
        dimensions: tuple[str, ...],
        names: tuple[str, ...],
        get_values: Any,
        getters: Sequence[tuple[str, Mapping[tuple, DimensionRecord], Any]],
        row: Any,
    ) -> DataCoordinate:
        """Build an expanded data ID from a query row; values and records are made on first use.

        Parameters
        ----------
        universe : `DimensionUniverse`
        dimensions : `tuple` [`str`, ...]
            The required dimensions.
        names : `tuple` [`str`, ...]
            Required and implied dimensions, in the order ``get_values`` returns them.
        get_values : callable
            ``get_values(row)`` -> tuple of the values of ``names`` (`None` = unknown).
        getters : sequence of ``(dimension, records by key, key getter)``
            ``key getter(row)`` gives the record key of the dimension in ``records by key``
            (a mapping the caller no longer changes).
        row : `tuple`
            The query row.
        """
        self = cls.__new__(cls)
        self._universe = universe
        self._dims = dimensions
        self._vmap = None
        self._records = None
        self._key = None
        self._lazy = (getters, row)
        self._lazy_values = (names, get_values, row)
        return self

    @property
    def _values(self) -> dict[str, Any]:
        values = self._vmap
        if values is None:
            names, get_values, row = self._lazy_values  # type: ignore[misc]
            vals = get_values(row)
            if None in vals:
                values = {d: v for d, v in zip(names, vals) if v is not None}
            else:
                values = dict(zip(names, vals))
            self._vmap = values
            self._lazy_values = None
        return values

    def _recs(self) -> dict[str, DimensionRecord] | None:
        records = self._records
        if records is None and self._lazy is not None:
            getters, row = self._lazy
            records = {}
            for d, cache, get_key in getters:
                rec = cache.get(get_key(row))
                if rec is not None:
                    records[d] = rec
            self._records = records
            self._lazy = None
        return records

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def make(
        cls, universe_dims: Iterable[str], universe: DimensionUniverse | None = None, **values: Any
    ) -> DataCoordinate:
        """Build a (not expanded) data ID for a set of dimensions from keyword values.

        Parameters
        ----------
        universe_dims : iterable of `str`
            The dimensions the data ID is for (closed under requires/implies automatically).
        universe : `DimensionUniverse`, optional
            Defaults to `default_universe`.
        **values
            Dimension values; every required dimension must be given; implied ones are kept.

        Raises
        ------
        DataIdError
            If a required dimension is missing or a name/value is invalid.
        """
        universe = universe or default_universe()
        required, implied = universe.group(universe_dims)
        return cls.standardize(universe, required, implied, values)

    @classmethod
    def standardize(
        cls,
        universe: DimensionUniverse,
        required: tuple[str, ...],
        implied: tuple[str, ...],
        values: Mapping[str, Any],
    ) -> DataCoordinate:
        """Validate and coerce ``values`` for a group; keep required and known implied values."""
        out: dict[str, Any] = {}
        missing = [d for d in required if values.get(d) is None]
        if missing:
            raise DataIdError(
                f"data ID {dict(values)} is missing required dimension(s) {', '.join(missing)} "
                f"(needed: {', '.join(required)})"
            )
        for d in required:
            out[d] = universe.coerce_value(d, values[d])
        for d in implied:
            v = values.get(d)
            if v is not None:
                out[d] = universe.coerce_value(d, v)
        return cls(universe, required, out)

    @classmethod
    def empty(cls, universe: DimensionUniverse | None = None) -> DataCoordinate:
        """Return the data ID of a dataset type with no dimensions."""
        return cls(universe or default_universe(), (), {}, {})

    # -- mapping --------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    # -- properties -----------------------------------------------------------------------------
    @property
    def universe(self) -> DimensionUniverse:
        """The dimension universe."""
        return self._universe

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The required dimensions, in universe order (what identifies the data ID)."""
        return self._dims

    @property
    def implied(self) -> tuple[str, ...]:
        """The implied dimensions of this data ID's group, in universe order."""
        return self._universe.group(self._dims)[1]

    @property
    def required(self) -> dict[str, Any]:
        """Required dimension -> value."""
        return {d: self._values[d] for d in self._dims}

    @property
    def key(self) -> str:
        """Canonical string of the required values (JSON list in universe order)."""
        if self._key is None:
            self._key = json.dumps([self._values[d] for d in self._dims], separators=(",", ":"))
        return self._key

    @property
    def records(self) -> dict[str, DimensionRecord]:
        """Dimension name -> record (empty until expanded)."""
        return self._recs() or {}

    def has_records(self) -> bool:
        """Whether the data ID was expanded (records of every dimension attached)."""
        records = self._recs()
        return records is not None and (len(records) == len(self._dims) + len(self.implied))

    def has_full(self) -> bool:
        """Whether the implied dimension values are known."""
        return all(d in self._values for d in self.implied)

    @property
    def timespan(self) -> Timespan | None:
        """The timespan of the data ID's temporal record (exposure, then day_obs), if expanded."""
        for name in ("exposure", "day_obs"):
            rec = self.records.get(name)
            if rec is not None and rec.get("timespan") is not None:
                return rec.timespan
        return None

    def subset(self, dimensions: Iterable[str]) -> DataCoordinate:
        """Restrict to a group of dimensions whose values this data ID knows (keeps records).

        Raises
        ------
        DataIdError
            If a needed dimension's value is not known.
        """
        required, implied = self._universe.group(dimensions)
        if required == self._dims:
            return self
        values: dict[str, Any] = {}
        for d in required:
            if d not in self._values:
                raise DataIdError(f"data ID {self.to_simple()} has no value for {d!r}; expand it first")
            values[d] = self._values[d]
        for d in implied:
            if d in self._values:
                values[d] = self._values[d]
        records = None
        mine = self._recs()
        if mine is not None:
            records = {d: mine[d] for d in required + implied if d in mine}
        return DataCoordinate(self._universe, required, values, records)

    def to_simple(self) -> dict[str, Any]:
        """Plain dict of all known values."""
        return dict(self._values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form with records (inverse: `from_dict`)."""
        d: dict[str, Any] = {"dimensions": list(self._dims), "values": dict(self._values)}
        records = self._recs()
        if records is not None:
            d["records"] = {k: r.to_dict() for k, r in records.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], universe: DimensionUniverse | None = None) -> DataCoordinate:
        """Rebuild a data ID written by `to_dict`."""
        universe = universe or default_universe()
        records = None
        if "records" in d:
            records = {k: DimensionRecord.from_dict(universe[k], r) for k, r in d["records"].items()}
        return cls(universe, tuple(d["dimensions"]), dict(d["values"]), records)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DataCoordinate):
            return self._dims == other._dims and all(self._values[d] == other._values[d] for d in self._dims)
        if isinstance(other, Mapping):
            return dict(other) == self.required or dict(other) == self._values
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._dims, tuple(self._values[d] for d in self._dims)))

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k}: {v!r}" for k, v in self._values.items()) + "}"

    def __reduce__(self) -> tuple:
        return (DataCoordinate._unpickle, (self.to_dict(),))

    @staticmethod
    def _unpickle(d: dict[str, Any]) -> DataCoordinate:
        return DataCoordinate.from_dict(d)
