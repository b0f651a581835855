"""What happened to the quanta of a run: ``pipetask report`` and ``pipetask aggregate-reports``.

A quantum's outcome is read back from the provenance every executor (serial, process pool,
Parsl, ``run-qbb``) writes (`pipeline.execution.single_quantum`):

- ``<label>_metadata`` exists: the quantum **succeeded** (its ``caveats`` list says
  ``NO_WORK`` when the task raised `NoWorkFound`);
- ``<label>_log`` exists but no metadata: it **failed**; the last ERROR record of the log holds
  ``"<ExceptionType>: <message>"`` (the log is written for failures too, and `run-qbb` leaves
  it on disk even though ``butler transfer-from-graph`` registers only finished quanta);
- neither, and an upstream quantum failed or was blocked: **blocked**;
- neither otherwise: **unknown** (not attempted, e.g. an interrupted run).

A dataset counts as present when it is registered in the repository or, for quantum-backed runs
not yet transferred, when its file exists at the predicted path.

The model and the table layout are LSST's `lsst.pipe.base.quantum_provenance_graph.Summary`
(``pipetask report --force-v2``): per task ``n_successful``, ``n_blocked``, ``n_unknown``,
``n_expected``, the failed quanta with their data IDs, runs and messages, the quanta recovered
in a later attempt and the "wonky" ones (succeeded once, failed later); per dataset type the
visible, predicted-only, unsuccessful and cursed counts. Several graphs of the same processing
(attempts: ``--extend-run`` or a new ``-o`` run) are merged, the last attempt of a quantum
winning. Without a graph file, `report_from_collections` uses the graphs the runs saved under
``REPO/.ccdflow/graphs/`` and, for runs without one, the ``<label>_log`` / ``<label>_metadata``
datasets of the run (expected = attempted; blocked and not attempted quanta cannot be known).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from .run_graphs import record_run_graph, saved_graphs

if TYPE_CHECKING:
    from butler import Butler

    from ..graph.quantum_graph import QuantumGraph

__all__ = [
    "DatasetTypeSummary",
    "Summary",
    "TaskSummary",
    "UnsuccessfulQuantumSummary",
    "aggregate_files",
    "failure_message",
    "record_run_graph",
    "report_from_collections",
    "report_from_graphs",
]

_log = logging.getLogger("ccdflow.report")

#: Caveat codes (`TaskSummary.caveats` keys) and what they mean, as LSST's legend.
CAVEAT_LEGEND = {"N": "NoWorkFound raised: the quantum succeeded without writing its outputs"}

DataIdValue = int | str | float | bool | None


class UnsuccessfulQuantumSummary(pydantic.BaseModel):
    """A failed or "wonky" quantum: its data ID, its status in each run, its messages.

    Attributes
    ----------
    data_id : `dict`
        Required data ID values of the quantum.
    runs : `dict` [`str`, `str`]
        Status name (``SUCCESSFUL``, ``FAILED``, ``BLOCKED``, ``METADATA_MISSING``) per RUN
        collection of each attempt, oldest first.
    messages : `list` [`str`]
        Error messages of the failures (``"ExceptionType: message"``, one per failed attempt),
        or why the quantum is wonky.
    """

    data_id: dict[str, DataIdValue]
    runs: dict[str, str] = pydantic.Field(default_factory=dict)
    messages: list[str] = pydantic.Field(default_factory=list)


class TaskSummary(pydantic.BaseModel):
    """Counts and failures of the quanta of one task, over every attempt.

    Attributes
    ----------
    n_successful, n_blocked, n_unknown, n_expected : `int`
        Quanta that succeeded, were blocked by an upstream failure, were not attempted (no
        metadata and no log), and were expected by the graph(s).
    caveats : `dict` [`str`, `list` [`dict`]]
        Data IDs of successful quanta with a caveat, by code (`CAVEAT_LEGEND`).
    failed_quanta, wonky_quanta : `list` [`UnsuccessfulQuantumSummary`]
    recovered_quanta : `list` [`dict`]
        Data IDs that failed in an earlier attempt and succeeded in a later one.
    """

    n_successful: int = 0
    n_blocked: int = 0
    n_unknown: int = 0
    n_expected: int = 0
    caveats: dict[str, list[dict[str, DataIdValue]]] = pydantic.Field(default_factory=dict)
    exceptions: dict[str, list[dict[str, Any]]] = pydantic.Field(default_factory=dict)
    failed_quanta: list[UnsuccessfulQuantumSummary] = pydantic.Field(default_factory=list)
    recovered_quanta: list[dict[str, DataIdValue]] = pydantic.Field(default_factory=list)
    wonky_quanta: list[UnsuccessfulQuantumSummary] = pydantic.Field(default_factory=list)

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def n_wonky(self) -> int:
        """Number of wonky quanta (succeeded in one attempt, failed in a later one)."""
        return len(self.wonky_quanta)

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def n_failed(self) -> int:
        """Number of failed quanta."""
        return len(self.failed_quanta)

    def add(self, other: TaskSummary) -> None:
        """Add the counts and lists of another (disjoint) summary of the same task.

        Parameters
        ----------
        other : `TaskSummary`
        """
        self.n_successful += other.n_successful
        self.n_blocked += other.n_blocked
        self.n_unknown += other.n_unknown
        self.n_expected += other.n_expected
        for code, ids in other.caveats.items():
            self.caveats.setdefault(code, []).extend(ids)
        for name, infos in other.exceptions.items():
            self.exceptions.setdefault(name, []).extend(infos)
        self.failed_quanta.extend(other.failed_quanta)
        self.recovered_quanta.extend(other.recovered_quanta)
        self.wonky_quanta.extend(other.wonky_quanta)


class DatasetTypeSummary(pydantic.BaseModel):
    """Counts of the predicted datasets of one type.

    Attributes
    ----------
    producer : `str`
        Label of the task writing them.
    n_visible : `int`
        Produced (registered, or on disk for a quantum-backed run).
    n_shadowed : `int`
        Produced but hidden by a later attempt's dataset (always 0 here: each attempt's run
        holds its own datasets).
    n_predicted_only : `int`
        Not produced although the producer succeeded (`NoWorkFound`, optional outputs).
    n_expected : `int`
        Predicted by the graph(s).
    unsuccessful_datasets : `list` [`dict`]
        Data IDs not produced because the producer failed or was blocked.
    cursed_datasets : `list` [`dict`]
        Produced by a quantum that finally failed (data IDs), other than its log.
    """

    producer: str = ""
    n_visible: int = 0
    n_shadowed: int = 0
    n_predicted_only: int = 0
    n_expected: int = 0
    unsuccessful_datasets: list[dict[str, DataIdValue]] = pydantic.Field(default_factory=list)
    cursed_datasets: list[dict[str, DataIdValue]] = pydantic.Field(default_factory=list)

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def n_unsuccessful(self) -> int:
        """Number of datasets not produced because their producer failed or was blocked."""
        return len(self.unsuccessful_datasets)

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def n_cursed(self) -> int:
        """Number of datasets written by a quantum that failed."""
        return len(self.cursed_datasets)

    def add(self, other: DatasetTypeSummary) -> None:
        """Add another (disjoint) summary of the same dataset type.

        Parameters
        ----------
        other : `DatasetTypeSummary`
        """
        self.producer = self.producer or other.producer
        self.n_visible += other.n_visible
        self.n_shadowed += other.n_shadowed
        self.n_predicted_only += other.n_predicted_only
        self.n_expected += other.n_expected
        self.unsuccessful_datasets.extend(other.unsuccessful_datasets)
        self.cursed_datasets.extend(other.cursed_datasets)


class Summary(pydantic.BaseModel):
    """The report of one or more executed graphs: per task and per dataset type.

    Attributes
    ----------
    tasks : `dict` [`str`, `TaskSummary`]
        By task label, in pipeline order.
    datasets : `dict` [`str`, `DatasetTypeSummary`]
        By dataset type name.
    notes : `list` [`str`]
        What could not be known (e.g. runs reported without their graph).
    """

    tasks: dict[str, TaskSummary] = pydantic.Field(default_factory=dict)
    datasets: dict[str, DatasetTypeSummary] = pydantic.Field(default_factory=dict)
    notes: list[str] = pydantic.Field(default_factory=list)

    @classmethod
    def aggregate(cls, summaries: Iterable[Summary]) -> Summary:
        """Merge summaries of disjoint groups of data IDs (``pipetask aggregate-reports``).

        Parameters
        ----------
        summaries : iterable of `Summary`

        Returns
        -------
        summary : `Summary`
        """
        result = cls()
        for s in summaries:
            for label, ts in s.tasks.items():
                result.tasks.setdefault(label, TaskSummary()).add(ts)
            for name, ds in s.datasets.items():
                result.datasets.setdefault(name, DatasetTypeSummary()).add(ds)
            result.notes.extend(n for n in s.notes if n not in result.notes)
        return result

    # ----------------------------------------------------------------- tables
    def quantum_rows(self) -> list[dict[str, Any]]:
        """Rows of the quanta table (LSST's column names).

        Returns
        -------
        rows : `list` [`dict`]
            ``Task, Unknown, Successful, Caveats, Blocked, Failed, Wonky, TOTAL, EXPECTED``.
        """
        rows = []
        for label, ts in self.tasks.items():
            if len(ts.caveats) > 1:
                caveats = "(multiple)"
            elif ts.caveats:
                ((code, ids),) = ts.caveats.items()
                caveats = f"{code}({len(ids)})"
            else:
                caveats = ""
            total = ts.n_successful + ts.n_unknown + ts.n_blocked + ts.n_failed + ts.n_wonky
            rows.append(
                {
                    "Task": label,
                    "Unknown": ts.n_unknown,
                    "Successful": ts.n_successful,
                    "Caveats": caveats,
                    "Blocked": ts.n_blocked,
                    "Failed": ts.n_failed,
                    "Wonky": ts.n_wonky,
                    "TOTAL": total,
                    "EXPECTED": ts.n_expected,
                }
            )
        return rows

    def dataset_rows(self) -> list[dict[str, Any]]:
        """Rows of the datasets table (LSST's column names).

        Returns
        -------
        rows : `list` [`dict`]
            ``Dataset, Visible, Shadowed, Predicted Only, Unsuccessful, Cursed, TOTAL, EXPECTED``.
        """
        rows = []
        for name, ds in self.datasets.items():
            total = ds.n_visible + ds.n_shadowed + ds.n_predicted_only + ds.n_unsuccessful + ds.n_cursed
            rows.append(
                {
                    "Dataset": name,
                    "Visible": ds.n_visible,
                    "Shadowed": ds.n_shadowed,
                    "Predicted Only": ds.n_predicted_only,
                    "Unsuccessful": ds.n_unsuccessful,
                    "Cursed": ds.n_cursed,
                    "TOTAL": total,
                    "EXPECTED": ds.n_expected,
                }
            )
        return rows

    def bad_quantum_rows(self, max_message_width: int = 80) -> dict[str, list[dict[str, Any]]]:
        """Per task, one row per failed or wonky quantum: status, data ID, last message.

        Parameters
        ----------
        max_message_width : `int`
            Messages are shortened to this many characters (``textwrap.shorten``); 0 keeps them.

        Returns
        -------
        rows : `dict` [`str`, `list` [`dict`]]
            Only tasks with such quanta.
        """
        out: dict[str, list[dict[str, Any]]] = {}
        for label, ts in self.tasks.items():
            rows = []
            for status, q in itertools.chain(
                zip(itertools.repeat("FAILED"), ts.failed_quanta),
                zip(itertools.repeat("WONKY"), ts.wonky_quanta),
            ):
                msg = q.messages[-1] if q.messages else ""
                if max_message_width and msg:
                    msg = textwrap.shorten(msg, max_message_width)
                rows.append({"Status(Caveats)": status, **q.data_id, "Message": msg})
            if rows:
                out[label] = rows
        return out

    def format(self, brief: bool = False, datasets: bool = True) -> str:
        """Return the text ``pipetask report`` prints: quanta table, datasets table, errors per task.

        Parameters
        ----------
        brief : `bool`
            Counts only (no per-data-ID error tables).
        datasets : `bool`
            Include the datasets table.

        Returns
        -------
        text : `str`
        """
        parts = [_table(self.quantum_rows()), "", "Caveat codes:"]
        parts += [f"{k}: {v}" for k, v in CAVEAT_LEGEND.items()]
        parts.append("")
        if datasets and self.datasets:
            parts += [_table(self.dataset_rows()), ""]
        if not brief:
            for label, rows in self.bad_quantum_rows().items():
                parts += [f"{label} errors:", _table(rows), ""]
        parts += [f"Note: {n}" for n in self.notes]
        return "\n".join(parts).rstrip() + "\n"


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain aligned table (astropy's ``pprint_all`` look), columns from every row in order."""
    if not rows:
        return "(no quanta)"
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    cells = [[("" if r.get(c) is None else str(r.get(c, ""))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    left = {"Task", "Dataset", "Caveats", "Status(Caveats)", "Message"}

    def fmt(values: Sequence[str]) -> str:
        return " ".join(
            v.ljust(w) if c in left else v.rjust(w) for c, v, w in zip(cols, values, widths)
        ).rstrip()

    return "\n".join([fmt(cols), " ".join("-" * w for w in widths)] + [fmt(row) for row in cells])


# --------------------------------------------------------------------------- reading provenance
_FAILED_RE = re.compile(r"^Quantum .* failed: (.*)$", re.S)


def failure_message(records: Sequence[Mapping[str, Any]]) -> str:
    """Return the one-line error message of a failed quantum from its ``<label>_log`` records.

    Parameters
    ----------
    records : sequence of `dict`
        The log dataset (`pipeline.execution.single_quantum` record dicts: ``levelno``,
        ``message``, optional ``exc_info``).

    Returns
    -------
    message : `str`
        ``"ExceptionType: first line of the message"`` of the last ERROR record (``""`` when the
        log has no error record).
    """
    errors = [r for r in records if int(r.get("levelno", 0)) >= logging.ERROR]
    if not errors:
        return ""
    msg = str(errors[-1].get("message", ""))
    m = _FAILED_RE.match(msg)
    if m:
        msg = m.group(1)
    return msg.strip().splitlines()[0] if msg.strip() else ""


class _Presence:
    """Answers "does this predicted dataset exist?" from the registry, then from disk."""

    def __init__(self, butler: Butler, root: str | os.PathLike[str], use_disk: bool = True) -> None:
        self.butler = butler
        self.root = str(root)
        self.use_disk = use_disk
        self._registered: dict[str | None, set[Any]] = {}

    def _run_ids(self, run: str | None, type_names: Iterable[str]) -> set[Any]:
        if run not in self._registered:
            ids: set[Any] = set()
            if run is not None:  # a graph without an output run: nothing registered
                names = sorted(set(type_names))
                try:  # one query for the registered types (a query per type costs ~10 ms each)
                    known = {dt.name for dt in self.butler.registry.query_dataset_types(names)}
                    if known:
                        refs = self.butler.query_datasets(sorted(known), collections=[run], find_first=False)
                        ids.update(r.id for r in refs)
                    names = []
                except Exception:  # noqa: BLE001 - e.g. no such run: ask type by type as before
                    pass
                for name in names:
                    try:
                        ids.update(
                            r.id for r in self.butler.query_datasets(name, collections=[run], find_first=False)
                        )
                    except Exception:  # noqa: BLE001 - unknown dataset type or run: nothing registered
                        continue
            self._registered[run] = ids
        return self._registered[run]

    def prime(self, run: str | None, type_names: Iterable[str]) -> None:
        """Query the registered datasets of ``run`` once, for the given types."""
        self._run_ids(run, type_names)

    def registered(self, ref: Any) -> bool:
        return ref.id in self._registered.get(ref.run, set())

    def on_disk(self, ref: Any) -> bool:
        if not self.use_disk:
            return False
        from ._butler_adapter import predicted_file_info

        return (Path(self.root) / predicted_file_info(self.root, ref).path).exists()

    def exists(self, ref: Any) -> bool:
        return self.registered(ref) or self.on_disk(ref)

    def read(self, ref: Any) -> Any:
        """Read a dataset: through the registry when registered, else its predicted file."""
        if self.registered(ref):
            return self.butler.get(ref)
        from ._butler_adapter import make_qbb, predicted_file_info

        info = predicted_file_info(self.root, ref)
        return make_qbb(self.root, {ref.id: (ref, info)}, []).get(ref)


def _required(data_id: Any) -> dict[str, DataIdValue]:
    req = getattr(data_id, "required", None)
    return dict(req if req is not None else data_id)


def _key(label: str, data_id: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return label, tuple(sorted((k, str(v)) for k, v in data_id.items()))


def _attempt_statuses(graph: QuantumGraph, presence: _Presence, logs: bool) -> dict[Any, dict[str, Any]]:
    """Status of every quantum of one graph (one attempt): ``{quantum id: info}``."""
    n = len(graph)
    status: list[str] = [""] * n
    info: dict[Any, dict[str, Any]] = {}
    preds = graph.predecessor_indices()
    for i in graph.topological_order():
        q = graph.quantum_at(i)
        md = q.metadata_ref
        try:
            lg = q.log_ref
        except (KeyError, IndexError):  # saveLogOutput=False: the task writes no log
            lg = None
        entry: dict[str, Any] = {"quantum": q, "message": "", "caveats": []}
        if presence.exists(md):
            st = "SUCCESSFUL"
            if logs:
                try:
                    md_obj = presence.read(md)
                    entry["caveats"] = list(md_obj.get("caveats", []) if hasattr(md_obj, "get") else [])
                except Exception:  # noqa: BLE001 - unreadable metadata: success all the same
                    pass
        elif lg is not None and presence.exists(lg):
            st = "FAILED"
            if logs:
                try:
                    entry["message"] = failure_message(presence.read(lg))
                except Exception as exc:  # noqa: BLE001
                    entry["message"] = f"Logs missing or corrupt for {lg.dataset_type.name}: {exc}"
        elif any(status[p] in ("FAILED", "BLOCKED") for p in preds[i]):
            st = "BLOCKED"
        else:
            st = "METADATA_MISSING"
        status[i] = st
        entry["status"] = st
        info[q.id] = entry
    return info


def report_from_graphs(
    butler: Butler, graphs: Sequence[QuantumGraph], *, logs: bool = True, use_disk: bool = True
) -> Summary:
    """Report on one or more executed graphs (attempts at the same processing, oldest first).

    Parameters
    ----------
    butler : `butler.Butler`
        The repository the graphs ran against.
    graphs : sequence of `pipeline.graph.QuantumGraph`
        Executed graphs; a quantum in several graphs (same task label and data ID) takes the
        status of its last attempt (last graph in which it has metadata or a log).
    logs : `bool`
        Read the logs of failed quanta for their error messages (and metadata for caveats).
    use_disk : `bool`
        Count files at their predicted paths as present when they are not registered
        (quantum-backed runs before ``butler transfer-from-graph``).

    Returns
    -------
    summary : `Summary`
    """
    presence = _Presence(butler, butler.root, use_disk=use_disk)
    attempts: dict[tuple[str, Any], list[tuple[str | None, dict[str, Any]]]] = {}
    order: list[tuple[str, Any]] = []
    labels: list[str] = []
    seen_ids: set[Any] = set()
    for graph in graphs:
        run = graph.output_run
        types = {r.dataset_type.name for r in graph.all_output_refs()}
        presence.prime(run, types)
        for label in graph.tasks:
            if label not in labels:
                labels.append(label)
        for qid, entry in _attempt_statuses(graph, presence, logs).items():
            q = entry["quantum"]
            k = _key(q.task_label, _required(q.data_id))
            if k not in attempts:
                attempts[k] = []
                order.append(k)
            if qid in seen_ids:  # the same quantum in a second graph (a -g rerun, a subset): one attempt
                continue
            seen_ids.add(qid)
            attempts[k].append((run, entry))
    summary = Summary(tasks={label: TaskSummary() for label in labels})
    for k in order:
        runs = attempts[k]
        label = k[0]
        ts = summary.tasks[label]
        ts.n_expected += 1
        last = runs[-1][1]
        data_id = _required(last["quantum"].data_id)
        tried = [(run, e) for run, e in runs if e["status"] in ("SUCCESSFUL", "FAILED")]
        final = tried[-1][1] if tried else last
        statuses = [e["status"] for _, e in runs]
        uqs = UnsuccessfulQuantumSummary(
            data_id=data_id,
            runs={run: e["status"] for run, e in runs},
            messages=[e["message"] for _, e in runs if e["message"]],
        )
        succeeded_before = "SUCCESSFUL" in [e["status"] for _, e in tried[:-1]]
        if final["status"] == "FAILED" and succeeded_before:
            uqs.messages.append("succeeded in an earlier run, failed in a later one")
            ts.wonky_quanta.append(uqs)
        elif final["status"] == "SUCCESSFUL":
            ts.n_successful += 1
            if "FAILED" in statuses[:-1] or "BLOCKED" in statuses[:-1]:
                ts.recovered_quanta.append(data_id)
            if "NO_WORK" in final.get("caveats", []):
                ts.caveats.setdefault("N", []).append(data_id)
        elif final["status"] == "FAILED":
            ts.failed_quanta.append(uqs)
        elif final["status"] == "BLOCKED":
            ts.n_blocked += 1
        else:
            ts.n_unknown += 1
        _add_datasets(summary, label, final, presence)
    return summary


def _add_datasets(summary: Summary, label: str, entry: Mapping[str, Any], presence: _Presence) -> None:
    from ..graph.quantum import LOG_CONNECTION, METADATA_CONNECTION

    q = entry["quantum"]
    st = entry["status"]
    for conn, refs in q.outputs.items():
        for ref in refs:
            ds = summary.datasets.setdefault(ref.dataset_type.name, DatasetTypeSummary(producer=label))
            ds.n_expected += 1
            made = presence.exists(ref)
            data_id = _required(ref.data_id)
            if st == "SUCCESSFUL":
                if made:
                    ds.n_visible += 1
                else:
                    ds.n_predicted_only += 1
            elif made and conn not in (LOG_CONNECTION, METADATA_CONNECTION):
                ds.cursed_datasets.append(data_id)
            elif made:
                ds.n_visible += 1  # the log of a failed quantum: there, and meant to be
            else:
                ds.unsuccessful_datasets.append(data_id)


def _resolve_runs(butler: Butler, collections: Sequence[str]) -> list[str]:
    """RUN collections reached from ``collections`` (chains flattened, patterns expanded)."""
    from butler import CollectionType

    runs: list[str] = []
    for name in collections:
        for run in butler.registry.query_collections(name, types=[CollectionType.RUN], flatten_chains=True):
            if run not in runs:
                runs.append(run)
    return runs


def report_from_collections(
    butler: Butler, collections: Sequence[str], *, where: str = "", logs: bool = True
) -> Summary:
    """Report on the runs of collections, from what the repository holds (no graph file given).

    Parameters
    ----------
    butler : `butler.Butler`
    collections : sequence of `str`
        Collections (RUN, or CHAINED such as the ``-o`` of ``pipetask run``); every RUN they
        reach is reported (chains flattened). Runs that saved their graph in the repository
        (``REPO/.ccdflow/graphs``) are reported from it; the others from their
        ``<label>_metadata`` and ``<label>_log`` datasets.
    where : `str`
        Data query expression restricting the quanta (datasets) looked at, for runs without a
        saved graph.
    logs : `bool`
        Read the logs of failed quanta for their error messages.

    Returns
    -------
    summary : `Summary`

    Raises
    ------
    LookupError
        If no RUN collection matches.
    """
    from ..graph.quantum_graph import QuantumGraph

    runs = _resolve_runs(butler, collections)
    if not runs:
        raise LookupError(
            f"no RUN collection found in {', '.join(collections)}; butler query-collections REPO lists them"
        )
    graphs = saved_graphs(butler.root)
    parts = []
    for run in runs:
        if run in graphs and not where:
            try:
                parts.append(
                    report_from_graphs(butler, [QuantumGraph.load(p) for p in graphs[run]], logs=logs)
                )
                continue
            except Exception as exc:  # noqa: BLE001 - fall back to the datasets
                _log.warning("Could not use the saved graph of %s (%s); reading its datasets", run, exc)
        part = _report_run_datasets(butler, run, where=where, logs=logs)
        if part.tasks:
            parts.append(part)
    summary = Summary.aggregate(parts)
    return summary


def _report_run_datasets(butler: Butler, run: str, *, where: str = "", logs: bool = True) -> Summary:
    """Report on one RUN from its ``<label>_metadata`` / ``<label>_log`` datasets alone."""
    names = [dt.name for dt in butler.registry.query_dataset_types("*_log")]
    summary = Summary()
    for name in names:
        label = name[: -len("_log")]
        try:
            log_refs = butler.query_datasets(name, collections=[run], where=where, find_first=False)
            md_refs = butler.query_datasets(
                f"{label}_metadata", collections=[run], where=where, find_first=False
            )
        except Exception:  # noqa: BLE001 - type without datasets here
            continue
        if not log_refs and not md_refs:
            continue
        ts = summary.tasks.setdefault(label, TaskSummary())
        done = {_key(label, _required(r.data_id)) for r in md_refs}
        seen = set(done)
        ts.n_successful += len(md_refs)
        if logs:
            for r in md_refs:
                try:
                    md = butler.get(r)
                except Exception:  # noqa: BLE001
                    continue
                if "NO_WORK" in (md.get("caveats", []) if hasattr(md, "get") else []):
                    ts.caveats.setdefault("N", []).append(_required(r.data_id))
        for r in log_refs:
            k = _key(label, _required(r.data_id))
            if k in seen:
                continue
            seen.add(k)
            msgs = []
            if logs:
                try:
                    msgs = [failure_message(butler.get(r))]
                except Exception as exc:  # noqa: BLE001
                    msgs = [f"Logs missing or corrupt: {exc}"]
            ts.failed_quanta.append(
                UnsuccessfulQuantumSummary(
                    data_id=_required(r.data_id), runs={run: "FAILED"}, messages=[m for m in msgs if m]
                )
            )
        ts.n_expected += len(seen)
    if summary.tasks:
        summary.notes.append(
            f"run {run} has no saved graph: EXPECTED counts only the quanta attempted; "
            "blocked and not attempted quanta are not known (pass the graph file)"
        )
    return summary


def aggregate_files(paths: Sequence[str | os.PathLike[str]]) -> Summary:
    """Merge ``--full-output-filename`` JSON files of ``pipetask report``.

    Parameters
    ----------
    paths : sequence of path-like

    Returns
    -------
    summary : `Summary`

    Raises
    ------
    ValueError
        If a file is not a report written by ``pipetask report --full-output-filename``.
    """
    summaries = []
    for p in paths:
        try:
            summaries.append(Summary.model_validate_json(Path(p).read_text()))
        except (pydantic.ValidationError, ValueError) as exc:
            raise ValueError(
                f"{p} is not a JSON report of 'pipetask report --full-output-filename': "
                f"{str(exc).splitlines()[0]}"
            ) from None
    return Summary.aggregate(summaries)
