"""Text and Graphviz views of a quantum graph (``pipetask qgraph --show`` and ``--qgraph-dot``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .quantum import LOG_CONNECTION, METADATA_CONNECTION

if TYPE_CHECKING:
    from .quantum_graph import QuantumGraph

__all__ = ["show_graph", "write_dot", "SHOW_CHOICES"]

SHOW_CHOICES = ("summary", "graph", "workflow", "uri")


def _did(dc: Any) -> str:
    req = getattr(dc, "required", None)
    if req is None:
        return str(dict(dc))
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in req.items()) + "}"


def show_graph(graph: QuantumGraph, what: str, out: TextIO, *, uri_for: Callable[[Any], Any] | None = None) -> None:
    """Print one view of a graph.

    Parameters
    ----------
    graph : `pipeline.graph.QuantumGraph`
        The graph.
    what : {"summary", "graph", "workflow", "uri"}
        ``summary``: quanta per task, collections; ``graph``: every quantum with its inputs
        and outputs (dataset type, data ID, UUID, and the datastore path of existing inputs);
        ``workflow``: quanta and dependency edges; ``uri``: predicted output file locations.
    out : text stream
        Where to write.
    uri_for : callable, optional
        ``ref -> path`` used by ``uri`` (the datastore's file template).

    Raises
    ------
    ValueError
        If ``what`` is not one of the choices.
    """
    if what not in SHOW_CHOICES:
        raise ValueError(f"--show {what!r} is not one of {', '.join(SHOW_CHOICES)}")
    md = graph.metadata
    if what == "summary":
        out.write(f"Quantum graph: {len(graph)} quanta\n")
        out.write(f"  output run:  {md.get('output_run')}\n")
        if md.get("output"):
            out.write(f"  output:      {md.get('output')} = {md.get('output_chain')}\n")
        out.write(f"  inputs:      {md.get('inputs')}\n")
        if md.get("where"):
            out.write(f"  data query:  {md.get('where')}\n")
        if md.get("skipped"):
            out.write("  skipped (already done): "
                      + ", ".join(f"{k}={v}" for k, v in md["skipped"].items()) + "\n")
        width = max((len(k) for k in graph.tasks), default=4)
        out.write(f"  {'task':<{width}}  quanta\n")
        for label, n in graph.count_by_task().items():
            out.write(f"  {label:<{width}}  {n}\n")
        return
    if what == "workflow":
        for q in graph.quanta():
            out.write(f"Quantum {q.id}: {q.task_label} {_did(q.data_id)}\n")
        for parent, child in graph.edges():
            out.write(f"Parent Quantum {parent} - Child Quantum {child}\n")
        return
    if what == "uri":
        for q in graph.quanta():
            out.write(f"Quantum {q.id}: {q.task_label} {_did(q.data_id)}\n")
            for name, refs in q.outputs.items():
                for ref in refs:
                    loc = uri_for(ref) if uri_for is not None else "?"
                    out.write(f"    {ref.dataset_type.name} {_did(ref.data_id)}: {loc}\n")
        return
    records = graph.datastore_records
    for q in graph.quanta():
        out.write(f"Quantum {q.id}: {q.task_label}\n")
        out.write(f"  dataId: {_did(q.data_id)}\n")
        for title, part in (("inputs", q.inputs), ("prerequisites", q.prerequisites), ("outputs", q.outputs)):
            if not part:
                continue
            out.write(f"  {title}:\n")
            for name, refs in part.items():
                if name in (METADATA_CONNECTION, LOG_CONNECTION):
                    name = name.lstrip("_")
                for ref in refs:
                    line = f"    {name}: {ref.dataset_type.name} {_did(ref.data_id)} id={ref.id} run={ref.run}"
                    info = records.get(ref.id)
                    if info is not None:
                        line += f" path={info.path}"
                    out.write(line + "\n")


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_dot(graph: QuantumGraph, path: str | os.PathLike[str]) -> Path:
    """Write the graph as Graphviz (quanta as boxes, datasets as ellipses, prerequisites dashed).

    A ``.dot``/``.gv`` file is written as text; for ``.png``/``.svg``/``.pdf`` the ``dot``
    program renders it (a ``.dot`` file is written next to it when ``dot`` is not installed).

    Parameters
    ----------
    graph : `pipeline.graph.QuantumGraph`
    path : path-like

    Returns
    -------
    path : `pathlib.Path`
        The file written.

    Raises
    ------
    RuntimeError
        If ``dot`` fails to render.
    """
    path = Path(path)
    lines = ["digraph QuantumGraph {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
    seen: set[Any] = set()
    for q in graph.quanta():
        qn = f"q_{q.id.hex}"
        lines.append(f"  {qn} [shape=box, style=filled, fillcolor=lightblue, "
                     f"label={_q(q.task_label + chr(10) + _did(q.data_id))}];")
        for role, part in (("in", q.inputs), ("pre", q.prerequisites), ("out", q.outputs)):
            for name, refs in part.items():
                if name in (METADATA_CONNECTION, LOG_CONNECTION):
                    continue
                for ref in refs:
                    dn = f"d_{ref.id.hex}"
                    if dn not in seen:
                        seen.add(dn)
                        lines.append(f"  {dn} [shape=ellipse, label="
                                     f"{_q(ref.dataset_type.name + chr(10) + _did(ref.data_id))}];")
                    if role == "out":
                        lines.append(f"  {qn} -> {dn};")
                    elif role == "pre":
                        lines.append(f"  {dn} -> {qn} [style=dashed];")
                    else:
                        lines.append(f"  {dn} -> {qn};")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    ext = path.suffix.lower().lstrip(".")
    if ext in ("png", "svg", "pdf"):
        exe = shutil.which("dot")
        if exe is None:
            alt = path.with_suffix(".dot")
            alt.write_text(text)
            return alt
        proc = subprocess.run([exe, f"-T{ext}", "-o", str(path)], input=text.encode(), capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"dot failed to render {path}: {proc.stderr.decode(errors='replace')}")
        return path
    path.write_text(text)
    return path
