"""Connection classes (``lsst.pipe.base.connections``) and the pipeline task config base class.

A `PipelineTaskConnections` subclass declares a task's inputs and outputs as class attributes
(`pipeline.connection_types`), its quantum ``dimensions`` and its ``defaultTemplates`` as class
keywords. Pairing it with a config::

    class IsrTaskConfig(PipelineTaskConfig, pipelineConnections=IsrTaskConnections): ...

adds a ``connections`` sub-config with one string field per connection (the dataset type name,
renamed by ``config.connections.<connectionName> = "newName"``) and one per template.
An instance, ``IsrTaskConnections(config=config)``, holds the resolved connections (templates
filled, renames applied); its ``__init__`` may remove connections according to the config
(``self.prerequisiteInputs.remove("bias")``) or change ``self.dimensions``.
"""

from __future__ import annotations

import dataclasses
import re
import string
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from pydantic import Field, create_model, model_validator
from pydantic._internal._model_construction import ModelMetaclass

from . import connection_types as cT  # noqa: N812 - the LSST spelling
from .config import Config
from .exceptions import ConfigError, InvalidQuantumError, NoWorkFound

__all__ = [
    "InputQuantizedConnection",
    "OutputQuantizedConnection",
    "PipelineTaskConfig",
    "PipelineTaskConnections",
    "QuantizedConnection",
]

# Same rule as butler.DatasetType names.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

_KIND_SETS = {
    "inputs": cT.Input,
    "prerequisiteInputs": cT.PrerequisiteInput,
    "outputs": cT.Output,
    "initInputs": cT.InitInput,
    "initOutputs": cT.InitOutput,
}


def _template_names(name: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(name) if field]


class PipelineTaskConnectionsMetaclass(type):
    """Collects the connection attributes and the ``dimensions``/``defaultTemplates`` keywords."""

    def __new__(
        mcs,
        name: str,
        bases: tuple[type, ...],
        namespace: dict[str, Any],
        dimensions: Any = None,
        defaultTemplates: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> type:
        connections: dict[str, cT.BaseConnection] = {}
        templates: dict[str, str] = {}
        base_dims: tuple[str, ...] | None = None
        for base in reversed(bases):
            connections.update(getattr(base, "_connection_decls", {}))
            templates.update(getattr(base, "defaultTemplates", {}))
            dims = getattr(base, "_class_dimensions", None)  # bases need not be connections classes
            if dims is not None:
                base_dims = dims
        for attr, value in list(namespace.items()):
            if isinstance(value, cT.BaseConnection):
                connections[attr] = value
                del namespace[attr]  # instances resolve it (renames, templates) via __getattr__
        if defaultTemplates is not None:
            templates.update(defaultTemplates)
        if dimensions is not None:
            if isinstance(dimensions, str):
                raise TypeError(f"{name}: dimensions must be a tuple of names, not the string {dimensions!r}")
            base_dims = tuple(dimensions)
        for conn_name, conn in connections.items():
            for tmpl in _template_names(conn.name):
                if tmpl not in templates:
                    raise TypeError(
                        f"{name}.{conn_name}: dataset type name {conn.name!r} uses template {{{tmpl}}} "
                        f"with no default; add defaultTemplates={{{tmpl!r}: ...}} to the class keywords"
                    )
        namespace["_connection_decls"] = connections
        namespace["defaultTemplates"] = templates
        namespace["_class_dimensions"] = base_dims
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        return cls

    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(name, bases, namespace)


class PipelineTaskConnections(metaclass=PipelineTaskConnectionsMetaclass):
    """Base class of a task's connections.

    Parameters
    ----------
    config : `PipelineTaskConfig`
        The task's config; its ``connections`` sub-config gives dataset type names and templates.

    Attributes
    ----------
    dimensions : `set` [`str`]
        Quantum dimensions (may be changed in a subclass ``__init__``).
    inputs, prerequisiteInputs, outputs, initInputs, initOutputs : `set` [`str`]
        Names of the connections of each kind; remove names to drop connections.
    config : `PipelineTaskConfig`
        The config given.

    Raises
    ------
    ConfigError
        If a dataset type name uses a template that has no value.
    """

    _connection_decls: ClassVar[dict[str, cT.BaseConnection]]
    defaultTemplates: ClassVar[dict[str, str]]
    _class_dimensions: ClassVar[tuple[str, ...] | None]

    def __init__(self, *, config: Any = None) -> None:
        self.config = config
        self.dimensions: set[str] = set(self._class_dimensions or ())
        for kind, ctype in _KIND_SETS.items():
            setattr(self, kind, {n for n, c in self._connection_decls.items() if isinstance(c, ctype)})
        names = getattr(config, "connections", None)
        templates = dict(self.defaultTemplates)
        renames: dict[str, str] = {}
        if names is not None:
            values = names.to_dict() if isinstance(names, Config) else dict(names)
            for key, value in values.items():
                if key in self._connection_decls:
                    renames[key] = value
                else:
                    templates[key] = value
        resolved: dict[str, cT.BaseConnection] = {}
        for conn_name, conn in self._connection_decls.items():
            raw = renames.get(conn_name, conn.name)
            try:
                ds_name = raw.format(**templates)
            except KeyError as exc:
                raise ConfigError(
                    f"{type(self).__name__}.{conn_name}: dataset type name {raw!r} uses template "
                    f"{{{exc.args[0]}}} which has no value; set config.connections.{exc.args[0]}",
                    field=f"connections.{exc.args[0]}",
                ) from None
            except (IndexError, ValueError) as exc:
                raise ConfigError(
                    f"{type(self).__name__}.{conn_name}: dataset type name {raw!r} is not a valid name "
                    f"template ({exc}); use letters, digits, '_' and {{templateName}} placeholders",
                    field=f"connections.{conn_name}",
                ) from None
            if not _NAME_RE.match(ds_name):
                raise ConfigError(
                    f"{type(self).__name__}.{conn_name}: {ds_name!r} is not a valid dataset type name "
                    "(letters, digits and '_', not starting with a digit; '.' only before a component)",
                    field=f"connections.{conn_name}",
                )
            resolved[conn_name] = conn.replace(name=ds_name)
        self._templates = templates
        self._resolved = resolved

    # ------------------------------------------------------------------ access
    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, cT.BaseConnection):
            # Replacing (or adding) a connection in __init__, as pipe_base allows:
            # ``self.outputData = cT.Output(name=..., dimensions=...)``.
            try:
                value = value.replace(name=value.name.format(**self.__dict__.get("_templates", {})))
            except (KeyError, IndexError):
                pass
            self.__dict__.setdefault("_resolved", {})[name] = value
            for kind, ctype in _KIND_SETS.items():
                names = self.__dict__.get(kind)
                if names is None:
                    continue
                if isinstance(value, ctype):
                    names.add(name)
                else:
                    names.discard(name)
            return
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        resolved = self.__dict__.get("_resolved")
        if resolved is not None and name in resolved:
            return resolved[name]
        raise AttributeError(f"{type(self).__name__} has no connection or attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        if name in self.__dict__.get("_resolved", {}):
            for kind in _KIND_SETS:
                getattr(self, kind).discard(name)
            return
        super().__delattr__(name)

    @property
    def allConnections(self) -> dict[str, cT.BaseConnection]:
        """Connection name → resolved connection, for the connections still present."""
        present = set().union(*(getattr(self, kind) for kind in _KIND_SETS))
        return {n: c for n, c in self._resolved.items() if n in present}

    def iter_kind(self, kind: str) -> Iterator[tuple[str, cT.BaseConnection]]:
        """Yield ``(connection name, resolved connection)`` of one kind in declaration order.

        Parameters
        ----------
        kind : `str`
            One of ``inputs``, ``prerequisiteInputs``, ``outputs``, ``initInputs``, ``initOutputs``.
        """
        names = getattr(self, kind)
        for n, c in self._resolved.items():
            if n in names:
                yield n, c

    @classmethod
    def make_config_class(cls) -> type[Config]:
        """Return the ``connections`` sub-config class: one `str` field per connection and template.

        The class is built once per connections class and stored on it as ``ConnectionsConfig`` (so
        configs pickle: its qualified name is ``<Connections>.ConnectionsConfig``).
        """
        existing = cls.__dict__.get("ConnectionsConfig")
        if existing is not None:
            return existing
        fields: dict[str, Any] = {}
        for conn_name, conn in cls._connection_decls.items():
            fields[conn_name] = (
                str,
                Field(
                    conn.name,
                    description=f"Dataset type name of connection {conn_name!r}. {conn.doc}".strip(),
                ),
            )
        for tmpl, default in cls.defaultTemplates.items():
            if tmpl in fields:
                raise TypeError(f"{cls.__name__}: template {tmpl!r} has the name of a connection")
            fields[tmpl] = (str, Field(default, description=f"Template value for {{{tmpl}}}."))
        with warnings.catch_warnings():
            # Connection names such as "schema" shadow deprecated BaseModel methods; harmless here.
            warnings.filterwarnings(
                "ignore", message=".*shadows an attribute in parent", category=UserWarning
            )
            model = create_model(f"{cls.__name__}Config", __base__=Config, **fields)
        model.__module__ = cls.__module__
        model.__qualname__ = f"{cls.__qualname__}.ConnectionsConfig"
        type.__setattr__(cls, "ConnectionsConfig", model)
        return model

    # ------------------------------------------------------------------ hooks
    def adjustQuantum(
        self,
        inputs: dict[str, tuple[cT.BaseInput, list[Any]]],
        outputs: dict[str, tuple[cT.Output, list[Any]]],
        label: str,
        data_id: Any,
    ) -> tuple[dict[str, tuple[cT.BaseInput, list[Any]]], dict[str, tuple[cT.Output, list[Any]]]]:
        """Check (and optionally adjust) one quantum's inputs and outputs.

        Called by the quantum-graph builder for every quantum, and again before execution.
        The default checks every input against its connection's ``minimum`` and ``multiple``.

        Parameters
        ----------
        inputs : `dict` [`str`, `tuple`]
            Connection name → (resolved input or prerequisite connection, list of `DatasetRef`).
        outputs : `dict` [`str`, `tuple`]
            Connection name → (resolved output connection, list of `DatasetRef`).
        label : `str`
            Task label.
        data_id : `~butler.DataCoordinate`
            The quantum's data ID.

        Returns
        -------
        inputs, outputs : `tuple` [`dict`, `dict`]
            Possibly reduced mappings of the same form.

        Raises
        ------
        NoWorkFound
            If a regular input has fewer than ``minimum`` datasets (the quantum is skipped).
        FileNotFoundError
            If a required prerequisite has fewer than ``minimum`` datasets.
        InvalidQuantumError
            If a connection without ``multiple`` gets more than one dataset.
        """
        for conn_name, (conn, refs) in inputs.items():
            n = len(refs)
            if not conn.multiple and n > 1:
                raise InvalidQuantumError(
                    f"task '{label}' quantum {dict(data_id) if data_id is not None else {}}: connection "
                    f"{conn_name!r} (dataset type {conn.name!r}) is not multiple=True but got {n} datasets; "
                    "check the connection's dimensions"
                )
            if n < conn.minimum:
                msg = (
                    f"task '{label}' quantum {dict(data_id) if data_id is not None else {}}: connection "
                    f"{conn_name!r} needs at least {conn.minimum} {conn.name!r} dataset(s), found {n}"
                )
                if isinstance(conn, cT.PrerequisiteInput):
                    raise FileNotFoundError(msg)
                raise NoWorkFound(msg)
        return inputs, outputs


class QuantizedConnection:
    """Connection name → `DatasetRef` (or list of refs for ``multiple=True``) for one quantum.

    Built by the executor and passed to ``runQuantum`` as ``inputRefs``/``outputRefs``.

    Parameters
    ----------
    **refs
        Connection name → ref or list of refs.
    """

    _names: list[str]

    def __init__(self, **refs: Any) -> None:
        self.__dict__["_names"] = []
        for key, value in refs.items():
            setattr(self, key, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._names:
            self._names.append(name)
        self.__dict__[name] = value

    def __delattr__(self, name: str) -> None:
        self._names.remove(name)
        del self.__dict__[name]

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for name in self._names:
            yield name, self.__dict__[name]

    def keys(self) -> list[str]:
        """Return the connection names, in insertion order."""
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        items = ", ".join(f"{n}={self.__dict__[n]!r}" for n in self._names)
        return f"{type(self).__name__}({items})"


class InputQuantizedConnection(QuantizedConnection):
    """The input refs of one quantum (``inputRefs``)."""


class OutputQuantizedConnection(QuantizedConnection):
    """The output refs of one quantum (``outputRefs``)."""


class PipelineTaskConfigMeta(ModelMetaclass):
    """Adds the ``connections`` field when a config class is declared with ``pipelineConnections=``."""

    def __new__(
        mcs,
        name: str,
        bases: tuple[type, ...],
        namespace: dict[str, Any],
        pipelineConnections: type[PipelineTaskConnections] | None = None,
        **kwargs: Any,
    ) -> type:
        if pipelineConnections is not None:
            if not (
                isinstance(pipelineConnections, type)
                and issubclass(pipelineConnections, PipelineTaskConnections)
            ):
                raise TypeError(f"{name}: pipelineConnections must be a PipelineTaskConnections subclass")
            conn_config = pipelineConnections.make_config_class()
            annotations = dict(namespace.get("__annotations__", {}))
            annotations["connections"] = conn_config
            namespace["__annotations__"] = annotations
            namespace["connections"] = Field(
                default_factory=conn_config,
                description="Dataset type names of the connections (config.connections.<name> renames) "
                "and template values.",
            )
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        if pipelineConnections is not None:
            type.__setattr__(cls, "ConnectionsClass", pipelineConnections)
        return cls


class PipelineTaskConfig(Config, metaclass=PipelineTaskConfigMeta):
    """Base class of the config of a `~pipeline.task.PipelineTask`.

    Declare with ``class XConfig(PipelineTaskConfig, pipelineConnections=XConnections)``; the
    ``connections`` field then holds the dataset type names and template values.
    """

    ConnectionsClass: ClassVar[type[PipelineTaskConnections] | None] = None

    #: Fields a subclass keeps for LSST compatibility although they do nothing here: field name ->
    #: why. Setting one to a value other than its default warns (`UserWarning`) naming the field.
    noOpFields: ClassVar[dict[str, str]] = {}

    saveMetadata: bool = Field(
        True,
        description="Write the <label>_metadata output of every quantum. It must stay True: the "
        "metadata dataset is how a quantum is known to have succeeded (skip-existing, resumed runs, "
        "reports); LSST deprecated switching it off for the same reason.",
    )
    saveLogOutput: bool = Field(
        True,
        description="Write the <label>_log output (the quantum's log records); False removes the "
        "output from the graph.",
    )

    @model_validator(mode="after")
    def _framework_fields(self) -> PipelineTaskConfig:
        if not self.saveMetadata:
            raise ValueError(
                "saveMetadata=False is not supported: the <label>_metadata dataset marks a quantum as "
                "done (skip-existing, resumed runs, pipetask report); LSST deprecated the field for "
                "that reason. Leave saveMetadata at True (use saveLogOutput=False to drop the log)."
            )
        fields = type(self).model_fields
        for name, why in type(self).noOpFields.items():
            default = fields[name].get_default(call_default_factory=True)
            if getattr(self, name) != default:
                warnings.warn(
                    f"{type(self).__name__}.{name} = {getattr(self, name)!r} has no effect in ccdflow "
                    f"({why}); it is accepted for LSST compatibility only",
                    UserWarning,
                    stacklevel=2,
                )
        return self

    def make_connections(self) -> PipelineTaskConnections:
        """Instantiate the task's connections for this config.

        Returns
        -------
        connections : `PipelineTaskConnections`
            Resolved connections.

        Raises
        ------
        TypeError
            If the class was declared without ``pipelineConnections=``.
        """
        cls = type(self).ConnectionsClass
        if cls is None:
            raise TypeError(f"{type(self).__name__} was declared without pipelineConnections=")
        return cls(config=self)


def resolved_connection_fields(conn: cT.BaseConnection) -> dict[str, Any]:
    """Return the dataclass fields of a connection as a dict (for display and serialization)."""
    return {f.name: getattr(conn, f.name) for f in dataclasses.fields(conn) if f.init}
