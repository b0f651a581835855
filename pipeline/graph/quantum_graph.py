"""The quantum graph: quanta, their dependencies, and its compact versioned file format.

File format (``.qg``), version 1::

    line 1   b"CCDFLOW-QG <version>\\n"
    line 2   header: one line of JSON (metadata and counts; readable without decompressing)
    rest     zlib-compressed JSON payload, *columnar*: dataset types, runs, dimension records,
             data IDs and datasets are stored once each and referenced by integer index;
             UUIDs are concatenated hex strings.

Loading parses the columns only; `Quantum` objects and their `DatasetRef`\\ s are built on
demand (and cached), so a 100,000-quantum graph loads in well under a second. The payload also
holds the datastore records (`butler.StoredFileInfo`) of every pre-existing input, so workers
can read through a quantum-backed butler without any registry.
"""

from __future__ import annotations

import getpass
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from .quantum import LOG_CONNECTION, METADATA_CONNECTION, Quantum

__all__ = ["QuantumGraph", "TaskInfo", "QuantumGraphFileError", "FORMAT_VERSION", "MAGIC"]

MAGIC = b"CCDFLOW-QG"
FORMAT_VERSION = 1

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
    """

    label: str
    task_class: str
    config: dict[str, Any]
    dimensions: tuple[str, ...] = ()
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict.

        Returns
        -------
        data : `dict`
        """
        return {"label": self.label, "task_class": self.task_class, "config": self.config,
                "dimensions": list(self.dimensions), "connections": self.connections}

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
                   dict(data.get("connections", {})))


def _butler_types() -> tuple[Any, Any, Any, Any]:
    from butler import DataCoordinate, DatasetRef, DatasetType, StoredFileInfo

    return DataCoordinate, DatasetRef, DatasetType, StoredFileInfo


@dataclass
class _Columns:
    """Columnar payload of a loaded graph (indices into the shared tables)."""

    dataset_types: list[Any]
    runs: list[str]
    records: dict[str, list[Any]]
    data_ids: list[Any]
    ds_type: list[int]
    ds_data_id: list[int]
    ds_run: list[int]
    ds_id: bytes
    conn_names: list[str]
    q_id: bytes
    q_task: list[int]
    q_data_id: list[int]
    q_io: list[list[list[Any]]]
    task_labels: list[str]
    dc_cache: dict[int, Any] = field(default_factory=dict)
    rec_cache: dict[tuple[str, int], Any] = field(default_factory=dict)
    ref_cache: dict[int, Any] = field(default_factory=dict)


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
        self._ids: list[UUID] = [q.id for q in quanta]
        self._labels: list[str] = [q.task_label for q in quanta]
        self._quanta: dict[int, Quantum] = dict(enumerate(quanta))
        self._index: dict[UUID, int] = {qid: i for i, qid in enumerate(self._ids)}
        self._cols: _Columns | None = None
        self._succ: list[list[int]] | None = None
        self._pred: list[list[int]] | None = None
        self._order: list[int] | None = None

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, qid: object) -> bool:
        return qid in self._index

    def __getitem__(self, qid: UUID) -> Quantum:
        try:
            return self.quantum_at(self._index[qid])
        except KeyError:
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
        return self._index[qid]

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
        n = len(self._ids)
        succ: list[list[int]] = [[] for _ in range(n)]
        pred: list[list[int]] = [[] for _ in range(n)]
        if self._cols is not None and len(self._quanta) < n:
            # Work on the integer columns: no object construction.
            producer: dict[int, int] = {}
            c = self._cols
            out_role = _ROLES.index("outputs")
            for qi, io in enumerate(c.q_io):
                for _conn, role, ds in io:
                    if role == out_role:
                        for d in ds:
                            producer[d] = qi
            for qi, io in enumerate(c.q_io):
                seen: set[int] = set()
                for _conn, role, ds in io:
                    if role != out_role:
                        for d in ds:
                            p = producer.get(d)
                            if p is not None and p not in seen:
                                seen.add(p)
                                succ[p].append(qi)
                                pred[qi].append(p)
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
        return [self._ids[i] for i in self.predecessor_indices()[self._index[qid]]]

    def successors(self, qid: UUID) -> list[UUID]:
        """Return the ids of the quanta that read this quantum's outputs.

        Parameters
        ----------
        qid : `uuid.UUID`

        Returns
        -------
        ids : `list` [`uuid.UUID`]
        """
        return [self._ids[i] for i in self.successor_indices()[self._index[qid]]]

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
        path = Path(path)
        header, payload = self._encode()
        blob = zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 3)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + b" " + str(FORMAT_VERSION).encode() + b"\n")
            fh.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
            fh.write(blob)
        os.replace(tmp, path)
        return path

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
        with _open_graph(path) as fh:
            _check_magic(fh, path)
            header = json.loads(fh.readline())
            try:
                payload = json.loads(zlib.decompress(fh.read()))
            except (zlib.error, ValueError) as exc:
                raise QuantumGraphFileError(
                    f"quantum graph file {path} is truncated or corrupt ({exc}); rebuild it with "
                    "'pipetask qgraph ... -q FILE'") from None
        graph = cls._decode(header, payload)
        if nodes is not None:
            graph = graph.subset(nodes)
        return graph

    def _encode(self) -> tuple[dict[str, Any], dict[str, Any]]:
        enc = _Encoder()
        conn_index: dict[str, int] = {}
        q_ids: list[str] = []
        q_task: list[int] = []
        q_data: list[int] = []
        q_io: list[list[list[Any]]] = []
        labels = list(self.tasks)
        label_index = {lab: i for i, lab in enumerate(labels)}
        for i in range(len(self)):
            q = self.quantum_at(i)
            if q.task_label not in label_index:
                label_index[q.task_label] = len(labels)
                labels.append(q.task_label)
            q_ids.append(q.id.hex)
            q_task.append(label_index[q.task_label])
            q_data.append(enc.data_id(q.data_id))
            io: list[list[Any]] = []
            for role_i, role in enumerate(_ROLES):
                for conn, refs in getattr(q, role).items():
                    ci = conn_index.setdefault(conn, len(conn_index))
                    io.append([ci, role_i, [enc.ref(r) for r in refs]])
            q_io.append(io)
        init = {lab: [enc.ref(r) for r in refs] for lab, refs in self.init_outputs.items()}
        stored_ds: list[int] = []
        stored_info: list[Any] = []
        for uid, info in self.datastore_records.items():
            idx = enc.ref_index.get(uid)
            if idx is None:
                continue
            stored_ds.append(idx)
            d = info.to_dict()
            stored_info.append(d)
        for dt in self.dataset_types.values():
            enc.dataset_type(dt)
        payload = {
            "tasks": [self.tasks[lab].to_dict() for lab in self.tasks],
            "task_labels": labels,
            "dataset_types": enc.dataset_types,
            "runs": enc.runs,
            "records": enc.records,
            "data_ids": enc.data_ids,
            "datasets": {"type": enc.ds_type, "data_id": enc.ds_data_id, "run": enc.ds_run,
                         "id": "".join(enc.ds_id)},
            "stored": {"ds": stored_ds, "info": stored_info},
            "conn_names": list(conn_index),
            "quanta": {"id": "".join(q_ids), "task": q_task, "data_id": q_data, "io": q_io},
            "init_outputs": init,
        }
        header = {
            "format": "ccdflow quantum graph", "version": FORMAT_VERSION,
            "n_quanta": len(self), "n_datasets": len(enc.ds_type),
            "tasks": self.count_by_task(), "metadata": self.metadata,
            "saved_by": getpass.getuser() if hasattr(os, "getuid") else "",
        }
        return header, payload

    @classmethod
    def _decode(cls, header: Mapping[str, Any], payload: Mapping[str, Any]) -> QuantumGraph:
        _DataCoordinate, DatasetRef, DatasetType, StoredFileInfo = _butler_types()
        dts = [DatasetType(d[0], tuple(d[1]), d[2], is_calibration=bool(d[3]))
               for d in payload["dataset_types"]]
        ds = payload["datasets"]
        qd = payload["quanta"]
        cols = _Columns(
            dataset_types=dts, runs=payload["runs"], records=payload["records"],
            data_ids=payload["data_ids"], ds_type=ds["type"], ds_data_id=ds["data_id"],
            ds_run=ds["run"], ds_id=bytes.fromhex(ds["id"]), conn_names=payload["conn_names"],
            q_id=bytes.fromhex(qd["id"]), q_task=qd["task"], q_data_id=qd["data_id"], q_io=qd["io"],
            task_labels=payload["task_labels"],
        )
        graph = cls(tasks={t["label"]: TaskInfo.from_dict(t) for t in payload["tasks"]},
                    metadata=header.get("metadata", {}), dataset_types=dts)
        graph._cols = cols
        qb = cols.q_id
        graph._ids = [UUID(bytes=qb[16 * i:16 * i + 16]) for i in range(len(cols.q_task))]
        graph._labels = [cols.task_labels[t] for t in cols.q_task]
        graph._index = {qid: i for i, qid in enumerate(graph._ids)}
        graph.init_outputs = {lab: [graph._ref(i) for i in idxs]
                              for lab, idxs in payload["init_outputs"].items()}
        st = payload["stored"]
        del DatasetRef
        records: dict[UUID, Any] = {}
        for di, info in zip(st["ds"], st["info"]):
            records[UUID(bytes=cols.ds_id[16 * di:16 * di + 16])] = StoredFileInfo.from_dict(info)
        graph.datastore_records = records
        return graph

    def _ref(self, di: int) -> Any:
        c = self._cols
        assert c is not None
        ref = c.ref_cache.get(di)
        if ref is None:
            _DC, DatasetRef, _DT, _SFI = _butler_types()
            ref = DatasetRef(c.dataset_types[c.ds_type[di]], self._data_id(c.ds_data_id[di]),
                             c.runs[c.ds_run[di]], UUID(bytes=c.ds_id[16 * di:16 * di + 16]))
            c.ref_cache[di] = ref
        return ref

    def _data_id(self, i: int) -> Any:
        c = self._cols
        assert c is not None
        dc = c.dc_cache.get(i)
        if dc is None:
            dc = _decode_data_id(c.data_ids[i], c)
            c.dc_cache[i] = dc
        return dc

    def _materialize(self, index: int) -> Quantum:
        c = self._cols
        if c is None:
            raise KeyError(index)
        parts: dict[str, dict[str, list[Any]]] = {r: {} for r in _ROLES}
        for ci, role, dsi in c.q_io[index]:
            parts[_ROLES[role]][c.conn_names[ci]] = [self._ref(d) for d in dsi]
        return Quantum(self._ids[index], self._labels[index], self._data_id(c.q_data_id[index]),
                       parts["inputs"], parts["prerequisites"], parts["outputs"])


# ---------------------------------------------------------------------- codec helpers
class _Encoder:
    """Deduplicating encoder of dataset types, runs, records, data IDs and refs."""

    def __init__(self) -> None:
        self.dataset_types: list[list[Any]] = []
        self._dt_index: dict[str, int] = {}
        self.runs: list[str] = []
        self._run_index: dict[str, int] = {}
        self.records: dict[str, list[Any]] = {}
        self._rec_index: dict[tuple[str, str], int] = {}
        self.data_ids: list[Any] = []
        self._did_index: dict[Any, int] = {}
        self._did_obj: dict[int, int] = {}
        self.ds_type: list[int] = []
        self.ds_data_id: list[int] = []
        self.ds_run: list[int] = []
        self.ds_id: list[str] = []
        self.ref_index: dict[UUID, int] = {}

    def dataset_type(self, dt: Any) -> int:
        i = self._dt_index.get(dt.name)
        if i is None:
            i = self._dt_index[dt.name] = len(self.dataset_types)
            self.dataset_types.append([dt.name, list(dt.dimensions), dt.storage_class,
                                       bool(dt.is_calibration)])
        return i

    def run(self, name: str) -> int:
        i = self._run_index.get(name)
        if i is None:
            i = self._run_index[name] = len(self.runs)
            self.runs.append(name)
        return i

    def data_id(self, dc: Any) -> int:
        key_obj = id(dc)
        i = self._did_obj.get(key_obj)
        if i is not None:
            return i
        enc = _encode_data_id(dc, self)
        key = json.dumps(enc, sort_keys=True, default=str)
        i = self._did_index.get(key)
        if i is None:
            i = self._did_index[key] = len(self.data_ids)
            self.data_ids.append(enc)
        self._did_obj[key_obj] = i
        self._keepalive = getattr(self, "_keepalive", [])
        self._keepalive.append(dc)
        return i

    def record(self, element: str, rec: Mapping[str, Any]) -> int:
        key = json.dumps(rec, sort_keys=True, default=str)
        i = self._rec_index.get((element, key))
        if i is None:
            lst = self.records.setdefault(element, [])
            i = self._rec_index[(element, key)] = len(lst)
            lst.append(rec)
        return i

    def ref(self, ref: Any) -> int:
        i = self.ref_index.get(ref.id)
        if i is None:
            i = self.ref_index[ref.id] = len(self.ds_type)
            self.ds_type.append(self.dataset_type(ref.dataset_type))
            self.ds_data_id.append(self.data_id(ref.data_id))
            self.ds_run.append(self.run(ref.run))
            self.ds_id.append(ref.id.hex)
        return i


def _encode_data_id(dc: Any, enc: _Encoder) -> Any:
    """Encode a data ID as its ``to_dict()`` with each record replaced by a table index."""
    d = dict(dc.to_dict())
    recs = d.pop("records", None)
    if recs:
        d["records"] = {el: enc.record(el, r) for el, r in recs.items() if r is not None}
    return d


def _decode_data_id(enc: Mapping[str, Any], cols: _Columns) -> Any:
    """Build a `DataCoordinate`, sharing one `DimensionRecord` object per stored record."""
    from butler.dimensions import DataCoordinate, DimensionRecord, default_universe

    universe = default_universe()
    recs = enc.get("records")
    records = None
    if recs is not None:
        records = {}
        for el, i in recs.items():
            rec = cols.rec_cache.get((el, i))
            if rec is None:
                rec = cols.rec_cache[(el, i)] = DimensionRecord.from_dict(universe[el], cols.records[el][i])
            records[el] = rec
    return DataCoordinate(universe, tuple(enc["dimensions"]), dict(enc["values"]), records)


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


def _check_magic(fh: Any, path: Any) -> None:
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


def _default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


_ = (METADATA_CONNECTION, LOG_CONNECTION, _default_user)
