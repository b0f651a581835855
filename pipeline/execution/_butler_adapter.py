"""The few butler calls execution needs, in one place (quantum-backed butler, file predictions).

Workers only need: a quantum-backed butler for a quantum's refs, the file a not-yet-registered
dataset will have (for inputs produced upstream in the same graph), and the removal of files
written by a failed attempt. The driver needs the datastore records of existing inputs.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

__all__ = ["make_qbb", "predicted_file_info", "delete_written", "remove_stale", "stored_infos"]


def _real_qbb() -> Any:
    try:
        from butler import QuantumBackedButler
    except ImportError:
        return None
    return QuantumBackedButler


def make_qbb(root: str | os.PathLike[str], inputs: Mapping[UUID, tuple[Any, Any]], outputs: Iterable[Any]) -> Any:
    """Make the quantum-backed butler of one quantum.

    Parameters
    ----------
    root : path-like
        Repository root.
    inputs : `dict` [`uuid.UUID`, `tuple` [`butler.DatasetRef`, `butler.StoredFileInfo`]]
        Inputs with their datastore records.
    outputs : iterable of `butler.DatasetRef`
        Predicted outputs.

    Returns
    -------
    qbb : `butler.QuantumBackedButler`
    """
    cls = _real_qbb()
    if cls is None:
        return _StandInQBB(root, inputs, outputs)
    key = str(root)
    template = _QBB_TEMPLATES.get(key)
    if template is None:
        qbb = cls(root, inputs=inputs, outputs=list(outputs))
        if all(hasattr(qbb, a) for a in _QBB_STATE):
            _QBB_TEMPLATES[key] = qbb
        return qbb
    # The datastore config is parsed once (butler.yaml: ~1 ms per quantum); each quantum gets a
    # fresh datastore object (its directory cache must not outlive a prune) and fresh state.
    qbb = copy.copy(template)
    qbb.datastore = _fresh_datastore(root)
    qbb._inputs = dict(inputs)
    qbb._outputs = {r.id: r for r in outputs}
    qbb._written = {}
    return qbb


_QBB_TEMPLATES: dict[str, Any] = {}
_QBB_STATE = ("_inputs", "_outputs", "_written", "datastore")


_DATASTORES: dict[str, Any] = {}
_DATASTORE_CONFIGS: dict[str, Any] = {}


def _fresh_datastore(root: str | os.PathLike[str]) -> Any:
    from butler.datastore.file_datastore import FileDatastore

    key = str(Path(root).absolute())
    config = _DATASTORE_CONFIGS.get(key)
    if config is None:
        import yaml

        path = Path(key) / "butler.yaml"
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
        config = _DATASTORE_CONFIGS[key] = (data or {}).get("datastore") or {}
    return FileDatastore(Path(key), config=config)


def _datastore_for(root: str | os.PathLike[str]) -> Any:
    key = str(Path(root).absolute())
    ds = _DATASTORES.get(key)
    if ds is None:
        from butler.datastore.file_datastore import FileDatastore

        ds = _DATASTORES[key] = FileDatastore(Path(root))
    return ds


def predicted_file_info(root: str | os.PathLike[str], ref: Any) -> Any:
    """The `StoredFileInfo` a dataset produced in this graph has (or will have).

    Parameters
    ----------
    root : path-like
        Repository root.
    ref : `butler.DatasetRef`
        A predicted dataset (its data ID expanded).

    Returns
    -------
    info : `butler.StoredFileInfo`
        Path from the datastore's file template, default formatter of the storage class;
        unknown checksum and size.
    """
    from butler import StoredFileInfo
    from butler.storage_classes import get_storage_class

    sc = get_storage_class(ref.dataset_type.storage_class)
    if _real_qbb() is not None:
        path = _datastore_for(root).path_for(ref, sc.formatter)
        rel = os.path.relpath(path, root) if os.path.isabs(path) else Path(path).as_posix()
    else:
        rel = _StandInQBB.relpath(ref, sc.formatter)
    return StoredFileInfo(rel, sc.formatter, sc.name, None, -1)


def remove_stale(qbb: Any, root: str | os.PathLike[str], refs: Iterable[Any]) -> None:
    """Delete leftovers of an interrupted attempt at the predicted output paths.

    They are never registered (the driver registers only after a quantum finished, and the
    graph builder does not predict outputs that are registered), so removing them is safe.

    Parameters
    ----------
    qbb : quantum-backed butler
    root : path-like
    refs : iterable of `butler.DatasetRef`
    """
    for ref in refs:
        try:
            info = predicted_file_info(root, ref)
        except Exception:  # noqa: BLE001
            continue
        p = Path(root) / info.path
        if p.exists():
            p.unlink()


def delete_written(qbb: Any) -> None:
    """Delete the files a failed quantum wrote and forget them.

    Parameters
    ----------
    qbb : quantum-backed butler
    """
    root = Path(getattr(qbb, "root", "."))
    for _ref, info in list(qbb.written):
        p = Path(info.path)
        p = p if p.is_absolute() else root / p
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    state = getattr(qbb, "_written", None)
    if state is not None:
        state.clear()
    elif isinstance(qbb.written, list):
        qbb.written.clear()


def stored_infos(butler: Any, refs: Sequence[Any]) -> dict[UUID, Any]:
    """Datastore records of existing datasets (bulk when possible).

    Parameters
    ----------
    butler : `butler.Butler`
    refs : `list` [`butler.DatasetRef`]

    Returns
    -------
    infos : `dict` [`uuid.UUID`, `butler.StoredFileInfo`]
    """
    if not refs:
        return {}
    get_records = getattr(butler.registry, "get_file_records", None)
    if get_records is not None:
        found = get_records([r.id for r in refs])
        missing = [r for r in refs if r.id not in found]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} input dataset(s) have no file in the datastore, e.g. "
                f"{missing[0].dataset_type.name} {dict(missing[0].data_id.required)} in run {missing[0].run}; "
                "re-ingest or remove them (butler prune-datasets)")
        return found
    ds = butler.datastore
    for name in ("get_stored_infos", "stored_infos", "get_infos", "records_for"):
        fn = getattr(ds, name, None)
        if fn is not None:
            res = fn(refs)
            if isinstance(res, Mapping):
                return dict(res)
            return {r.id: i for r, i in zip(refs, res)}
    out = {}
    for name in ("get_stored_info", "get_info", "info"):
        fn = getattr(ds, name, None)
        if fn is not None:
            for r in refs:
                out[r.id] = fn(r)
            return out
    raise RuntimeError("the datastore offers no way to read datastore records")


class _StandInQBB:
    """Private stand-in used only until ``butler.QuantumBackedButler`` exists."""

    def __init__(self, root: str | os.PathLike[str], inputs: Mapping[UUID, tuple[Any, Any]],
                 outputs: Iterable[Any]) -> None:
        self.root = Path(root)
        self._inputs = dict(inputs)
        self._outputs = {r.id: r for r in outputs}
        self.written: list[tuple[Any, Any]] = []

    @staticmethod
    def relpath(ref: Any, formatter: str) -> str:
        from butler.storage_classes import get_formatter

        ext = getattr(get_formatter(formatter), "extension", ".dat")
        vals = "_".join(str(v) for v in ref.data_id.required.values())
        return f"{ref.run}/{ref.dataset_type.name}/{ref.dataset_type.name}_{vals}{ext}"

    def get(self, ref: Any, parameters: Any = None) -> Any:
        from butler.storage_classes import get_formatter

        _r, info = self._inputs[ref.id]
        return get_formatter(info.formatter).read(self.root / info.path, ref, parameters=parameters,
                                                  repo_root=self.root)

    def exists(self, ref: Any) -> bool:
        entry = self._inputs.get(ref.id)
        return entry is not None and (self.root / entry[1].path).exists()

    def put(self, obj: Any, ref: Any) -> Any:
        from butler import StoredFileInfo
        from butler.storage_classes import get_formatter, get_storage_class

        sc = get_storage_class(ref.dataset_type.storage_class)
        rel = self.relpath(ref, sc.formatter)
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        get_formatter(sc.formatter).write(obj, tmp, ref)
        os.replace(tmp, path)
        info = StoredFileInfo(rel, sc.formatter, sc.name, None, path.stat().st_size)
        self.written.append((ref, info))
        return ref
