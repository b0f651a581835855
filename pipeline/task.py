"""Tasks (``lsst.pipe.base.Task``/``PipelineTask``): config, logger, metadata, timers, subtasks.

A `Task` is thin glue around pure functions: it holds a frozen-able `~pipeline.config.Config`, a
`logging.Logger` named after its full name (``isr.overscan``), a `TaskMetadata` and its subtasks.
A `PipelineTask` adds ``run(**inputs) -> Struct`` (pure, no I/O) and ``runQuantum`` (I/O through
the `ButlerQuantumContext` the executor passes in).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from .config import Config, configurable_target
from .struct import Struct

__all__ = [
    "ButlerQuantumContext",
    "PipelineTask",
    "Task",
    "TaskMetadata",
    "timeMethod",
]


# ---------------------------------------------------------------------------- metadata
def _to_plain(value: Any) -> Any:
    """Convert a metadata value to a JSON-able one (numpy scalars/arrays, tuples, mappings)."""
    if isinstance(value, TaskMetadata):
        return value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        md = TaskMetadata()
        for k, v in value.items():
            md[str(k)] = v
        return md
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalar or array
        return _to_plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    raise TypeError(
        f"task metadata value {value!r} of type {type(value).__name__} is not JSON-able; "
        "store numbers, strings, lists or mappings"
    )


class TaskMetadata(MutableMapping[str, Any]):
    """Hierarchical task metadata: a nested mapping that serializes to JSON.

    Keys containing ``.`` address nested levels (``md["isr.overscanMean"]``); values are numbers,
    strings, booleans, `None`, lists of those, or nested `TaskMetadata` (a `dict` given as a value
    is converted). numpy scalars/arrays are converted to Python values on assignment.

    Parameters
    ----------
    data : `~collections.abc.Mapping`, optional
        Initial content.

    Raises
    ------
    TypeError
        When a value cannot be represented in JSON.
    """

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = {}
        if data:
            for key, value in data.items():
                self[key] = value

    def _split(self, key: str, create: bool) -> tuple[TaskMetadata, str]:
        if not isinstance(key, str) or not key:
            raise KeyError(f"task metadata keys must be non-empty strings, got {key!r}")
        node = self
        *parents, last = key.split(".")
        for part in parents:
            child = node._data.get(part)
            if not isinstance(child, TaskMetadata):
                if not create:
                    raise KeyError(key)
                child = TaskMetadata()
                node._data[part] = child
            node = child
        return node, last

    def __getitem__(self, key: str) -> Any:
        node, last = self._split(key, False)
        return node._data[last]

    def __setitem__(self, key: str, value: Any) -> None:
        node, last = self._split(key, True)
        node._data[last] = _to_plain(value)

    def __delitem__(self, key: str) -> None:
        node, last = self._split(key, False)
        del node._data[last]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except (KeyError, TypeError):
            return False
        return True

    def add(self, name: str, value: Any) -> None:
        """Append ``value`` to the list stored at ``name`` (creating it; a scalar becomes a list).

        Parameters
        ----------
        name : `str`
            Key, possibly dotted.
        value : `object`
            Value to append.
        """
        if name in self:
            current = self[name]
            if not isinstance(current, list):
                current = [current]
            current.append(_to_plain(value))
            node, last = self._split(name, True)
            node._data[last] = current
        else:
            self[name] = [value]

    def get_array(self, name: str) -> list[Any]:
        """Return the value at ``name`` as a list (a scalar becomes a one-element list)."""
        value = self[name]
        return list(value) if isinstance(value, list) else [value]

    def get_scalar(self, name: str) -> Any:
        """Return the value at ``name``; for a list, its last element."""
        value = self[name]
        return value[-1] if isinstance(value, list) else value

    getArray = get_array  # noqa: N815 - the lsst.pipe.base.TaskMetadata spelling
    getScalar = get_scalar  # noqa: N815

    def names(self) -> set[str]:
        """All full (dotted) keys of leaves."""
        out: set[str] = set()
        for key, value in self._data.items():
            if isinstance(value, TaskMetadata):
                out.update(f"{key}.{n}" for n in value.names())
            else:
                out.add(key)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return nested plain dicts (JSON-able)."""
        return {k: v.to_dict() if isinstance(v, TaskMetadata) else v for k, v in self._data.items()}

    def to_json(self) -> str:
        """Serialize to a JSON string (NaN/inf are written as JSON's NaN/Infinity)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskMetadata:
        """Build from `to_dict` output (nested mappings become nested `TaskMetadata`)."""
        md = cls()
        for key, value in data.items():
            md._data[key] = _to_plain(value)
        return md

    @classmethod
    def from_json(cls, text: str) -> TaskMetadata:
        """Parse `to_json` output."""
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TaskMetadata):
            return self.to_dict() == other.to_dict()
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"TaskMetadata({self.to_dict()!r})"


def _rusage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux, bytes on macOS
    return {
        "UserTime": usage.ru_utime,
        "SystemTime": usage.ru_stime,
        "MaxResidentSetSize": usage.ru_maxrss * scale,
    }


def record_time(metadata: TaskMetadata, prefix: str) -> None:
    """Record UTC time, wall clock, CPU, user, system time and max RSS under ``<prefix>*``.

    Parameters
    ----------
    metadata : `TaskMetadata`
        Where to store the values.
    prefix : `str`
        Key prefix, e.g. ``"runStart"``: writes ``runStartUtc`` (ISO, UTC), ``runStartWallTime``
        (s, `time.time`), ``runStartCpuTime`` (s, process), ``runStartUserTime``,
        ``runStartSystemTime`` (s) and ``runStartMaxResidentSetSize`` (bytes).
    """
    now = time.time()
    metadata[f"{prefix}Utc"] = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat()
    metadata[f"{prefix}WallTime"] = now
    metadata[f"{prefix}CpuTime"] = time.process_time()
    for key, value in _rusage().items():
        metadata[f"{prefix}{key}"] = value


# -------------------------------------------------------------------------------- tasks
class Task:
    """Base class of tasks: config, logger, metadata, timers and subtasks.

    Parameters
    ----------
    config : `~pipeline.config.Config`, optional
        Configuration; defaults to ``ConfigClass()`` (or, for a subtask, the parent config's field
        named ``name``).
    name : `str`, optional
        Task name; defaults to ``_DefaultName``. Required for a subtask.
    parentTask : `Task`, optional
        Parent task when this is a subtask.
    log : `logging.Logger`, optional
        Parent logger; the task logs to a child named after its full name.

    Raises
    ------
    RuntimeError
        If no name can be determined.
    TypeError
        If ``config`` is not a `~pipeline.config.Config`.
    """

    ConfigClass: ClassVar[type[Config]] = Config
    _DefaultName: ClassVar[str | None] = None

    config: Config
    log: logging.Logger
    _name: str
    _fullName: str
    _taskDict: dict[str, Task]

    def __init__(
        self,
        config: Config | None = None,
        *,
        name: str | None = None,
        parentTask: Task | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.metadata = TaskMetadata()
        self._parentTask = parentTask
        if parentTask is not None:
            if name is None:
                raise RuntimeError(f"{type(self).__name__}: a subtask needs a name")
            self._name = name
            self._fullName = f"{parentTask._fullName}.{name}"
            if config is None:
                config = getattr(parentTask.config, name)
            self._taskDict = parentTask._taskDict
            self.log = parentTask.log.getChild(name)
        else:
            if name is None:
                name = getattr(self, "_DefaultName", None)
                if name is None:
                    raise RuntimeError(f"{type(self).__name__} has no _DefaultName; pass name=")
            self._name = name
            self._fullName = name
            if config is None:
                config = self.ConfigClass()
            self._taskDict = {}
            if log is None:
                self.log = logging.getLogger(name)
            elif log.name == name or not log.name or log.name == "root":
                self.log = log if log.name == name else logging.getLogger(name)
            else:
                self.log = log.getChild(name)
        if not isinstance(config, Config):
            raise TypeError(
                f"{type(self).__name__}: config must be a Config instance, got {type(config).__name__}"
            )
        if not isinstance(config, self.ConfigClass):
            raise TypeError(
                f"{type(self).__name__}: config must be a {self.ConfigClass.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self._taskDict[self._fullName] = self

    # ----------------------------------------------------------------- names and subtasks
    def getName(self) -> str:
        """Return the task's own name (last component of the full name)."""
        return self._name

    def getFullName(self) -> str:
        """Return the hierarchical name, e.g. ``isr.overscan``."""
        return self._fullName

    def getTaskDict(self) -> dict[str, Task]:
        """Return a shallow copy of full name → task for this task tree."""
        return dict(self._taskDict)

    def makeSubtask(self, name: str, **kwargs: Any) -> Task:
        """Create the subtask configured by ``self.config.<name>`` as ``self.<name>``.

        Parameters
        ----------
        name : `str`
            Name of a `~pipeline.config.ConfigurableField` of this task's config.
        **kwargs
            Extra keyword arguments for the subtask constructor.

        Returns
        -------
        subtask : `Task`
            The subtask (also stored as an attribute).

        Raises
        ------
        ConfigError
            If the config has no such subtask field.
        """
        target = configurable_target(self.config, name)
        subtask = target(config=getattr(self.config, name), name=name, parentTask=self, **kwargs)
        setattr(self, name, subtask)
        return subtask

    @classmethod
    def makeField(cls, doc: str) -> Any:
        """Return a `~pipeline.config.ConfigurableField` targeting this task."""
        from .config import ConfigurableField

        return ConfigurableField(cls, description=doc)

    # --------------------------------------------------------------------------- metadata
    def emptyMetadata(self) -> None:
        """Clear the metadata of this task and all its subtasks."""
        for task in self._taskDict.values():
            if task._fullName == self._fullName or task._fullName.startswith(self._fullName + "."):
                task.metadata = TaskMetadata()

    def getFullMetadata(self) -> TaskMetadata:
        """Return the metadata of this task and all subtasks.

        Returns
        -------
        metadata : `TaskMetadata`
            Keys are full task names with ``.`` replaced by ``:`` (``isr:overscan``).
        """
        full = TaskMetadata()
        for full_name, task in self._taskDict.items():
            if full_name == self._fullName or full_name.startswith(self._fullName + "."):
                full._data[full_name.replace(".", ":")] = task.metadata
        return full

    @contextlib.contextmanager
    def timer(self, name: str, logLevel: int = logging.DEBUG) -> Iterator[None]:
        """Time a block: records start/end UTC, wall, CPU, user, system time and max RSS.

        Parameters
        ----------
        name : `str`
            Prefix of the metadata keys: ``<name>StartUtc``, ``<name>EndCpuTime``,
            ``<name>EndMaxResidentSetSize`` (bytes), ... and ``<name>Duration`` (wall s).
        logLevel : `int`
            Level of the log line giving the duration.
        """
        record_time(self.metadata, f"{name}Start")
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            record_time(self.metadata, f"{name}End")
            self.metadata[f"{name}Duration"] = elapsed
            self.metadata[f"{name}CpuDuration"] = (
                self.metadata[f"{name}EndCpuTime"] - self.metadata[f"{name}StartCpuTime"]
            )
            self.log.log(logLevel, "%s took %.3f s", name, elapsed)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._fullName!r}>"


_F = TypeVar("_F", bound=Callable[..., Any])


def timeMethod(func: _F) -> _F:
    """Decorate a task method so that each call is timed with `Task.timer` (``lsst.utils.timer``)."""

    @functools.wraps(func)
    def wrapper(self: Task, *args: Any, **kwargs: Any) -> Any:
        with self.timer(func.__name__):
            return func(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------- pipeline tasks
@runtime_checkable
class ButlerQuantumContext(Protocol):
    """What ``runQuantum`` may call on the ``butlerQC`` the executor passes in.

    `pipeline.execution.butler_qc.ButlerQuantumContext` implements it over a `~butler.QuantumBackedButler`.

    Attributes
    ----------
    quantum : `object`
        The quantum being run; ``quantum.data_id`` is its `~butler.DataCoordinate`.
    repo_root : `pathlib.Path`
        Root of the repository.
    """

    quantum: Any
    repo_root: Any

    def get(self, ref: Any) -> Any:
        """Read datasets.

        One ref → object; a list of refs → list of objects; an
        `~pipeline.connections.InputQuantizedConnection` → dict connection name → object(s).
        """

    def put(self, obj: Any, ref: Any) -> None:
        """Write datasets.

        An object to one ref; a list of objects to a list of refs; a `Struct` to an
        `~pipeline.connections.OutputQuantizedConnection` (field name = connection name).
        """


class PipelineTask(Task):
    """A task run by the pipeline framework on quanta.

    Parameters
    ----------
    config : `~pipeline.connections.PipelineTaskConfig`, optional
        Configuration (default ``ConfigClass()``).
    log : `logging.Logger`, optional
        Parent logger.
    initInputs : `dict` [`str`, `object`], optional
        Init-input connection name → object, read by the executor before construction.
    **kwargs
        Passed to `Task` (``name``, ``parentTask``).
    """

    canMultiprocess: ClassVar[bool] = True

    def __init__(
        self,
        *,
        config: Config | None = None,
        log: logging.Logger | None = None,
        initInputs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config=config, log=log, **kwargs)

    def run(self, **inputs: Any) -> Struct:
        """Process in-memory inputs and return a `Struct` whose fields are the output connections.

        Raises
        ------
        NotImplementedError
            Subclasses must implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement run()")

    def runQuantum(self, butlerQC: ButlerQuantumContext, inputRefs: Any, outputRefs: Any) -> None:
        """Read every input, call `run`, write each result field to the output of the same name.

        Parameters
        ----------
        butlerQC : `ButlerQuantumContext`
            I/O for this quantum.
        inputRefs : `~pipeline.connections.InputQuantizedConnection`
            Connection name → `DatasetRef` or list of refs.
        outputRefs : `~pipeline.connections.OutputQuantizedConnection`
            Connection name → `DatasetRef` or list of refs.

        Raises
        ------
        RuntimeError
            If ``run`` returns something other than a `Struct`, or a `Struct` lacking a field for
            an output connection.
        """
        inputs = {name: butlerQC.get(refs) for name, refs in inputRefs}
        outputs = self.run(**inputs)
        if not isinstance(outputs, Struct):
            raise RuntimeError(
                f"{type(self).__name__}.run() must return a Struct, got {type(outputs).__name__}"
            )
        values = outputs.getDict()
        for name, refs in outputRefs:
            if name not in values:
                raise RuntimeError(
                    f"{type(self).__name__}.run() returned no field {name!r} for output connection {name!r} "
                    f"(fields: {', '.join(sorted(values)) or 'none'})"
                )
            obj = values[name]
            if isinstance(refs, Sequence) and not isinstance(refs, (str, bytes)):
                if not isinstance(obj, Sequence) or len(obj) != len(refs):
                    raise RuntimeError(
                        f"{type(self).__name__}.run(): output {name!r} has {len(refs)} refs but the "
                        f"returned value is not a sequence of that length"
                    )
            butlerQC.put(obj, refs)
