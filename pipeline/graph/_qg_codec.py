"""Columnar encoding of a quantum graph's payload (format version 2).

Everything that scales with the number of quanta is a little-endian int32 (or raw UUID bytes)
array stored base64 in the JSON payload, so loading parses a handful of strings and calls
``numpy.frombuffer``; `Quantum`, `DatasetRef` and `DataCoordinate` objects are only built when
a quantum is accessed. Shared things are tables referenced by index: dataset types, runs,
connection names, dimension records (one entry per distinct record), per-dimension value
tables, and data-ID "shapes" (which dimensions, value keys and record elements a data ID has).

Payload keys::

    dataset_types [[name, dims, storage_class, is_calibration]], runs, conn_names, task_labels
    records {element: [record dict]}     values {dimension: [distinct values]}
    shapes [[dims, value_keys, record_elements, expanded]]
    did_shape, did_row  (n_data_ids)      did_values[s], did_records[s]  (rows x columns)
    ds_type, ds_data_id, ds_run (n_datasets), ds_id (16 n_datasets bytes)
    q_id (16 n_quanta bytes), q_task, q_data_id (n_quanta), q_io_start (n_quanta + 1)
    io_conn, io_role (n_io), io_ds_start (n_io + 1), io_ds (n_refs)
    stored {ds (n), path [str], formatter [idx], formatter_names, storage_class [idx],
            sc_names, checksum [str|None], size (n)}
    init_outputs {label: [ds index]}
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import numpy as np

__all__ = ["Encoder", "pack", "unpack", "ROLES"]

ROLES = ("inputs", "prerequisites", "outputs")


def pack(values: Any, dtype: str = "<i4") -> str:
    """Encode an integer sequence as base64 of a little-endian array.

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


class Encoder:
    """Accumulate the tables and columns of a graph, deduplicating as it goes."""

    def __init__(self) -> None:
        self.dataset_types: list[list[Any]] = []
        self._dt: dict[str, int] = {}
        self.runs: list[str] = []
        self._run: dict[str, int] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}
        self._rec: dict[tuple[Any, ...], int] = {}
        self._rec_obj: dict[int, int] = {}
        self.values: dict[str, list[Any]] = {}
        self._val: dict[str, dict[Any, int]] = {}
        self.shapes: list[list[Any]] = []
        self._shape: dict[tuple[Any, ...], int] = {}
        self.did_shape: list[int] = []
        self.did_row: list[int] = []
        self.did_values: list[list[list[int]]] = []
        self.did_records: list[list[list[int]]] = []
        self._did_obj: dict[int, int] = {}
        self._did: dict[Any, int] = {}
        self.ds_type: list[int] = []
        self.ds_data_id: list[int] = []
        self.ds_run: list[int] = []
        self.ds_id: list[bytes] = []
        self.ref_index: dict[Any, int] = {}
        self._ref_obj: dict[int, int] = {}
        self._keep: list[Any] = []

    def dataset_type(self, dt: Any) -> int:
        i = self._dt.get(dt.name)
        if i is None:
            i = self._dt[dt.name] = len(self.dataset_types)
            self.dataset_types.append([dt.name, list(dt.dimensions), dt.storage_class, bool(dt.is_calibration)])
        return i

    def run(self, name: str) -> int:
        i = self._run.get(name)
        if i is None:
            i = self._run[name] = len(self.runs)
            self.runs.append(name)
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
        self._keep.append(rec)
        return i

    def data_id(self, dc: Any) -> int:
        i = self._did_obj.get(id(dc))
        if i is not None:
            return i
        i = self._did.get(dc)
        if i is None:
            values = dc.to_simple()
            recs = dc.records if dc.has_records() or dc.records else None
            rec_keys = tuple(recs) if recs else ()
            key = (tuple(dc.dimensions), tuple(values), rec_keys, recs is not None)
            s = self._shape.get(key)
            if s is None:
                s = self._shape[key] = len(self.shapes)
                self.shapes.append([list(key[0]), list(key[1]), list(rec_keys), recs is not None])
                self.did_values.append([])
                self.did_records.append([])
            i = self._did[dc] = len(self.did_shape)
            self.did_shape.append(s)
            self.did_row.append(len(self.did_values[s]))
            self.did_values[s].append([self._value(k, v) for k, v in values.items()])
            self.did_records[s].append([self._record(el, recs[el]) for el in rec_keys] if recs else [])
        self._did_obj[id(dc)] = i
        self._keep.append(dc)
        return i

    def ref(self, ref: Any) -> int:
        i = self._ref_obj.get(id(ref))
        if i is not None:
            return i
        i = self.ref_index.get(ref.id)
        self._ref_obj[id(ref)] = i if i is not None else len(self.ds_type)
        self._keep.append(ref)
        if i is None:
            i = self.ref_index[ref.id] = len(self.ds_type)
            self.ds_type.append(self.dataset_type(ref.dataset_type))
            self.ds_data_id.append(self.data_id(ref.data_id))
            self.ds_run.append(self.run(ref.run))
            self.ds_id.append(ref.id.bytes)
        return i

    def tables(self) -> dict[str, Any]:
        """Return the shared tables and the data-ID / dataset columns for the payload.

        Returns
        -------
        payload : `dict`
        """
        return {
            "dataset_types": self.dataset_types, "runs": self.runs, "records": self.records,
            "values": self.values, "shapes": self.shapes,
            "did_shape": pack(self.did_shape), "did_row": pack(self.did_row),
            "did_values": [pack(np.asarray(v, dtype="<i4").reshape(len(v), -1) if v else []) for v in self.did_values],
            "did_value_cols": [len(s[1]) for s in self.shapes],
            "did_records": [pack(np.asarray(v, dtype="<i4").reshape(len(v), -1) if v else []) for v in self.did_records],
            "did_record_cols": [len(s[2]) for s in self.shapes],
            "ds_type": pack(self.ds_type), "ds_data_id": pack(self.ds_data_id), "ds_run": pack(self.ds_run),
            "ds_id": base64.b64encode(b"".join(self.ds_id)).decode("ascii"),
        }


class Columns:
    """The decoded (still columnar) payload of a loaded graph; builds objects on demand."""

    def __init__(self, payload: Mapping[str, Any]) -> None:
        from butler import DatasetType
        from butler.dimensions import default_universe

        self.universe = default_universe()
        self.dataset_types = [DatasetType(d[0], tuple(d[1]), d[2], is_calibration=bool(d[3]))
                              for d in payload["dataset_types"]]
        self.runs: list[str] = payload["runs"]
        self.records: dict[str, list[dict[str, Any]]] = payload["records"]
        self.values: dict[str, list[Any]] = payload["values"]
        self.shapes: list[list[Any]] = payload["shapes"]
        self.did_shape = unpack(payload["did_shape"])
        self.did_row = unpack(payload["did_row"])
        self.did_values = [unpack(t).reshape(-1, n) if n else None
                           for t, n in zip(payload["did_values"], payload["did_value_cols"])]
        self.did_records = [unpack(t).reshape(-1, n) if n else None
                            for t, n in zip(payload["did_records"], payload["did_record_cols"])]
        self.ds_type = unpack(payload["ds_type"])
        self.ds_data_id = unpack(payload["ds_data_id"])
        self.ds_run = unpack(payload["ds_run"])
        self.ds_id = base64.b64decode(payload["ds_id"])
        self.conn_names: list[str] = payload["conn_names"]
        self.task_labels: list[str] = payload["task_labels"]
        self.q_id = base64.b64decode(payload["q_id"])
        self.q_task = unpack(payload["q_task"])
        self.q_data_id = unpack(payload["q_data_id"])
        self.q_io_start = unpack(payload["q_io_start"])
        self.io_conn = unpack(payload["io_conn"])
        self.io_role = unpack(payload["io_role"])
        self.io_ds_start = unpack(payload["io_ds_start"])
        self.io_ds = unpack(payload["io_ds"])
        self._dc: dict[int, Any] = {}
        self._rec: dict[tuple[str, int], Any] = {}
        self._ref: dict[int, Any] = {}

    def uuid_bytes(self, di: int) -> bytes:
        return self.ds_id[16 * di:16 * di + 16]

    def data_id(self, i: int) -> Any:
        dc = self._dc.get(i)
        if dc is not None:
            return dc
        from butler.dimensions import DataCoordinate, DimensionRecord

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
                    rec = self._rec[(el, ri)] = DimensionRecord.from_dict(self.universe[el], self.records[el][ri])
                records[el] = rec
        dc = self._dc[i] = DataCoordinate(self.universe, tuple(dims), values, records)
        return dc

    def ref(self, di: int) -> Any:
        ref = self._ref.get(di)
        if ref is None:
            from butler import DatasetRef

            ref = self._ref[di] = DatasetRef(self.dataset_types[int(self.ds_type[di])],
                                             self.data_id(int(self.ds_data_id[di])),
                                             self.runs[int(self.ds_run[di])], UUID(bytes=self.uuid_bytes(di)))
        return ref

    def quantum_parts(self, qi: int) -> dict[str, dict[str, list[Any]]]:
        parts: dict[str, dict[str, list[Any]]] = {r: {} for r in ROLES}
        for k in range(int(self.q_io_start[qi]), int(self.q_io_start[qi + 1])):
            a, b = int(self.io_ds_start[k]), int(self.io_ds_start[k + 1])
            parts[ROLES[int(self.io_role[k])]][self.conn_names[int(self.io_conn[k])]] = [
                self.ref(int(d)) for d in self.io_ds[a:b]]
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
        pairs = np.unique(np.stack([prod[keep], cons[keep]], axis=1), axis=0) if keep.any() else \
            np.zeros((0, 2), dtype=np.int64)
        return pairs[:, 0], pairs[:, 1]


class LazyRecords(Mapping):
    """``dataset id -> StoredFileInfo`` built on access from the stored columns."""

    def __init__(self, cols: Columns, stored: Mapping[str, Any]) -> None:
        self._cols = cols
        self._ds = unpack(stored["ds"])
        self._paths = stored["path"]
        self._fmt = unpack(stored["formatter"])
        self._fmt_names = stored["formatter_names"]
        self._sc = unpack(stored["storage_class"])
        self._sc_names = stored["sc_names"]
        self._checksum = stored["checksum"]
        self._size = unpack(stored["size"], "<i8")
        self._pos: dict[bytes, int] | None = None
        self._cache: dict[bytes, Any] = {}

    def _positions(self) -> dict[bytes, int]:
        if self._pos is None:
            ids = self._cols.ds_id
            self._pos = {ids[16 * int(d):16 * int(d) + 16]: k for k, d in enumerate(self._ds)}
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
        from uuid import UUID

        return (UUID(bytes=b) for b in self._positions())

    def __len__(self) -> int:
        return len(self._ds)


def encode_stored(enc: Encoder, records: Mapping[Any, Any]) -> dict[str, Any]:
    """Encode datastore records of datasets known to the encoder.

    Parameters
    ----------
    enc : `Encoder`
    records : `dict` [`uuid.UUID`, `butler.StoredFileInfo`]

    Returns
    -------
    stored : `dict`
    """
    ds, paths, fmts, scs, checks, sizes = [], [], [], [], [], []
    fmt_idx: dict[str, int] = {}
    sc_idx: dict[str, int] = {}
    for uid, info in records.items():
        i = enc.ref_index.get(uid)
        if i is None:
            continue
        ds.append(i)
        paths.append(info.path)
        fmts.append(fmt_idx.setdefault(info.formatter, len(fmt_idx)))
        scs.append(sc_idx.setdefault(info.storage_class, len(sc_idx)))
        checks.append(info.checksum)
        sizes.append(info.file_size if info.file_size is not None else -1)
    return {"ds": pack(ds), "path": paths, "formatter": pack(fmts), "formatter_names": list(fmt_idx),
            "storage_class": pack(scs), "sc_names": list(sc_idx), "checksum": checks,
            "size": pack(sizes, "<i8")}
