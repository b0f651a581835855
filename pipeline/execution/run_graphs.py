"""The graphs ``pipetask run`` keeps in the repository, for ``pipetask report`` without a graph file.

A module of its own so that ``pipetask run`` records its graph without importing the report's
pydantic models (`pipeline.execution.report`, ~20-40 ms); `pipeline.execution.report` re-exports
both functions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..graph.quantum_graph import QuantumGraph

__all__ = ["record_run_graph", "saved_graphs"]

_log = logging.getLogger("ccdflow.report")


def record_run_graph(graph: QuantumGraph, root: str | os.PathLike[str]) -> Path | None:
    """Keep a copy of an executed graph in ``REPO/.ccdflow/graphs`` (for reports without it).

    ``pipetask run`` and ``pipetask pre-exec-init-qbb`` call this, so that ``pipetask report REPO
    -o OUTPUT`` knows which quanta each run expected (and so which were blocked or never ran).
    The file is named after the output run and a digest of the quantum ids: the same graph
    (a rerun with ``-g``) is kept once.

    Parameters
    ----------
    graph : `pipeline.graph.QuantumGraph`
    root : path-like
        Repository root.

    Returns
    -------
    path : `pathlib.Path` or `None`
        The file, or `None` when the graph is empty or could not be written (a read-only
        repository: reports then fall back to the run's datasets).
    """
    import hashlib

    if not len(graph):
        return None
    digest = hashlib.blake2b(b"".join(q.bytes for q in sorted(graph.quantum_ids)), digest_size=8).hexdigest()
    run = (graph.output_run or "graph").replace("/", "_")
    path = Path(root) / ".ccdflow" / "graphs" / f"{run}__{digest}.qg"
    if path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        graph.save(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _log.warning("could not keep a copy of the graph in %s: %s", path.parent, exc)
        return None
    return path


def saved_graphs(root: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Graph files the runs of a repository saved under ``REPO/.ccdflow/graphs``, by output run.

    Parameters
    ----------
    root : path-like
        Repository root.

    Returns
    -------
    graphs : `dict` [`str`, `list` [`pathlib.Path`]]
        Oldest first (file modification time).
    """
    from ..graph.quantum_graph import QuantumGraph

    gdir = Path(root) / ".ccdflow" / "graphs"
    out: dict[str, list[Path]] = {}
    if not gdir.is_dir():
        return out
    for path in sorted(gdir.glob("*.qg"), key=lambda p: p.stat().st_mtime):
        try:
            header = QuantumGraph.read_header(path)
        except Exception:  # noqa: BLE001 - a half-written or foreign file
            continue
        run = header.get("output_run") or header.get("metadata", {}).get("output_run")
        if run:
            out.setdefault(str(run), []).append(path)
    return out
