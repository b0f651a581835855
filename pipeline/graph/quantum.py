"""One unit of work: a task label, a data ID and the predicted datasets it reads and writes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from ..connection_types import LOG_CONNECTION, METADATA_CONNECTION

__all__ = ["Quantum", "METADATA_CONNECTION", "LOG_CONNECTION"]


@dataclass(frozen=True, eq=False)
class Quantum:
    """A quantum: one execution of one task on one data ID.

    Parameters
    ----------
    id : `uuid.UUID`
        Unique id of the quantum (also the node id in the quantum graph).
    task_label : `str`
        Label of the task in the pipeline.
    data_id : `butler.DataCoordinate`
        The quantum's data ID (the task's dimensions), expanded.
    inputs : `dict` [`str`, `list` [`butler.DatasetRef`]]
        Regular inputs by connection name.
    prerequisites : `dict` [`str`, `list` [`butler.DatasetRef`]]
        Prerequisite inputs (looked up per quantum, e.g. calibrations by time) by connection name.
    outputs : `dict` [`str`, `list` [`butler.DatasetRef`]]
        Predicted outputs by connection name, each with its UUID already assigned; includes
        the ``_metadata`` and ``_log`` entries (`METADATA_CONNECTION`, `LOG_CONNECTION`).

    Notes
    -----
    Equality and hashing use ``id`` only.
    """

    id: UUID
    task_label: str
    data_id: Any
    inputs: dict[str, list[Any]] = field(default_factory=dict)
    prerequisites: dict[str, list[Any]] = field(default_factory=dict)
    outputs: dict[str, list[Any]] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantum) and other.id == self.id

    def all_inputs(self) -> Iterator[Any]:
        """Iterate over every input ref (regular and prerequisite).

        Returns
        -------
        refs : iterator of `butler.DatasetRef`
        """
        for refs in self.inputs.values():
            yield from refs
        for refs in self.prerequisites.values():
            yield from refs

    def all_outputs(self) -> Iterator[Any]:
        """Iterate over every predicted output ref, including metadata and log.

        Returns
        -------
        refs : iterator of `butler.DatasetRef`
        """
        for refs in self.outputs.values():
            yield from refs

    @property
    def metadata_ref(self) -> Any:
        """The ``<label>_metadata`` output ref (its existence marks success)."""
        return self.outputs[METADATA_CONNECTION][0]

    @property
    def log_ref(self) -> Any:
        """The ``<label>_log`` output ref (`None` when the task's ``saveLogOutput`` is False)."""
        refs = self.outputs.get(LOG_CONNECTION)
        return refs[0] if refs else None

    def describe(self) -> str:
        """Return ``label {data id}`` for messages.

        Returns
        -------
        text : `str`
        """
        return f"{self.task_label} {_format_data_id(self.data_id)}"


def _format_data_id(data_id: Any) -> str:
    """Format a data ID's required values as ``{k: v, ...}``."""
    required: Mapping[str, Any] | None = getattr(data_id, "required", None)
    if required is None:
        try:
            required = dict(data_id)
        except (TypeError, ValueError):
            return str(data_id)
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in required.items()) + "}"
