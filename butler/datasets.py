"""Dataset types, dataset references and dataset ID generation."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import DataIdError
from .dimensions import DataCoordinate, DimensionUniverse, default_universe

__all__ = ["DatasetIdGenMode", "DatasetRef", "DatasetType", "FileDataset", "uuid7"]

DatasetIdGenMode = str
"""One of ``"unique"``, ``"dataid_type"``, ``"dataid_type_run"``."""

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: ``uuid.uuid5(uuid.NAMESPACE_DNS, "lsst.org")`` (daf_butler's namespace of reproducible dataset
#: IDs), written out: computing it at import imported hashlib (~5 ms of every read-only command).
NAMESPACE_LSST = uuid.UUID("840b31d9-05cd-5161-b2c8-00d32b280d0f")


def uuid7() -> uuid.UUID:
    """Return a time-ordered UUID (RFC 9562 version 7: 48-bit ms timestamp + 74 random bits).

    Time ordering keeps new dataset rows together in the primary-key index (the reason daf_butler
    switched to it, middleware-reference §1.3).
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


class DatasetType:
    """A named kind of dataset: its dimensions, storage class and whether it is a calibration.

    Parameters
    ----------
    name : `str`
        Dataset type name (letters, digits, ``_``; ``.`` separates components).
    dimensions : iterable of `str`
        Dimensions of its data IDs; closed under requires/implies, and `dimensions` keeps the
        required ones in universe order (``("exposure", "detector")`` ->
        ``("instrument", "detector", "exposure")``).
    storage_class : `str`
        Storage class name from ``registry_schema/storage_classes.yaml``.
    is_calibration : `bool`, optional
        Whether datasets of this type may be certified into CALIBRATION collections.
    universe : `DimensionUniverse`, optional
        Defaults to the package's universe.

    Raises
    ------
    ValueError
        If the name is not a valid dataset type name.
    DataIdError
        If a dimension is unknown.
    """

    __slots__ = ("name", "dimensions", "implied", "storage_class", "is_calibration", "universe")

    name: str
    dimensions: tuple[str, ...]
    implied: tuple[str, ...]
    storage_class: str
    is_calibration: bool
    universe: DimensionUniverse

    def __init__(
        self,
        name: str,
        dimensions: Iterable[str],
        storage_class: str,
        is_calibration: bool = False,
        *,
        universe: DimensionUniverse | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(
                f"invalid dataset type name {name!r}: use letters, digits and underscores, starting "
                "with a letter"
            )
        universe = universe or default_universe()
        required, implied = universe.group(dimensions)
        for attr, value in (
            ("name", name),
            ("dimensions", required),
            ("implied", implied),
            ("storage_class", str(storage_class)),
            ("is_calibration", bool(is_calibration)),
            ("universe", universe),
        ):
            object.__setattr__(self, attr, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("DatasetType is immutable")

    def _key(self) -> tuple:
        return (self.name, self.dimensions, self.storage_class, self.is_calibration)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DatasetType):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        cal = ", is_calibration=True" if self.is_calibration else ""
        return f"DatasetType({self.name!r}, {self.dimensions}, {self.storage_class!r}{cal})"

    def __reduce__(self) -> tuple:
        return (DatasetType, (self.name, self.dimensions, self.storage_class, self.is_calibration))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "name": self.name,
            "dimensions": list(self.dimensions),
            "storage_class": self.storage_class,
            "is_calibration": self.is_calibration,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatasetType:
        """Inverse of `to_dict`."""
        return cls(d["name"], d["dimensions"], d["storage_class"], d.get("is_calibration", False))

    def make_data_id(self, data_id: Mapping[str, Any] | None = None, **dims: Any) -> DataCoordinate:
        """Validate a data ID for this dataset type without a registry (no expansion).

        Raises
        ------
        DataIdError
            If a required dimension is missing or a value has the wrong type.
        """
        values = dict(data_id or {})
        values.update(dims)
        if isinstance(data_id, DataCoordinate) and not dims and data_id.dimensions == self.dimensions:
            return data_id
        try:
            return DataCoordinate.standardize(self.universe, self.dimensions, self.implied, values)
        except DataIdError as exc:
            raise DataIdError(f"dataset type {self.name!r}: {exc}") from None


@dataclass(frozen=True)
class DatasetRef:
    """A reference to one dataset: dataset type, data ID, owning RUN and UUID.

    Attributes
    ----------
    dataset_type : `DatasetType`
    data_id : `DataCoordinate`
    run : `str`
        Name of the RUN collection that owns the dataset.
    id : `uuid.UUID`
    """

    dataset_type: DatasetType
    data_id: DataCoordinate
    run: str
    id: uuid.UUID = field(default_factory=uuid7)

    def __post_init__(self) -> None:
        if not isinstance(self.data_id, DataCoordinate):
            object.__setattr__(self, "data_id", self.dataset_type.make_data_id(self.data_id))
        if not isinstance(self.id, uuid.UUID):
            object.__setattr__(self, "id", uuid.UUID(str(self.id)))

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DatasetRef):
            return NotImplemented
        return self.id == other.id and self.run == other.run and self.dataset_type == other.dataset_type

    @staticmethod
    def make_id(
        dataset_type: DatasetType, data_id: Mapping[str, Any], run: str, mode: DatasetIdGenMode = "unique"
    ) -> uuid.UUID:
        """Generate a dataset UUID.

        Parameters
        ----------
        dataset_type : `DatasetType`
        data_id : mapping
            The data ID; only its required values are used.
        run : `str`
            The RUN (used by ``dataid_type_run``).
        mode : {"unique", "dataid_type", "dataid_type_run"}
            ``unique`` -> time-ordered random UUID (v7); ``dataid_type`` -> UUIDv5 of the dataset
            type name and required data ID in namespace ``uuid5(NAMESPACE_DNS, "lsst.org")``
            (re-ingesting a file gives the same id); ``dataid_type_run`` also hashes the run.

        Raises
        ------
        ValueError
            On an unknown mode.
        """
        if mode == "unique":
            return uuid7()
        if mode not in ("dataid_type", "dataid_type_run"):
            raise ValueError(
                f"unknown id generation mode {mode!r}; use unique, dataid_type or dataid_type_run"
            )
        req = (
            data_id.required
            if isinstance(data_id, DataCoordinate)
            else {d: data_id[d] for d in dataset_type.dimensions}
        )
        items = [("dataset_type", dataset_type.name)] + sorted((k, v) for k, v in req.items())
        if mode == "dataid_type_run":
            items.append(("run", run))
        return uuid.uuid5(NAMESPACE_LSST, ",".join(f"{k}={v}" for k, v in items))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (data ID records included)."""
        return {
            "dataset_type": self.dataset_type.to_dict(),
            "data_id": self.data_id.to_dict(),
            "run": self.run,
            "id": str(self.id),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatasetRef:
        """Inverse of `to_dict`."""
        return cls(
            DatasetType.from_dict(d["dataset_type"]),
            DataCoordinate.from_dict(d["data_id"]),
            d["run"],
            uuid.UUID(d["id"]),
        )

    def replace(self, **changes: Any) -> DatasetRef:
        """Return a copy with some fields changed."""
        kw: dict[str, Any] = {
            "dataset_type": self.dataset_type,
            "data_id": self.data_id,
            "run": self.run,
            "id": self.id,
        }
        kw.update(changes)
        return DatasetRef(**kw)

    def __repr__(self) -> str:
        return f"DatasetRef({self.dataset_type.name}, {self.data_id!r}, run={self.run!r}, id={self.id})"


@dataclass
class FileDataset:
    """A file to ingest and the dataset(s) it holds.

    Attributes
    ----------
    path : `str` or `os.PathLike`
        The file.
    refs : `list` of `DatasetRef`
        Datasets stored in it (several for a multi-detector raw file).
    formatter : `str`, optional
        Dotted path of the formatter to read it with (default: the storage class's).
    """

    path: Any
    refs: list[DatasetRef] | DatasetRef
    formatter: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.refs, DatasetRef):
            self.refs = [self.refs]
