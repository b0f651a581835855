"""Columnar representation of a quantum graph (file format versions 2 and 3, and in memory).

Everything that scales with the number of quanta is an int32 (or raw 16-byte UUID) array, so
loading reads a handful of byte blocks and calls ``numpy.frombuffer``; `Quantum`, `DatasetRef`
and `DataCoordinate` objects are only built when a quantum is accessed. Shared things are tables
referenced by index: dataset types, runs, connection names, dimension records (one entry per
distinct record), per-dimension value tables, and data-ID "shapes" (which dimensions, value keys
and record elements a data ID has).

The builder fills an `Encoder` quantum by quantum (`Encoder.add_quantum`) and the graph it returns
holds the resulting `Columns` directly (no `Quantum` objects are kept), the same object a loaded
graph holds; saving writes the columns as they are.

Tables (JSON)::

    dataset_types [[name, dims, storage_class, is_calibration]], runs, conn_names, task_labels
    records {element: [record dict]}     values {dimension: [distinct values]}
    shapes [[dims, value_keys, record_elements, expanded]]
    stored {path [str], formatter_names, sc_names, checksum [str|None]}
    init_outputs {label: [ds index]}

Arrays (int32 unless noted)::

    did_shape, did_row (n_data_ids)      did_values.<s>, did_records.<s> (rows x columns)
    ds_type, ds_data_id, ds_run (n_datasets), ds_id (uint8, 16 n_datasets)
    q_id (uint8, 16 n_quanta), q_task, q_data_id (n_quanta), q_io_start (n_quanta + 1)
    io_conn, io_role (n_io), io_ds_start (n_io + 1), io_ds (n_refs)
    stored.ds, stored.formatter, stored.storage_class (n_stored), stored.size (int64)
"""

from __future__ import annotations

import base64
from array import array
from collections.abc import Container, Mapping, Sequence
from typing import Any
from uuid import UUID

import numpy as np

__all__ = ["Encoder", "Columns", "LazyRecords", "pack", "unpack", "ROLES", "columns_from_v2"]

ROLES = ("inputs", "prerequisites", "outputs")


def pack(values: Any, dtype: str = "<i4") -> str:
    """Encode an integer sequence as base64 of a little-endian array (format version 2).

    Parameters
    ----------
    values : sequence of `int` or `numpy.ndarray`
    dtype : `str`
        numpy dtype string.

    Returns
    -------
    text : `str`
    """
    return base64.b64encode(np.asarray(values, dtype=dtype).tobytes()).decode("ascii")


def unpack(text: str, dtype: str = "<i4") -> np.ndarray:
    """Inverse of `pack` (a read-only array view of the decoded bytes).

    Parameters
    ----------
    text : `str`
    dtype : `str`

    Returns
    -------
    array : `numpy.ndarray`
    """
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


def _i4(a: array) -> np.ndarray:
    """An ``array('i')`` as a little-endian int32 numpy array (a copy, so the array can be freed)."""
    return np.frombuffer(a, dtype=np.int32).astype("<i4", copy=True) if len(a) else np.zeros(0, "<i4")


def _u8(b: bytearray) -> np.ndarray:
    return np.frombuffer(bytes(b), dtype=np.uint8)


class Encoder:
    """Accumulate the tables and columns of a graph, deduplicating as it goes.

    Columns are C arrays (``array('i')``, ``bytearray``), ~4 bytes per entry; the only
    per-object maps are the data-ID and dataset-id indexes.
    """

    def __init__(self) -> None:
        self.dataset_types: list[list[Any]] = []
        self._dt: dict[str, int] = {}
        self.runs: list[str] = []
        self._run: dict[str, int] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}
        self._rec: dict[tuple[Any, ...], int] = {}
        self._rec_obj: dict[int, int] = {}
        self._rec_keep: list[Any] = []
        self.values: dict[str, list[Any]] = {}
        self._val: dict[str, dict[Any, int]] = {}
        self.shapes: list[list[Any]] = []
        self._shape: dict[tuple[Any, ...], int] = {}
        self._shape_cols: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        self.did_shape = array("i")
        self.did_row = array("i")
        self.did_values: list[array] = []
        self.did_records: list[array] = []
        self._did_n: list[int] = []
        #: ``id(data ID) -> index`` (the data IDs are kept alive in ``_did_keep``): no hashing, but
        #: equal data IDs given as distinct objects get one entry each (only a few do).
        self._did_id: dict[int, int] = {}
        self._did_keep: list[Any] = []
        self._last_dc: Any = None
        self._last_di = -1
        self.ds_type = array("i")
        self.ds_data_id = array("i")
        self.ds_run = array("i")
        self.ds_id = bytearray()
        #: Dataset UUID -> dataset index (every ref given to `ref`; outputs only when indexed).
        self.ref_index: dict[UUID, int] = {}
        self.task_labels: list[str] = []
        self._label: dict[str, int] = {}
        self.conn_names: list[str] = []
        self._conn: dict[str, int] = {}
        self.q_id = bytearray()
        self.q_task = array("i")
        self.q_data_id = array("i")
        self.q_io_start = array("i", [0])
        self.io_conn = array("i")
        self.io_role = array("i")
        self.io_ds_start = array("i", [0])
        self.io_ds = array("i")

    def __len__(self) -> int:
        return len(self.q_task)

    def dataset_type(self, dt: Any) -> int:
        """Index of a dataset type (added on first use)."""
        i = self._dt.get(dt.name)
        if i is None:
            i = self._dt[dt.name] = len(self.dataset_types)
            self.dataset_types.append([dt.name, list(dt.dimensions), dt.storage_class, bool(dt.is_calibration)])
        return i

    def run(self, name: str) -> int:
        """Index of a run name."""
        i = self._run.get(name)
        if i is None:
            i = self._run[name] = len(self.runs)
            self.runs.append(name)
        return i

    def label(self, label: str) -> int:
        """Index of a task label."""
        i = self._label.get(label)
        if i is None:
            i = self._label[label] = len(self.task_labels)
            self.task_labels.append(label)
        return i

    def _value(self, dim: str, v: Any) -> int:
        table = self._val.get(dim)
        if table is None:
            table = self._val[dim] = {}
            self.values[dim] = []
        i = table.get(v)
        if i is None:
            i = table[v] = len(self.values[dim])
            self.values[dim].append(v)
        return i

    def _record(self, element: str, rec: Any) -> int:
        i = self._rec_obj.get(id(rec))
        if i is not None:
            return i
        el = rec.element
        key = (element, tuple(rec.get(k) for k in el.requires), rec.data_id_value)
        i = self._rec.get(key)
        if i is None:
            lst = self.records.setdefault(element, [])
            i = self._rec[key] = len(lst)
            lst.append(rec.to_dict())
        self._rec_obj[id(rec)] = i
        self._rec_keep.append(rec)  # keeps id(rec) valid
        return i

    def data_id(self, dc: Any) -> int:
        """Index of a data ID (the same object always gets the same entry)."""
        if dc is self._last_dc:
            return self._last_di
        i = self._did_id.get(id(dc))
        if i is None:
            values = dc.to_simple()
            recs = dc.records
            if not recs and not dc.has_records():
                recs = None
            rec_keys = tuple(recs) if recs else ()
            key = (tuple(dc.dimensions), tuple(values), rec_keys, recs is not None)
            s = self._shape.get(key)
            if s is None:
                s = self._shape[key] = len(self.shapes)
                self.shapes.append([list(key[0]), list(key[1]), list(rec_keys), recs is not None])
                self.did_values.append(array("i"))
                self.did_records.append(array("i"))
                self._did_n.append(0)
            i = self._did_id[id(dc)] = len(self.did_shape)
            self._did_keep.append(dc)  # keeps id(dc) valid
            self.did_shape.append(s)
            self.did_row.append(self._did_n[s])
            self._did_n[s] += 1
            val = self._val
            out = self.did_values[s]
            for k, v in values.items():  # inlined `_value` (hot: once per data ID and dimension)
                table = val.get(k)
                j = None if table is None else table.get(v)
                out.append(self._value(k, v) if j is None else j)
            if recs:
                rec_obj = self._rec_obj
                out = self.did_records[s]
                for el in rec_keys:
                    rec = recs[el]
                    j = rec_obj.get(id(rec))
                    out.append(self._record(el, rec) if j is None else j)
        self._last_dc = dc
        self._last_di = i
        return i

    def _append_ref(self, ref: Any) -> int:
        i = len(self.ds_type)
        dt = ref.dataset_type
        dti = self._dt.get(dt.name)
        self.ds_type.append(self.dataset_type(dt) if dti is None else dti)
        self.ds_data_id.append(self.data_id(ref.data_id))
        run = ref.run
        ri = self._run.get(run)
        self.ds_run.append(self.run(run) if ri is None else ri)
        self.ds_id += ref.id.int.to_bytes(16, "big")
        return i

    def ref(self, ref: Any) -> int:
        """Index of a dataset (refs with the same UUID share one entry)."""
        i = self.ref_index.get(ref.id)
        if i is None:
            i = self.ref_index[ref.id] = self._append_ref(ref)
        return i

    def new_ref(self, ref: Any, index: bool = True) -> int:
        """Add a dataset known to be new (a predicted output); ``index``: later refs may name it."""
        i = self._append_ref(ref)
        if index:
            self.ref_index[ref.id] = i
        return i

    def add_quantum(self, q: Any, new_outputs: Container[str] | None = None) -> None:
        """Append one quantum.

        Parameters
        ----------
        q : `~pipeline.graph.quantum.Quantum`
        new_outputs : container of `str`, optional
            See `add`.
        """
        self.add(q.id, q.task_label, q.data_id, q.inputs, q.prerequisites, q.outputs, new_outputs)

    def add(self, qid: UUID | int, label: str, data_id: Any, inputs: Mapping[str, list[Any]],
            prerequisites: Mapping[str, list[Any]], outputs: Mapping[str, list[Any]],
            new_outputs: Container[str] | None = None) -> None:
        """Append one quantum given by its parts (as the fields of `~pipeline.graph.quantum.Quantum`).

        Parameters
        ----------
        qid : `uuid.UUID` or `int`
            The quantum id (or its ``UUID.int``).
        label : `str`
        data_id : `butler.DataCoordinate`
        inputs, prerequisites, outputs : `dict` [`str`, `list` [`butler.DatasetRef`]]
        new_outputs : container of `str`, optional
            The outputs are new datasets (the builder's predictions): they are added without a
            look-up, and only those of these dataset types are indexed for consumers; their ``id``
            may be the ``UUID.int`` (outputs nobody reads). `None`:
            every ref is looked up / indexed by UUID.
        """
        self.q_id += (qid if isinstance(qid, int) else qid.int).to_bytes(16, "big")
        li = self._label.get(label)
        self.q_task.append(self.label(label) if li is None else li)
        data_id_index = self.data_id
        self.q_data_id.append(data_id_index(data_id))
        conn, io_conn, io_role, io_ds, io_ds_start = self._conn, self.io_conn, self.io_role, self.io_ds, self.io_ds_start
        ref_index = self.ref_index
        for role_i, by_conn in ((0, inputs), (1, prerequisites), (2, outputs)):  # ROLES order
            for name, refs in by_conn.items():
                ci = conn.get(name)
                if ci is None:
                    ci = conn[name] = len(self.conn_names)
                    self.conn_names.append(name)
                io_conn.append(ci)
                io_role.append(role_i)
                if role_i == 2 and new_outputs is not None:
                    # New datasets: appended without a look-up (inlined `new_ref`: the hot loop).
                    ds_type, ds_data_id, ds_run, ds_id = self.ds_type, self.ds_data_id, self.ds_run, self.ds_id
                    for r in refs:
                        i = len(ds_type)
                        dt = r.dataset_type
                        dti = self._dt.get(dt.name)
                        ds_type.append(self.dataset_type(dt) if dti is None else dti)
                        ds_data_id.append(data_id_index(r.data_id))
                        ri = self._run.get(r.run)
                        ds_run.append(self.run(r.run) if ri is None else ri)
                        uid = r.id  # a UUID, or its int for the builder's unread outputs (never indexed)
                        if type(uid) is int:
                            ds_id += uid.to_bytes(16, "big")
                        else:
                            ds_id += uid.int.to_bytes(16, "big")
                            if dt.name in new_outputs:
                                ref_index[uid] = i
                        io_ds.append(i)
                else:
                    for r in refs:
                        found = ref_index.get(r.id)
                        if found is None:
                            found = ref_index[r.id] = self._append_ref(r)
                        io_ds.append(found)
                io_ds_start.append(len(io_ds))
        self.q_io_start.append(len(io_conn))

    def new_datasets(self, dataset_types: list[Any], data_ids: np.ndarray, run: str, ids: np.ndarray) -> int:
        """Append the ``k`` new datasets of each of ``n`` quanta in one go (the builder's bulk path).

        Parameters
        ----------
        dataset_types : `list` [`butler.DatasetType`], length ``k``
            The dataset type of each of a quantum's ``k`` new datasets.
        data_ids : `numpy.ndarray`, shape ``(n, k)``, int
            Data-ID indices (`data_id`).
        run : `str`
        ids : `numpy.ndarray`, shape ``(n, k, 16)``, uint8
            The dataset ids (``UUID.bytes``).

        Returns
        -------
        first : `int`
            Dataset index of the first; dataset ``j`` of quantum ``q`` is ``first + q * k + j``
            (quantum by quantum, as the per-quantum path appends them, which compresses best).
            They are not indexed by UUID (the caller indexes those that later refs may name in
            `ref_index`).
        """
        n, k = data_ids.shape
        first = len(self.ds_type)
        types = np.asarray([self.dataset_type(dt) for dt in dataset_types], dtype=np.int32)
        self.ds_type.frombytes(np.tile(types, n).tobytes())
        self.ds_data_id.frombytes(np.ascontiguousarray(data_ids, dtype=np.int32).tobytes())
        self.ds_run.frombytes(np.full(n * k, self.run(run), dtype=np.int32).tobytes())
        self.ds_id += np.ascontiguousarray(ids, dtype=np.uint8).tobytes()
        return first

    def add_quanta(self, qids: np.ndarray, label: str, data_ids: Any, conns: list[tuple[str, int]],
                   counts: np.ndarray, io_ds: Any) -> None:
        """Append ``n`` quanta of one task that all have the same connections (the builder's bulk path).

        Equivalent to `add` per quantum with the connections in the order of ``conns``.

        Parameters
        ----------
        qids : `numpy.ndarray`, shape ``(n, 16)``, uint8
            Quantum ids (``UUID.bytes``).
        label : `str`
            Task label.
        data_ids : sequence of `int`, length ``n``
            Data-ID indices of the quanta (`data_id`).
        conns : `list` [`tuple` [`str`, `int`]]
            ``(connection name, role index in ROLES)`` of each quantum's connections, ``m`` of them.
        counts : `numpy.ndarray`, shape ``(n, m)``, int
            Number of datasets of each quantum and connection.
        io_ds : sequence of `int`
            Dataset indices, quantum by quantum and connection by connection
            (``counts.sum()`` of them).
        """
        n, m = counts.shape
        if not n:
            return
        self.q_id += np.ascontiguousarray(qids, dtype=np.uint8).tobytes()
        li = self.label(label)
        self.q_task.frombytes(np.full(n, li, dtype=np.int32).tobytes())
        self.q_data_id.frombytes(np.asarray(data_ids, dtype=np.int32).tobytes())
        codes = []
        for name, _role in conns:
            ci = self._conn.get(name)
            if ci is None:
                ci = self._conn[name] = len(self.conn_names)
                self.conn_names.append(name)
            codes.append(ci)
        io0 = len(self.io_conn)
        self.io_conn.frombytes(np.tile(np.asarray(codes, dtype=np.int32), n).tobytes())
        self.io_role.frombytes(np.tile(np.asarray([r for _n, r in conns], dtype=np.int32), n).tobytes())
        self.q_io_start.frombytes((io0 + m * np.arange(1, n + 1, dtype=np.int64)).astype(np.int32).tobytes())
        ds0 = len(self.io_ds)
        self.io_ds_start.frombytes((ds0 + np.cumsum(counts.ravel(), dtype=np.int64)).astype(np.int32).tobytes())
        self.io_ds.frombytes(np.asarray(io_ds, dtype=np.int32).tobytes())
        if len(self.io_ds) != self.io_ds_start[-1]:
            raise ValueError(f"{len(self.io_ds) - ds0} dataset indices given for {int(counts.sum())} counted")

    def finish(self, datastore_records: Mapping[Any, Any] | Sequence[tuple[Sequence[UUID], Any]],
               init_outputs: Mapping[str, list[int]]) -> Columns:
        """Return the `Columns` of everything added (the encoder should be dropped afterwards).

        Parameters
        ----------
        datastore_records : `dict` [`uuid.UUID`, `butler.StoredFileInfo`] or sequence of ``(ids, columns)``
            Records of pre-existing inputs; those of datasets not in the graph are left out. The
            builder gives ``(dataset ids, FileRecordColumns)`` pairs (records as columns, ``position``
            pointing into the ids).
        init_outputs : `dict` [`str`, `list` [`int`]]
            Dataset indices of the init outputs per task label.

        Returns
        -------
        columns : `Columns`
        """
        stored_tables, stored_arrays = _encode_stored(self, datastore_records)
        tables = {"dataset_types": self.dataset_types, "runs": self.runs, "records": self.records,
                  "values": self.values, "shapes": self.shapes, "conn_names": self.conn_names,
                  "task_labels": self.task_labels, "stored": stored_tables,
                  "init_outputs": {k: list(v) for k, v in init_outputs.items()}}
        arrays = {"did_shape": _i4(self.did_shape), "did_row": _i4(self.did_row)}
        for s, shape in enumerate(self.shapes):
            n = self._did_n[s]
            arrays[f"did_values.{s}"] = _i4(self.did_values[s]).reshape(n, len(shape[1]))
            arrays[f"did_records.{s}"] = _i4(self.did_records[s]).reshape(n, len(shape[2]))
        for name in ("ds_type", "ds_data_id", "ds_run", "q_task", "q_data_id", "q_io_start", "io_conn", "io_role",
                     "io_ds_start", "io_ds"):
            arrays[name] = _i4(getattr(self, name))
            setattr(self, name, array("i"))  # free each column once copied (lower peak memory)
        arrays["ds_id"] = _u8(self.ds_id)
        self.ds_id = bytearray()
        arrays["q_id"] = _u8(self.q_id)
        self.q_id = bytearray()
        arrays.update(stored_arrays)
        return Columns(tables, arrays)


def _encode_stored(enc: Encoder, records: Mapping[Any, Any] | Sequence[tuple[Sequence[UUID], Any]]
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ``stored`` tables and arrays: records of datasets in the graph (others are left out).

    ``records`` is ``{dataset id: StoredFileInfo}``, or (the builder's form) a sequence of
    ``(dataset ids, FileRecordColumns)`` whose ``position`` points into the ids.
    """
    ds, fmts, scs, sizes = array("i"), array("i"), array("i"), array("q")
    paths: list[str] = []
    checks: list[str | None] = []
    fmt_idx: dict[str, int] = {}
    sc_idx: dict[str, int] = {}
    ref_index = enc.ref_index
    if isinstance(records, Mapping):
        for uid, info in records.items():
            i = ref_index.get(uid)
            if i is None:
                continue
            ds.append(i)
            paths.append(info.path)
            fmts.append(fmt_idx.setdefault(info.formatter, len(fmt_idx)))
            scs.append(sc_idx.setdefault(info.storage_class, len(sc_idx)))
            checks.append(info.checksum)
            sizes.append(info.file_size if info.file_size is not None else -1)
    else:
        for ids, cols in records:
            for p, path, fmt, sc, check, size in zip(cols.position.tolist(), cols.path, cols.formatter,
                                                     cols.storage_class, cols.checksum, cols.file_size):
                i = ref_index.get(ids[p])
                if i is None:
                    continue
                ds.append(i)
                paths.append(path)
                fmts.append(fmt_idx.setdefault(fmt, len(fmt_idx)))
                scs.append(sc_idx.setdefault(sc, len(sc_idx)))
                checks.append(check)
                sizes.append(size if size is not None else -1)
    tables = {"path": paths, "formatter_names": list(fmt_idx), "sc_names": list(sc_idx), "checksum": checks}
    arrays = {"stored.ds": _i4(ds), "stored.formatter": _i4(fmts), "stored.storage_class": _i4(scs),
              "stored.size": np.frombuffer(sizes, dtype=np.int64).astype("<i8") if len(sizes) else np.zeros(0, "<i8")}
    return tables, arrays


def columns_from_v2(payload: Mapping[str, Any]) -> Columns:
    """Convert a format-version-2 payload (JSON with base64 columns) to `Columns`.

    Parameters
    ----------
    payload : `dict`

    Returns
    -------
    columns : `Columns`
    """
    stored = payload["stored"]
    tables = {k: payload[k] for k in ("dataset_types", "runs", "records", "values", "shapes", "conn_names",
                                      "task_labels", "init_outputs")}
    tables["stored"] = {"path": stored["path"], "formatter_names": stored["formatter_names"],
                        "sc_names": stored["sc_names"], "checksum": stored["checksum"]}
    arrays: dict[str, np.ndarray] = {}
    for name in ("did_shape", "did_row", "ds_type", "ds_data_id", "ds_run", "q_task", "q_data_id", "q_io_start",
                 "io_conn", "io_role", "io_ds_start", "io_ds"):
        arrays[name] = unpack(payload[name])
    for s, (t, n) in enumerate(zip(payload["did_values"], payload["did_value_cols"])):
        arrays[f"did_values.{s}"] = unpack(t).reshape(-1, n) if n else np.zeros((0, 0), "<i4")
    for s, (t, n) in enumerate(zip(payload["did_records"], payload["did_record_cols"])):
        arrays[f"did_records.{s}"] = unpack(t).reshape(-1, n) if n else np.zeros((0, 0), "<i4")
    arrays["ds_id"] = np.frombuffer(base64.b64decode(payload["ds_id"]), dtype=np.uint8)
    arrays["q_id"] = np.frombuffer(base64.b64decode(payload["q_id"]), dtype=np.uint8)
    arrays["stored.ds"] = unpack(stored["ds"])
    arrays["stored.formatter"] = unpack(stored["formatter"])
    arrays["stored.storage_class"] = unpack(stored["storage_class"])
    arrays["stored.size"] = unpack(stored["size"], "<i8")
    return Columns(tables, arrays)


class Columns:
    """The columnar form of a graph (built or loaded); builds objects on demand.

    Parameters
    ----------
    tables : `dict`
        The JSON tables (see the module docs).
    arrays : `dict` [`str`, `numpy.ndarray`]
        The columns (see the module docs).
    """

    def __init__(self, tables: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        from butler import DatasetRef, DatasetType
        from butler.dimensions import DataCoordinate, DimensionRecord, default_universe

        # The classes `ref` and `data_id` make one object of per dataset / data ID (no import
        # statement each time).
        self._dataset_ref = DatasetRef
        self._data_coordinate = DataCoordinate
        self._dimension_record = DimensionRecord

        self.tables = dict(tables)
        self.arrays = dict(arrays)
        self.universe = default_universe()
        self.dataset_types = [DatasetType(d[0], tuple(d[1]), d[2], is_calibration=bool(d[3]))
                              for d in tables["dataset_types"]]
        self.runs: list[str] = tables["runs"]
        self.records: dict[str, list[dict[str, Any]]] = tables["records"]
        self.values: dict[str, list[Any]] = tables["values"]
        self.shapes: list[list[Any]] = tables["shapes"]
        self.conn_names: list[str] = tables["conn_names"]
        self.task_labels: list[str] = tables["task_labels"]
        self.init_output_index: dict[str, list[int]] = tables["init_outputs"]
        a = self.arrays
        self.did_shape = a["did_shape"]
        self.did_row = a["did_row"]
        self.did_values = [a[f"did_values.{s}"] if len(sh[1]) else None for s, sh in enumerate(self.shapes)]
        self.did_records = [a[f"did_records.{s}"] if len(sh[2]) else None for s, sh in enumerate(self.shapes)]
        self.ds_type = a["ds_type"]
        self.ds_data_id = a["ds_data_id"]
        self.ds_run = a["ds_run"]
        self.ds_id = a["ds_id"].tobytes() if isinstance(a["ds_id"], np.ndarray) else a["ds_id"]
        self.q_id = a["q_id"].tobytes() if isinstance(a["q_id"], np.ndarray) else a["q_id"]
        self.q_task = a["q_task"]
        self.q_data_id = a["q_data_id"]
        self.q_io_start = a["q_io_start"]
        self.io_conn = a["io_conn"]
        self.io_role = a["io_role"]
        self.io_ds_start = a["io_ds_start"]
        self.io_ds = a["io_ds"]
        self._dc: dict[int, Any] = {}
        self._rec: dict[tuple[str, int], Any] = {}
        self._ref: dict[int, Any] = {}
        self._required_cols: dict[int, list[tuple[str, int]]] = {}

    def uuid_bytes(self, di: int) -> bytes:
        """Return the 16 bytes of the UUID of dataset ``di``."""
        return self.ds_id[16 * di:16 * di + 16]

    def data_id(self, i: int) -> Any:
        """Return data ID ``i`` as a `DataCoordinate` (with its records if it was saved expanded; cached)."""
        dc = self._dc.get(i)
        if dc is not None:
            return dc
        s = int(self.did_shape[i])
        r = int(self.did_row[i])
        dims, keys, rec_els, expanded = self.shapes[s]
        vals = self.did_values[s]
        values = {k: self.values[k][int(vals[r, j])] for j, k in enumerate(keys)} if vals is not None else {}
        records = None
        if expanded:
            records = {}
            rrow = self.did_records[s]
            for j, el in enumerate(rec_els):
                assert rrow is not None  # a shape with record elements has a column per element
                ri = int(rrow[r, j])
                rec = self._rec.get((el, ri))
                if rec is None:
                    rec = self._rec[(el, ri)] = self._dimension_record.from_dict(self.universe[el],
                                                                                 self.records[el][ri])
                records[el] = rec
        dc = self._dc[i] = self._data_coordinate(self.universe, tuple(dims), values, records)
        return dc

    def required_values(self, i: int) -> dict[str, Any]:
        """The required dimension values of data ID ``i`` (no `DataCoordinate` made)."""
        s = int(self.did_shape[i])
        cols = self._required_cols.get(s)
        if cols is None:
            dims, keys = self.shapes[s][0], self.shapes[s][1]
            cols = self._required_cols[s] = [(d, keys.index(d)) for d in dims]
        vals = self.did_values[s]
        r = int(self.did_row[i])
        values = self.values
        return {d: values[d][int(vals[r, j])] for d, j in cols} if vals is not None else {}

    def ref(self, di: int) -> Any:
        """Return dataset ``di`` as a `DatasetRef` (cached: one object per dataset)."""
        ref = self._ref.get(di)
        if ref is None:
            ref = self._ref[di] = self._dataset_ref(
                self.dataset_types[int(self.ds_type[di])], self.data_id(int(self.ds_data_id[di])),
                self.runs[int(self.ds_run[di])], UUID(bytes=self.ds_id[16 * di:16 * di + 16]))
        return ref

    def quantum_parts(self, qi: int) -> dict[str, dict[str, list[Any]]]:
        """Return the refs of quantum ``qi`` by role (inputs, prerequisites, outputs) and connection."""
        parts: dict[str, dict[str, list[Any]]] = {r: {} for r in ROLES}
        for k in range(int(self.q_io_start[qi]), int(self.q_io_start[qi + 1])):
            a, b = int(self.io_ds_start[k]), int(self.io_ds_start[k + 1])
            parts[ROLES[int(self.io_role[k])]][self.conn_names[int(self.io_conn[k])]] = [
                self.ref(d) for d in self.io_ds[a:b].tolist()]
        return parts

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (producer, consumer) quantum index arrays, de-duplicated, vectorised."""
        n_io = len(self.io_conn)
        counts = np.diff(self.io_ds_start).astype(np.int64)
        io_of_ref = np.repeat(np.arange(n_io), counts)
        q_of_io = np.repeat(np.arange(len(self.q_task)), np.diff(self.q_io_start).astype(np.int64))
        q_of_ref = q_of_io[io_of_ref] if n_io else np.zeros(0, dtype=np.int64)
        role_of_ref = self.io_role[io_of_ref] if n_io else np.zeros(0, dtype=np.int32)
        out_mask = role_of_ref == ROLES.index("outputs")
        producer = np.full(len(self.ds_type), -1, dtype=np.int64)
        producer[self.io_ds[out_mask]] = q_of_ref[out_mask]
        in_ds = self.io_ds[~out_mask]
        cons = q_of_ref[~out_mask]
        prod = producer[in_ds]
        keep = prod >= 0
        if not keep.any():
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        # Unique (producer, consumer) pairs, sorted, as one int64 key (quantum indices < 2**31).
        key = np.unique(prod[keep] * (1 << 31) + cons[keep])
        return key >> 31, key & ((1 << 31) - 1)


class LazyRecords(Mapping):
    """``dataset id -> StoredFileInfo`` built on access from the stored columns."""

    def __init__(self, cols: Columns) -> None:
        stored = cols.tables["stored"]
        a = cols.arrays
        self._cols = cols
        self._ds = a["stored.ds"]
        self._paths = stored["path"]
        self._fmt = a["stored.formatter"]
        self._fmt_names = stored["formatter_names"]
        self._sc = a["stored.storage_class"]
        self._sc_names = stored["sc_names"]
        self._checksum = stored["checksum"]
        self._size = a["stored.size"]
        self._pos: dict[bytes, int] | None = None
        self._cache: dict[bytes, Any] = {}

    def _positions(self) -> dict[bytes, int]:
        if self._pos is None:
            ids = self._cols.ds_id
            self._pos = {ids[16 * d:16 * d + 16]: k for k, d in enumerate(self._ds.tolist())}
        return self._pos

    def __getitem__(self, key: Any) -> Any:
        b = key.bytes
        info = self._cache.get(b)
        if info is not None:
            return info
        k = self._positions()[b]
        from butler import StoredFileInfo

        info = self._cache[b] = StoredFileInfo(self._paths[k], self._fmt_names[int(self._fmt[k])],
                                               self._sc_names[int(self._sc[k])], self._checksum[k],
                                               int(self._size[k]))
        return info

    def __contains__(self, key: object) -> bool:
        return isinstance(key, UUID) and key.bytes in self._positions()

    def __iter__(self) -> Any:
        return (UUID(bytes=b) for b in self._positions())

    def __len__(self) -> int:
        return len(self._ds)
