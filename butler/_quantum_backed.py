"""The butler a worker gets: predicted refs in, files out, never the registry.

Mirrors daf_butler's ``QuantumBackedButler`` (middleware-reference §7): inputs come with their
datastore records (from the quantum graph), outputs are the predicted refs with their UUIDs; the
files are written atomically with the repository's templates and formatters and the records of
what was written are handed back (`written`) for the driver to register in one batch
(`Butler.register_outputs`).

A long-lived worker builds one per quantum cheaply: pass the repository's parsed configuration
(``config=``) or a ready `FileDatastore` (``datastore=``), or derive the next quantum's butler
from the previous one with `for_quantum`, so ``butler.yaml`` is not re-read and the templates are
not re-parsed for every quantum.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
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
        Repository root (its ``butler.yaml`` gives the file templates, when present and neither
        ``config`` nor ``datastore`` is given).
    inputs : mapping of `uuid.UUID` to ``(DatasetRef, StoredFileInfo)``
        Inputs that exist in the datastore, with their records.
    outputs : iterable of `DatasetRef`
        Predicted outputs (expanded data IDs, UUIDs and RUN assigned).
    config : mapping, optional
        The repository configuration already parsed (the whole ``butler.yaml`` mapping, as
        `butler._config.load_config` returns it, or just its ``datastore`` section). Saves
        reading ``butler.yaml``.
    datastore : `FileDatastore`, optional
        A ready datastore for ``root`` to share (e.g. between the quanta a worker runs); wins over
        ``config``.

    Raises
    ------
    ValueError
        If ``datastore`` has another root than ``root``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        inputs: Mapping[uuid.UUID, tuple[DatasetRef, StoredFileInfo]],
        outputs: Iterable[DatasetRef],
        config: Mapping[str, Any] | None = None,
        datastore: FileDatastore | None = None,
    ) -> None:
        if datastore is not None and root is datastore.root:  # `for_quantum`: absolute already
            self.root = datastore.root
        else:
            self.root = Path(root).absolute()
            if datastore is None:
                ds_config = None
                if config is not None:
                    ds_config = config["datastore"] if "datastore" in config else config
                    ds_config = ds_config or {}
                datastore = FileDatastore(self.root, config=ds_config)
            elif datastore.root != self.root:
                raise ValueError(
                    f"the datastore given is rooted at {datastore.root}, not at {self.root}; "
                    "pass the datastore of this repository (or none)"
                )
        self.datastore = datastore
        self._inputs = dict(inputs)
        self._outputs = {r.id: r for r in outputs}
        self._written: dict[uuid.UUID, tuple[DatasetRef, StoredFileInfo]] = {}

    def for_quantum(
        self,
        *,
        inputs: Mapping[uuid.UUID, tuple[DatasetRef, StoredFileInfo]],
        outputs: Iterable[DatasetRef],
    ) -> QuantumBackedButler:
        """Return a butler for another quantum of the same repository, sharing this one's datastore.

        Parameters
        ----------
        inputs, outputs
            As for the constructor.

        Returns
        -------
        qbb : `QuantumBackedButler`
            Fresh state (nothing written), same root and datastore.
        """
        ds = self.datastore
        return QuantumBackedButler(ds.root, inputs=inputs, outputs=outputs, datastore=ds)

    # ------------------------------------------------------------------ state
    @property
    def inputs(self) -> Mapping[uuid.UUID, tuple[DatasetRef, StoredFileInfo]]:
        """Read-only view of the inputs: ``{id: (ref, StoredFileInfo)}``."""
        return MappingProxyType(self._inputs)

    @property
    def outputs(self) -> Mapping[uuid.UUID, DatasetRef]:
        """Read-only view of the predicted outputs: ``{id: ref}``."""
        return MappingProxyType(self._outputs)

    @property
    def written(self) -> list[tuple[DatasetRef, StoredFileInfo]]:
        """``(ref, info)`` of every output written so far, in write order."""
        return list(self._written.values())

    def predicted_file_info(self, ref: DatasetRef) -> StoredFileInfo:
        """Return the record an output will have once written (path from the template; size unknown).

        Parameters
        ----------
        ref : `DatasetRef`
            A dataset with an expanded data ID (need not be one of this quantum's outputs).

        Returns
        -------
        info : `StoredFileInfo`
            Root-relative path, the storage class's default formatter, checksum `None`,
            ``file_size`` -1.

        Raises
        ------
        DatastoreError
            If the file template needs a value the data ID lacks.
        """
        from .storage_classes import get_storage_class

        sc = get_storage_class(ref.dataset_type.storage_class)
        path = self.datastore.path_for(ref, sc.formatter)
        return StoredFileInfo(path.as_posix(), sc.formatter, sc.name, None, -1)

    def delete_written(self) -> int:
        """Delete the files written so far (a failed attempt) and forget them.

        Returns
        -------
        n : `int`
            Number of files deleted.
        """
        n = 0
        for _ref, info in self._written.values():
            try:
                self.datastore.abspath(info.path).unlink()
                n += 1
            except FileNotFoundError:
                pass
        self._written.clear()
        return n

    def remove_stale(self, refs: Iterable[DatasetRef] | None = None) -> int:
        """Delete leftovers of an interrupted attempt at the predicted output paths.

        Safe because predicted outputs are never registered before their quantum finished.

        Parameters
        ----------
        refs : iterable of `DatasetRef`, optional
            Default: all predicted outputs of this quantum.

        Returns
        -------
        n : `int`
            Number of files deleted.
        """
        n = 0
        for ref in self._outputs.values() if refs is None else refs:
            try:
                path = self.datastore.root / self.predicted_file_info(ref).path
            except Exception:  # noqa: BLE001 - a ref the template cannot render has no leftover
                continue
            if os.path.lexists(path):
                path.unlink()
                n += 1
        return n

    # ------------------------------------------------------------------ I/O
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
