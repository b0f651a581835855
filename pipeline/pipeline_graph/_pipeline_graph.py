"""The pipeline graph: tasks and dataset types with resolved connections, validated before any query.

`~pipeline.definitions.Pipeline.to_graph` (or `PipelineGraph.from_tasks`) imports every task, builds
and freezes its config, and `make_task_node` instantiates its connections, resolves each connection
to a dataset type (name, dimensions in universe order, storage class, calibration flag) and adds the automatic outputs of every task:
``<label>_metadata`` (``TaskMetadata``) and ``<label>_log`` (``ButlerLogRecords``) with the task's
dimensions, the init-output ``<label>_config`` (``Config``) and the run-level ``packages``.

Validation (each error names the labels, connections and dataset types involved):

- a cycle between tasks;
- a dataset type produced by two tasks, or a prerequisite input produced in the pipeline;
- one dataset type used with different dimensions, incompatible storage classes, different
  calibration flags, or both as an init dataset and a regular one;
- a connection without ``multiple=True`` whose dimensions are not covered by the task's
  dimensions (with the dimensions they imply), so it could match several datasets per quantum;
- unknown dimension names.

The graph is held in a small internal adjacency structure (so that importing this module does not
import networkx, which costs 0.3-1 s of CLI start-up); `PipelineGraph.xgraph` returns it as a
`networkx.DiGraph` over node keys ``("task", label)`` and ``("dataset", name)`` on demand.
`PipelineGraph.tasks` is in a deterministic topological order.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from ..config import Config
from .. import connection_types as cT  # noqa: N812 - the LSST spelling
from ..connection_types import CONFIG_CONNECTION, LOG_CONNECTION, METADATA_CONNECTION
from ..connections import PipelineTaskConnections
from ..exceptions import ConfigError, PipelineDefinitionError, PipelineGraphError

__all__ = [
    "DatasetTypeNode",
    "PipelineGraph",
    "ResolvedConnection",
    "TaskNode",
    "dimension_closure",
    "select_tasks",
    "sort_dimensions",
]

PACKAGES_DATASET_TYPE = "packages"


@functools.lru_cache(maxsize=1)
def _universe() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Element name → (requires, implies), in universe order (the butler's dimension universe)."""
    from butler.dimensions import default_universe

    return {name: (el.requires, el.implies) for name, el in default_universe().elements.items()}


@functools.lru_cache(maxsize=1)
def _storage_class_kinds() -> dict[str, tuple[str, str]]:
    """Storage class → (pytype, formatter); classes with equal pairs are interchangeable aliases."""
    from butler.storage_classes import storage_classes

    return {name: (sc.pytype, sc.formatter) for name, sc in storage_classes().items()}


def _compatible_storage_classes(a: str, b: str) -> bool:
    if a == b:
        return True
    kinds = _storage_class_kinds()
    return a in kinds and b in kinds and kinds[a] == kinds[b]


def sort_dimensions(dimensions: Iterable[str], *, where: str = "") -> tuple[str, ...]:
    """Return the dimensions plus the ones they require, in universe order.

    Parameters
    ----------
    dimensions : iterable of `str`
        Dimension names, e.g. ``("detector", "exposure")``.
    where : `str`
        Context for the error message.

    Returns
    -------
    dimensions : `tuple` [`str`, ...]
        E.g. ``("instrument", "detector", "exposure")``.

    Raises
    ------
    PipelineGraphError
        For an unknown dimension name (close matches suggested).
    """
    universe = _universe()
    wanted: set[str] = set()
    stack = list(dimensions)
    while stack:
        dim = stack.pop()
        if dim not in universe:
            import difflib  # imported for a "did you mean" hint only

            close = difflib.get_close_matches(dim, list(universe), n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise PipelineGraphError(f"{where}unknown dimension {dim!r}{hint} (known: {', '.join(universe)})")
        if dim not in wanted:
            wanted.add(dim)
            stack.extend(universe[dim][0])
    return tuple(d for d in universe if d in wanted)


def dimension_closure(dimensions: Iterable[str]) -> tuple[str, ...]:
    """Return the dimensions with everything they require or imply (transitively), in universe order."""
    universe = _universe()
    out: set[str] = set()
    stack = [d for d in dimensions if d in universe]
    while stack:
        dim = stack.pop()
        if dim not in out:
            out.add(dim)
            stack.extend(universe[dim][0] + universe[dim][1])
    return tuple(d for d in universe if d in out)


class DataIdConfigs(Protocol):
    """Where a task node finds its data-ID-scoped configs: the pipeline definition's ``dataId:`` blocks."""

    def has_data_id_overrides(self, label: str) -> bool:
        """Whether the task has data-ID-scoped config blocks."""
        ...

    def data_id_blocks(self, label: str, data_id: Mapping[str, Any]) -> tuple[int, ...]:
        """Indices of the task's data-ID-scoped blocks that match ``data_id``."""
        ...

    def task_config(self, label: str, data_id: Mapping[str, Any] | None = None) -> Config:
        """The task's (unfrozen) config with the blocks matching ``data_id`` applied."""
        ...


@dataclasses.dataclass(frozen=True)
class ResolvedConnection:
    """One connection of one task, resolved to its dataset type.

    Attributes
    ----------
    task_label : `str`
        Task label.
    connection_name : `str`
        Connection name (``run()`` argument / `Struct` field); ``_metadata``, ``_log`` and
        ``_config`` for the automatic outputs.
    kind : `str`
        ``input``, ``prerequisite``, ``output``, ``init_input`` or ``init_output``.
    dataset_type_name : `str`
        Dataset type name (templates filled, renames applied).
    dimensions : `tuple` [`str`, ...]
        Required dimensions in universe order (empty for init datasets).
    storage_class : `str`
        Storage class name.
    is_calibration : `bool`
        Calibration dataset type (looked up by validity range).
    multiple : `bool`
        A list of refs per quantum.
    minimum : `int`
        Minimum refs per quantum (inputs); 0 makes a prerequisite optional.
    defer_load : `bool`
        The task gets a deferred handle.
    defer_graph_constraint : `bool`
        Do not constrain the initial data-ID query by this input's existence.
    lookup_function : callable or `None`
        Custom prerequisite lookup.
    doc : `str`
        Connection documentation.
    automatic : `bool`
        `True` for the framework-added ``_metadata``/``_log``/``_config`` outputs.
    """

    task_label: str
    connection_name: str
    kind: str
    dataset_type_name: str
    dimensions: tuple[str, ...]
    storage_class: str
    is_calibration: bool = False
    multiple: bool = False
    minimum: int = 1
    defer_load: bool = False
    defer_graph_constraint: bool = False
    lookup_function: Any = None
    doc: str = ""
    automatic: bool = False

    @property
    def prerequisite(self) -> bool:
        """`True` for a prerequisite input."""
        return self.kind == "prerequisite"

    @property
    def is_init(self) -> bool:
        """`True` for init-inputs and init-outputs."""
        return self.kind.startswith("init")

    @property
    def is_output(self) -> bool:
        """`True` for outputs and init-outputs."""
        return self.kind.endswith("output")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (without ``lookup_function``)."""
        return {
            "connection_name": self.connection_name,
            "kind": self.kind,
            "dataset_type_name": self.dataset_type_name,
            "dimensions": list(self.dimensions),
            "storage_class": self.storage_class,
            "is_calibration": self.is_calibration,
            "multiple": self.multiple,
            "minimum": self.minimum,
            "defer_load": self.defer_load,
            "defer_graph_constraint": self.defer_graph_constraint,
            "has_lookup_function": self.lookup_function is not None,
            "automatic": self.automatic,
        }


@dataclasses.dataclass
class TaskNode:
    """A task of the pipeline graph with its frozen config and resolved connections.

    Attributes
    ----------
    label : `str`
        Task label.
    task_class : `type`
        The `~pipeline.task.PipelineTask` subclass.
    task_class_name : `str`
        Its dotted path as written in the pipeline.
    config : `~pipeline.config.Config`
        Frozen base config (without data-ID-scoped blocks).
    connections : `~pipeline.connections.PipelineTaskConnections`
        Connections instance for ``config``.
    dimensions : `tuple` [`str`, ...]
        Quantum dimensions, universe order.
    inputs, prerequisite_inputs, outputs, init_inputs, init_outputs : `dict`
        Connection name → `ResolvedConnection` (regular connections only).
    metadata_output, log_output, config_output : `ResolvedConnection`
        The automatic ``<label>_metadata``, ``<label>_log`` and ``<label>_config`` datasets.
    """

    label: str
    task_class: type
    task_class_name: str
    config: Config
    connections: PipelineTaskConnections
    dimensions: tuple[str, ...]
    inputs: dict[str, ResolvedConnection]
    prerequisite_inputs: dict[str, ResolvedConnection]
    outputs: dict[str, ResolvedConnection]
    init_inputs: dict[str, ResolvedConnection]
    init_outputs: dict[str, ResolvedConnection]
    metadata_output: ResolvedConnection
    log_output: ResolvedConnection | None
    config_output: ResolvedConnection
    data_id_configs: DataIdConfigs | None = dataclasses.field(default=None, repr=False, compare=False)
    _scoped_configs: dict[tuple[int, ...], Config] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def all_outputs(self) -> dict[str, ResolvedConnection]:
        """Regular outputs plus ``_metadata`` and ``_log`` (absent when ``saveLogOutput`` is False)."""
        auto = {METADATA_CONNECTION: self.metadata_output}
        if self.log_output is not None:
            auto[LOG_CONNECTION] = self.log_output
        return {**self.outputs, **auto}

    @property
    def all_init_outputs(self) -> dict[str, ResolvedConnection]:
        """Init-outputs plus ``_config``."""
        return {**self.init_outputs, CONFIG_CONNECTION: self.config_output}

    def iter_connections(self) -> Iterator[ResolvedConnection]:
        """Every connection, automatic ones included."""
        yield from self.init_inputs.values()
        yield from self.inputs.values()
        yield from self.prerequisite_inputs.values()
        yield from self.all_init_outputs.values()
        yield from self.all_outputs.values()

    @property
    def has_data_id_overrides(self) -> bool:
        """Whether the pipeline has data-ID-scoped config blocks for this task."""
        return self.data_id_configs is not None and self.data_id_configs.has_data_id_overrides(self.label)

    def config_for(self, data_id: Mapping[str, Any] | None) -> Config:
        """Return the frozen config to use for a quantum (data-ID-scoped blocks applied).

        Parameters
        ----------
        data_id : `~collections.abc.Mapping` or `None`
            The quantum's data ID.

        Returns
        -------
        config : `~pipeline.config.Config`
            ``self.config`` when no scoped block matches, else a new frozen config.
        """
        if data_id is None or self.data_id_configs is None or not self.has_data_id_overrides:
            return self.config
        matching = self.data_id_configs.data_id_blocks(self.label, data_id)
        if not matching:
            return self.config
        cached = self._scoped_configs.get(matching)
        if cached is None:
            cached = self.data_id_configs.task_config(self.label, data_id)
            cached.freeze()
            self._scoped_configs[matching] = cached
        return cached

    def make_task(
        self, *, config: Config | None = None, log: Any = None, initInputs: Mapping[str, Any] | None = None
    ) -> Any:
        """Instantiate the task (named after its label)."""
        return self.task_class(config=config or self.config, log=log, initInputs=initInputs, name=self.label)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description: class, label, dimensions, config and connections."""
        return {
            "label": self.label,
            "task_class": self.task_class_name,
            "dimensions": list(self.dimensions),
            "config": self.config.to_dict(),
            "connections": {c.connection_name: c.to_dict() for c in self.iter_connections()},
        }


@dataclasses.dataclass
class DatasetTypeNode:
    """A dataset type of the pipeline graph.

    Attributes
    ----------
    name : `str`
        Dataset type name.
    dimensions : `tuple` [`str`, ...]
        Required dimensions, universe order.
    storage_class : `str`
        The producer's storage class (else the first consumer's).
    is_calibration : `bool`
        Calibration dataset type.
    is_init : `bool`
        Init dataset (no dimensions; read/written once per run).
    is_prerequisite : `bool`
        Only consumed as a prerequisite input.
    producer : `str` or `None`
        Label of the producing task (`None` for overall inputs).
    consumers : `list` [`str`]
        Labels of consuming tasks.
    """

    name: str
    dimensions: tuple[str, ...]
    storage_class: str
    is_calibration: bool
    is_init: bool
    is_prerequisite: bool
    producer: str | None = None
    consumers: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "name": self.name,
            "dimensions": list(self.dimensions),
            "storage_class": self.storage_class,
            "is_calibration": self.is_calibration,
            "is_init": self.is_init,
            "is_prerequisite": self.is_prerequisite,
            "producer": self.producer,
            "consumers": list(self.consumers),
        }


class _DiGraph:
    """Minimal directed graph: ordered nodes with attributes, edges with data (last wins)."""

    def __init__(self) -> None:
        self.nodes: dict[Any, dict[str, Any]] = {}
        self.succ: dict[Any, dict[Any, dict[str, Any]]] = {}
        self.pred: dict[Any, dict[Any, dict[str, Any]]] = {}

    def add_node(self, key: Any, **attrs: Any) -> None:
        self.nodes.setdefault(key, {}).update(attrs)
        self.succ.setdefault(key, {})
        self.pred.setdefault(key, {})

    def add_edge(self, u: Any, v: Any, **data: Any) -> None:
        self.add_node(u)
        self.add_node(v)
        self.succ[u][v] = data
        self.pred[v][u] = data

    def edges(self) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
        for u, targets in self.succ.items():
            for v, data in targets.items():
                yield u, v, data

    def topological_sort(self, key: Any) -> list[Any] | None:
        """Kahn's algorithm, always taking the ready node with the smallest ``key``; None on a cycle."""
        indegree = {k: len(p) for k, p in self.pred.items()}
        ready = [(key(k), i, k) for i, k in enumerate(self.nodes) if indegree[k] == 0]
        heapq.heapify(ready)
        index = {k: i for i, k in enumerate(self.nodes)}
        out = []
        while ready:
            _, _, k = heapq.heappop(ready)
            out.append(k)
            for v in self.succ[k]:
                indegree[v] -= 1
                if indegree[v] == 0:
                    heapq.heappush(ready, (key(v), index[v], v))
        return out if len(out) == len(self.nodes) else None

    def find_cycle(self) -> list[Any] | None:
        """Return the nodes of one cycle (in edge order), or None."""
        state: dict[Any, int] = {}
        for start in self.nodes:
            if start in state:
                continue
            stack = [(start, iter(self.succ[start]))]
            path = [start]
            state[start] = 1
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    stack.pop()
                    path.pop()
                    state[node] = 2
                elif state.get(nxt) == 1:
                    return path[path.index(nxt) :]
                elif nxt not in state:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, iter(self.succ[nxt])))
        return None

    def reachable(self, start: Any, *, forward: bool) -> set[Any]:
        """Nodes reachable from ``start`` (descendants if forward, else ancestors), without it."""
        adj = self.succ if forward else self.pred
        seen: set[Any] = set()
        todo = list(adj[start])
        while todo:
            k = todo.pop()
            if k not in seen:
                seen.add(k)
                todo.extend(adj[k])
        return seen


def _task_key(label: str) -> tuple[str, str]:
    return ("task", label)


def _dataset_key(name: str) -> tuple[str, str]:
    return ("dataset", name)


class PipelineGraph:
    """Validated graph of tasks and dataset types.

    Build with `~pipeline.definitions.Pipeline.to_graph` (or `PipelineGraph.from_tasks`).

    Parameters
    ----------
    task_nodes : iterable of `TaskNode`
        Tasks, in pipeline order.
    description : `str`
        Pipeline description.
    instrument : `str`, optional
        Instrument the pipeline declares.
    task_subsets : `~collections.abc.Mapping` [`str`, `~collections.abc.Iterable` [`str`]], optional
        The pipeline's labeled subsets: name → task labels (``--select-tasks S:name``).
    validate : `bool`
        Run the validation checks (raise `PipelineGraphError`).
    """

    def __init__(
        self,
        task_nodes: Iterable[TaskNode],
        *,
        description: str = "",
        instrument: str | None = None,
        task_subsets: Mapping[str, Iterable[str]] | None = None,
        validate: bool = True,
    ) -> None:
        self.description = description
        self.instrument = instrument
        self.task_subsets: dict[str, tuple[str, ...]] = {
            name: tuple(labels) for name, labels in (task_subsets or {}).items()
        }
        nodes = list(task_nodes)
        self._xgraph: Any = None
        self._declared_order = [t.label for t in nodes]
        self._graph = _DiGraph()
        self.dataset_types: dict[str, DatasetTypeNode] = {}
        self._edges_by_dataset: dict[str, list[ResolvedConnection]] = {}
        for node in nodes:
            self._graph.add_node(_task_key(node.label), node=node)
            for conn in node.iter_connections():
                self._edges_by_dataset.setdefault(conn.dataset_type_name, []).append(conn)
                dkey = _dataset_key(conn.dataset_type_name)
                if dkey not in self._graph.nodes:
                    self._graph.add_node(dkey)
                if conn.is_output:
                    self._graph.add_edge(_task_key(node.label), dkey, connection=conn)
                else:
                    self._graph.add_edge(dkey, _task_key(node.label), connection=conn)
        if validate:
            self._validate()
        self._resolve_dataset_types()
        if validate:
            self._check_cycles()
        order = {label: i for i, label in enumerate(self._declared_order)}
        sorted_keys = self._graph.topological_sort(
            key=lambda k: (0, order[k[1]], "") if k[0] == "task" else (1, 0, k[1])
        )
        if sorted_keys is None:  # a cycle (only when not validating)
            sorted_keys = [_task_key(lb) for lb in self._declared_order]
        self.tasks: dict[str, TaskNode] = {
            k[1]: self._graph.nodes[k]["node"] for k in sorted_keys if k[0] == "task"
        }

    @property
    def xgraph(self) -> Any:
        """The graph as a `networkx.DiGraph` (built on first access).

        Nodes are ``("task", label)`` (attribute ``node``: the `TaskNode`) and ``("dataset", name)``;
        edges carry ``connection``: the `ResolvedConnection`.
        """
        if self._xgraph is None:
            import networkx as nx

            g = nx.DiGraph()
            for key, attrs in self._graph.nodes.items():
                g.add_node(key, **attrs)
            for u, v, data in self._graph.edges():
                g.add_edge(u, v, **data)
            self._xgraph = g
        return self._xgraph

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tasks(cls, tasks: Iterable[tuple[str, type, Config]], *, validate: bool = True) -> PipelineGraph:
        """Make the graph of tasks given as classes and configs (no pipeline file).

        Parameters
        ----------
        tasks : iterable of ``(label, task class, config)``
            The tasks; each config is frozen.
        validate : `bool`
            Check the graph (see module docs).

        Returns
        -------
        graph : `PipelineGraph`

        Raises
        ------
        PipelineDefinitionError, ConfigError, PipelineGraphError
            See `make_task_node` and the module docs.
        """
        nodes = [
            make_task_node(label, task_class, f"{task_class.__module__}.{task_class.__qualname__}", config)
            for label, task_class, config in tasks
        ]
        return cls(nodes, validate=validate)

    def subgraph(self, labels: Iterable[str]) -> PipelineGraph:
        """Return a graph of only some tasks (no re-validation)."""
        keep = set(labels)
        return PipelineGraph(
            [self.tasks[lb] for lb in self._declared_order if lb in keep],
            description=self.description,
            instrument=self.instrument,
            task_subsets=self.task_subsets,
            validate=False,
        )

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        problems: list[str] = []
        for name, edges in self._edges_by_dataset.items():
            producers = [e for e in edges if e.is_output]
            consumers = [e for e in edges if not e.is_output]
            if len(producers) > 1:
                who = " and ".join(
                    f"task '{e.task_label}' (connection '{e.connection_name}')" for e in producers
                )
                problems.append(
                    f"dataset type '{name}' is produced by more than one task: {who}; rename one "
                    "output with config.connections.<name>"
                )
            if producers:
                for e in consumers:
                    if e.prerequisite:
                        problems.append(
                            f"dataset type '{name}' is a PrerequisiteInput of task '{e.task_label}' "
                            f"(connection '{e.connection_name}') but is produced by task "
                            f"'{producers[0].task_label}' in the same pipeline; declare it as an Input, "
                            "or run the producer in an earlier pipeline"
                        )
            first = producers[0] if producers else edges[0]
            for e in edges:
                if e is first:
                    continue
                where = (
                    f"task '{first.task_label}' (connection '{first.connection_name}') vs task "
                    f"'{e.task_label}' (connection '{e.connection_name}')"
                )
                if e.is_init != first.is_init:
                    problems.append(
                        f"dataset type '{name}' is used both as an init dataset and a regular one: {where}"
                    )
                    continue
                if e.dimensions != first.dimensions:
                    problems.append(
                        f"dataset type '{name}' has inconsistent dimensions: "
                        f"{_fmt_dims(first.dimensions)} in {where.split(' vs ')[0]} vs "
                        f"{_fmt_dims(e.dimensions)} in {where.split(' vs ')[1]}"
                    )
                if not _compatible_storage_classes(first.storage_class, e.storage_class):
                    problems.append(
                        f"dataset type '{name}' has inconsistent storage classes: "
                        f"'{first.storage_class}' in {where.split(' vs ')[0]} vs "
                        f"'{e.storage_class}' in {where.split(' vs ')[1]}"
                    )
                if e.is_calibration != first.is_calibration:
                    problems.append(
                        f"dataset type '{name}' is a calibration in one connection and not in "
                        f"another: {where}"
                    )
        if problems:
            unique = list(dict.fromkeys(problems))
            if len(unique) == 1:
                raise PipelineGraphError(unique[0])
            raise PipelineGraphError(f"{len(unique)} pipeline graph errors:\n  - " + "\n  - ".join(unique))

    def _check_cycles(self) -> None:
        cycle = self._graph.find_cycle()
        if cycle is None:
            return
        parts = []
        for u in cycle:
            parts.append(f"task '{u[1]}'" if u[0] == "task" else f"'{u[1]}'")
        parts.append(parts[0])
        raise PipelineGraphError(
            "pipeline graph has a cycle: "
            + " -> ".join(parts)
            + "; a task cannot (indirectly) consume its own output"
        )

    def _resolve_dataset_types(self) -> None:
        for name, edges in self._edges_by_dataset.items():
            producers = [e for e in edges if e.is_output]
            first = producers[0] if producers else edges[0]
            consumers = [e.task_label for e in edges if not e.is_output]
            self.dataset_types[name] = DatasetTypeNode(
                name=name,
                dimensions=first.dimensions,
                storage_class=first.storage_class,
                is_calibration=first.is_calibration,
                is_init=first.is_init,
                is_prerequisite=bool(edges)
                and not producers
                and all(e.prerequisite for e in edges if not e.is_output),
                producer=producers[0].task_label if producers else None,
                consumers=list(dict.fromkeys(consumers)),
            )

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[TaskNode]:
        return iter(self.tasks.values())

    def producer_of(self, dataset_type_name: str) -> TaskNode | None:
        """Return the task producing a dataset type, or `None`."""
        node = self.dataset_types.get(dataset_type_name)
        return self.tasks.get(node.producer) if node and node.producer else None

    def consumers_of(self, dataset_type_name: str) -> list[TaskNode]:
        """Return the tasks consuming a dataset type."""
        node = self.dataset_types.get(dataset_type_name)
        return [self.tasks[lb] for lb in node.consumers] if node else []

    def overall_inputs(self) -> dict[str, DatasetTypeNode]:
        """Dataset types read but not produced: regular inputs (not prerequisites, not init)."""
        return {
            n: d
            for n, d in self.dataset_types.items()
            if d.producer is None and not d.is_prerequisite and not d.is_init
        }

    def prerequisite_inputs(self) -> dict[str, DatasetTypeNode]:
        """Dataset types only read as prerequisites."""
        return {n: d for n, d in self.dataset_types.items() if d.is_prerequisite}

    def upstream_tasks(self, label: str) -> list[str]:
        """Labels of the tasks whose outputs ``label`` (indirectly) reads, topological order."""
        anc = self._graph.reachable(_task_key(label), forward=False)
        return [lb for lb in self.tasks if _task_key(lb) in anc]

    def downstream_tasks(self, label: str) -> list[str]:
        """Labels of the tasks that (indirectly) read ``label``'s outputs, topological order."""
        desc = self._graph.reachable(_task_key(label), forward=True)
        return [lb for lb in self.tasks if _task_key(lb) in desc]

    def independent_subgraphs(self, *, through_overall_inputs: bool = True) -> list[PipelineGraph]:
        """Split into graphs that share no regular dataset type.

        Prerequisites and init datasets do not connect tasks; each subgraph needs its own data-ID
        query.

        Parameters
        ----------
        through_overall_inputs : `bool`
            Whether reading the same overall input (a dataset type no task produces) connects two
            tasks; with `False` only a producer and its consumers are connected.

        Returns
        -------
        graphs : `list` [`PipelineGraph`]
            In the topological order of their first task.
        """
        parent: dict[Any, Any] = {}

        def find(x: Any) -> Any:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for u, v, data in self._graph.edges():
            conn: ResolvedConnection = data["connection"]
            if conn.prerequisite or conn.is_init:
                continue
            if not through_overall_inputs and self.dataset_types[conn.dataset_type_name].producer is None:
                continue
            parent[find(u)] = find(v)
        groups: dict[Any, list[str]] = {}
        for label in self.tasks:
            groups.setdefault(find(_task_key(label)), []).append(label)
        return [self.subgraph(labels) for labels in groups.values()]

    @property
    def packages_dataset_type(self) -> tuple[str, tuple[str, ...], str]:
        """The run-level ``packages`` dataset type: (name, dimensions, storage class)."""
        return (PACKAGES_DATASET_TYPE, (), "Packages")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description of tasks and dataset types."""
        return {
            "description": self.description,
            "instrument": self.instrument,
            "tasks": {lb: t.to_dict() for lb, t in self.tasks.items()},
            "dataset_types": {n: d.to_dict() for n, d in self.dataset_types.items()},
        }

    # ------------------------------------------------------------------ drawing
    def to_dot(self) -> str:
        """Return Graphviz dot text for the graph.

        Tasks are boxes, dataset types ellipses; prerequisite edges are dashed (calibration
        prerequisites also grey); automatic ``_metadata``/``_log``/``_config`` are omitted.

        Returns
        -------
        dot : `str`
        """
        lines = ["digraph pipeline {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
        ids: dict[tuple[str, str], str] = {}

        def nid(key: tuple[str, str]) -> str:
            if key not in ids:
                ids[key] = f"{'t' if key[0] == 'task' else 'd'}{len(ids)}"
            return ids[key]

        for label, node in self.tasks.items():
            text = f"{label}\\n{node.task_class.__name__}\\n{_fmt_dims(node.dimensions)}"
            lines.append(
                f'  {nid(_task_key(label))} [shape=box, style="rounded,filled", fillcolor="#dbe9f6", '
                f'label="{_esc(text)}"];'
            )
        for name, d in self.dataset_types.items():
            if self._automatic_only(name):
                continue
            extra = ", calibration" if d.is_calibration else ""
            text = f"{name}\\n{_fmt_dims(d.dimensions)}\\n{d.storage_class}{extra}"
            lines.append(f'  {nid(_dataset_key(name))} [shape=ellipse, label="{_esc(text)}"];')
        for u, v, data in self._graph.edges():
            conn: ResolvedConnection = data["connection"]
            if conn.automatic:
                continue
            style = ""
            if conn.prerequisite:
                style = ' [style=dashed, color="gray40"]' if conn.is_calibration else " [style=dashed]"
            lines.append(f"  {nid(u)} -> {nid(v)}{style};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _automatic_only(self, name: str) -> bool:
        edges = self._edges_by_dataset.get(name, [])
        return (
            bool(edges)
            and all(e.automatic for e in edges if e.is_output)
            and not any(not e.is_output for e in edges)
        )

    def to_text(self, *, show_automatic: bool = False) -> str:
        """Draw the graph as a Unicode DAG, one node per line (``■`` task, ``○`` dataset type).

        Parameters
        ----------
        show_automatic : `bool`
            Include the ``_metadata``/``_log``/``_config`` datasets nobody reads.

        Returns
        -------
        text : `str`
        """
        keys = []
        for key in self._sorted_keys():
            if key[0] == "dataset" and not show_automatic and self._automatic_only(key[1]):
                continue
            keys.append(key)
        keep = set(keys)
        succ = {k: [s for s in self._ordered_successors(k) if s in keep] for k in keys}
        labels = {}
        for key in keys:
            if key[0] == "task":
                node = self.tasks[key[1]]
                labels[key] = f"■ {key[1]}: {node.task_class.__name__} {_fmt_dims(node.dimensions)}"
            else:
                d = self.dataset_types[key[1]]
                tags = []
                if d.is_prerequisite:
                    tags.append("prerequisite")
                if d.is_calibration:
                    tags.append("calibration")
                tag = f" [{', '.join(tags)}]" if tags else ""
                labels[key] = f"○ {key[1]} {_fmt_dims(d.dimensions)} {d.storage_class}{tag}"
        return _draw_dag(keys, succ, labels)

    def to_task_text(self) -> str:
        """Draw only the tasks as a Unicode DAG (``pipetask build --show task-graph``).

        An edge goes from a task to every task reading one of its outputs.

        Returns
        -------
        text : `str`
        """
        succ: dict[str, list[str]] = {}
        for label, node in self.tasks.items():
            targets: list[str] = []
            for conn in node.all_outputs.values():
                targets += [c for c in self.dataset_types[conn.dataset_type_name].consumers if c not in targets]
            succ[label] = targets
        labels = {lb: f"■ {lb}: {n.task_class.__name__} {_fmt_dims(n.dimensions)}" for lb, n in self.tasks.items()}
        return _draw_dag(list(self.tasks), succ, labels)

    def _sorted_keys(self) -> list[tuple[str, str]]:
        order = {label: i for i, label in enumerate(self.tasks)}

        def sort_key(k: tuple[str, str]) -> tuple[int, int, str]:
            if k[0] == "task":
                return (order[k[1]], 0, "")
            d = self.dataset_types[k[1]]
            if d.producer is not None:
                return (order[d.producer], 1, k[1])
            return (min((order[c] for c in d.consumers), default=0), -1, k[1])

        return self._graph.topological_sort(key=sort_key) or list(self._graph.nodes)

    def _ordered_successors(self, key: tuple[str, str]) -> list[tuple[str, str]]:
        return list(self._graph.succ[key])


def _draw_dag(keys: list[Any], succ: Mapping[Any, list[Any]], labels: Mapping[Any, str]) -> str:
    """Render nodes in the given (topological) order with box-drawing lanes, like ``git log --graph``.

    Each lane carries one edge down to the node it names; a node sits in the leftmost lane pointing
    at it, other lanes pointing at it merge from the right (``╯``), and extra out-edges branch off
    to the right (``╮``).
    """
    position = {k: i for i, k in enumerate(keys)}
    lanes: list[Any] = []
    out: list[str] = []

    def free_lane(after: int) -> int:
        for i in range(after + 1, len(lanes)):
            if lanes[i] is None:
                return i
        lanes.append(None)
        return len(lanes) - 1

    for key in keys:
        mine = [i for i, t in enumerate(lanes) if t == key]
        if not mine:
            col = lanes.index(None) if None in lanes else len(lanes)
            if col == len(lanes):
                lanes.append(None)
            lanes[col] = key
            mine = [col]
        col = mine[0]
        if len(mine) > 1:  # lanes converging into col from the right
            last = mine[-1]
            row = [("│ " if t is not None else "  ") for t in lanes]
            row[col] = "├─"
            for i in range(col + 1, last + 1):
                if i in mine:
                    row[i] = "╯ " if i == last else "┴─"
                else:
                    row[i] = "┼─" if lanes[i] is not None else "──"
            out.append("".join(row).rstrip())
            for i in mine[1:]:
                lanes[i] = None
            while lanes and lanes[-1] is None:
                lanes.pop()
        row = [("│ " if t is not None else "  ") for t in lanes]
        symbol, text = labels[key].split(" ", 1)
        row[col] = symbol + " "
        out.append("".join(row) + " " + text)
        # The target that leads on (has successors) keeps this lane; leaves branch off to the right.
        targets = sorted(succ.get(key, []), key=lambda t: (not succ.get(t), position[t]))
        lanes[col] = targets[0] if targets else None
        new_cols = []
        for t in targets[1:]:
            c = free_lane(col)
            lanes[c] = t
            new_cols.append(c)
        if new_cols:
            hi = max(new_cols)
            row = [("│ " if t is not None else "  ") for t in lanes]
            row[col] = "├─"
            for i in range(col + 1, hi + 1):
                if i in new_cols:
                    row[i] = "╮ " if i == hi else "┬─"
                else:
                    row[i] = "┼─" if lanes[i] is not None else "──"
            out.append("".join(row).rstrip())
        while lanes and lanes[-1] is None:
            lanes.pop()
    return "\n".join(out) + "\n"


def _fmt_dims(dims: Iterable[str]) -> str:
    return "(" + ", ".join(dims) + ")"


def _esc(text: str) -> str:
    return text.replace('"', '\\"')


def make_task_node(label: str, task_class: type, task_class_name: str, config: Config) -> TaskNode:
    """Resolve one task's connections into a `TaskNode` (freezes ``config``).

    Parameters
    ----------
    label : `str`
        Task label.
    task_class : `type`
        The task class.
    task_class_name : `str`
        Its dotted path.
    config : `~pipeline.config.Config`
        Its config (overrides applied).

    Returns
    -------
    node : `TaskNode`

    Raises
    ------
    PipelineDefinitionError
        If the class is not a PipelineTask with a ``ConfigClass`` declared with ``pipelineConnections=``.
    PipelineGraphError
        For unknown dimension names.
    ConfigError
        If the connections cannot be resolved from the config (e.g. a template without value).
    """
    conn_class = getattr(type(config), "ConnectionsClass", None)
    if conn_class is None or not hasattr(task_class, "runQuantum"):
        raise PipelineDefinitionError(
            f"task '{label}': {task_class_name} is not a PipelineTask whose ConfigClass is declared with "
            "pipelineConnections= (needed to know its inputs and outputs)"
        )
    try:
        connections = conn_class(config=config)
    except ConfigError as exc:
        raise ConfigError(f"task '{label}': {exc}", label=label, field=exc.field) from None
    except Exception as exc:  # noqa: BLE001 - a bug in the task's connections: one clear error
        raise PipelineDefinitionError(
            f"task '{label}': {conn_class.__name__}(config=...) failed with {type(exc).__name__}: {exc}"
        ) from None
    config.freeze()
    where = f"task '{label}': "
    dims = sort_dimensions(connections.dimensions, where=where + "quantum dimensions: ")
    closure = set(dimension_closure(dims))
    kinds = {
        "inputs": "input",
        "prerequisiteInputs": "prerequisite",
        "outputs": "output",
        "initInputs": "init_input",
        "initOutputs": "init_output",
    }
    resolved: dict[str, dict[str, ResolvedConnection]] = {k: {} for k in kinds.values()}
    problems = []
    for attr, kind in kinds.items():
        for conn_name, conn in connections.iter_kind(attr):
            cdims = (
                ()
                if kind.startswith("init")
                else sort_dimensions(conn.dimensions, where=f"{where}connection '{conn_name}': ")
            )
            if cdims and not conn.multiple and not set(cdims) <= closure:
                extra = [d for d in cdims if d not in closure]
                problems.append(
                    f"{where}connection '{conn_name}' (dataset type '{conn.name}') has dimensions "
                    f"{_fmt_dims(cdims)} beyond the task's {_fmt_dims(dims)} ({', '.join(extra)}) but is not "
                    "multiple=True, so a quantum could match several datasets"
                )
            resolved[kind][conn_name] = ResolvedConnection(
                task_label=label,
                connection_name=conn_name,
                kind=kind,
                dataset_type_name=conn.name,
                dimensions=cdims,
                storage_class=conn.storageClass,
                is_calibration=bool(isinstance(conn, cT.DimensionedConnection) and conn.isCalibration),
                multiple=conn.multiple,
                minimum=conn.minimum if isinstance(conn, cT.BaseInput) else 1,
                defer_load=isinstance(conn, cT.BaseInput) and conn.deferLoad,
                defer_graph_constraint=isinstance(conn, cT.Input) and conn.deferGraphConstraint,
                lookup_function=conn.lookupFunction if isinstance(conn, cT.PrerequisiteInput) else None,
                doc=conn.doc,
            )
    if problems:
        raise PipelineGraphError(
            problems[0]
            if len(problems) == 1
            else f"{len(problems)} connection errors:\n  - " + "\n  - ".join(problems)
        )
    auto = functools.partial(ResolvedConnection, task_label=label, automatic=True)
    return TaskNode(
        label=label,
        task_class=task_class,
        task_class_name=task_class_name,
        config=config,
        connections=connections,
        dimensions=dims,
        inputs=resolved["input"],
        prerequisite_inputs=resolved["prerequisite"],
        outputs=resolved["output"],
        init_inputs=resolved["init_input"],
        init_outputs=resolved["init_output"],
        metadata_output=auto(
            connection_name=METADATA_CONNECTION,
            kind="output",
            dataset_type_name=f"{label}_metadata",
            dimensions=dims,
            storage_class="TaskMetadata",
            doc="Task metadata of the quantum.",
        ),
        log_output=None
        if not getattr(config, "saveLogOutput", True)
        else auto(
            connection_name=LOG_CONNECTION,
            kind="output",
            dataset_type_name=f"{label}_log",
            dimensions=dims,
            storage_class="ButlerLogRecords",
            doc="Log records of the quantum.",
        ),
        config_output=auto(
            connection_name=CONFIG_CONNECTION,
            kind="init_output",
            dataset_type_name=f"{label}_config",
            dimensions=(),
            storage_class="Config",
            doc="The task's frozen config.",
        ),
    )


# ------------------------------------------------------------------------- task selection


def select_tasks(graph: PipelineGraph, expression: str) -> list[str]:
    """Select task labels with a pipeline-graph expression (``pipetask --select-tasks``).

    Grammar, loosest binding first: ``A | B`` (union), ``A & B`` (intersection), ``~A`` (complement),
    then terms: a task label, dataset type name or subset name (prefix ``T:``, ``D:`` or ``S:`` to
    say which when a name is ambiguous), ``<X`` / ``<=X`` (everything upstream of X, without / with
    X), ``>X`` / ``>=X`` (downstream), and parentheses. Follows pipe_base's expression language.

    Parameters
    ----------
    graph : `PipelineGraph`
        The graph to select from.
    expression : `str`
        E.g. ``"<=cpPtcSolve & ~isr"``, ``">=postISRCCD"``, ``"step1 | combine"``.

    Returns
    -------
    labels : `list` [`str`]
        Selected task labels in topological order (dataset types in the result are dropped).

    Raises
    ------
    PipelineDefinitionError
        For a syntax error or an unknown name (close matches suggested).
    """
    import re

    subsets = graph.task_subsets
    tokens = re.findall(
        r"\s*(<=|>=|[<>|&~()]|[A-Za-z_][A-Za-z0-9_.]*(?::[A-Za-z_][A-Za-z0-9_.]*)?|\S)", expression
    )
    pos = 0
    everything = set(graph._graph.nodes)

    def error(msg: str) -> PipelineDefinitionError:
        return PipelineDefinitionError(f"--select-tasks {expression!r}: {msg}")

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise error("unexpected end of expression")
        pos += 1
        return tokens[pos - 1]

    def name_nodes(name: str) -> set[Any]:
        kind, sep, bare = name.partition(":")
        if not sep:
            kind, bare = "", name
        found: set[Any] = set()
        if kind in ("", "T") and bare in graph.tasks:
            found.add(_task_key(bare))
        if kind in ("", "D") and bare in graph.dataset_types:
            found.add(_dataset_key(bare))
        if kind in ("", "S") and bare in subsets and not found:
            found.update(_task_key(lb) for lb in subsets[bare] if lb in graph.tasks)
        if kind not in ("", "T", "D", "S"):
            raise error(f"unknown prefix {kind!r} (use T: for tasks, D: for dataset types, S: for subsets)")
        if not found:
            choices = list(graph.tasks) + list(graph.dataset_types) + list(subsets)
            import difflib  # imported for a "did you mean" hint only

            close = difflib.get_close_matches(bare, choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise error(f"{bare!r} is not a task label, dataset type or subset{hint}")
        if kind == "" and _task_key(bare) in found and _dataset_key(bare) in found:
            raise error(f"{bare!r} is both a task label and a dataset type; write T:{bare} or D:{bare}")
        return found

    def term() -> set[Any]:
        tok = take()
        if tok == "(":
            value = union()
            if peek() != ")":
                raise error("missing ')'")
            take()
            return value
        if tok == "~":
            return everything - term()
        if tok in ("<", "<=", ">", ">="):
            nodes = name_nodes(take())
            out: set[Any] = set(nodes) if tok.endswith("=") else set()
            for node in nodes:
                out |= graph._graph.reachable(node, forward=tok.startswith(">"))
            return out
        if tok in ("|", "&", ")"):
            raise error(f"unexpected {tok!r}")
        return name_nodes(tok)

    def intersection() -> set[Any]:
        value = term()
        while peek() == "&":
            take()
            value &= term()
        return value

    def union() -> set[Any]:
        value = intersection()
        while peek() == "|":
            take()
            value |= intersection()
        return value

    if not tokens:
        raise error("empty expression")
    result = union()
    if pos != len(tokens):
        raise error(f"unexpected {tokens[pos]!r}")
    return [label for label in graph.tasks if _task_key(label) in result]
