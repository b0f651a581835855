"""The registry side of the three-step quantum-backed-butler (QBB) flow.

For users who bring their own workflow system (middleware-reference section 7)::

    pipetask qgraph -b REPO -p PIPELINE.yaml -i INPUTS -o OUTPUT -q graph.qg   # needs the registry
    pipetask pre-exec-init-qbb REPO graph.qg                                  # no registry
    pipetask run-qbb REPO graph.qg [--qgraph-node-id ID,...]                  # no registry; any node
    butler transfer-from-graph graph.qg REPO --register-dataset-types --update-output-chain

The first three steps only read and write files. `transfer_from_graph` then registers whatever
the workers finished: the run-level init outputs (``<label>_config``, ``packages``) whose files
exist, and for every quantum whose ``<label>_metadata`` file exists (the definition of a done
quantum) all of its outputs that have files, its metadata and its log, and the log of every
quantum that ran and failed (its ``<label>_log`` file exists, its metadata does not: the worker
removed the failed quantum's other outputs), as ``pipetask run`` registers it. Datasets already
registered are skipped, so it can run again after more workers finished (idempotent), and
registration happens in batched transactions: an interrupted transfer leaves only complete
batches, and rerunning it finishes the job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from butler import Butler
    from butler.registry import Registry

    from ..graph.quantum_graph import QuantumGraph

__all__ = ["TransferReport", "transfer_from_graph", "finished_outputs"]

_log = logging.getLogger("ccdflow.qbb")


@dataclass
class TransferReport:
    """What `transfer_from_graph` did.

    Attributes
    ----------
    n_quanta : `int`
        Quanta in the graph.
    n_done : `int`
        Quanta whose metadata file exists (finished successfully).
    n_registered : `int`
        Datasets registered by this call.
    n_already : `int`
        Datasets whose files exist and were already registered (earlier transfers).
    n_missing : `int`
        Predicted outputs of done quanta without a file (e.g. ``NoWorkFound`` or optional outputs).
    n_failed_logs : `int`
        Quanta without metadata whose ``<label>_log`` file exists (they ran and failed); their
        logs are registered so ``pipetask report`` can show why.
    dataset_types_registered : `list` [`str`]
    chain : `list` [`str`] or `None`
        The output CHAINED collection's members after ``update_output_chain``.
    """

    n_quanta: int = 0
    n_done: int = 0
    n_registered: int = 0
    n_already: int = 0
    n_missing: int = 0
    n_failed_logs: int = 0
    dataset_types_registered: list[str] = field(default_factory=list)
    chain: list[str] | None = None


def finished_outputs(graph: QuantumGraph, root: str | os.PathLike[str], *, include_failed_logs: bool = False,
                     failed_logs: list[Any] | None = None) -> tuple[list[tuple[Any, Any]], int, int]:
    """Return the output files of a graph that exist on disk, for the quanta that finished.

    Parameters
    ----------
    graph : `pipeline.graph.QuantumGraph`
        The predicted graph.
    root : path-like
        Repository root.
    include_failed_logs : `bool`
        Also return the ``<label>_log`` of each quantum without metadata whose log file exists
        (it ran and failed).
    failed_logs : `list`, optional
        Receives those log refs.

    Returns
    -------
    items : `list` [`tuple` [`butler.DatasetRef`, `butler.StoredFileInfo`]]
        Init outputs with files, and every existing output (incl. metadata and log) of each
        quantum whose metadata file exists. File sizes are read from disk.
    n_done : `int`
        Quanta whose metadata exists.
    n_missing : `int`
        Predicted outputs of done quanta without a file.
    """
    from butler import StoredFileInfo

    from ._butler_adapter import predicted_file_info

    root = Path(root)

    def existing(ref: Any) -> Any | None:
        info = predicted_file_info(root, ref)
        p = Path(info.path)
        p = p if p.is_absolute() else root / p
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            return None
        return StoredFileInfo(info.path, info.formatter, info.storage_class, info.checksum, size)

    if failed_logs is None:
        failed_logs = []
    items: list[tuple[Any, Any]] = []
    for refs in graph.init_outputs.values():
        for ref in refs:
            info = existing(ref)
            if info is not None:
                items.append((ref, info))
    n_done = n_missing = 0
    for i in range(len(graph)):
        q = graph.quantum_at(i)
        md = existing(q.metadata_ref)
        if md is None:
            if include_failed_logs and q.log_ref is not None:
                log = existing(q.log_ref)
                if log is not None:  # ran and failed: the log says why
                    items.append((q.log_ref, log))
                    failed_logs.append(q.log_ref)
            continue
        n_done += 1
        for ref in q.all_outputs():
            info = md if ref.id == q.metadata_ref.id else existing(ref)
            if info is None:
                n_missing += 1
            else:
                items.append((ref, info))
    return items, n_done, n_missing


def _checksummed(butler: Butler, items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Add checksums when the repository records them."""
    ds = butler.datastore
    if not ds.checksum:
        return items
    return [(ref, ds.file_info_for(info.path, ref.dataset_type, info.formatter)) for ref, info in items]


def transfer_from_graph(graph: QuantumGraph | str | os.PathLike[str], repo: Butler | str | os.PathLike[str], *,
                        register_dataset_types: bool = False, update_output_chain: bool = False,
                        batch_size: int = 5000) -> TransferReport:
    """Register the outputs that quantum-backed runs of a graph wrote (idempotent).

    Parameters
    ----------
    graph : path-like or `pipeline.graph.QuantumGraph`
        The graph file (or graph) the workers ran.
    repo : path-like or `butler.Butler`
        The repository (a path is opened writeable).
    register_dataset_types : `bool`
        Register the graph's dataset types that the repository lacks (otherwise a missing one
        is an error).
    update_output_chain : `bool`
        Create the graph's CHAINED output collection (``-o``) if missing and put the output RUN
        first in it (followed by the graph's inputs when the chain is new).
    batch_size : `int`
        Datasets per registration transaction.

    Returns
    -------
    report : `TransferReport`

    Raises
    ------
    pipeline.execution.runner.ExecutionError
        If the graph has no output run, a dataset type is missing (without
        ``register_dataset_types``) or defined differently in the repository.
    pipeline.execution.run_lock.RunLockedError
        If a driver is writing into the graph's output run right now.
    pipeline.graph.quantum_graph.QuantumGraphFileError
        If the graph file cannot be read.
    """
    from butler import Butler

    from ..graph.quantum_graph import QuantumGraph
    from .run_lock import run_lock
    from .runner import ExecutionError

    if not isinstance(graph, QuantumGraph):
        graph = QuantumGraph.load(graph)
    own = not isinstance(repo, Butler)
    butler = repo if isinstance(repo, Butler) else Butler(repo, writeable=True)
    try:
        run = graph.output_run
        if not run:
            raise ExecutionError("the quantum graph has no output run; nothing to transfer")
        report = TransferReport(n_quanta=len(graph))
        registry = butler.registry
        missing_types = []
        for dt in graph.dataset_types.values():
            try:
                existing = registry.get_dataset_type(dt.name)
            except Exception:  # noqa: BLE001 - MissingDatasetTypeError
                existing = None
            if existing is None:
                missing_types.append(dt)
            elif existing != dt:
                raise ExecutionError(f"dataset type {dt.name} is {existing} in the repository but {dt} "
                                     "in the graph; rebuild the graph against this repository")
        if missing_types and not register_dataset_types:
            raise ExecutionError("dataset type(s) not registered in the repository: "
                                 + ", ".join(sorted(d.name for d in missing_types))
                                 + "; rerun with --register-dataset-types")
        failed_logs: list[Any] = []
        items, report.n_done, report.n_missing = finished_outputs(
            graph, butler.root, include_failed_logs=True, failed_logs=failed_logs)
        report.n_failed_logs = len(failed_logs)
        with run_lock(butler, run):  # no driver may be registering into this run meanwhile
            _transfer(butler, graph, run, items, missing_types, report, batch_size, update_output_chain)
        _log.info("Registered %d datasets of %d finished quanta (of %d) in run %s; "
                  "%d were already registered",
                  report.n_registered, report.n_done, report.n_quanta, run, report.n_already)
        return report
    finally:
        if own:
            butler.close()


def _transfer(butler: Butler, graph: QuantumGraph, run: str, items: list[tuple[Any, Any]], missing_types: list[Any],
              report: TransferReport, batch_size: int, update_output_chain: bool) -> None:
    from butler import CollectionType, MissingCollectionError

    registry = butler.registry
    with registry.transaction():
        for dt in missing_types:
            if registry.register_dataset_type(dt):
                report.dataset_types_registered.append(dt.name)
        registry.register_run(run)
    # Skip what earlier transfers (or a driver) already registered.
    already: set[UUID] = set()
    ids = [ref.id for ref, _ in items]
    for i in range(0, len(ids), 5000):
        already |= set(registry.get_file_records(ids[i:i + 5000]))
    todo = [(ref, info) for ref, info in items if ref.id not in already]
    report.n_already = len(items) - len(todo)
    todo = _checksummed(butler, todo)
    for i in range(0, len(todo), batch_size):
        butler.register_outputs(todo[i:i + batch_size])
        report.n_registered += len(todo[i:i + batch_size])
    if update_output_chain:
        report.chain = _update_chain(registry, graph, run, CollectionType, MissingCollectionError)


def _update_chain(registry: Registry, graph: QuantumGraph, run: str, collection_type: Any,
                  missing_error: Any) -> list[str] | None:
    md = graph.metadata
    name = md.get("output")
    if not name:
        return None
    with registry.transaction():
        try:
            ctype = registry.get_collection_type(name)
        except missing_error:
            ctype = None
        if ctype is None:
            registry.register_collection(name, collection_type.CHAINED)
            chain = list(md.get("output_chain") or [run, *md.get("inputs", [])])
        elif ctype is not collection_type.CHAINED:
            from .runner import ExecutionError

            raise ExecutionError(f"output collection {name!r} is a {ctype.name} collection, not CHAINED; "
                                 "choose another -o name")
        else:
            chain = list(registry.get_collection_chain(name))
            want = list(md.get("output_chain") or [run, *md.get("inputs", [])])
            if run in chain:
                return chain
            chain = [run, *[c for c in chain if c != run]]
            for c in want:
                if c not in chain:
                    chain.append(c)
        if run not in chain:
            chain.insert(0, run)
        registry.set_collection_chain(name, _dedupe(chain))
    return _dedupe(chain)


def _dedupe(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for x in items:
        if x not in out:
            out.append(x)
    return out
