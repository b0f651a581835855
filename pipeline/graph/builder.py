"""Build a `QuantumGraph` from a `PipelineGraph` and a repository: one query per independent subgraph.

`QuantumGraphBuilder` follows ``AllDimensionsQuantumGraphBuilder`` (middleware-reference section 5,
with the join done in Python); each step is one method:

1. `QuantumGraphBuilder.__init__`: take the pipeline graph's resolved task nodes and dataset
   types (nothing is resolved again) and give every dataset type its `butler.DatasetType`.
2. `QuantumGraphBuilder.process_subgraph`, per independent subgraph (tasks connected through
   intermediate dataset types):

   a. `_query_data_ids`: ONE registry query for the data IDs over the union of the dimensions of
      its tasks and dataset types, constrained by ``-d`` and by the existence of the overall
      inputs in the input collections; `_find_overall_inputs`: one dataset query per
      overall-input type gives their refs.
   b. `_group_rows`, for each task in dependency order: group the rows by the task's dimensions
      (dict/set operations, no per-quantum queries): each group is a quantum, each row
      contributes the input/output data IDs of the connections. ``(exposure, detector)`` tasks
      get one quantum per row, per-detector combines gather exposures, per-filter tasks gather
      exposures x detectors, per-exposure tasks gather detectors.
   c. `_find_existing_outputs` (skip-existing): a quantum whose ``<label>_metadata`` exists in
      ``skip_existing_in`` is left out, and its existing outputs are used by its consumers.
      Outputs that already exist in an extended run for a quantum that must run again are an
      error unless ``clobber_outputs``.
   d. `_find_prerequisites`: looked up per quantum (calibrations by the exposures' time span in
      the CALIBRATION collections, cached per data ID and time span); missing required ones are
      reported together in ONE error naming the dataset type, data IDs and collections.
   e. `_predict_outputs`: every predicted output (including ``<label>_metadata`` and
      ``<label>_log``) gets its UUID now.
   f. `_adjust_quantum`: ``adjustQuantum`` may trim a quantum or raise `NoWorkFound` (the quantum
      is dropped and its outputs are not predicted, so consumers see fewer inputs).
   g. `_attach_datastore_records`: the datastore records of every pre-existing input, in one
      query (kept as columns until the encoder writes them).

   For a simple task (no prerequisites, outputs within its dimensions, the default
   ``adjustQuantum``, no data-ID-scoped configs, nothing to skip or clobber) steps e, f and the
   adding are done for all its quanta at once by `_add_quanta_bulk`: ids in one block, the new
   datasets and the quanta written to the encoder as columns, `DatasetRef` objects only for the
   outputs another task reads. ``bulk=False`` makes every quantum one by one (the reference path;
   same graph, tested).

3. `_predict_init_outputs`: ``<label>_config`` and ``packages``; `_make_graph`: the graph with its
   metadata.
"""

from __future__ import annotations

import itertools
import logging
import operator
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, cast
from uuid import UUID, SafeUUID

from butler.utils import bulk_objects

from .. import connection_types as cT  # noqa: N812 - the LSST spelling
from ..connections import PipelineTaskConnections
from ..exceptions import InvalidQuantumError, NoWorkFound
from ..pipeline_graph import PipelineGraph, ResolvedConnection, TaskNode
from .collections import OutputCollections
from .quantum_graph import QuantumGraph, TaskInfo

if TYPE_CHECKING:
    from butler import Butler, DataCoordinate, DatasetRef, DatasetType, Timespan
    from butler.registry.managers.datastore_records import FileRecordColumns

    from ..config import Config
    from ._qg_codec import Encoder

__all__ = ["build_quantum_graph", "QuantumGraphBuilder", "GraphBuilderError", "EmptyGraphError",
           "NothingToDoError", "MissingPrerequisiteError"]

_log = logging.getLogger("ccdflow.qgraph")

#: Data-ID values of some dimensions, in a fixed order: the key of a quantum or dataset.
_Key = tuple[Any, ...]


class GraphBuilderError(RuntimeError):
    """The quantum graph cannot be built (the message names the task, dataset type and fix)."""


class EmptyGraphError(GraphBuilderError):
    """The graph would have no quanta; the message says which constraint emptied it."""


class NothingToDoError(EmptyGraphError):
    """Every quantum already finished in the skip-existing collections: a rerun has nothing to do.

    ``pipetask`` reports it and exits 0.
    """


class MissingPrerequisiteError(GraphBuilderError, FileNotFoundError):
    """A required prerequisite input (e.g. a calibration) was not found for some quanta."""


@dataclass(frozen=True, eq=False)
class _Edge:
    """A task node's resolved connection bound to its butler dataset type.

    ``name`` and ``required`` are copied once (plain attributes: they are read per quantum).
    """

    conn: ResolvedConnection
    dataset_type: DatasetType
    #: Connection name (``_metadata`` / ``_log`` for the automatic outputs).
    name: str = field(init=False)
    #: Required dimensions of the dataset type, universe order.
    required: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.conn.connection_name)
        object.__setattr__(self, "required", self.dataset_type.dimensions)


@dataclass(eq=False)
class _Task:
    """One task node with its edges, as the builder walks it, and its data-ID-scoped configs."""

    node: TaskNode
    inputs: list[_Edge]
    prerequisites: list[_Edge]
    outputs: list[_Edge]  # regular outputs, then ``_metadata`` and ``_log`` (unless saveLogOutput=False)
    init_edges: list[_Edge]  # init-inputs and init-outputs (stored in the graph's task info)
    dimensions: tuple[str, ...]  # required quantum dimensions
    config_variants: list[dict[str, Any]] = field(default_factory=list)
    quantum_variant: dict[str, int] = field(default_factory=dict)
    #: Task label.
    label: str = field(init=False)
    #: Whether the pipeline has data-ID-scoped config blocks for the task.
    scoped_configs: bool = field(init=False)

    #: Automatic outputs (``_metadata``, ``_log``) that no task of the graph reads (set by the builder).
    unread_automatic: list[_Edge] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.label = self.node.label
        self.scoped_configs = self.node.has_data_id_overrides

    def record_config_variant(self, quantum_id: UUID, data_id: DataCoordinate) -> None:
        """Record the data-ID-scoped config of one quantum when it differs from the base config."""
        if not self.scoped_configs:
            return
        cfg = self.node.config_for(dict(data_id.to_simple()))
        if cfg is self.node.config:
            return
        d = cfg.to_dict()
        if d == self.node.config.to_dict():
            return
        try:
            idx = self.config_variants.index(d)
        except ValueError:
            idx = len(self.config_variants)
            self.config_variants.append(d)
        self.quantum_variant[quantum_id.hex] = idx

    def task_info(self) -> TaskInfo:
        """Return the `TaskInfo` stored in the graph."""
        node = self.node
        regular = [e for e in self.outputs if e.name in node.outputs]
        automatic = [e for e in self.outputs if e.name not in node.outputs]  # _metadata, _log if saved
        edges = [*self.inputs, *self.prerequisites, *regular, *self.init_edges, *automatic]
        return TaskInfo(node.label, node.task_class_name, node.config.to_dict(), node.dimensions,
                        {e.name: {"kind": e.conn.kind, "dataset_type": e.dataset_type.name,
                                  "multiple": e.conn.multiple, "minimum": e.conn.minimum,
                                  "defer_load": e.conn.defer_load} for e in edges},
                        self.config_variants, self.quantum_variant)


@dataclass(eq=False)
class _Subgraph:
    """What one independent subgraph's data-ID query found, shared by its tasks."""

    tasks: list[_Task]
    produced: set[str]  # dataset types produced in the subgraph
    overall_inputs: dict[str, _Edge]  # read, not produced in the subgraph
    dimensions: set[str]  # union of the task and dataset type dimensions
    constraint: list[str]  # overall inputs whose existence constrains the query
    rows: list[DataCoordinate] = field(default_factory=list)
    #: Dataset type name -> data-ID key -> ref of the datasets a task of the subgraph can read.
    available: dict[str, dict[_Key, DatasetRef]] = field(default_factory=dict)
    #: Pre-existing datasets read by the quanta (their datastore records go into the graph).
    used_inputs: dict[UUID, DatasetRef] = field(default_factory=dict)


#: The per-quantum inputs of a task whose inputs are all within its dimensions (shared, never changed).
_NO_INPUTS: dict[str, dict[_Key, Any]] = {}


@dataclass(eq=False)
class _TaskRows:
    """The data-ID rows of a subgraph grouped into one task's quanta (`QuantumGraphBuilder._group_rows`)."""

    groups: dict[_Key, DataCoordinate]  # quantum key -> first row
    #: Per quantum and connection with dimensions beyond the task's: data-ID key -> ref (`None`:
    #: missing); those within the task's dimensions are in ``single``.
    inputs: dict[_Key, dict[str, dict[_Key, DatasetRef | None]]]
    output_ids: dict[_Key, dict[str, dict[_Key, DataCoordinate]]]  # outputs with more dimensions
    rows: dict[_Key, list[DataCoordinate]]  # every row of a quantum (for prerequisite lookups)
    multi_outputs: list[_Edge]  # outputs with dimensions beyond the task's
    #: Input connections within the task's dimensions (one dataset key per quantum, found on demand
    #: rather than stored per quantum): name -> (quantum key -> dataset key, the refs by key).
    single: dict[str, tuple[Callable[[_Key], _Key], dict[_Key, DatasetRef]]] = field(default_factory=dict)


def _key(values: Mapping[str, Any], dims: tuple[str, ...]) -> _Key:
    return tuple(values[d] for d in dims)


def _sub_key(outer: tuple[str, ...], inner: tuple[str, ...]) -> Callable[[_Key], _Key]:
    """``key of outer dimensions -> key of inner ones`` (``inner`` a subset of ``outer``, both in
    universe order)."""
    if inner == outer:
        return lambda k: k
    pos = [outer.index(d) for d in inner]
    if len(pos) == 1:
        p = pos[0]
        return lambda k: (k[p],)
    if not pos:
        return lambda k: ()
    return operator.itemgetter(*pos)


def _getter(dims: tuple[str, ...]) -> Callable[[Mapping[str, Any]], _Key]:
    """A C-speed ``dict -> tuple of values`` for a fixed tuple of dimension names (`_key` of a
    plain dict: give it ``data_id.to_simple()``, ~4x faster than `_key` of the data ID)."""
    if len(dims) == 1:
        d = dims[0]
        return lambda v: (v[d],)
    if not dims:
        return lambda v: ()
    return operator.itemgetter(*dims)


class _UuidFactory:
    """Time-ordered (version 7) UUIDs made in bulk: one ``os.urandom`` call per 4096 ids.

    Equivalent to ``butler.datasets.uuid7`` (48-bit ms timestamp, version 7, RFC 9562 variant,
    random rest) but ~10x cheaper per id, which matters for 10^6-quantum graphs. The timestamp
    is taken when a batch is made, so ids handed out later in the batch carry that (earlier)
    millisecond; ids stay time-ordered batch to batch.
    """

    _BATCH = 4096

    def __init__(self) -> None:
        self._ints: list[int] = []

    @staticmethod
    def _make(n: int) -> Any:
        """``n`` new ids as an ``(n, 2)`` array of big-endian uint64 (high, low 64 bits)."""
        import numpy as np

        ms = (time.time_ns() // 1_000_000) & 0xFFFF_FFFF_FFFF
        r = np.frombuffer(os.urandom(16 * n), dtype=">u8").reshape(-1, 2)
        # High 64 bits: 48-bit ms timestamp, version 7, 12 random bits; low: variant 0b10, 62 random bits.
        out = np.empty((n, 2), dtype=">u8")
        out[:, 0] = np.uint64(ms << 16) | np.uint64(0x7000) | (r[:, 0] & np.uint64(0xFFF))
        out[:, 1] = (r[:, 1] & np.uint64((1 << 62) - 1)) | np.uint64(1 << 63)
        return out

    def _refill(self) -> None:
        ids = self._make(self._BATCH)
        ints = [(h << 64) | v for h, v in zip(ids[:, 0].tolist(), ids[:, 1].tolist())]
        ints.reverse()
        self._ints = ints

    def block(self, n: int) -> Any:
        """The next ``n`` ids as an ``(n, 16)`` uint8 array of their bytes (``UUID.bytes``).

        The ids left in the current batch come first, so ids stay time-ordered whichever way
        they are taken.
        """
        import numpy as np

        head = self._ints[::-1][:n]
        del self._ints[len(self._ints) - len(head):]
        out = np.empty((n, 2), dtype=">u8")
        if head:
            out[:len(head), 0] = [i >> 64 for i in head]
            out[:len(head), 1] = [i & 0xFFFF_FFFF_FFFF_FFFF for i in head]
        if n > len(head):
            out[len(head):] = self._make(n - len(head))
        return out.view(np.uint8).reshape(n, 16)

    def __call__(self) -> UUID:
        u = object.__new__(UUID)
        _set_attr(u, "int", self.next_int())
        _set_attr(u, "is_safe", SafeUUID.unknown)
        return u

    def next_int(self) -> int:
        """The next id as its 128-bit integer (``UUID.int``), without making a `~uuid.UUID`."""
        ints = self._ints
        if not ints:
            self._refill()
            ints = self._ints
        return ints.pop()


_set_attr = object.__setattr__


def _fmt(dc: DataCoordinate) -> str:
    """``{instrument: 'cam', exposure: 3}``: a data ID's required values, for messages."""
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in dc.required.items()) + "}"


class _Predicted(NamedTuple):
    """A predicted output that no task of the graph reads (``_metadata``, ``_log`` as a rule).

    It only goes into the graph's columns, so it is kept as the fields the encoder reads, with
    the id as its integer (``UUID.int``); the graph makes a `DatasetRef` of it on access.
    """

    dataset_type: DatasetType
    data_id: DataCoordinate
    run: str
    id: int


class _NoWork(Exception):  # noqa: N818 - internal signal, never escapes
    pass


class QuantumGraphBuilder:
    """Build the quantum graph of a pipeline graph over a repository (see the module docs for the steps).

    Parameters
    ----------
    pipeline_graph : `~pipeline.pipeline_graph.PipelineGraph`
        The tasks with their resolved connections and dataset types.
    butler : `butler.Butler`
        The repository (read only here).
    collections : `~pipeline.graph.collections.OutputCollections`
        Input collections, output run and skip-existing collections.
    where : `str`
        The ``-d`` data query.
    bind : `dict`, optional
        Bind values for the query.
    data_id : `dict`, optional
        Data ID constraint (e.g. ``{"instrument": "kast_blue"}``).
    clobber_outputs : `bool`
        Remove (at run time) outputs that already exist in the output run for quanta that run
        again, instead of failing.
    dataset_query_constraint : {"all", "off"} or comma-separated dataset type names
        Which overall inputs constrain the data-ID query.
    bulk : `bool`
        Make the quanta of simple tasks (no prerequisites, outputs within the task's dimensions,
        the default ``adjustQuantum``, no data-ID-scoped configs, nothing existing to skip or
        clobber) in bulk, as columns (`_add_quanta_bulk`); `False`: every quantum one by one
        (the reference path; the graphs are the same, only the dataset ids differ).

    Raises
    ------
    GraphBuilderError
        If the pipeline graph has no tasks.
    """

    def __init__(
        self,
        pipeline_graph: PipelineGraph,
        butler: Butler,
        *,
        collections: OutputCollections,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        clobber_outputs: bool = False,
        dataset_query_constraint: str = "all",
        bulk: bool = True,
    ) -> None:
        from butler import DatasetType
        from butler.dimensions import default_universe

        from ._qg_codec import Encoder

        if not pipeline_graph.tasks:
            raise GraphBuilderError("the pipeline has no tasks")
        self.pipeline_graph = pipeline_graph
        self.butler = butler
        self.collections = collections
        self.where = where
        self.bind = bind
        self.data_id = data_id
        self.clobber_outputs = clobber_outputs
        self.dataset_query_constraint = dataset_query_constraint
        self.bulk = bulk
        self.inputs = list(collections.inputs)
        self.run = collections.run
        self.skip_existing_in = list(collections.skip_existing_in)
        self.universe = default_universe()
        #: Every dataset type the graph reads or writes, from the pipeline graph's dataset type nodes.
        self.dataset_types: dict[str, DatasetType] = {
            name: DatasetType(name, node.dimensions, node.storage_class, is_calibration=node.is_calibration)
            for name, node in pipeline_graph.dataset_types.items()
        }
        packages, packages_dimensions, packages_storage_class = pipeline_graph.packages_dataset_type
        self.dataset_types[packages] = DatasetType(packages, packages_dimensions, packages_storage_class)
        self.tasks: dict[str, _Task] = {label: self._bind_task(node) for label, node in pipeline_graph.tasks.items()}
        # What the build found so far.
        #: The quanta made so far, as columns (no `Quantum` objects are kept).
        self.encoder: Encoder = Encoder()
        #: Dataset types some task reads: only their predicted outputs are indexed for consumers.
        self._consumed = {e.dataset_type.name for t in self.tasks.values() for e in t.inputs + t.prerequisites}
        for t in self.tasks.values():
            t.unread_automatic = [e for e in t.outputs
                                  if e.name not in t.node.outputs and e.dataset_type.name not in self._consumed]
        #: Datastore records of the pre-existing inputs: per subgraph, the dataset ids and their records.
        self.datastore_records: list[tuple[list[UUID], FileRecordColumns]] = []
        #: The ids in `datastore_records`, made when a second subgraph needs them.
        self._recorded: set[UUID] | None = None
        self.clobber: list[dict[str, Any]] = []
        self.n_queries = 0
        self.missing_prerequisites: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.skipped: dict[str, int] = defaultdict(int)
        self.dropped: dict[str, list[str]] = defaultdict(list)
        self._prerequisite_cache: dict[tuple[Any, ...], DatasetRef | list[DatasetRef] | None] = {}
        #: Calibration dataset type -> all its candidates along the input collections (`None`: the
        #: index could not be made, e.g. the type is not registered; the per-quantum lookup decides).
        self._calibration_indexes: dict[str, _CalibIndex | None] = {}
        self._make_id = _UuidFactory()

    def _bind_task(self, node: TaskNode) -> _Task:
        def edges(conns: Mapping[str, ResolvedConnection]) -> list[_Edge]:
            return [_Edge(c, self.dataset_types[c.dataset_type_name]) for c in conns.values()]

        return _Task(node, edges(node.inputs), edges(node.prerequisite_inputs), edges(node.all_outputs),
                     edges(node.init_inputs) + edges(node.init_outputs),
                     self.universe.group(node.dimensions)[0] if node.dimensions else ())

    # ------------------------------------------------------------------ the whole graph
    def build(self, metadata: Mapping[str, Any] | None = None) -> QuantumGraph:
        """Build the graph.

        Parameters
        ----------
        metadata : `dict`, optional
            Extra graph metadata (command line ...).

        Returns
        -------
        graph : `QuantumGraph`

        Raises
        ------
        EmptyGraphError
            If no quanta result; the message names the constraint that emptied the graph.
        MissingPrerequisiteError
            If required prerequisites are missing (one error for all; names dataset type, data IDs
            and collections).
        GraphBuilderError
            For outputs that already exist (without ``clobber_outputs``) or a bad
            ``dataset_query_constraint``.
        """
        t0 = time.perf_counter()
        with bulk_objects():
            for subgraph in self.pipeline_graph.independent_subgraphs(through_overall_inputs=False):
                self.process_subgraph([self.tasks[label] for label in subgraph.tasks])
            self._check_quanta()
            return self._make_graph(self._predict_init_outputs(), metadata, time.perf_counter() - t0)

    def process_subgraph(self, tasks: list[_Task]) -> None:
        """Make the quanta of one independent subgraph (tasks in dependency order).

        Parameters
        ----------
        tasks : `list` [`_Task`]
            The subgraph's tasks, producers before consumers.
        """
        sub = self._start_subgraph(tasks)
        self._query_data_ids(sub)
        self._find_overall_inputs(sub)
        for task in tasks:
            self._make_task_quanta(task, sub)
        self._attach_datastore_records(sub)

    # ------------------------------------------------------------------ per subgraph
    def _start_subgraph(self, tasks: list[_Task]) -> _Subgraph:
        """Find the subgraph's overall inputs, dimensions and the query's dataset constraint."""
        produced = {e.dataset_type.name for t in tasks for e in t.outputs}
        overall: dict[str, _Edge] = {}
        for t in tasks:
            for e in t.inputs:
                if e.dataset_type.name not in produced:
                    overall[e.dataset_type.name] = e
        dims: set[str] = set()
        for t in tasks:
            dims.update(t.node.dimensions)
            for e in t.inputs:
                dims.update(e.required)
            for e in t.outputs:
                dims.update(e.required)
        if self.dataset_query_constraint == "all":
            constraint = [n for n, e in overall.items() if not e.conn.defer_graph_constraint]
        elif self.dataset_query_constraint == "off":
            constraint = []
        else:
            constraint = [n.strip() for n in self.dataset_query_constraint.split(",") if n.strip()]
            unknown = [n for n in constraint if n not in overall]
            if unknown:
                raise GraphBuilderError(f"--dataset-query-constraint names {unknown}, which are not overall "
                                        f"inputs of the pipeline ({sorted(overall)})")
        return _Subgraph(tasks, produced, overall, dims, constraint)

    def _query_data_ids(self, sub: _Subgraph) -> None:
        """Step 2a: the subgraph's one data-ID query (as a dataset query when an input allows it)."""
        rows = self._rows_from_dataset_query(sub)
        if rows is None:
            rows = list(self.butler.query_data_ids(sorted(sub.dimensions), where=self.where, bind=self.bind,
                                                   data_id=self.data_id, datasets=sub.constraint or None,
                                                   collections=self.inputs))
        self.n_queries += 1
        if not rows:
            raise EmptyGraphError(self._explain_empty(sub))
        sub.rows = rows

    def _rows_from_dataset_query(self, sub: _Subgraph) -> list[DataCoordinate] | None:
        """The data-ID query as a dataset query, when an overall input has exactly the subgraph's
        dimensions (the usual case: ``raw`` for ISR/cp pipelines). Returns `None` when not applicable.

        The dataset query returns the same expanded data IDs (each with its dataset) and lets the
        registry use its dataset indexes directly instead of a correlated EXISTS per row.
        """
        union_required = self.universe.group(sub.dimensions)[0]
        lead = next((n for n in sub.constraint if sub.overall_inputs[n].required == union_required), None)
        if lead is None:
            return None
        try:
            refs = self.butler.query_datasets(lead, collections=list(self.inputs), where=self.where,
                                              bind=self.bind, data_id=self.data_id, find_first=True)
        except Exception:  # noqa: BLE001 - e.g. a where clause on dimensions the type lacks
            return None
        get = _getter(union_required)
        sub.available[lead] = {get(r.data_id.to_simple()): r for r in refs}
        rows = [r.data_id for r in refs]
        for other in sub.constraint:
            if other == lead or not rows:
                continue
            req = sub.overall_inputs[other].required
            orefs = self._query_datasets(other)
            get = _getter(req)
            sub.available[other] = {get(r.data_id.to_simple()): r for r in orefs}
            rows = [r for r in rows if get(r.to_simple()) in sub.available[other]]
        return rows

    def _query_datasets(self, name: str) -> list[DatasetRef]:
        """One dataset query in the input collections; falls back to no ``where`` if it refers to
        other dimensions."""
        try:
            return self.butler.query_datasets(name, collections=list(self.inputs), where=self.where,
                                              bind=self.bind, data_id=self.data_id, find_first=True)
        except Exception as exc:  # noqa: BLE001 - InvalidQueryError / DataIdError
            if not self.where:
                raise
            _log.debug("dataset query of %s with the data query failed (%s); querying without it", name, exc)
            return self.butler.query_datasets(name, collections=list(self.inputs), data_id=self.data_id,
                                              find_first=True)

    def _find_overall_inputs(self, sub: _Subgraph) -> None:
        """Step 2a: the existing datasets of the overall inputs, keyed by their required values."""
        for name, e in sub.overall_inputs.items():
            if name in sub.available:
                continue
            refs = self._query_datasets(name)
            self.n_queries += 1
            get = _getter(e.required)
            sub.available[name] = {get(r.data_id.to_simple()): r for r in refs}
            if not refs and e.conn.minimum > 0 and self.dataset_query_constraint != "all":
                _log.warning("no %s datasets in %s", name, self.inputs)

    # ------------------------------------------------------------------ per task
    def _make_task_quanta(self, task: _Task, sub: _Subgraph) -> None:
        """Steps 2b-2f for one task: its quanta, appended to `quanta`."""
        grouped = self._group_rows(task, sub)
        skip_keys, existing = self._find_existing_outputs(task, grouped)
        if self._bulk_eligible(task, grouped, skip_keys, existing):
            self._add_quanta_bulk(task, sub, grouped)
            self._log_dropped(task)
            return
        for qk, row in grouped.groups.items():
            qdata = row if row.dimensions == task.dimensions else row.subset(task.dimensions)
            if qk in skip_keys:
                self._skip_quantum(task, sub, grouped, qk, qdata, existing)
                continue
            inputs = self._quantum_inputs(task, grouped, qk, qdata)
            if inputs is None:
                continue
            prerequisites = self._find_prerequisites(task, qdata, grouped.rows[qk])
            if prerequisites is None:
                continue
            outputs = self._predict_outputs(task, grouped, qk, qdata, existing)
            try:
                inputs, prerequisites, outputs = self._adjust_quantum(task, inputs, prerequisites, outputs, qdata)
            except _NoWork as exc:
                self.dropped[task.label].append(f"{_fmt(qdata)}: {exc}")
                continue
            self._add_quantum(task, sub, qk, qdata, inputs, prerequisites, outputs)
        self._log_dropped(task)

    def _log_dropped(self, task: _Task) -> None:
        if self.dropped.get(task.label):
            _log.info("task %s: %d quanta dropped for missing inputs, e.g. %s", task.label,
                      len(self.dropped[task.label]), self.dropped[task.label][0])

    def _group_rows(self, task: _Task, sub: _Subgraph) -> _TaskRows:
        """Step 2b: group the subgraph's rows by the task's dimensions into quanta."""
        treq = task.dimensions
        groups: dict[_Key, DataCoordinate] = {}
        q_inputs: dict[_Key, dict[str, dict[_Key, DatasetRef | None]]] = {}
        q_output_ids: dict[_Key, dict[str, dict[_Key, DataCoordinate]]] = {}
        q_rows: dict[_Key, list[DataCoordinate]] = defaultdict(list)
        multi_out = [e for e in task.outputs if not set(e.required) <= set(treq)]
        tget = _getter(treq)
        # Inputs within the task's dimensions: found per quantum by `_quantum_inputs`.
        single = {e.name: (_sub_key(treq, e.required), sub.available.get(e.dataset_type.name, {}))
                  for e in task.inputs if set(e.required) <= set(treq)}
        gather = [e for e in task.inputs if e.name not in single]
        # (connection, key getter, the refs that exist or are predicted so far by data-ID key)
        in_get = [(e.name, _getter(e.required), sub.available.get(e.dataset_type.name, {})) for e in gather]
        out_get = [(e.name, _getter(e.required)) for e in multi_out]
        keep_rows = bool(task.prerequisites)
        if not (gather or multi_out or keep_rows):  # quanta keys only: the first row of each
            for row in sub.rows:
                groups.setdefault(tget(row.to_simple()), row)
            return _TaskRows(groups, q_inputs, q_output_ids, q_rows, multi_out, single)
        for row in sub.rows:
            vals = row.to_simple()
            qk = tget(vals)
            qi = q_inputs.get(qk)
            if qi is None:
                groups[qk] = row
                qi = q_inputs[qk] = {e.name: {} for e in gather} if gather else _NO_INPUTS
                if multi_out:
                    q_output_ids[qk] = {e.name: {} for e in multi_out}
            for cname, cget, avail in in_get:
                ck = cget(vals)
                by_key = qi[cname]
                if ck not in by_key:
                    by_key[ck] = avail.get(ck)  # None: missing (counted against ``minimum``)
            for cname, cget in out_get:
                q_output_ids[qk][cname].setdefault(cget(vals), row)
            if keep_rows:
                q_rows[qk].append(row)
        return _TaskRows(groups, q_inputs, q_output_ids, q_rows, multi_out, single)

    def _find_existing_outputs(self, task: _Task, grouped: _TaskRows
                               ) -> tuple[set[_Key], dict[str, dict[_Key, DatasetRef]]]:
        """Step 2c: the quanta already finished in ``skip_existing_in`` and the existing outputs
        (there, or in the output run when it is extended)."""
        skip_keys: set[_Key] = set()
        existing: dict[str, dict[_Key, DatasetRef]] = {}
        if not (self.skip_existing_in or self.collections.extend_run):
            return skip_keys, existing
        md_name = task.node.metadata_output.dataset_type_name
        try:
            md_refs = (self.butler.query_datasets(md_name, collections=self.skip_existing_in, find_first=True)
                       if self.skip_existing_in else [])
        except Exception:  # noqa: BLE001 - dataset type not registered yet
            md_refs = []
        self.n_queries += 1
        skip_keys = {_key(r.data_id, task.dimensions) for r in md_refs} & set(grouped.groups)
        if skip_keys or self.collections.extend_run:
            for e in task.outputs:
                search = list(self.skip_existing_in) if skip_keys else []
                if self.collections.extend_run and self.run not in search:
                    search.append(self.run)
                try:
                    refs = self.butler.query_datasets(e.dataset_type.name, collections=search, find_first=True)
                except Exception:  # noqa: BLE001
                    refs = []
                self.n_queries += 1
                existing[e.dataset_type.name] = {_key(r.data_id, e.required): r for r in refs}
        return skip_keys, existing

    def _skip_quantum(self, task: _Task, sub: _Subgraph, grouped: _TaskRows, qk: _Key,
                      qdata: DataCoordinate, existing: Mapping[str, Mapping[_Key, DatasetRef]]) -> None:
        """Step 2c: leave out a finished quantum; its existing outputs feed its consumers."""
        self.skipped[task.label] += 1
        for e in task.outputs:
            ex = existing.get(e.dataset_type.name, {})
            keys = grouped.output_ids[qk][e.name].keys() if e in grouped.multi_outputs else [_key(qdata, e.required)]
            for ok in keys:
                r = ex.get(ok)
                if r is not None:
                    sub.available.setdefault(e.dataset_type.name, {})[ok] = r
                    sub.used_inputs.setdefault(r.id, r)

    def _quantum_inputs(self, task: _Task, grouped: _TaskRows, qk: _Key, qdata: DataCoordinate
                        ) -> dict[str, list[DatasetRef]] | None:
        """The regular inputs of one quantum, or `None` (quantum dropped) when one has too few."""
        inputs: dict[str, list[DatasetRef]] = {}
        found = grouped.inputs.get(qk, _NO_INPUTS)
        single = grouped.single
        for e in task.inputs:
            one = single.get(e.name)
            if one is not None:
                r = one[1].get(one[0](qk))
                refs = [] if r is None else [r]
            else:
                by_key = found[e.name]
                if len(by_key) == 1:
                    refs = [r for r in by_key.values() if r is not None]
                else:
                    refs = [r for _k, r in sorted(by_key.items(), key=lambda kv: kv[0]) if r is not None]
            if len(refs) < e.conn.minimum:
                self.dropped[task.label].append(
                    f"{_fmt(qdata)}: {e.name} ({e.dataset_type.name}): {len(refs)} of {e.conn.minimum} needed")
                return None
            inputs[e.name] = refs
        return inputs

    def _find_prerequisites(self, task: _Task, qdata: DataCoordinate, rows: Sequence[DataCoordinate]
                            ) -> dict[str, list[DatasetRef]] | None:
        """Step 2d: one quantum's prerequisite inputs, or `None` when a required one is missing
        (recorded for the one error `_check_quanta` raises)."""
        found_all: dict[str, list[DatasetRef]] = {}
        missing = False
        for e in task.prerequisites:
            found = self._lookup_prerequisite(e, qdata, rows)
            if isinstance(found, str):
                self.missing_prerequisites[(task.label, e.name)].append(found)
                missing = True
                found = []
            elif len(found) < e.conn.minimum:
                self.missing_prerequisites[(task.label, e.name)].append(_fmt(qdata))
                missing = True
            found_all[e.name] = found
        return None if missing else found_all

    def _predict_outputs(self, task: _Task, grouped: _TaskRows, qk: _Key, qdata: DataCoordinate,
                         existing: Mapping[str, Mapping[_Key, DatasetRef]]) -> dict[str, list[DatasetRef]]:
        """Step 2e: the quantum's outputs with their UUIDs (checking outputs that already exist)."""
        from butler import DatasetRef

        run = self.run
        make_id = self._make_id
        next_int = make_id.next_int
        outputs: dict[str, list[DatasetRef]] = {}
        for e in task.outputs:
            dt = e.dataset_type
            ex = existing.get(dt.name) if existing else None
            if e.required == task.dimensions and not ex:  # the common case: one output per quantum
                if e in task.unread_automatic:
                    outputs[e.name] = [_Predicted(dt, qdata, run, next_int())]  # type: ignore[list-item]
                else:
                    outputs[e.name] = [DatasetRef(dt, qdata, run, make_id())]
                continue
            if e in grouped.multi_outputs:
                out_ids = [r.subset(e.required) for _k, r in sorted(grouped.output_ids[qk][e.name].items(),
                                                                    key=lambda kv: kv[0])]
            else:
                out_ids = [qdata.subset(e.required) if e.required != task.dimensions else qdata]
            refs = []
            for oid in out_ids:
                if ex:
                    old = ex.get(_key(oid, e.required))
                    if old is not None and old.run == run:
                        if not self.clobber_outputs:
                            raise GraphBuilderError(
                                f"output {dt.name} {_fmt(oid)} of task {task.label!r} already exists "
                                f"in run {run!r} but its quantum did not finish (no "
                                f"{task.label}_metadata); rerun with --clobber-outputs to replace "
                                "it, or --skip-existing-in to keep finished work only")
                        self.clobber.append({"id": str(old.id), "dataset_type": dt.name,
                                             "data_id": dict(old.data_id.required), "run": old.run})
                refs.append(DatasetRef(dt, oid, run, make_id()))
            outputs[e.name] = refs
        return outputs

    def _adjust_quantum(self, task: _Task, inputs: dict[str, list[DatasetRef]],
                        prerequisites: dict[str, list[DatasetRef]], outputs: dict[str, list[DatasetRef]],
                        data_id: DataCoordinate) -> tuple[dict[str, list[DatasetRef]], dict[str, list[DatasetRef]],
                                                          dict[str, list[DatasetRef]]]:
        """Step 2f: the connections' ``adjustQuantum``; `NoWorkFound` becomes a dropped quantum."""
        conns = task.node.connections
        if type(conns).adjustQuantum is PipelineTaskConnections.adjustQuantum:
            # The default only checks ``minimum`` (already enforced above) and ``multiple``.
            for e in task.inputs:
                refs = inputs[e.name]
                if len(refs) > 1 and not e.conn.multiple:
                    raise InvalidQuantumError(
                        f"task '{task.label}' quantum {_fmt(data_id)}: connection {e.name!r} is not multiple=True "
                        f"but got {len(refs)} datasets; check the connection's dimensions")
            return inputs, prerequisites, outputs
        declared = conns.allConnections
        ins = {n: (cast(cT.BaseInput, declared[n]), refs) for n, refs in inputs.items()}
        ins.update({n: (cast(cT.BaseInput, declared[n]), refs) for n, refs in prerequisites.items()})
        outs = {n: (cast(cT.Output, declared[n]), refs) for n, refs in outputs.items() if n in declared}
        try:
            new_in, new_out = conns.adjustQuantum(ins, outs, task.label, data_id)
        except NoWorkFound as exc:
            raise _NoWork(str(exc)) from None
        except FileNotFoundError as exc:
            raise MissingPrerequisiteError(str(exc)) from None
        kept_inputs = {n: list(v[1]) for n, v in new_in.items() if n in inputs}
        kept_prerequisites = {n: list(v[1]) for n, v in new_in.items() if n in prerequisites}
        kept_outputs = {n: list(v[1]) for n, v in new_out.items()}
        for n, refs in outputs.items():
            if n not in declared:  # ``_metadata`` and ``_log`` are always written
                kept_outputs[n] = refs
        return kept_inputs, kept_prerequisites, kept_outputs

    def _add_quantum(self, task: _Task, sub: _Subgraph, qk: _Key, qdata: DataCoordinate,
                     inputs: dict[str, list[DatasetRef]], prerequisites: dict[str, list[DatasetRef]],
                     outputs: dict[str, list[DatasetRef]]) -> None:
        """Add the quantum; its outputs become available to its consumers."""
        qid = self._make_id.next_int()
        self.encoder.add(qid, task.label, qdata, inputs, prerequisites, outputs, new_outputs=self._consumed)
        if task.scoped_configs:
            task.record_config_variant(UUID(int=qid), qdata)
        consumed = self._consumed
        for e in task.outputs:
            if e.dataset_type.name not in consumed:
                continue  # no task reads it: nobody looks it up
            avail = sub.available.setdefault(e.dataset_type.name, {})
            for r in outputs.get(e.name, []):
                # The quantum's key when the output has the task's dimensions (its data ID is qdata).
                avail[qk if r.data_id is qdata and e.required == task.dimensions else _key(r.data_id, e.required)] = r
        for refs in inputs.values():
            for r in refs:
                if r.dataset_type.name not in sub.produced or r.run != self.run:
                    sub.used_inputs.setdefault(r.id, r)
        for refs in prerequisites.values():
            for r in refs:
                sub.used_inputs.setdefault(r.id, r)

    # ------------------------------------------------------------------ bulk
    def _bulk_eligible(self, task: _Task, grouped: _TaskRows, skip_keys: set[_Key],
                       existing: Mapping[str, Any]) -> bool:
        """Whether `_add_quanta_bulk` makes the task's quanta (see the ``bulk`` parameter)."""
        return (self.bulk and not skip_keys and not existing and not grouped.multi_outputs
                and not task.prerequisites and not task.scoped_configs
                and type(task.node.connections).adjustQuantum is PipelineTaskConnections.adjustQuantum)

    def _add_quanta_bulk(self, task: _Task, sub: _Subgraph, grouped: _TaskRows) -> None:
        """Steps 2e, 2f and the adding of `_add_quantum`, for all quanta of a simple task at once.

        The same quanta as the per-quantum path (`_bulk_eligible` says when it applies: steps
        2c, 2d and 2f have nothing to do then beyond the checks of `_quantum_inputs` and the
        default ``adjustQuantum``), written to the encoder as columns: the ids of all outputs
        and quanta come from one `_UuidFactory.block`, the new datasets go in quantum by quantum in one
        call (`Encoder.new_datasets`) and the quanta in one `Encoder.add_quanta`. Only the
        outputs some task reads become `DatasetRef` objects (their consumers look them up); the
        others exist only as columns. Per quantum remain the data-ID index, the input look-ups
        and, for read outputs, one ref.
        """
        items = iter(grouped.groups.items())
        while True:
            chunk = list(itertools.islice(items, self._BULK_CHUNK))
            if not chunk:
                return
            self._add_quanta_chunk(task, sub, grouped, chunk)

    #: Quanta per `_add_quanta_chunk` call: bounds the temporary lists (~1 kB per quantum).
    _BULK_CHUNK = 32768

    def _add_quanta_chunk(self, task: _Task, sub: _Subgraph, grouped: _TaskRows,
                          chunk: list[tuple[_Key, DataCoordinate]]) -> None:
        """`_add_quanta_bulk` for some of the task's quanta (in the order of the per-quantum path)."""
        import numpy as np
        from butler import DatasetRef

        enc = self.encoder
        kept: list[tuple[_Key, DataCoordinate, dict[str, list[DatasetRef]]]] = []
        for qk, row in chunk:
            qdata = row if row.dimensions == task.dimensions else row.subset(task.dimensions)
            inputs = self._quantum_inputs(task, grouped, qk, qdata)
            if inputs is None:
                continue
            for e in task.inputs:  # the default adjustQuantum's check
                if len(inputs[e.name]) > 1 and not e.conn.multiple:
                    raise InvalidQuantumError(
                        f"task '{task.label}' quantum {_fmt(qdata)}: connection {e.name!r} is not "
                        f"multiple=True but got {len(inputs[e.name])} datasets; check the connection's "
                        "dimensions")
            kept.append((qk, qdata, inputs))
        n = len(kept)
        if not n:
            return
        n_in, n_out = len(task.inputs), len(task.outputs)
        # Ids in the order of the per-quantum path: each quantum's outputs, then the quantum.
        ids = self._make_id.block(n * (n_out + 1)).reshape(n, n_out + 1, 16)
        data_id_index = enc.data_id
        q_did = [data_id_index(qdata) for _qk, qdata, _i in kept]
        # Inputs: dataset indices quantum by quantum, connection by connection.
        counts = np.ones((n, n_in + n_out), dtype=np.int64)
        in_ds: list[list[int]] = []
        ref_index = enc.ref_index
        used = sub.used_inputs
        produced, run = sub.produced, self.run
        for q, (_qk, _qdata, inputs) in enumerate(kept):
            qds: list[int] = []
            for c, e in enumerate(task.inputs):
                refs = inputs[e.name]
                counts[q, c] = len(refs)
                for r in refs:
                    i = ref_index.get(r.id)
                    if i is None:
                        i = ref_index[r.id] = enc._append_ref(r)
                    qds.append(i)
                    if r.dataset_type.name not in produced or r.run != run:
                        used.setdefault(r.id, r)
            in_ds.append(qds)
        # Outputs: one new dataset per quantum and output connection, quantum by quantum.
        out_ids = [[qdata if e.required == task.dimensions else qdata.subset(e.required)
                    for _qk, qdata, _i in kept] for e in task.outputs]
        dids = np.empty((n, n_out), dtype=np.int64)
        for j, e in enumerate(task.outputs):
            dids[:, j] = q_did if e.required == task.dimensions else [data_id_index(o) for o in out_ids[j]]
        first = enc.new_datasets([e.dataset_type for e in task.outputs], dids, run, ids[:, :n_out])
        for j, e in enumerate(task.outputs):
            dt = e.dataset_type
            if dt.name not in self._consumed:
                continue
            same = e.required == task.dimensions
            oids = out_ids[j]
            avail = sub.available.setdefault(dt.name, {})
            words = ids[:, j].view(">u8").reshape(n, 2)
            for q, (h, lo) in enumerate(zip(words[:, 0].tolist(), words[:, 1].tolist())):
                u = object.__new__(UUID)
                _set_attr(u, "int", (h << 64) | lo)
                _set_attr(u, "is_safe", SafeUUID.unknown)
                ref_index[u] = first + q * n_out + j
                oid = oids[q]
                avail[kept[q][0] if same else _key(oid, e.required)] = DatasetRef(dt, oid, run, u)
        io_ds: list[int] = []
        out_j = list(range(n_out))
        for q, qds in enumerate(in_ds):
            io_ds.extend(qds)
            base = first + q * n_out
            io_ds.extend([base + j for j in out_j])
        conns = [(e.name, 0) for e in task.inputs] + [(e.name, 2) for e in task.outputs]
        enc.add_quanta(ids[:, n_out], task.label, q_did, conns, counts, io_ds)

    # ------------------------------------------------------------------ prerequisites
    def _lookup_prerequisite(self, e: _Edge, qdata: DataCoordinate, rows: Sequence[DataCoordinate]
                             ) -> list[DatasetRef] | str:
        """Find one quantum's prerequisite datasets (batched per dataset type, cached per data ID)."""
        dt = e.dataset_type
        if dt.is_calibration and e.conn.lookup_function is None:
            if dt.name not in self._calibration_indexes:
                index: _CalibIndex | None
                try:
                    index = _CalibIndex(self.butler, dt, self.inputs)
                    self.n_queries += len(index.levels)
                except Exception:  # noqa: BLE001 - e.g. type not registered: per-quantum path decides
                    index = None
                self._calibration_indexes[dt.name] = index
            index = self._calibration_indexes[dt.name]
            if index is not None:
                return _lookup_indexed(index, qdata, rows)
        return self._lookup_one_by_one(e, qdata, rows)

    def _lookup_one_by_one(self, e: _Edge, qdata: DataCoordinate, rows: Sequence[DataCoordinate]
                           ) -> list[DatasetRef] | str:
        """Per-quantum lookup with ``find_dataset`` (non-calibrations, lookup functions)."""
        from butler import MissingDatasetTypeError

        dt = e.dataset_type
        dims = dt.dimensions
        cache = self._prerequisite_cache
        missing_dims = [d for d in dims if d not in qdata]
        if missing_dims:
            # Prerequisite with dimensions beyond the quantum's: one per row (e.g. per detector).
            pids = {_key(r, dims): r.subset(dims) for r in rows if all(d in r for d in dims)}
        else:
            pids = {_key(qdata, dims): qdata.subset(dims)}
        ts = _quantum_timespan(qdata, rows) if dt.is_calibration else None
        out: list[DatasetRef] = []
        for pk, pid in sorted(pids.items(), key=lambda kv: kv[0]):
            ck = (dt.name, pk, None if ts is None else (ts.begin_ns, ts.end_ns))
            if ck in cache:
                ref = cache[ck]
            else:
                lookup = e.conn.lookup_function
                try:
                    if lookup is not None:
                        found = list(lookup(dt, self.butler.registry, pid, self.inputs))
                        ref = found or None
                    else:
                        ref = self.butler.find_dataset(dt.name, pid, collections=self.inputs, timespan=ts)
                except Exception as exc:  # noqa: BLE001 - e.g. ambiguous calibration validity match
                    self.n_queries += 1
                    if isinstance(exc, MissingDatasetTypeError):
                        cache[ck] = None
                        continue
                    return f"{_fmt(pid)}: {type(exc).__name__}: {exc}"
                self.n_queries += 1
                cache[ck] = ref
            if isinstance(ref, list):
                out.extend(ref)
            elif ref is not None:
                out.append(ref)
        return out

    # ------------------------------------------------------------------ datastore records
    def _attach_datastore_records(self, sub: _Subgraph) -> None:
        """Step 2g: the datastore records of every pre-existing input of the subgraph (one query).

        The records stay columns (`~butler.registry.managers.datastore_records.FileRecordColumns`)
        until the encoder writes them: no `StoredFileInfo` per input is made.

        Raises
        ------
        FileNotFoundError
            If an input dataset has no file in the datastore.
        """
        if self.datastore_records:  # a later subgraph: leave out the inputs an earlier one had
            if self._recorded is None:
                self._recorded = {u for ids, _cols in self.datastore_records for u in ids}
            recorded = self._recorded
            existing = [r for r in sub.used_inputs.values() if r.id not in recorded]
        else:
            existing = list(sub.used_inputs.values())
        if not existing:
            return
        import numpy as np

        ids = [r.id for r in existing]
        found = self.butler.registry.get_file_record_columns(ids)
        if len(found.position) != len(ids):
            has = np.zeros(len(ids), dtype=bool)
            has[found.position] = True
            missing = [existing[i] for i in np.flatnonzero(~has)[:1].tolist()]
            raise FileNotFoundError(
                f"{len(ids) - len(found.position)} input dataset(s) have no file in the datastore, e.g. "
                f"{missing[0].dataset_type.name} {dict(missing[0].data_id.required)} in run {missing[0].run}; "
                "re-ingest or remove them (butler prune-datasets)")
        self.datastore_records.append((ids, found))
        if self._recorded is not None:
            self._recorded.update(ids)

    # ------------------------------------------------------------------ the graph
    def _check_quanta(self) -> None:
        """Raise the one error for missing prerequisites, or for a graph without quanta."""
        if self.missing_prerequisites:
            raise MissingPrerequisiteError(self._explain_missing())
        if not len(self.encoder):
            if self.skipped:
                raise NothingToDoError(
                    f"every quantum already finished in {self.skip_existing_in} ("
                    + ", ".join(f"{k}: {v} skipped" for k, v in self.skipped.items())
                    + "); nothing to do")
            why = "; ".join(f"task {lab!r}: {len(v)} quanta dropped, e.g. {v[0]}" for lab, v in self.dropped.items())
            raise EmptyGraphError(f"no quanta: {why or 'no data IDs matched'}")

    def _predict_init_outputs(self) -> dict[str, list[int]]:
        """Step 3: ``<label>_config`` per task and, under ``""``, the run's ``packages`` (dataset indices)."""
        from butler import DataCoordinate, DatasetRef

        empty = DataCoordinate.empty()
        new = self.encoder.new_ref
        init_outputs: dict[str, list[int]] = {}
        for label, node in self.pipeline_graph.tasks.items():
            dt = self.dataset_types[node.config_output.dataset_type_name]
            init_outputs[label] = [new(DatasetRef(dt, empty, self.run, self._make_id()), False)]
        packages = self.dataset_types[self.pipeline_graph.packages_dataset_type[0]]
        init_outputs[""] = [new(DatasetRef(packages, empty, self.run, self._make_id()), False)]
        return init_outputs

    def _make_graph(self, init_outputs: dict[str, list[int]], metadata: Mapping[str, Any] | None,
                    seconds: float) -> QuantumGraph:
        """Step 3: the `QuantumGraph` with its metadata."""
        md = dict(metadata or {})
        md.update(self.collections.to_metadata())
        md["clobber_refs"] = self.clobber
        md["skipped"] = dict(self.skipped)
        md["build_seconds"] = seconds
        md["where"] = self.where
        md["data_id"] = dict(self.data_id or {})
        md["n_queries"] = self.n_queries
        enc = self.encoder
        for dt in self.dataset_types.values():
            enc.dataset_type(dt)
        cols = enc.finish(self.datastore_records, init_outputs)
        self.encoder = type(enc)()  # free the encoder's indexes
        graph = QuantumGraph._from_columns(cols, {label: t.task_info() for label, t in self.tasks.items()}, md,
                                           dataset_types=self.dataset_types.values())
        _log.info("Built a quantum graph of %d quanta (%s) in %.2f s with %d queries", len(graph),
                  ", ".join(f"{k}: {v}" for k, v in graph.count_by_task().items()), seconds, self.n_queries)
        return graph

    # ------------------------------------------------------------------ error messages
    def _explain_missing(self) -> str:
        parts = []
        for (label, cname), ids in self.missing_prerequisites.items():
            e = next(e for e in self.tasks[label].prerequisites if e.name == cname)
            dt = e.dataset_type
            how = ("certified for the exposure's time span in the CALIBRATION collection(s)"
                   if dt.is_calibration else "in the collection(s)")
            parts.append(
                f"task {label!r} needs prerequisite {cname!r} (dataset type {dt.name!r}) for {len(ids)} "
                f"quanta but none was found {how} {self.inputs}, e.g. for {ids[0]}")
        return ("missing prerequisite inputs: " + "; ".join(parts)
                + ". Certify the calibration for those dates (butler certify-calibrations), add the "
                "collection that holds it to -i, or turn the step off in the task config")

    def _explain_empty(self, sub: _Subgraph) -> str:
        """Find which constraint emptied the data-ID query."""
        dims = sorted(sub.dimensions)
        labels = [t.label for t in sub.tasks]
        inputs, constraint, where = self.inputs, sub.constraint, self.where
        head = f"the quantum graph for {labels} is empty: "
        for name in constraint:
            try:
                refs = self.butler.query_datasets(name, collections=inputs, find_first=True, limit=1)
            except Exception as exc:  # noqa: BLE001
                return head + f"no {name!r} datasets can be found in {inputs} ({exc})"
            if not refs:
                return head + (f"there are no {name!r} datasets in the input collections {inputs}; check -i "
                               "(butler query-datasets REPO " + name + ")")
        if where or self.data_id:
            try:
                rows = self.butler.query_data_ids(dims, data_id=self.data_id, datasets=constraint or None,
                                                  collections=inputs)
            except Exception:  # noqa: BLE001
                rows = None
            if rows:
                return head + (f"the data query -d {where!r} matches none of the {len(rows)} data IDs that have "
                               f"{', '.join(constraint) or 'data'} in {inputs}")
            return head + f"no data IDs match -d {where!r} with data ID {dict(self.data_id or {})}"
        return head + f"no data IDs for dimensions {dims} with {constraint} in {inputs}"


def build_quantum_graph(
    butler: Butler,
    pipeline_graph: PipelineGraph | Sequence[tuple[str, type, Config]],
    *,
    collections: OutputCollections,
    where: str = "",
    bind: Mapping[str, Any] | None = None,
    data_id: Mapping[str, Any] | None = None,
    clobber_outputs: bool = False,
    metadata: Mapping[str, Any] | None = None,
    dataset_query_constraint: str = "all",
) -> QuantumGraph:
    """Build the quantum graph of a pipeline graph over a repository (`QuantumGraphBuilder` in one call).

    Parameters
    ----------
    butler : `butler.Butler`
        The repository (read only here).
    pipeline_graph : `~pipeline.pipeline_graph.PipelineGraph` or sequence of ``(label, task class, config)``
        The tasks (``Pipeline.to_graph()``); task classes with their configs are made into one with
        `PipelineGraph.from_tasks`.
    collections, where, bind, data_id, clobber_outputs, dataset_query_constraint
        See `QuantumGraphBuilder`.
    metadata : `dict`, optional
        Extra graph metadata (command line ...).

    Returns
    -------
    graph : `QuantumGraph`

    Raises
    ------
    EmptyGraphError, MissingPrerequisiteError, GraphBuilderError
        See `QuantumGraphBuilder.build`.
    PipelineGraphError
        If task classes and configs given as a sequence do not make a consistent pipeline graph.
    """
    if not isinstance(pipeline_graph, PipelineGraph):
        pipeline_graph = PipelineGraph.from_tasks(pipeline_graph)
    builder = QuantumGraphBuilder(pipeline_graph, butler, collections=collections, where=where, bind=bind,
                                  data_id=data_id, clobber_outputs=clobber_outputs,
                                  dataset_query_constraint=dataset_query_constraint)
    return builder.build(metadata)


# ---------------------------------------------------------------------- calibration lookups
def _quantum_timespan(qdata: DataCoordinate, rows: Sequence[DataCoordinate]) -> Timespan | None:
    """The time span a calibration must cover: the quantum's exposure(s)."""
    ts = qdata.timespan
    if ts is not None:
        return ts
    spans = [r.timespan for r in rows if r.timespan is not None]
    if not spans:
        return None
    from butler import Timespan

    return Timespan.from_ns(min(s.begin_ns for s in spans), max(s.end_ns for s in spans))


class _CalibIndex:
    """All candidates of one calibration dataset type along the search path, fetched once.

    One query per collection (``query_calibration_validity`` for CALIBRATION collections, a
    dataset query for RUN/TAGGED ones) replaces one ``find_dataset`` per quantum; the lookup
    itself (find-first along the path, validity overlapping the quantum's time span, ambiguity
    = error) is done in Python.
    """

    def __init__(self, butler: Butler, dt: DatasetType, collections: list[str]) -> None:
        from butler import CollectionType

        reg = butler.registry
        self.dims = dt.dimensions
        self.levels: list[tuple[str, bool, dict[_Key, list[tuple[Any, DatasetRef]]]]] = []
        for rec in reg.resolve_collections(collections):
            table: dict[_Key, list[tuple[Any, DatasetRef]]] = defaultdict(list)
            if rec.type == CollectionType.CALIBRATION:
                for ref, ts in reg.query_calibration_validity(rec.name, dt.name):
                    table[_key(ref.data_id, self.dims)].append((ts, ref))
                self.levels.append((rec.name, True, table))
            elif rec.type in (CollectionType.RUN, CollectionType.TAGGED):
                for ref in reg.query_datasets(dt.name, collections=[rec.name], find_first=True):
                    table[_key(ref.data_id, self.dims)].append((None, ref))
                self.levels.append((rec.name, False, table))

    def find(self, key: _Key, ts: Timespan | None) -> DatasetRef | None:
        """Return the ref for a data-ID key and time span, `None`, or raise `LookupError`."""
        for name, is_calib, table in self.levels:
            cands = table.get(key)
            if not cands:
                continue
            if not is_calib:
                return cands[0][1]
            if ts is None:
                hits = cands
            else:
                hits = [(t, r) for t, r in cands if t.overlaps(ts)]
            if len(hits) > 1:
                raise LookupError(
                    f"ambiguous calibration lookup in {name!r}: {len(hits)} validity ranges match the time "
                    f"span {ts}; give an exposure inside one range")
            if hits:
                return hits[0][1]
        return None


def _lookup_indexed(index: _CalibIndex, qdata: DataCoordinate, rows: Sequence[DataCoordinate]
                    ) -> list[DatasetRef] | str:
    dims = index.dims
    if any(d not in qdata for d in dims):
        keys = sorted({_key(r, dims) for r in rows if all(d in r for d in dims)})
    else:
        keys = [_key(qdata, dims)]
    ts = _quantum_timespan(qdata, rows)
    out = []
    for k in keys:
        try:
            ref = index.find(k, ts)
        except LookupError as exc:
            return f"{_fmt(qdata)}: CalibrationLookupError: {exc}"
        if ref is not None:
            out.append(ref)
    return out
