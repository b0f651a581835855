"""The butler a worker gets: predicted refs in, files out, never the registry.

Mirrors daf_butler's ``QuantumBackedButler`` (middleware-reference §7): inputs come with their
datastore records (from the quantum graph), outputs are the predicted refs with their UUIDs; the
files are written atomically with the repository's templates and formatters and the records of
what was written are handed back (`written`) for the driver to register in one batch
(`Butler.register_outputs`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._errors import DatasetNotFoundError
from .datasets import DatasetRef
from .datastore.file_datastore import FileDatastore
from .datastore.records import StoredFileInfo

__all__ = ["QuantumBackedButler"]


class QuantumBackedButler:
    """Read predicted inputs and write predicted outputs of one quantum without a registry.

    Parameters
    ----------
    root : path
        Repository root (its ``butler.yaml`` gives the file templates, when present).
    inputs : mapping of `uuid.UUID` to ``(DatasetRef, StoredFileInfo)``
        Inputs that exist in the datastore, with their records.
    outputs : iterable of `DatasetRef`
        Predicted outputs (expanded data IDs, UUIDs and RUN assigned).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        inputs: Mapping[uuid.UUID, tuple[DatasetRef, StoredFileInfo]],
        outputs: Iterable[DatasetRef],
    ) -> None:
        self.root = Path(root).absolute()
        self.datastore = FileDatastore(self.root)
        self._inputs = dict(inputs)
        self._outputs = {r.id: r for r in outputs}
        self._written: dict[uuid.UUID, tuple[DatasetRef, StoredFileInfo]] = {}

    @property
    def written(self) -> list[tuple[DatasetRef, StoredFileInfo]]:
        """``(ref, info)`` of every output written so far, in write order."""
        return list(self._written.values())

    def _lookup(self, ref: DatasetRef) -> tuple[DatasetRef, StoredFileInfo]:
        entry = self._inputs.get(ref.id) or self._written.get(ref.id)
        if entry is None:
            raise DatasetNotFoundError(
                f"dataset {ref.dataset_type.name} {ref.data_id.required} (id {ref.id}) is not an "
                "input of this "
                "quantum (or an output already written)"
            )
        return entry

    def get(self, ref: DatasetRef, parameters: Mapping[str, Any] | None = None) -> Any:
        """Read an input (or an output this quantum already wrote).

        Raises
        ------
        DatasetNotFoundError
            If the ref is not a known input.
        DatastoreError
            If the file is missing or corrupted.
        """
        known, info = self._lookup(ref)
        return self.datastore.read(known, info, parameters)

    def exists(self, ref: DatasetRef) -> bool:
        """Whether a known input or written output has its file."""
        entry = self._inputs.get(ref.id) or self._written.get(ref.id)
        return entry is not None and self.datastore.exists(entry[1])

    def put(self, obj: Any, ref: DatasetRef) -> DatasetRef:
        """Write a predicted output atomically (overwriting leftovers of an earlier attempt).

        Raises
        ------
        DatasetNotFoundError
            If ``ref`` is not one of the predicted outputs.
        DatastoreError
            If writing fails.
        """
        predicted = self._outputs.get(ref.id)
        if predicted is None:
            raise DatasetNotFoundError(
                f"dataset {ref.dataset_type.name} {ref.data_id.required} (id {ref.id}) is not a "
                "predicted output of this quantum"
            )
        info = self.datastore.write(obj, predicted, clobber=True)
        self._written[ref.id] = (predicted, info)
        return predicted
