"""The ``butlerQC`` a task's ``runQuantum`` receives, and the per-connection ref containers."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ..connections import InputQuantizedConnection, OutputQuantizedConnection, QuantizedConnection
from ..struct import Struct

if TYPE_CHECKING:
    from butler import DataCoordinate, DatasetRef, QuantumBackedButler

    from ..graph.quantum import Quantum

__all__ = ["ButlerQuantumContext", "DeferredDatasetHandle", "InputQuantizedConnection",
           "OutputQuantizedConnection", "QuantizedConnection"]


class DeferredDatasetHandle:
    """A handle that reads its dataset only when `get` is called (``deferLoad=True``).

    Parameters
    ----------
    butler : quantum-backed butler
        Where to read from.
    ref : `butler.DatasetRef`
        The dataset.
    """

    def __init__(self, butler: QuantumBackedButler, ref: DatasetRef) -> None:
        self.butler = butler
        self.ref = ref

    @property
    def dataId(self) -> DataCoordinate:  # noqa: N802 - LSST name
        """The data ID of the dataset."""
        return self.ref.data_id

    def get(self, *, parameters: Mapping[str, Any] | None = None) -> Any:
        """Read the dataset (optionally a part of it, e.g. ``parameters={"bbox": box}``).

        Parameters
        ----------
        parameters : `dict`, optional
            Formatter read parameters.

        Returns
        -------
        obj : `object`
        """
        return self.butler.get(self.ref, parameters=parameters)


class ButlerQuantumContext:
    """Gets and puts for one quantum, restricted to its predicted datasets.

    Parameters
    ----------
    butler : `butler.QuantumBackedButler`
        The quantum-backed butler (no registry).
    quantum : `pipeline.graph.Quantum`
        The quantum being executed.
    repo_root : path-like
        Root of the repository.
    deferred : `set` [`str`], optional
        Connection names declared ``deferLoad=True`` (their `get` returns a
        `DeferredDatasetHandle`).

    Notes
    -----
    Keeps simple counters (``n_get``, ``n_put``, ``time_in_get``, ``time_in_put`` in s) that
    end up in the quantum's metadata as ``butler_metrics``.
    """

    def __init__(self, butler: QuantumBackedButler, quantum: Quantum, repo_root: str | Path, *,
                 deferred: set[str] | None = None) -> None:
        self.butler = butler
        self.quantum = quantum
        self.repo_root = repo_root if isinstance(repo_root, Path) else Path(repo_root)
        self.deferred = set(deferred or ())
        self._deferred_ids = {r.id for name in self.deferred
                              for r in quantum.inputs.get(name, []) + quantum.prerequisites.get(name, [])}
        self._allowed_in = {r.id for r in quantum.all_inputs()}
        self._allowed_out = {r.id for r in quantum.all_outputs()}
        self.n_get = 0
        self.n_put = 0
        self.time_in_get = 0.0
        self.time_in_put = 0.0
        self.put_ids: list[UUID] = []

    def metrics(self) -> dict[str, float]:
        """The counters stored in the quantum's metadata as ``butler_metrics``."""
        return {"n_get": self.n_get, "n_put": self.n_put, "time_in_get": self.time_in_get,
                "time_in_put": self.time_in_put}

    @staticmethod
    def no_metrics() -> dict[str, float]:
        """``butler_metrics`` of a quantum that never got a butler (e.g. no work found before)."""
        return {"n_get": 0, "n_put": 0, "time_in_get": 0.0, "time_in_put": 0.0}

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The quantum's dimensions."""
        return tuple(self.quantum.data_id.dimensions)

    def _get_one(self, ref: Any, deferred: bool = False) -> Any:
        if ref is None:
            return None
        if ref.id not in self._allowed_in:
            raise ValueError(f"dataset {ref} is not an input of quantum {self.quantum.describe()}")
        if deferred or ref.id in self._deferred_ids:
            return DeferredDatasetHandle(self.butler, ref)
        t0 = time.perf_counter()
        obj = self.butler.get(ref)
        self.time_in_get += time.perf_counter() - t0
        self.n_get += 1
        return obj

    def get(self, refs: Any) -> Any:
        """Read one ref, a list of refs, or every ref of a `QuantizedConnection`.

        Parameters
        ----------
        refs : `butler.DatasetRef`, `list`, or `QuantizedConnection`
            What to read.

        Returns
        -------
        obj : `object`, `list`, or `dict` [`str`, `object`]
            The dataset, a list of datasets, or connection name -> dataset(s).

        Raises
        ------
        ValueError
            If a ref is not an input of this quantum.
        """
        if isinstance(refs, QuantizedConnection):
            out: dict[str, Any] = {}
            for name, value in refs:
                d = name in self.deferred
                if isinstance(value, list | tuple):
                    out[name] = [self._get_one(r, d) for r in value]
                elif value is None:
                    out[name] = None
                else:
                    out[name] = self._get_one(value, d)
            return out
        if isinstance(refs, list | tuple):
            return [self._get_one(r) for r in refs]
        return self._get_one(refs)

    def _put_one(self, obj: Any, ref: Any) -> None:
        if ref.id not in self._allowed_out:
            raise ValueError(f"dataset {ref} is not a predicted output of quantum {self.quantum.describe()}")
        t0 = time.perf_counter()
        self.butler.put(obj, ref)
        self.time_in_put += time.perf_counter() - t0
        self.n_put += 1
        self.put_ids.append(ref.id)

    def put(self, values: Any, refs: Any) -> None:
        """Write outputs.

        Parameters
        ----------
        values : `object`, `list`, or `~pipeline.struct.Struct`
            One dataset, a list matching ``refs``, or a Struct whose fields are the output
            connection names (fields that are not connections are ignored, missing ones raise).
        refs : `butler.DatasetRef`, `list`, or `QuantizedConnection`
            Where to write.

        Raises
        ------
        ValueError
            If a ref is not a predicted output, a Struct lacks an output's field, or list
            lengths differ.
        """
        if isinstance(refs, QuantizedConnection):
            if not isinstance(values, Struct | Mapping):
                raise ValueError("put with a QuantizedConnection needs a Struct (or dict) of outputs")
            fields = values.getDict() if isinstance(values, Struct) else dict(values)
            for name, ref in refs:
                if name not in fields:
                    raise ValueError(
                        f"task {self.quantum.task_label!r} returned no {name!r} output; run() must return a "
                        f"Struct with a field per output connection (got {sorted(fields)})")
                self.put(fields[name], ref)
            return
        if isinstance(refs, list | tuple):
            if not isinstance(values, list | tuple) or len(values) != len(refs):
                raise ValueError(
                    f"put of {len(refs)} refs needs a list of {len(refs)} objects for quantum "
                    f"{self.quantum.describe()}")
            for v, r in zip(values, refs):
                self._put_one(v, r)
            return
        self._put_one(values, refs)
