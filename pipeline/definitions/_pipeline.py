"""Pipeline definitions read from YAML (``lsst.pipe.base.pipelineIR`` / ``Pipeline``).

A pipeline file::

    description: Combine biases.                     # required
    instrument: kast_blue                            # optional; applies instrument config overrides
    parameters: {nSigma: 5.0}                        # referenced as "parameters.nSigma" in config
    imports:                                         # optional; alias "inherits"
      - location: $CCDFLOW_PIPELINES/_ingredients/isr.yaml   # env vars expanded; relative to this file
        exclude: [amp]                               # or include: [...]; labels or subset names
        importContracts: true
        labeledSubsetModifyMode: DROP                # DROP (default) or EDIT subsets losing a label
    tasks:
      isr:
        class: pipeline.tasks.isr.IsrTask
        config:                                      # a mapping, or a list of blocks:
          - doDark: false
          - file: overrides.yaml                     # YAML mapping, or .py "config.x = value" lines
          - python: "config.overscan.order = 3"      # restricted: only literal assignments
          - dataId: {detector: 1}                    # block applies only to matching quanta
            overscan.fitType: MEAN
      combine: pipeline.tasks.cp.CalibCombineTask    # short form
    subsets:
      step1: {subset: [isr], description: ISR only} # or a bare list
    contracts:
      - contract: "isr.doBias == combine.doBias"     # evaluated safely over the label configs
        msg: ISR and combine must agree on bias.

Select part of a pipeline with ``file.yaml#subset`` or ``file.yaml#label1,label2``.

Config override sources, in the order applied to each task: the class defaults, the instrument's
``pipeline/instruments/<instrument>/<label>.yaml`` (or ``<_DefaultName>.yaml``), then the config blocks
in order (imported ones first, then this file's, then the command line ``-c``/``-C``). All sources of
a task are validated together, so a cross-field rule sees the final values.

Override files (``file:`` and ``-C label:file``) are either YAML mappings (dotted or nested field
names → values) or Python files whose statements are only ``config.<field path> = <literal>`` (or
``config.<dict field>["key"] = <literal>``); they are parsed, never executed.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import importlib.util
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from ..config import (
    Config,
    Configurable,
    apply_overrides,
    import_dotted,
    parse_override_file,
    parse_python_overrides,
)
from ..exceptions import ContractError, PipelineDefinitionError
from ..pipeline_graph import PipelineGraph, make_task_node
from ._instrument import builtin_instrument_names, find_instrument

__all__ = [
    "ConfigBlock",
    "Contract",
    "LabeledSubset",
    "Pipeline",
    "TaskSpec",
    "evaluate_contract",
    "find_pipeline_file",
]

_TOP_KEYS = (
    "description",
    "instrument",
    "parameters",
    "imports",
    "inherits",
    "tasks",
    "subsets",
    "contracts",
    "steps",
)
_TASK_KEYS = ("class", "config")
_IMPORT_KEYS = (
    "location",
    "include",
    "exclude",
    "importContracts",
    "importSubsets",
    "importSteps",
    "labeledSubsetModifyMode",
    "instrument",
)
_PARAM_RE = re.compile(r"^parameters\.([A-Za-z_][A-Za-z0-9_]*)$")


def _suggest(name: str, allowed: Iterable[str]) -> str:
    import difflib  # imported for a "did you mean" hint only

    close = difflib.get_close_matches(name, list(allowed), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _check_keys(where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            raise PipelineDefinitionError(
                f"{where}: unknown key {key!r}{_suggest(str(key), allowed)} (allowed: {', '.join(allowed)})"
            )


# ------------------------------------------------------------------------ data classes
@dataclasses.dataclass
class ConfigBlock:
    """One block of config overrides of a task.

    Attributes
    ----------
    values : `dict`
        Field path → value (values ``"parameters.NAME"`` are substituted).
    files : `list` [`str`]
        Override files (absolute paths), applied before ``values``.
    python : `str` or `None`
        Restricted Python overrides, applied after ``files``.
    data_id : `dict` or `None`
        When set, the block applies only to quanta whose data ID matches every key.
    origin : `str`
        Where the block comes from (file and block number, ``-c``, ``-C``), for ``--show history``.
    """

    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    files: list[str] = dataclasses.field(default_factory=list)
    python: str | None = None
    data_id: dict[str, Any] | None = None
    origin: str = dataclasses.field(default="", compare=False)

    def to_yaml_obj(self) -> dict[str, Any]:
        """Return the block as written in a pipeline file."""
        out: dict[str, Any] = {}
        if self.data_id is not None:
            out["dataId"] = dict(self.data_id)
        if self.files:
            out["file"] = list(self.files)
        if self.python:
            out["python"] = self.python
        out.update(self.values)
        return out

    def matches(self, data_id: Mapping[str, Any] | None) -> bool:
        """Whether this block applies to a quantum with ``data_id`` (`None`: the base config)."""
        if self.data_id is None:
            return True
        if data_id is None:
            return False
        for key, value in self.data_id.items():
            try:
                actual = data_id[key]
            except (KeyError, TypeError):
                return False
            if str(actual) != str(value):
                return False
        return True


@dataclasses.dataclass
class TaskSpec:
    """A task entry of a pipeline: label, class path and config blocks."""

    label: str
    class_name: str
    config: list[ConfigBlock] = dataclasses.field(default_factory=list)

    def to_yaml_obj(self) -> dict[str, Any]:
        """Return the entry as written in a pipeline file."""
        out: dict[str, Any] = {"class": self.class_name}
        if self.config:
            out["config"] = [b.to_yaml_obj() for b in self.config]
        return out


@dataclasses.dataclass
class LabeledSubset:
    """A named group of task labels."""

    name: str
    labels: list[str]
    description: str = ""


@dataclasses.dataclass
class Contract:
    """A Python expression over ``<label>.<field>`` that must hold (``msg`` explains it)."""

    contract: str
    msg: str = ""


# --------------------------------------------------------------------------- contracts
_SAFE_CALLS: dict[str, Callable[..., Any]] = {
    "len": len,
    "abs": abs,
    "min": min,
    "max": max,
    "any": any,
    "all": all,
    "set": set,
    "round": round,
    "sorted": sorted,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "sum": sum,
    "tuple": tuple,
    "list": list,
}
_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}
_CMPOPS = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: lambda a, b: a is b,
    ast.IsNot: lambda a, b: a is not b,
}


def contract_labels(expression: str) -> set[str]:
    """Return the bare names used in a contract expression (task labels and builtins)."""
    return {n.id for n in ast.walk(ast.parse(expression, mode="eval")) if isinstance(n, ast.Name)}


def evaluate_contract(expression: str, namespace: Mapping[str, Any]) -> Any:
    """Evaluate a contract expression without `eval`: only a safe subset of Python.

    Parameters
    ----------
    expression : `str`
        E.g. ``"isr.doBias and combine.combine == 'MEAN'"``.
    namespace : `~collections.abc.Mapping`
        Name → object (task label → config).

    Returns
    -------
    value : `object`
        The expression's value.

    Raises
    ------
    ContractError
        For a syntax error, a disallowed construct (private attributes, arbitrary calls, lambdas,
        comprehensions ...), or an unknown name.
    """
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ContractError(f"contract {expression!r} is not a valid expression: {exc.msg}") from None

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in namespace:
                return namespace[node.id]
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            raise ContractError(
                f"contract {expression!r}: unknown name {node.id!r}"
                f"{_suggest(node.id, namespace)} (task labels: {', '.join(namespace)})"
            )
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                raise ContractError(f"contract {expression!r}: private attribute {node.attr!r} not allowed")
            obj = ev(node.value)
            if isinstance(obj, Config) and node.attr not in type(obj).model_fields:
                raise ContractError(
                    f"contract {expression!r}: {type(obj).__name__} has no field "
                    f"{node.attr!r}{_suggest(node.attr, type(obj).model_fields)}"
                )
            if isinstance(obj, Mapping) and not isinstance(obj, Config):
                return obj[node.attr]
            return getattr(obj, node.attr)
        if isinstance(node, ast.Subscript):
            return ev(node.value)[ev(node.slice)]
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                result: Any = True
                for v in node.values:
                    result = ev(v)
                    if not result:
                        return result
                return result
            result = False
            for v in node.values:
                result = ev(v)
                if result:
                    return result
            return result
        if isinstance(node, ast.UnaryOp):
            operand = ev(node.operand)
            if isinstance(node.op, ast.Not):
                return not operand
            if isinstance(node.op, ast.USub):
                return -operand
            if isinstance(node.op, ast.UAdd):
                return +operand
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return ev(node.body) if ev(node.test) else ev(node.orelse)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = [ev(e) for e in node.elts]
            return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
        if isinstance(node, ast.Dict):
            return {ev(k): ev(v) for k, v in zip(node.keys, node.values) if k is not None}
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _SAFE_CALLS
            and node.func.id not in namespace
            and not node.keywords
        ):
            return _SAFE_CALLS[node.func.id](*[ev(a) for a in node.args])
        raise ContractError(
            f"contract {expression!r}: {type(node).__name__} is not allowed in contracts "
            "(use comparisons, and/or/not, arithmetic, attribute access and "
            f"{', '.join(sorted(_SAFE_CALLS))})"
        )

    try:
        return ev(tree)
    except ContractError:
        raise
    except Exception as exc:  # noqa: BLE001 - report any evaluation error as a contract error
        raise ContractError(
            f"contract {expression!r} could not be evaluated: {type(exc).__name__}: {exc}"
        ) from None


# -------------------------------------------------------------------------- pipeline
def pipeline_search_path() -> list[Path]:
    """Return the directories searched for relative pipeline paths.

    ``$CCDFLOW_PIPELINE_PATH`` (colon-separated) first, then ccdflow's own pipelines: the
    directory of the ``pipelines`` package (package data of the ccdflow distribution, so it is
    there after a wheel, editable or source-checkout install alike).
    """
    dirs = [Path(p) for p in os.environ.get("CCDFLOW_PIPELINE_PATH", "").split(os.pathsep) if p]
    spec = importlib.util.find_spec("pipelines")
    if spec is not None and spec.submodule_search_locations:
        dirs.extend(Path(p) for p in spec.submodule_search_locations)
    return dirs


def find_pipeline_file(path_text: str) -> Path:
    """Resolve a pipeline path: as given (relative to the cwd), else in `pipeline_search_path`.

    Raises
    ------
    PipelineDefinitionError
        If it is found nowhere; the message lists the places searched.
    """
    path = Path(path_text)
    if path.exists() or path.is_absolute():
        return path.resolve()
    for directory in pipeline_search_path():
        candidate = directory / path
        if candidate.exists():
            return candidate.resolve()
    searched = ", ".join(str(d) for d in pipeline_search_path())
    raise PipelineDefinitionError(
        f"pipeline file {path_text!r} does not exist (looked in the current directory and in {searched})"
    )


def check_instrument_name(
    name: str, registered: Iterable[str] | None = None, *, repo: str | None = None, where: str = "instrument"
) -> None:
    """Refuse an instrument that is neither built in, a camera description file, nor registered.

    Parameters
    ----------
    name : `str`
        A pipeline's ``instrument:`` or ``--instrument`` value: an instrument name
        (``kast_blue``), a dotted path ending in one (``pipeline.instruments.megacam``, the LSST
        class-path form), or the path of a camera description YAML.
    registered : iterable of `str`, optional
        Instrument names registered in the repository the pipeline runs on. When given, the name
        must be one of them (a built-in name that is not registered there is refused too).
    repo : `str`, optional
        The repository, for the message.
    where : `str`
        What the value came from (``--instrument``, a pipeline file), for the message.

    Raises
    ------
    PipelineDefinitionError
        Naming the value, the known names (and the closest ones) and the fix.
    """
    text = str(name).strip()
    is_file = text.endswith((".yaml", ".yml"))
    bare = Path(text).stem if is_file else text.rsplit(".", 1)[-1]
    builtin = builtin_instrument_names()
    known = builtin if registered is None else sorted(set(registered))
    if text in known or bare in known or bare.lower() in known:
        return
    if registered is None and is_file and Path(text).is_file():
        return
    import difflib  # imported for a "did you mean" hint only

    close = difflib.get_close_matches(bare, known, n=3, cutoff=0.6) or difflib.get_close_matches(
        bare.lower(), known, n=3, cutoff=0.6
    )
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    if registered is not None:
        fix = (
            f"; register it with `butler register-instrument {repo or 'REPO'} {text}`"
            if bare in builtin or bare.lower() in builtin or (is_file and Path(text).is_file())
            else ""
        )
        raise PipelineDefinitionError(
            f"{where}: unknown instrument {text!r}{hint}: it is not registered in "
            f"{repo or 'the repository'} (registered: {', '.join(known) or 'none'}){fix}"
        )
    raise PipelineDefinitionError(
        f"{where}: unknown instrument {text!r}{hint}: known are the built-in instruments "
        f"({', '.join(builtin)}) and camera description files; an instrument registered from a "
        "camera YAML is known when pipetask runs on its repository (qgraph / run -b REPO)"
    )


def _substitute(value: Any, parameters: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        m = _PARAM_RE.match(value.strip())
        if m:
            name = m.group(1)
            if name not in parameters:
                raise PipelineDefinitionError(
                    f"{where}: unknown pipeline parameter {name!r}{_suggest(name, parameters)} "
                    f"(defined: {', '.join(parameters) or 'none'}); add it under 'parameters:'"
                )
            return copy.deepcopy(parameters[name])
        return value
    if isinstance(value, Mapping):
        return {k: _substitute(v, parameters, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, parameters, where) for v in value]
    return value


class Pipeline:
    """An ordered set of labelled tasks with their config overrides, subsets and contracts.

    Build with `Pipeline.from_file`, `Pipeline.from_string` or an empty ``Pipeline(description)``
    plus `add_task`; turn into a validated `~pipeline.pipeline_graph.PipelineGraph` with `to_graph`.

    Parameters
    ----------
    description : `str`
        What the pipeline does.
    """

    def __init__(self, description: str = "") -> None:
        self.description = description
        self.instrument: str | None = None
        self.parameters: dict[str, Any] = {}
        self.tasks: dict[str, TaskSpec] = {}
        self.subsets: dict[str, LabeledSubset] = {}
        self.contracts: list[Contract] = []
        self.steps: list[dict[str, Any]] = []
        self.source: str | None = None
        self._removed_labels: set[str] = set()
        self._config_cache: dict[tuple[Any, ...], Config] = {}

    # ---------------------------------------------------------------------- reading
    @classmethod
    def from_file(cls, uri: str | Path) -> Pipeline:
        """Read a pipeline file, optionally selecting ``#subset`` or ``#label1,label2``.

        Parameters
        ----------
        uri : `str` or `pathlib.Path`
            ``path.yaml``, ``path.yaml#name[,name...]``; environment variables are expanded. A
            relative path that does not exist is also looked up in ``$CCDFLOW_PIPELINE_PATH``
            (colon-separated) and in ccdflow's own ``pipelines/`` directory, so ``-p cpBias.yaml``
            works from anywhere.

        Returns
        -------
        pipeline : `Pipeline`
            With imports resolved.

        Raises
        ------
        PipelineDefinitionError
            For a missing file, invalid YAML, unknown keys, bad imports or an unknown selection.
        """
        text = str(uri)
        path_text, _, fragment = text.partition("#")
        path = find_pipeline_file(_expand(path_text, "pipeline path"))
        pipeline = cls._load(path, ())
        if fragment:
            pipeline = pipeline.subset([s.strip() for s in fragment.split(",") if s.strip()])
        return pipeline

    @classmethod
    def from_string(
        cls, text: str, *, base_dir: str | Path | None = None, name: str = "<string>"
    ) -> Pipeline:
        """Parse pipeline YAML text (relative imports/files resolve from ``base_dir``, default cwd)."""
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        return cls._from_data(_parse_yaml(text, name), base.resolve(), name, ())

    @classmethod
    def _load(cls, path: Path, stack: tuple[Path, ...]) -> Pipeline:
        if path in stack:
            chain = " -> ".join(str(p) for p in stack + (path,))
            raise PipelineDefinitionError(f"pipeline import cycle: {chain}")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PipelineDefinitionError(f"pipeline file {str(path)!r} does not exist") from None
        except UnicodeDecodeError as exc:
            raise PipelineDefinitionError(
                f"pipeline file {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                f"offset {exc.start}); save it as UTF-8"
            ) from None
        except OSError as exc:
            raise PipelineDefinitionError(
                f"cannot read pipeline file {str(path)!r}: {exc.strerror}"
            ) from None
        pipeline = cls._from_data(_parse_yaml(text, str(path)), path.parent, str(path), stack + (path,))
        pipeline.source = str(path)
        return pipeline

    @classmethod
    def _from_data(cls, data: Any, base: Path, where: str, stack: tuple[Path, ...]) -> Pipeline:
        if not isinstance(data, Mapping):
            raise PipelineDefinitionError(
                f"{where}: a pipeline file must be a YAML mapping with 'description' and 'tasks'"
            )
        _check_keys(where, data, _TOP_KEYS)
        if "description" not in data:
            raise PipelineDefinitionError(f"{where}: missing required key 'description'")
        pipeline = cls(str(data["description"]))
        # Imports first: their tasks, parameters, subsets and contracts are the base.
        imports = data.get("imports", data.get("inherits")) or []
        if "imports" in data and "inherits" in data:
            raise PipelineDefinitionError(f"{where}: use either 'imports' or 'inherits', not both")
        if not isinstance(imports, list):
            imports = [imports]
        origin: dict[str, str] = {}
        for entry in imports:
            pipeline._merge_import(entry, base, where, stack, origin)
        if data.get("instrument") is not None:
            pipeline.instrument = str(data["instrument"])
        params = data.get("parameters") or {}
        if not isinstance(params, Mapping):
            raise PipelineDefinitionError(f"{where}: 'parameters' must be a mapping of name to value")
        pipeline.parameters.update(params)
        tasks = data.get("tasks") or {}
        if not isinstance(tasks, Mapping):
            raise PipelineDefinitionError(f"{where}: 'tasks' must be a mapping of label to task")
        for label, entry in tasks.items():
            pipeline._read_task(str(label), entry, base, where)
        subsets = data.get("subsets") or {}
        if not isinstance(subsets, Mapping):
            raise PipelineDefinitionError(f"{where}: 'subsets' must be a mapping of name to labels")
        for name, entry in subsets.items():
            if isinstance(entry, Mapping):
                _check_keys(f"{where}: subset {name!r}", entry, ("subset", "description"))
                labels, desc = entry.get("subset") or [], str(entry.get("description", ""))
            else:
                labels, desc = entry, ""
            if not isinstance(labels, list):
                raise PipelineDefinitionError(f"{where}: subset {name!r} must list task labels")
            if name in pipeline.subsets:
                raise PipelineDefinitionError(
                    f"{where}: subset {name!r} is already defined by an import "
                    f"({origin.get('subset:' + str(name), 'unknown')})"
                )
            pipeline.subsets[str(name)] = LabeledSubset(str(name), [str(x) for x in labels], desc)
        for entry in data.get("contracts") or []:
            if isinstance(entry, str):
                pipeline.contracts.append(Contract(entry))
            elif isinstance(entry, Mapping) and "contract" in entry:
                _check_keys(f"{where}: contract", entry, ("contract", "msg"))
                pipeline.contracts.append(Contract(str(entry["contract"]), str(entry.get("msg", ""))))
            else:
                raise PipelineDefinitionError(f"{where}: each contract needs a 'contract' expression")
        steps = data.get("steps") or []
        if not isinstance(steps, list):
            raise PipelineDefinitionError(f"{where}: 'steps' must be a list of {{label, dimensions}}")
        pipeline.steps.extend(dict(s) for s in steps)
        pipeline._check_subsets(where)
        return pipeline

    def _read_task(self, label: str, entry: Any, base: Path, where: str) -> None:
        ctx = f"{where}: task {label!r}"
        if isinstance(entry, str):
            entry = {"class": entry}
        if not isinstance(entry, Mapping):
            raise PipelineDefinitionError(
                f"{ctx}: must be a class path or a mapping with 'class' and 'config'"
            )
        _check_keys(ctx, entry, _TASK_KEYS)
        class_name = entry.get("class")
        blocks = _read_config_blocks(entry.get("config"), base, ctx)
        if label in self.tasks:
            existing = self.tasks[label]
            if class_name is not None and str(class_name) != existing.class_name:
                raise PipelineDefinitionError(
                    f"{ctx}: class {class_name!r} differs from the imported task's class "
                    f"{existing.class_name!r}; omit 'class' to extend the imported task's config, or use "
                    "another label"
                )
            existing.config.extend(blocks)
            return
        if class_name is None:
            raise PipelineDefinitionError(
                f"{ctx}: missing 'class' (a dotted path such as pipeline.tasks.isr.IsrTask)"
            )
        self.tasks[label] = TaskSpec(label, str(class_name), blocks)

    def _merge_import(
        self, entry: Any, base: Path, where: str, stack: tuple[Path, ...], origin: dict[str, str]
    ) -> None:
        if isinstance(entry, str):
            entry = {"location": entry}
        if not isinstance(entry, Mapping) or "location" not in entry:
            raise PipelineDefinitionError(f"{where}: each import needs a 'location'")
        _check_keys(f"{where}: import", entry, _IMPORT_KEYS)
        location = _expand(str(entry["location"]), f"{where}: import location")
        path = Path(location)
        if not path.is_absolute():
            path = base / path
        path = path.resolve()
        if not path.exists():
            raise PipelineDefinitionError(
                f"{where}: imported pipeline {str(path)!r} does not exist (location {entry['location']!r})"
            )
        imported = Pipeline._load(path, stack)
        include, exclude = entry.get("include"), entry.get("exclude")
        if include is not None and exclude is not None:
            raise PipelineDefinitionError(
                f"{where}: import {entry['location']!r} has both include and exclude"
            )
        mode = str(entry.get("labeledSubsetModifyMode", "DROP")).upper()
        if mode not in ("DROP", "EDIT"):
            raise PipelineDefinitionError(
                f"{where}: labeledSubsetModifyMode must be DROP or EDIT, got {mode!r}"
            )
        if include is not None:
            keep = imported._expand_names(list(include), f"{where}: import {entry['location']!r} include")
            imported = imported._restrict(keep, mode)
        elif exclude is not None:
            drop = imported._expand_names(list(exclude), f"{where}: import {entry['location']!r} exclude")
            imported = imported._restrict([lb for lb in imported.tasks if lb not in drop], mode)
        for label, spec in imported.tasks.items():
            if label in self.tasks:
                raise PipelineDefinitionError(
                    f"{where}: task label {label!r} is defined by two imports ({origin[label]} and {path}); "
                    "exclude it from one of them"
                )
            self.tasks[label] = spec
            origin[label] = str(path)
        for name, subset in imported.subsets.items():
            if name in self.subsets:
                raise PipelineDefinitionError(f"{where}: subset {name!r} is defined by two imports")
            self.subsets[name] = subset
            origin["subset:" + name] = str(path)
        for key, value in imported.parameters.items():
            self.parameters.setdefault(key, value)
        if entry.get("importContracts", True):
            self.contracts.extend(imported.contracts)
        if entry.get("importSteps", True):
            self.steps.extend(imported.steps)
        instrument = entry.get("instrument", imported.instrument)
        if instrument is not None:
            if self.instrument is not None and self.instrument != instrument:
                raise PipelineDefinitionError(
                    f"{where}: imports declare different instruments ({self.instrument!r} and {instrument!r})"
                )
            self.instrument = str(instrument)

    def _check_subsets(self, where: str) -> None:
        for name, subset in self.subsets.items():
            if name in self.tasks:
                raise PipelineDefinitionError(
                    f"{where}: subset name {name!r} is also a task label; rename one"
                )
            for label in subset.labels:
                if label not in self.tasks:
                    raise PipelineDefinitionError(
                        f"{where}: subset {name!r} names unknown task label {label!r}"
                        f"{_suggest(label, self.tasks)} (labels: {', '.join(self.tasks)})"
                    )
        for step in self.steps:
            step_label = step.get("label")
            if step_label not in self.subsets:
                raise PipelineDefinitionError(f"{where}: step {step_label!r} must name a subset")

    # ---------------------------------------------------------------------- selection
    def _expand_names(self, names: Sequence[str], where: str) -> set[str]:
        out: set[str] = set()
        for name in names:
            if name in self.tasks:
                out.add(name)
            elif name in self.subsets:
                out.update(self.subsets[name].labels)
            else:
                choices = list(self.tasks) + list(self.subsets)
                raise PipelineDefinitionError(
                    f"{where}: {name!r} is neither a task label nor a subset{_suggest(name, choices)} "
                    f"(labels: {', '.join(self.tasks)}; subsets: {', '.join(self.subsets) or 'none'})"
                )
        return out

    def _restrict(self, labels: Iterable[str], mode: str = "DROP") -> Pipeline:
        keep = set(labels)
        new = Pipeline(self.description)
        new.instrument = self.instrument
        new.parameters = dict(self.parameters)
        new.tasks = {lb: copy.deepcopy(spec) for lb, spec in self.tasks.items() if lb in keep}
        for name, subset in self.subsets.items():
            present = [lb for lb in subset.labels if lb in keep]
            if len(present) == len(subset.labels):
                new.subsets[name] = copy.deepcopy(subset)
            elif mode == "EDIT" and present:
                new.subsets[name] = LabeledSubset(name, present, subset.description)
        removed = set(self.tasks) - keep
        new.contracts = [c for c in self.contracts if not (contract_labels(c.contract) & removed)]
        new.steps = [s for s in self.steps if s.get("label") in new.subsets]
        new.source = self.source
        new._removed_labels = self._removed_labels | (set(self.tasks) - keep)
        return new

    def subset(self, names: Sequence[str]) -> Pipeline:
        """Return the pipeline restricted to labels and/or subsets (the ``#a,b`` selection).

        Parameters
        ----------
        names : sequence of `str`
            Task labels or subset names.

        Returns
        -------
        pipeline : `Pipeline`
            Subsets that lost a label are dropped; contracts naming removed labels are skipped.

        Raises
        ------
        PipelineDefinitionError
            If a name is neither a label nor a subset.
        """
        return self._restrict(self._expand_names(names, f"{self.source or 'pipeline'} selection"))

    # ---------------------------------------------------------------------- editing
    def add_task(self, task_class: str | type, label: str | None = None) -> str:
        """Add a task (``-t Class[:label]``); the label defaults to the class's ``_DefaultName``.

        Returns
        -------
        label : `str`
            The label used.

        Raises
        ------
        PipelineDefinitionError
            If the class cannot be imported or the label exists already.
        """
        if isinstance(task_class, str):
            class_name = task_class
            if label is None:
                label = getattr(_import_task(class_name, "-t"), "_DefaultName", None)
        else:
            class_name = f"{task_class.__module__}.{task_class.__qualname__}"
            label = label or getattr(task_class, "_DefaultName", None)
        if not label:
            raise PipelineDefinitionError(
                f"task {class_name!r} has no _DefaultName; give a label as Class:label"
            )
        if label in self.tasks:
            raise PipelineDefinitionError(
                f"task label {label!r} already exists in the pipeline; choose another"
            )
        self.tasks[label] = TaskSpec(label, class_name, [])
        return label

    def remove_task(self, label: str) -> None:
        """Remove a task and drop it from subsets (``--delete``)."""
        self._require_label(label, "--delete")
        del self.tasks[label]
        self._removed_labels.add(label)
        for subset in self.subsets.values():
            if label in subset.labels:
                subset.labels.remove(label)

    def _require_label(self, label: str, where: str) -> TaskSpec:
        if label not in self.tasks:
            raise PipelineDefinitionError(
                f"{where}: no task labelled {label!r} in the pipeline{_suggest(label, self.tasks)} "
                f"(labels: {', '.join(self.tasks) or 'none'})"
            )
        return self.tasks[label]

    def add_config_override(self, label: str, field: str, value: Any) -> None:
        """Append an override ``field = value`` for a task (``-c label:field=value``).

        ``label`` may be ``parameters`` to set a pipeline parameter; as in LSST's
        ``Pipeline.addConfigOverride``, only a parameter the pipeline declares can be set.

        Raises
        ------
        PipelineDefinitionError
            If ``label`` is not a task of the pipeline, or is ``parameters`` and ``field`` is not
            one of the pipeline's declared parameters.
        """
        if label == "parameters" and label not in self.tasks:
            if field not in self.parameters:
                declared = ", ".join(sorted(self.parameters)) or "none"
                raise PipelineDefinitionError(
                    f"-c parameters:{field}: the pipeline declares no parameter {field!r}"
                    f"{_suggest(field, self.parameters)} (parameters: {declared}); declare it under "
                    "'parameters:' in the pipeline YAML"
                )
            self.parameters[field] = value
            return
        self._require_label(label, "-c").config.append(
            ConfigBlock(values={field: value}, origin=f"-c {label}:{field}")
        )
        self._config_cache.clear()

    def add_config_file(self, label: str, path: str | Path) -> None:
        """Append an override file for a task (``-C label:file``)."""
        spec = self._require_label(label, "-C")
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise PipelineDefinitionError(f"-C {label}:{path}: config override file does not exist")
        spec.config.append(ConfigBlock(files=[str(p)], origin=f"-C {label}:{p}"))
        self._config_cache.clear()

    # ---------------------------------------------------------------------- configs
    def task_class(self, label: str) -> type[Configurable]:
        """Import and return the task class of ``label``."""
        return _import_task(self._require_label(label, "pipeline").class_name, f"task {label!r}")

    def instrument_overrides(self, label: str) -> list[tuple[str, Any]]:
        """Return the overrides of the pipeline's instrument for one task.

        The instrument (found with `find_instrument`) provides the directory of its override files;
        the file is ``<label>.yaml``, else ``<_DefaultName of the task class>.yaml``.
        """
        if not self.instrument:
            return []
        instrument = find_instrument(self.instrument)
        if instrument is None:
            return []
        cls = self.task_class(label)
        for name in (label, getattr(cls, "_DefaultName", None)):
            path = instrument.task_config_dir / f"{name}.yaml"
            if name and path.is_file():
                return parse_override_file(path, f"task {label!r}")
        return []

    def _override_items(self, label: str, data_id: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
        return [(path, value) for path, value, _ in self._override_entries(label, data_id)]

    def _override_entries(
        self, label: str, data_id: Mapping[str, Any] | None, *, include_scoped: bool = False
    ) -> list[tuple[str, Any, str]]:
        """Every override of a task in application order: (field path, value, origin).

        With ``include_scoped``, data-ID blocks that do not match are listed too (marked as such).
        """
        spec = self._require_label(label, "pipeline")
        where = f"task {label!r}"
        entries: list[tuple[str, Any, str]] = []
        if self.instrument:
            origin = f"instrument {self.instrument!r} overrides"
            entries.extend((k, v, origin) for k, v in self.instrument_overrides(label))
        for i, block in enumerate(spec.config):
            matches = block.matches(data_id)
            if not matches and not include_scoped:
                continue
            origin = block.origin or f"{where} config block {i + 1}"
            if block.data_id is not None:
                origin += f" (only quanta with dataId {block.data_id})"
            for f in block.files:
                entries.extend((k, v, f"{origin}, file {f}") for k, v in parse_override_file(f, where))
            if block.python:
                entries.extend(
                    (k, v, f"{origin}, python")
                    for k, v in parse_python_overrides(block.python, f"{where} python block")
                )
            entries.extend((k, v, origin) for k, v in block.values.items())
        out = []
        for k, v, origin in entries:
            new = _substitute(v, self.parameters, where)
            if new is not v and isinstance(v, str):
                origin += f" [{v}]"
            out.append((k, new, origin))
        return out

    def config_history(self, label: str, field: str, data_id: Mapping[str, Any] | None = None) -> list[str]:
        """Describe how a config field got its value: default, each override in order, final value.

        Parameters
        ----------
        label : `str`
            Task label.
        field : `str`
            Dotted field path (``overscan.fitType``; a prefix such as ``overscan`` covers its fields).
        data_id : `~collections.abc.Mapping`, optional
            Include the data-ID-scoped blocks matching this data ID.

        Returns
        -------
        lines : `list` [`str`]
            ``"<origin>: <path> = <value>"`` lines, starting with the default and ending with the
            final value.

        Raises
        ------
        PipelineDefinitionError
            If the task has no such field (close matches suggested).
        """
        from ..config import flatten_config

        field = field.removeprefix("config.")
        final = dict(flatten_config(self.task_config(label, data_id)))
        default = dict(flatten_config(self.task_class(label).ConfigClass()))
        paths = [p for p in final if p == field or p.startswith(field + ".")]
        if not paths:
            raise PipelineDefinitionError(
                f"task {label!r} has no config field {field!r}{_suggest(field, final)}"
            )
        lines = [f"default: {p} = {default.get(p, '<absent>')!r}" for p in paths]
        for path, value, origin in self._override_entries(label, data_id, include_scoped=True):
            for shown, v in _touching(path, value, field):
                lines.append(f"{origin}: {shown} = {v!r}")
        lines += [f"final: {p} = {final[p]!r}" for p in paths]
        return lines

    def task_config(self, label: str, data_id: Mapping[str, Any] | None = None) -> Config:
        """Return the (unfrozen) config of a task with every override applied.

        Parameters
        ----------
        label : `str`
            Task label.
        data_id : `~collections.abc.Mapping`, optional
            A quantum's data ID: data-ID-scoped blocks matching it are applied too. `None` gives the
            base config (no scoped blocks).

        Returns
        -------
        config : `~pipeline.config.Config`
            A new config.

        Raises
        ------
        ConfigError
            Naming the label and the field, for an unknown field or a bad value.
        PipelineDefinitionError
            For an unreadable override file or an unknown parameter.
        """
        spec = self._require_label(label, "pipeline")
        matching = tuple(i for i, b in enumerate(spec.config) if b.matches(data_id))
        key = (label, matching, self.instrument, repr(self.parameters))
        cached = self._config_cache.get(key)
        if cached is not None:
            return cached.model_copy(deep=True)
        cls = self.task_class(label)
        config_class = getattr(cls, "ConfigClass", None)
        if config_class is None:
            raise PipelineDefinitionError(f"task {label!r}: {spec.class_name} has no ConfigClass")
        config = apply_overrides(config_class(), self._override_items(label, data_id), label=label)
        self._config_cache[key] = config
        return config.model_copy(deep=True)

    def has_data_id_overrides(self, label: str) -> bool:
        """Whether a task has data-ID-scoped config blocks (its config may differ per quantum)."""
        return any(b.data_id is not None for b in self._require_label(label, "pipeline").config)

    def check_contracts(self, configs: Mapping[str, Config]) -> None:
        """Evaluate every contract over the task configs.

        Raises
        ------
        ContractError
            If a contract is false (message: the expression and its ``msg``), names an unknown label,
            or cannot be evaluated.
        """
        for contract in self.contracts:
            names = contract_labels(contract.contract)
            if names & self._removed_labels:
                continue  # the selection removed a task this contract is about
            result = evaluate_contract(contract.contract, configs)
            if not result:
                msg = f": {contract.msg}" if contract.msg else ""
                raise ContractError(f"pipeline contract {contract.contract!r} failed{msg}")

    def data_id_blocks(self, label: str, data_id: Mapping[str, Any]) -> tuple[int, ...]:
        """Return the indices of a task's data-ID-scoped config blocks that match a data ID."""
        blocks = self._require_label(label, "pipeline").config
        return tuple(i for i, b in enumerate(blocks) if b.data_id is not None and b.matches(data_id))

    def to_graph(self, *, validate: bool = True) -> PipelineGraph:
        """Import, configure, freeze and connect every task, check contracts, return the pipeline graph.

        Parameters
        ----------
        validate : `bool`
            Check the graph (see `~pipeline.pipeline_graph.PipelineGraph`).

        Returns
        -------
        graph : `~pipeline.pipeline_graph.PipelineGraph`
            With this pipeline's description, instrument and labeled subsets; its task nodes find
            their data-ID-scoped configs here.

        Raises
        ------
        PipelineDefinitionError
            For an import failure, a class that is not a PipelineTask, or a pipeline without tasks.
        ConfigError
            For a bad config override (naming the label and the field).
        ContractError
            For a failed contract.
        PipelineGraphError
            For an inconsistent graph.
        """
        if not self.tasks:
            raise PipelineDefinitionError(f"pipeline {self.source or ''!s} has no tasks".replace("  ", " "))
        configs: dict[str, Config] = {}
        nodes = []
        for label, spec in self.tasks.items():
            config = configs[label] = self.task_config(label)
            node = make_task_node(label, self.task_class(label), spec.class_name, config)
            node.data_id_configs = self
            nodes.append(node)
        self.check_contracts(configs)
        return PipelineGraph(nodes, description=self.description, instrument=self.instrument,
                             task_subsets={name: s.labels for name, s in self.subsets.items()},
                             validate=validate)

    # ---------------------------------------------------------------------- writing
    def to_dict(self) -> dict[str, Any]:
        """Return the expanded pipeline (imports resolved) as written by `write`."""
        out: dict[str, Any] = {"description": self.description}
        if self.instrument:
            out["instrument"] = self.instrument
        if self.parameters:
            out["parameters"] = dict(self.parameters)
        out["tasks"] = {lb: spec.to_yaml_obj() for lb, spec in self.tasks.items()}
        if self.subsets:
            out["subsets"] = {
                n: {"subset": list(s.labels), "description": s.description}
                if s.description
                else {"subset": list(s.labels)}
                for n, s in self.subsets.items()
            }
        if self.steps:
            out["steps"] = [dict(s) for s in self.steps]
        if self.contracts:
            out["contracts"] = [
                {"contract": c.contract, "msg": c.msg} if c.msg else {"contract": c.contract}
                for c in self.contracts
            ]
        return out

    def to_yaml(self) -> str:
        """Return the expanded pipeline as YAML text (readable back by `from_string`)."""
        import yaml

        return yaml.dump(
            self.to_dict(), Dumper=_yaml_classes()[1], sort_keys=False, default_flow_style=False, width=100
        )

    def write(self, path: str | Path) -> None:
        """Write `to_yaml` to ``path`` (atomically: temporary file then rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(self.to_yaml())
        os.replace(tmp, path)

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        return f"Pipeline({self.description!r}, tasks={list(self.tasks)})"


def _read_config_blocks(config: Any, base: Path, ctx: str) -> list[ConfigBlock]:
    if config is None:
        return []
    entries = config if isinstance(config, list) else [config]
    blocks: list[ConfigBlock] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise PipelineDefinitionError(f"{ctx}: each config block must be a mapping of field: value")
        values = {str(k): v for k, v in entry.items() if k not in ("file", "python", "dataId")}
        files = entry.get("file") or []
        if isinstance(files, str):
            files = [files]
        resolved = []
        for f in files:
            p = Path(_expand(str(f), f"{ctx}: config file"))
            if not p.is_absolute():
                p = base / p
            if not p.is_file():
                raise PipelineDefinitionError(f"{ctx}: config override file {str(p)!r} does not exist")
            resolved.append(str(p.resolve()))
        data_id = entry.get("dataId")
        if data_id is not None and not isinstance(data_id, Mapping):
            raise PipelineDefinitionError(f"{ctx}: 'dataId' must be a mapping such as {{detector: 1}}")
        python = entry.get("python")
        if python is not None:
            parse_python_overrides(str(python), f"{ctx} python block")  # fail early
        blocks.append(
            ConfigBlock(
                values=values,
                files=resolved,
                python=None if python is None else str(python),
                data_id=dict(data_id) if data_id is not None else None,
                origin=f"{ctx}, config block {len(blocks) + 1}",
            )
        )
    return blocks


def _touching(path: str, value: Any, field: str) -> list[tuple[str, Any]]:
    """Return the parts of an override ``path = value`` that set ``field`` or something inside it."""
    if path == field or path.startswith(field + "."):
        return [(path, value)]
    if field.startswith(path + ".") and isinstance(value, Mapping):
        out: list[tuple[str, Any]] = []
        for key, sub in value.items():
            out += _touching(f"{path}.{key}", sub, field)
        return out
    return []


def _import_task(class_name: str, where: str) -> type[Configurable]:
    try:
        cls = import_dotted(class_name)
    except ImportError as exc:
        raise PipelineDefinitionError(f"{where}: cannot import task class {class_name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a broken module: report it as one error, not a traceback
        raise PipelineDefinitionError(
            f"{where}: importing task class {class_name!r} failed with {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(cls, type):
        raise PipelineDefinitionError(f"{where}: {class_name!r} is not a class")
    return cast("type[Configurable]", cls)  # a PipelineTask: checked by make_task_node


def _expand(text: str, where: str) -> str:
    expanded = os.path.expanduser(os.path.expandvars(text))
    m = re.search(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if m:
        raise PipelineDefinitionError(f"{where} {text!r}: environment variable {m.group(1)} is not set")
    return expanded


@functools.cache
def _yaml_classes() -> tuple[Any, Any]:
    """Return the loader and the dumper of pipeline files (PyYAML is imported here, on first use).

    The dumper is safe; it writes multi-line strings (python blocks) as ``|`` blocks and folds
    long ones (``>``).
    """
    import yaml

    class _PipelineDumper(yaml.SafeDumper):
        pass

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        if "\n" in value.strip("\n"):
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
        if len(value) > 80:
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=">")
        return dumper.represent_scalar("tag:yaml.org,2002:str", value)

    _PipelineDumper.add_representer(str, represent_str)
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader), _PipelineDumper


def _parse_yaml(text: str, where: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_classes()[0])
    except yaml.YAMLError as exc:
        raise PipelineDefinitionError(f"{where}: invalid YAML: {exc}") from None
