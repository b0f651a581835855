"""The few butler calls execution needs, in one place (quantum-backed butler, file predictions).

Workers only need: a quantum-backed butler for a quantum's refs, the file a not-yet-registered
dataset will have (for inputs produced upstream in the same graph), and the removal of files
written by a failed attempt.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from butler import DatasetRef, QuantumBackedButler, StoredFileInfo

__all__ = ["base_qbb", "make_qbb", "predicted_file_info", "delete_written", "remove_stale"]


#: Per process: repository root -> (``butler.yaml`` mtime, a quantum-backed butler whose
#: datastore the next quanta share). A long-lived worker reads ``butler.yaml`` and parses the
#: file templates once, not once per quantum.
_BASE_QBB: dict[str, tuple[int, QuantumBackedButler]] = {}


def base_qbb(root: str | os.PathLike[str]) -> QuantumBackedButler:
    """Return the per-process quantum-backed butler of a repository (no inputs, no outputs).

    Its datastore (parsed ``butler.yaml`` and file templates) is shared by the quanta this
    process runs; it is made again when ``butler.yaml`` changes (one ``stat`` per call).

    Parameters
    ----------
    root : path-like
        Repository root.

    Returns
    -------
    qbb : `butler.QuantumBackedButler`
        Derive a quantum's butler with ``for_quantum``; ``predicted_file_info`` gives the file
        of a dataset produced upstream.
    """
    from butler import QuantumBackedButler

    key = os.path.abspath(root)
    try:
        stamp = os.stat(os.path.join(key, "butler.yaml")).st_mtime_ns
    except OSError:
        stamp = -1
    entry = _BASE_QBB.get(key)
    if entry is None or entry[0] != stamp:
        entry = _BASE_QBB[key] = (stamp, QuantumBackedButler(key, inputs={}, outputs=[]))
    return entry[1]


def make_qbb(root: str | os.PathLike[str], inputs: Mapping[UUID, tuple[DatasetRef, StoredFileInfo]],
             outputs: Iterable[DatasetRef]) -> QuantumBackedButler:
    """Make the quantum-backed butler of one quantum.

    The datastore (parsed ``butler.yaml`` and file templates) is shared by every quantum this
    process runs against ``root`` (`butler.QuantumBackedButler.for_quantum`); the state (inputs,
    outputs, files written) is fresh.

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
    return base_qbb(root).for_quantum(inputs=inputs, outputs=outputs)


def predicted_file_info(root: str | os.PathLike[str], ref: DatasetRef) -> StoredFileInfo:
    """Return the `StoredFileInfo` a dataset produced in this graph has (or will have).

    Parameters
    ----------
    root : path-like
        Repository root.
    ref : `butler.DatasetRef`
        A predicted dataset (its data ID expanded).

    Returns
    -------
    info : `butler.StoredFileInfo`
        Root-relative path from the datastore's file template, default formatter of the
        storage class; unknown checksum and size.
    """
    return base_qbb(root).predicted_file_info(ref)


def remove_stale(qbb: QuantumBackedButler, root: str | os.PathLike[str], refs: Iterable[DatasetRef]) -> None:
    """Delete leftovers of an interrupted attempt at the predicted output paths.

    They are never registered (the driver registers only after a quantum finished, and the
    graph builder does not predict outputs that are registered), so removing them is safe.

    Parameters
    ----------
    qbb : `butler.QuantumBackedButler`
    root : path-like
        Repository root (that of ``qbb``).
    refs : iterable of `butler.DatasetRef`
    """
    qbb.remove_stale(list(refs))


def delete_written(qbb: QuantumBackedButler) -> None:
    """Delete the files a failed quantum wrote and forget them.

    Parameters
    ----------
    qbb : `butler.QuantumBackedButler`
    """
    qbb.delete_written()
