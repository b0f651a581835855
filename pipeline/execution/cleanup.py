"""Before and after writing into a RUN: whether it is writable, and what interrupted writers left.

`check_writable` probes the output directory before anything is created, so that a read-only
repository or a full disk is reported in one line and leaves no empty RUN or CHAINED collection.

`remove_stale_files` runs while the driver holds the RUN's writer lock
(`pipeline.execution.run_lock.run_lock`): it deletes the temporary files (``.NAME.<hex>.tmp.ext``)
that a writer killed with ``kill -9`` (a pool worker, the driver, a full disk) left in the RUN,
and the unregistered files at the predicted output paths of the graph about to run (the
``<label>_log`` of a quantum whose registration failed, for instance). Files of other RUNs nested
in the RUN's directory and registered files are never touched.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["check_writable", "remove_stale_files", "remove_stale_temporaries"]

_log = logging.getLogger("ccdflow.exec")


def check_writable(butler: Any, run: str) -> None:
    """Fail early, with one message, when the datastore directory of ``run`` cannot be written.

    Creates and deletes a small file in the RUN's directory (or its nearest existing parent), so
    a read-only directory, a read-only file system and a full disk are found before any
    collection is registered.

    Parameters
    ----------
    butler : `butler.Butler`
        Writeable butler.
    run : `str`
        Output RUN collection.

    Raises
    ------
    butler.RepositoryReadOnlyError
        The directory cannot be written (the message names it).
    butler.StorageFullError
        The disk is full.
    """
    from butler._errors import RepositoryReadOnlyError, storage_error

    root = Path(butler.root)
    target = root / run
    probe_dir = target
    while not probe_dir.exists() and probe_dir != root and probe_dir.parent != probe_dir:
        probe_dir = probe_dir.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".ccdflow-write-probe.", dir=probe_dir)
        try:
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        err = storage_error(exc)
        if err is None:
            raise RepositoryReadOnlyError(
                f"cannot write into {probe_dir} (for output run {run}): {exc}") from None
        if isinstance(err, RepositoryReadOnlyError):
            raise RepositoryReadOnlyError(
                f"the output directory {probe_dir} of run {run!r} cannot be written "
                f"({exc.strerror}); make it writable (or write to a repository you can write to); "
                "nothing was created") from None
        raise err from None


def remove_stale_temporaries(butler: Any, run: str) -> int:
    """Delete the temporary files interrupted writers left in ``run`` (the caller holds its lock).

    Parameters
    ----------
    butler : `butler.Butler`
    run : `str`

    Returns
    -------
    n : `int`
        Number of files deleted.
    """
    datastore = getattr(butler, "datastore", None)
    registry = getattr(butler, "registry", None)
    if datastore is None or registry is None or not hasattr(datastore, "remove_stale_temporaries"):
        return 0
    nested = registry.query_collections(run + "/*", types=["RUN"])
    removed = datastore.remove_stale_temporaries(run, other_runs=nested)
    if removed:
        _log.info("Removed %d temporary file(s) left in run %s by an interrupted writer, e.g. %s",
                  len(removed), run, removed[0].name)
    return len(removed)


def remove_stale_files(butler: Any, graph: Any) -> int:
    """Delete what interrupted attempts left in the graph's output RUN (the caller holds its lock).

    Parameters
    ----------
    butler : `butler.Butler`
        Writeable butler.
    graph : `pipeline.graph.QuantumGraph`
        The graph about to run; its predicted output paths that exist on disk but are not
        registered are removed, with every temporary file of the RUN.

    Returns
    -------
    n : `int`
        Number of files deleted.
    """
    from ._butler_adapter import predicted_file_info

    run = graph.output_run
    root = Path(butler.root)
    if not run or not (root / run).is_dir():
        return 0  # a new run has no leftovers
    n = remove_stale_temporaries(butler, run)
    candidates: dict[str, Any] = {}
    for i in range(len(graph)):
        for ref in graph.quantum_at(i).all_outputs():
            try:
                rel = predicted_file_info(root, ref).path
            except Exception:  # noqa: BLE001 - a template this ref cannot render: nothing there
                continue
            if os.path.lexists(root / rel):
                candidates[rel] = ref
    if candidates:
        counts = butler.registry.count_file_references(list(candidates))
        stale = [rel for rel in candidates if counts.get(rel, 0) == 0]
        for rel in stale:
            (root / rel).unlink(missing_ok=True)
        if stale:
            _log.info("Removed %d unregistered output file(s) of an interrupted attempt in run %s, e.g. %s",
                      len(stale), run, stale[0])
        n += len(stale)
    return n
