"""The quantum graph: quanta, their dependencies, and its compact versioned file format.

File format (``.qg``), version 3::

    line 1   b"CCDFLOW-QG <version>\\n"
    line 2   header: one line of JSON (metadata and counts; readable without decompressing)
    line 3   index: one line of JSON, ``{"tables": nbytes, "arrays": [[name, dtype, shape, nbytes,
             codec], ...]}``
    rest     the zlib-compressed JSON tables (dataset types, runs, dimension records, distinct
             data-ID values, task infos ...), then each array's bytes in index order: int32
             columns zlib-compressed (level 1), UUID columns raw (random bytes do not compress).

Everything that scales with the number of quanta is an array (see `pipeline.graph._qg_codec`),
so saving and loading do no per-quantum Python work. Version 2 (one zlib-compressed JSON payload
with base64 columns) is still read.

A graph is columnar in memory too: the builder and `load` give a graph backed by
`~pipeline.graph._qg_codec.Columns`; `Quantum` objects and their `DatasetRef`\\ s are built on
demand (and cached). The payload also holds the datastore records (`butler.StoredFileInfo`) of
every pre-existing input, so workers can read through a quantum-backed butler without any
registry.
"""

from __future__ import annotations

import getpass
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from butler.utils import bulk_objects

from .quantum import Quantum

if TYPE_CHECKING:
    from ._qg_codec import Columns

__all__ = ["QuantumGraph", "TaskInfo", "QuantumGraphFileError", "FORMAT_VERSION", "MAGIC"]

MAGIC = b"CCDFLOW-QG"
FORMAT_VERSION = 3
#: Int32 columns are compressed at this zlib level (1: ~4x smaller, ~100 MB/s).
_ZLIB_LEVEL = 1
#: Columns stored uncompressed (random UUID bytes).
_RAW_ARRAYS = frozenset({"q_id", "ds_id"})

_ROLES = ("inputs", "prerequisites", "outputs")



class QuantumGraphFileError(ValueError):
    """Raised when a quantum-graph file is missing, not a graph, or of an unsupported version."""


@dataclass
class TaskInfo:
    """What a worker needs to rebuild a task: its class and its frozen config.

    Parameters
    ----------
    label : `str`
        Task label.
    task_class : `str`
        Dotted path of the `~pipeline.task.PipelineTask` subclass.
    config : `dict`
        The frozen config as a plain dict (``config.to_dict()``).
    dimensions : `tuple` [`str`, ...]
        The task's quantum dimensions.
    connections : `dict` [`str`, `dict`]
        Connection name -> ``{"kind", "dataset_type", "multiple", "minimum", "defer_load"}``
        (kind is ``input``, ``prerequisite``, ``output``, ``init_input`` or ``init_output``).
    config_variants : `list` [`dict`]
        Configs of quanta matched by data-ID-scoped pipeline config blocks.
    quantum_variant : `dict` [`str`, `int`]
        Quantum id (hex) -> index into ``config_variants`` for those quanta.
    """

    label: str
    task_class: str
    config: dict[str, Any]
    dimensions: tuple[str, ...] = ()
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    config_variants: list[dict[str, Any]] = field(default_factory=list)
    quantum_variant: dict[str, int] = field(default_factory=dict)

    def config_for(self, quantum_id: UUID) -> tuple[int, dict[str, Any]]:
        """Return ``(variant index or -1, config dict)`` for one quantum.

        Parameters
        ----------
        quantum_id : `uuid.UUID`

        Returns
        -------
        variant, config : `int`, `dict`
        """
        v = self.quantum_variant.get(quantum_id.hex)
        if v is None:
            return -1, self.config
        return v, self.config_variants[v]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict.

        Returns
        -------
        data : `dict`
        """
        return {"label": self.label, "task_class": self.task_class, "config": self.config,
                "dimensions": list(self.dimensions), "connections": self.connections,
                "config_variants": self.config_variants, "quantum_variant": self.quantum_variant}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskInfo:
        """Rebuild from `to_dict` output.

        Parameters
        ----------
        data : `dict`

        Returns
        -------
        info : `TaskInfo`
        """
        return cls(data["label"], data["task_class"], dict(data["config"]), tuple(data["dimensions"]),
                   dict(data.get("connections", {})), list(data.get("config_variants", [])),
                   dict(data.get("quantum_variant", {})))


class QuantumGraph:
    """A directed acyclic graph of quanta.

    Parameters
    ----------
    quanta : `~collections.abc.Iterable` [`Quantum`]
        The quanta, in any order.
    tasks : `~collections.abc.Mapping` [`str`, `TaskInfo`]
        Task class and frozen config per label.
    metadata : `dict`, optional
        Free JSON-able metadata: ``output_run``, ``output``, ``inputs``, ``user``, ``created``,
        ``command`` ... (see `pipeline.graph.builder`).
    init_outputs : `dict` [`str`, `list` [`butler.DatasetRef`]], optional
        Run-level outputs per task label (``<label>_config``) and under ``""`` the
        ``packages`` dataset.
    dataset_types : `~collections.abc.Iterable` [`butler.DatasetType`], optional
        Every dataset type the graph reads or writes (registered by ``--register-dataset-types``).
    datastore_records : `~collections.abc.Mapping` [`uuid.UUID`, `butler.StoredFileInfo`], optional
        Datastore records of the pre-existing inputs (overall inputs and prerequisites).

    Notes
    -----
    Edges go from the producer of a dataset to each of its consumers. ``graph[qid]`` returns
    a quantum by id; iteration yields quantum ids in a topological order.
    """

    def __init__(
        self,
        quanta: Iterable[Quantum] = (),
        tasks: Mapping[str, TaskInfo] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        init_outputs: Mapping[str, Sequence[Any]] | None = None,
        dataset_types: Iterable[Any] = (),
        datastore_records: Mapping[UUID, Any] | None = None,
    ) -> None:
        self.tasks: dict[str, TaskInfo] = dict(tasks or {})
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.init_outputs: dict[str, list[Any]] = {k: list(v) for k, v in (init_outputs or {}).items()}
        self.dataset_types: dict[str, Any] = {dt.name: dt for dt in dataset_types}
        self.datastore_records: dict[UUID, Any] = dict(datastore_records or {})
        quanta = list(quanta)
        self._ids: Sequence[UUID] = [q.id for q in quanta]
        self._labels: list[str] = [q.task_label for q in quanta]
        self._quanta: dict[int, Quantum] = dict(enumerate(quanta))
        self._index_: dict[bytes, int] | None = None
        self._cols: Any = None
        self._succ: list[list[int]] | None = None
        self._pred: list[list[int]] | None = None
        self._order: list[int] | None = None

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def _index(self) -> dict[bytes, int]:
        if self._index_ is None:
            if self._cols is not None:
                qb = self._cols.q_id
                self._index_ = {qb[16 * i:16 * i + 16]: i for i in range(len(self._labels))}
            else:
                self._index_ = {qid.bytes: i for i, qid in enumerate(self._ids)}
        return self._index_

    def __contains__(self, qid: object) -> bool:
        return isinstance(qid, UUID) and qid.bytes in self._index

    def __getitem__(self, qid: UUID) -> Quantum:
        try:
            return self.quantum_at(self._index[qid.bytes])
        except (KeyError, AttributeError):
            raise KeyError(f"quantum {qid} is not in this graph") from None

    def __iter__(self) -> Iterator[UUID]:
        ids = self._ids
        return (ids[i] for i in self.topological_order())

    @property
    def quantum_ids(self) -> list[UUID]:
        """Quantum ids in storage order."""
        return list(self._ids)

    def index_of(self, qid: UUID) -> int:
        """Return the integer index of a quantum id (stable for this graph object).

        Parameters
        ----------
        qid : `uuid.UUID`

        Returns
        -------
        index : `int`

        Raises
        ------
        KeyError
            If the id is not in the graph.
        """
        return self._index[qid.bytes]

    def id_at(self, index: int) -> UUID:
        """Return the quantum id at an integer index.

        Parameters
        ----------
        index : `int`

        Returns
        -------
        qid : `uuid.UUID`
        """
        return self._ids[index]

    def label_at(self, index: int) -> str:
        """Return the task label of the quantum at an integer index.

        Parameters
        ----------
        index : `int`

        Returns
        -------
        label : `str`
        """
        return self._labels[index]

    def data_id_at(self, index: int) -> Any:
        """Return the data ID of the quantum at an index (without building its refs).

        Parameters
        ----------
        index : `int`

        Returns
        -------
        data_id : `butler.DataCoordinate`
        """
        q = self._quanta.get(index)
        if q is not None or self._cols is None:
            return self.quantum_at(index).data_id
        return self._cols.data_id(int(self._cols.q_data_id[index]))

    def required_data_id_at(self, index: int) -> dict[str, Any]:
        """Return the required dimension values of a quantum's data ID, without building the data
        ID (no dimension records: ~2 us and a small dict per quantum of a loaded or built graph).

        Parameters
        ----------
        index : `int`

        Returns
        -------
        values : `dict` [`str`, `typing.Any`]
            Equal to ``dict(graph.data_id_at(index).required)``.
        """
        if index in self._quanta or self._cols is None:
            return dict(self.quantum_at(index).data_id.required)
        return self._cols.required_values(int(self._cols.q_data_id[index]))

    def quantum_at(self, index: int) -> Quantum:
        """Return (building it on first access for a loaded graph) the quantum at an index.

        Parameters
        ----------
        index : `int`

        Returns
        -------
        quantum : `Quantum`
        """
        q = self._quanta.get(index)
        if q is None:
            q = self._materialize(index)
            self._quanta[index] = q
        return q

    def quanta(self) -> Iterator[Quantum]:
        """Iterate over the quanta in topological order.

        Returns
        -------
        quanta : iterator of `Quantum`
        """
        return (self.quantum_at(i) for i in self.topological_order())

    def quanta_for_task(self, label: str) -> list[Quantum]:
        """Return the quanta of one task.

        Parameters
        ----------
        label : `str`

        Returns
        -------
        quanta : `list` [`Quantum`]
        """
        return [self.quantum_at(i) for i, lab in enumerate(self._labels) if lab == label]

    def count_by_task(self) -> dict[str, int]:
        """Return the number of quanta per task label, in pipeline order.

        Returns
        -------
        counts : `dict` [`str`, `int`]
        """
        counts = {label: 0 for label in self.tasks}
        for lab in self._labels:
            counts[lab] = counts.get(lab, 0) + 1
        return counts

    @property
    def output_run(self) -> str | None:
        """The RUN collection the outputs go to."""
        return self.metadata.get("output_run")

    # ------------------------------------------------------------------ edges
    def _build_edges(self) -> None:
        with bulk_objects():
            self._build_edges_impl()

    def _build_edges_impl(self) -> None:
        n = len(self._ids)
        succ: list[list[int]] = [[] for _ in range(n)]
        pred: list[list[int]] = [[] for _ in range(n)]
        if self._cols is not None and len(self._quanta) < n:
            prod, cons = self._cols.edges()
            for p, c in zip(prod.tolist(), cons.tolist()):
                succ[p].append(c)
                pred[c].append(p)
        else:
            producer_u: dict[UUID, int] = {}
            for qi in range(n):
                for ref in self.quantum_at(qi).all_outputs():
                    producer_u[ref.id] = qi
            for qi in range(n):
                seen = set()
                for ref in self.quantum_at(qi).all_inputs():
                    p = producer_u.get(ref.id)
                    if p is not None and p not in seen:
                        seen.add(p)
                        succ[p].append(qi)
                        pred[qi].append(p)
        self._succ, self._pred = succ, pred

    def successor_indices(self) -> list[list[int]]:
        """Return, per quantum index, the indices of the quanta that consume its outputs.

        Returns
        -------
        successors : `list` [`list` [`int`]]
        """
        if self._succ is None:
            self._build_edges()
        assert self._succ is not None
        return self._succ

    def predecessor_indices(self) -> list[list[int]]:
        """Return, per quantum index, the indices of the quanta producing its inputs.

        Returns
        -------
        predecessors : `list` [`list` [`int`]]
        """
        if self._pred is None:
            self._build_edges()
        assert self._pred is not None
        return self._pred

    def predecessors(self, qid: UUID) -> list[UUID]:
        """Return the ids of the quanta whose outputs this quantum reads.

        Parameters
        ----------
        qid : `uuid.UUID`

        Returns
        -------
        ids : `list` [`uuid.UUID`]
        """
        return [self._ids[i] for i in self.predecessor_indices()[self.index_of(qid)]]

    def successors(self, qid: UUID) -> list[UUID]:
        """Return the ids of the quanta that read this quantum's outputs.

        Parameters
        ----------
        qid : `uuid.UUID`

        Returns
        -------
        ids : `list` [`uuid.UUID`]
        """
        return [self._ids[i] for i in self.successor_indices()[self.index_of(qid)]]

    def topological_order(self) -> list[int]:
        """Return quantum indices in a topological order (producers before consumers).

        Returns
        -------
        order : `list` [`int`]
        """
        if self._order is None:
            succ = self.successor_indices()
            npred = [len(p) for p in self.predecessor_indices()]
            order = [i for i, k in enumerate(npred) if k == 0]
            pos = 0
            while pos < len(order):
                for j in succ[order[pos]]:
                    npred[j] -= 1
                    if npred[j] == 0:
                        order.append(j)
                pos += 1
            self._order = order
        return self._order

    def edges(self) -> Iterator[tuple[UUID, UUID]]:
        """Iterate over (producer id, consumer id) edges.

        Returns
        -------
        edges : iterator of `tuple` [`uuid.UUID`, `uuid.UUID`]
        """
        for i, kids in enumerate(self.successor_indices()):
            for j in kids:
                yield self._ids[i], self._ids[j]

    # ------------------------------------------------------------------ helpers
    def all_output_refs(self) -> Iterator[Any]:
        """Iterate over every predicted output ref (quanta and init outputs).

        Returns
        -------
        refs : iterator of `butler.DatasetRef`
        """
        for refs in self.init_outputs.values():
            yield from refs
        for i in range(len(self)):
            yield from self.quantum_at(i).all_outputs()

    def subset(self, ids: Iterable[UUID]) -> QuantumGraph:
        """Return a graph with only the given quanta (``--qgraph-node-id``).

        Parameters
        ----------
        ids : iterable of `uuid.UUID`

        Returns
        -------
        graph : `QuantumGraph`

        Raises
        ------
        KeyError
            If an id is not in the graph.
        """
        quanta = [self[qid] for qid in ids]
        return QuantumGraph(quanta, self.tasks, metadata=self.metadata, init_outputs=self.init_outputs,
                            dataset_types=self.dataset_types.values(),
                            datastore_records=self.datastore_records)

    # ------------------------------------------------------------------ file I/O
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the graph to a ``.qg`` file (atomically: temporary file + rename).

        Parameters
        ----------
        path : path-like
            Destination.

        Returns
        -------
        path : `pathlib.Path`
        """
        import numpy as np

        path = Path(path)
        with bulk_objects():
            cols = self._columns()
            tables = dict(cols.tables)
            tables["tasks"] = [self.tasks[lab].to_dict() for lab in self.tasks]
            tblob = zlib.compress(json.dumps(tables, separators=(",", ":")).encode(), 3)
        header = {
            "format": "ccdflow quantum graph", "version": FORMAT_VERSION,
            "n_quanta": len(self), "n_datasets": len(cols.ds_type),
            "tasks": self.count_by_task(), "metadata": self.metadata,
            "saved_by": _default_user(),
        }
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        index: dict[str, Any] = {"tables": len(tblob), "arrays": []}
        blobs: list[Any] = []
        for name, arr in cols.arrays.items():
            raw = np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data
            codec = "raw" if name in _RAW_ARRAYS else "zlib"
            data = raw if codec == "raw" else zlib.compress(raw, _ZLIB_LEVEL)
            index["arrays"].append([name, arr.dtype.str, list(arr.shape), len(data), codec])
            blobs.append(data)
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + b" " + str(FORMAT_VERSION).encode() + b"\n")
            fh.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
            fh.write(json.dumps(index, separators=(",", ":")).encode() + b"\n")
            fh.write(tblob)
            for data in blobs:
                fh.write(data)
        os.replace(tmp, path)
        return path

    def _columns(self) -> Columns:
        """The graph's columns: its own (built or loaded graph), or encoded from its quanta."""
        from ._qg_codec import Encoder, LazyRecords

        cols = self._cols
        if cols is not None and isinstance(self.datastore_records, LazyRecords) and self.datastore_records._cols is cols:
            return cols
        enc = Encoder()
        for i in range(len(self)):
            enc.add_quantum(self.quantum_at(i))
        init = {lab: [enc.ref(r) for r in refs] for lab, refs in self.init_outputs.items()}
        for dt in self.dataset_types.values():
            enc.dataset_type(dt)
        return enc.finish(self.datastore_records, init)

    @staticmethod
    def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Read only the header (metadata and counts) of a graph file.

        Parameters
        ----------
        path : path-like

        Returns
        -------
        header : `dict`

        Raises
        ------
        QuantumGraphFileError
            If the file is missing, not a ccdflow graph, or of a newer format version.
        """
        with _open_graph(path) as fh:
            _check_magic(fh, path)
            return json.loads(fh.readline())

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, nodes: Iterable[UUID] | None = None) -> QuantumGraph:
        """Read a graph written by `save`.

        Parameters
        ----------
        path : path-like
            The ``.qg`` file.
        nodes : iterable of `uuid.UUID`, optional
            Keep only these quanta (``--qgraph-node-id``).

        Returns
        -------
        graph : `QuantumGraph`

        Raises
        ------
        QuantumGraphFileError
            If the file is missing, truncated, not a ccdflow graph, or of a newer version.
        KeyError
            If a requested node id is not in the graph.
        """
        with _open_graph(path) as fh, bulk_objects():
            version = _check_magic(fh, path)
            header = json.loads(fh.readline())
            try:
                if version >= 3:
                    cols, tasks = _read_v3(fh)
                else:
                    from ._qg_codec import columns_from_v2

                    payload = json.loads(zlib.decompress(fh.read()))
                    tasks = payload["tasks"]
                    cols = columns_from_v2(payload)
            except (zlib.error, ValueError, KeyError, EOFError) as exc:
                raise QuantumGraphFileError(
                    f"quantum graph file {path} is truncated or corrupt ({exc}); rebuild it with "
                    "'pipetask qgraph ... -q FILE'") from None
            graph = cls._from_columns(cols, {t["label"]: TaskInfo.from_dict(t) for t in tasks},
                                      header.get("metadata", {}))
        if nodes is not None:
            graph = graph.subset(nodes)
        return graph

    @classmethod
    def _from_columns(cls, cols: Columns, tasks: Mapping[str, TaskInfo], metadata: Mapping[str, Any],
                      dataset_types: Iterable[Any] | None = None) -> QuantumGraph:
        """A graph backed by columns (built by the builder's encoder, or loaded)."""
        from ._qg_codec import LazyRecords

        graph = cls(tasks=tasks, metadata=metadata,
                    dataset_types=cols.dataset_types if dataset_types is None else dataset_types)
        graph._cols = cols
        graph._ids = _LazyIds(cols.q_id)
        labels = cols.task_labels
        graph._labels = [labels[t] for t in cols.q_task.tolist()]
        graph.init_outputs = {lab: [cols.ref(i) for i in idxs] for lab, idxs in cols.init_output_index.items()}
        graph.datastore_records = LazyRecords(cols)  # type: ignore[assignment]
        return graph

    def _materialize(self, index: int) -> Quantum:
        c = self._cols
        if c is None:
            raise KeyError(index)
        parts = c.quantum_parts(index)
        return Quantum(self._ids[index], self._labels[index], c.data_id(int(c.q_data_id[index])),
                       parts["inputs"], parts["prerequisites"], parts["outputs"])


class _LazyIds(Sequence[UUID]):
    """Quantum ids of a loaded graph, built from the raw bytes on access."""

    def __init__(self, blob: bytes) -> None:
        self._blob = blob
        self._cache: dict[int, UUID] = {}

    def __len__(self) -> int:
        return len(self._blob) // 16

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        u = self._cache.get(i)
        if u is None:
            u = self._cache[i] = UUID(bytes=self._blob[16 * i:16 * i + 16])
        return u


class _open_graph:
    """Open a graph file with a clear error when it does not exist."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __enter__(self) -> Any:
        try:
            self.fh = open(self.path, "rb")
        except FileNotFoundError:
            raise QuantumGraphFileError(
                f"quantum graph file {self.path} does not exist; make one with "
                "'pipetask qgraph ... -q FILE'") from None
        except IsADirectoryError:
            raise QuantumGraphFileError(f"quantum graph path {self.path} is a directory, not a file") from None
        return self.fh

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


def _read_v3(fh: Any) -> tuple[Columns, list[dict[str, Any]]]:
    """Read the index, tables and arrays of a version-3 file (after the header line)."""
    import numpy as np

    from ._qg_codec import Columns

    index = json.loads(fh.readline())

    def read(n: int) -> bytes:
        data = fh.read(n)
        if len(data) != n:
            raise EOFError(f"{n - len(data)} bytes missing")
        return data

    tables = json.loads(zlib.decompress(read(index["tables"])))
    tasks = tables.pop("tasks")
    arrays = {}
    for name, dtype, shape, n, codec in index["arrays"]:
        data = read(n)
        if codec == "zlib":
            data = zlib.decompress(data)
        arrays[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
    return Columns(tables, arrays), tasks


def _check_magic(fh: Any, path: Any) -> int:
    line = fh.readline()
    if not line.startswith(MAGIC):
        raise QuantumGraphFileError(f"{path} is not a ccdflow quantum graph file (bad magic bytes)")
    try:
        version = int(line[len(MAGIC):].strip())
    except ValueError:
        raise QuantumGraphFileError(f"{path}: unreadable quantum graph format version") from None
    if version > FORMAT_VERSION:
        raise QuantumGraphFileError(
            f"{path} has quantum graph format version {version}, newer than this ccdflow "
            f"understands ({FORMAT_VERSION}); upgrade ccdflow or rebuild the graph")
    return version


def _default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


