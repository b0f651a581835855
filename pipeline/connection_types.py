"""Connection declarations (``lsst.pipe.base.connectionTypes``): how a task reads and writes.

Declared as class attributes of a `~pipeline.connections.PipelineTaskConnections` subclass; the
attribute name is the connection name (= the ``run()`` argument / result `Struct` field), ``name``
is the dataset type name (may contain ``{template}`` placeholders).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = [
    "CONFIG_CONNECTION",
    "LOG_CONNECTION",
    "METADATA_CONNECTION",
    "BaseConnection",
    "BaseInput",
    "DimensionedConnection",
    "InitInput",
    "InitOutput",
    "Input",
    "Output",
    "PrerequisiteInput",
]

#: Connection name of the ``<label>_metadata`` output (``TaskMetadata``) every quantum writes.
METADATA_CONNECTION = "_metadata"
#: Connection name of the ``<label>_log`` output (``ButlerLogRecords``); absent when the task's
#: ``saveLogOutput`` is False.
LOG_CONNECTION = "_log"
#: Connection name of the ``<label>_config`` init-output (the task's frozen ``Config``).
CONFIG_CONNECTION = "_config"


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaseConnection:
    """Common fields of every connection.

    Parameters
    ----------
    name : `str`
        Dataset type name, possibly with ``{template}`` placeholders.
    storageClass : `str`
        Storage class name (``registry_schema/storage_classes.yaml``), e.g. ``"Exposure"``.
    doc : `str`
        What the dataset is.
    multiple : `bool`
        `True` when the task takes/gives a list of datasets for this connection.
    deprecated : `str`, optional
        Deprecation message, if any.

    Raises
    ------
    TypeError
        If ``name`` or ``storageClass`` is not a non-empty string.
    """

    name: str
    storageClass: str
    doc: str = ""
    multiple: bool = False
    deprecated: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"connection name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.storageClass, str) or not self.storageClass:
            raise TypeError(
                f"connection {self.name!r}: storageClass must be a non-empty string, "
                f"got {self.storageClass!r}"
            )

    # Connection kinds, used by the pipeline graph.
    is_init: bool = dataclasses.field(default=False, init=False, repr=False)
    is_prerequisite: bool = dataclasses.field(default=False, init=False, repr=False)
    is_output: bool = dataclasses.field(default=False, init=False, repr=False)

    def replace(self, **changes: Any) -> BaseConnection:
        """Return a copy with some fields changed (e.g. the resolved dataset type ``name``)."""
        return dataclasses.replace(self, **changes)

    @property
    def dimensions(self) -> tuple[str, ...]:
        """Dimensions of the dataset type; init connections have none."""
        return ()

    @property
    def isCalibration(self) -> bool:
        """`True` for calibration dataset types (found by validity range)."""
        return False


@dataclasses.dataclass(frozen=True, kw_only=True)
class DimensionedConnection(BaseConnection):
    """A connection whose dataset type has dimensions.

    Parameters
    ----------
    dimensions : `tuple` [`str`, ...]
        Dimension names of the dataset type (e.g. ``("instrument", "exposure", "detector")``).
    isCalibration : `bool`
        `True` if the dataset type is a calibration (certified into CALIBRATION collections).
    """

    dimensions: tuple[str, ...] = ()
    isCalibration: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        dims = self.dimensions
        if isinstance(dims, str):
            raise TypeError(
                f"connection {self.name!r}: dimensions must be a tuple of names, not the "
                f"string {dims!r} (write ({dims!r},))"
            )
        object.__setattr__(self, "dimensions", tuple(dims))


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaseInput(DimensionedConnection):
    """Common fields of `Input` and `PrerequisiteInput`.

    Parameters
    ----------
    deferLoad : `bool`
        Pass a deferred handle (load later) instead of the object.
    minimum : `int`
        Minimum number of datasets per quantum; fewer raises `~pipeline.exceptions.NoWorkFound`
        (regular input) or a missing-prerequisite error (prerequisite). ``minimum > 1`` requires
        ``multiple=True``; ``minimum=0`` makes a prerequisite optional.

    Raises
    ------
    TypeError
        If ``minimum > 1`` without ``multiple``, or ``minimum < 0``.
    """

    deferLoad: bool = False
    minimum: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.minimum < 0:
            raise TypeError(f"connection {self.name!r}: minimum must be >= 0, got {self.minimum}")
        if self.minimum > 1 and not self.multiple:
            raise TypeError(f"connection {self.name!r}: minimum={self.minimum} needs multiple=True")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Input(BaseInput):
    """A regular input: produced earlier in the pipeline or present in the input collections.

    Parameters
    ----------
    deferGraphConstraint : `bool`
        Do not use this dataset type's existence to constrain the initial graph query.
    """

    deferGraphConstraint: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.minimum == 0:
            raise TypeError(f"Input {self.name!r}: minimum=0 is only allowed for PrerequisiteInput")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrerequisiteInput(BaseInput):
    """An input that must exist before the pipeline runs (never produced by it).

    Looked up per quantum; calibrations are found by the quantum's exposure time span.

    Parameters
    ----------
    lookupFunction : callable, optional
        ``lookupFunction(datasetType, registry, dataId, collections) -> Iterable[DatasetRef]``
        replacing the standard lookup.
    """

    lookupFunction: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "is_prerequisite", True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Output(DimensionedConnection):
    """A dataset the task writes, one per quantum (or a list with ``multiple=True``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "is_output", True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InitInput(BaseConnection):
    """A dataset with no dimensions read once when the task is constructed (``initInputs``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "is_init", True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InitOutput(BaseConnection):
    """A dataset with no dimensions written once per run (e.g. a schema)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "is_init", True)
        object.__setattr__(self, "is_output", True)
