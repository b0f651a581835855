"""Typed, validated task configuration (the ``lsst.pex.config`` role), built on pydantic v2.

A task's config is a subclass of `Config` whose fields keep the LSST names, defaults and docs::

    class OverscanConfig(Config):
        fitType: Literal["MEDIAN", "MEAN", "POLY"] = Field("MEDIAN", description="Fit type.")
        order: int = Field(1, description="Polynomial order.")

    class IsrTaskConfig(PipelineTaskConfig, pipelineConnections=IsrTaskConnections):
        doBias: bool = Field(True, description="Apply bias frame correction?")
        saturation: dict[str, float] = Field(default_factory=lambda: {"ALL_AMPS": 1e6},
                                             description="Saturation level per amp (ADU).")
        overscan: OverscanConfig = ConfigurableField(OverscanTask, description="Overscan subtask.")

        @model_validator(mode="after")
        def _check(self):
            ...  # cross-field rules; raise ValueError naming the fields
            return self

Unknown fields and wrong types raise ONE `ConfigError` that names the task label (when known), the
dotted field path, the allowed values or the expected type, and suggests close field names.
A config is frozen (`Config.freeze`) before execution; `Config.to_dict` / `Config.from_dict` save
and restore it (retargeted subtasks keep their target under the key ``__target__``), and
`diff_configs` compares two saved configs when a run is extended.

Overrides (`apply_overrides`) come as a mapping of dotted field paths (``overscan.fitType``) or
nested mappings to values; all overrides of one source are validated together, so a cross-field
rule only sees the final state.
"""

from __future__ import annotations

import enum
import importlib
import os
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, Literal, Protocol, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from ..exceptions import ConfigError
from ._override_files import parse_override_file

__all__ = [
    "Config",
    "Configurable",
    "ConfigError",
    "ConfigurableField",
    "Field",
    "apply_overrides",
    "describe_type",
    "diff_configs",
    "field_descriptions",
    "flatten_config",
    "format_config",
    "import_dotted",
    "model_validator",
    "py_repr",
]

TARGET_KEY = "__target__"
_TARGET_EXTRA = "ccdflow_configurable_target"


def import_dotted(path: str) -> Any:
    """Import ``package.module.Name`` (or ``package.module:Name``) and return the object.

    Parameters
    ----------
    path : `str`
        Dotted path of a class or function.

    Returns
    -------
    obj : `object`
        The imported object.

    Raises
    ------
    ImportError
        If no prefix of the path is an importable module holding the remaining attributes.
    """
    path = path.replace(":", ".")
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not module_name.startswith(exc.name):
                raise  # a real missing dependency inside the module
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            continue
        return obj
    raise ImportError(f"cannot import {path!r}: no module of that name defines it")


def _dotted_name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def describe_type(annotation: Any, _inner: bool = False) -> str:
    """Describe a field annotation for error messages (``"one of 'MEAN', 'MEDIAN'"``).

    Parameters
    ----------
    annotation : `object`
        A type annotation as pydantic stores it.

    Returns
    -------
    text : `str`
        Human-readable description of the allowed values.
    """
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [describe_type(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return text + " or None" if type(None) in args else text
    if origin in (dict, Mapping):
        k, v = args if args else (Any, Any)
        return f"a mapping of {describe_type(k, True)} to {describe_type(v, True)}"
    if origin in (list, tuple, set, frozenset):
        inner = describe_type(args[0], True) if args else "values"
        return f"a list of {inner}"
    if isinstance(annotation, type) and issubclass(annotation, Config):
        return f"a mapping of the fields of {annotation.__name__}"
    if isinstance(annotation, type) and _inner:
        return annotation.__name__
    if isinstance(annotation, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _config_field_class(cls: type[Config], name: str) -> type[Config] | None:
    """Return the Config subclass a field holds, or None for a plain value field."""
    info = cls.model_fields.get(name)
    if info is None:
        return None
    ann = info.annotation
    if isinstance(ann, type) and issubclass(ann, Config):
        return ann
    return None


class Configurable(Protocol):
    """What a subtask target is to its config field: a class with a ``ConfigClass``."""

    ConfigClass: ClassVar[type[Config]]


class Config(BaseModel):
    """Base class of every task config.

    A pydantic model: extra fields forbidden, assignment validated, freezable.

    Notes
    -----
    Assigning a wrong value raises `ConfigError` and leaves the old value in place. Cross-field
    rules go in one ``@model_validator(mode="after")`` method named ``_check`` that raises
    ``ValueError`` naming the fields; it runs on construction and after every assignment (use
    `apply_overrides` to change several fields at once).
    """

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        arbitrary_types_allowed=True,
        protected_namespaces=(),
        revalidate_instances="never",
        coerce_numbers_to_str=True,
    )

    _frozen: bool = PrivateAttr(default=False)
    _target: Any = PrivateAttr(default=None)

    # ----------------------------------------------------------------- mutation and freezing
    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
            return
        if self._frozen:
            raise ConfigError(
                f"cannot set {name!r}: this {type(self).__name__} is frozen (configs are frozen before "
                "execution); change it through a pipeline override instead",
                field=name,
            )
        if name not in type(self).model_fields:
            raise _unknown_field_error(type(self), name, (), None)
        old = self.__dict__.get(name)
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            self.__dict__[name] = old
            raise _convert_validation_error(exc, type(self), None, value_hint={name: value}) from None

    def freeze(self) -> None:
        """Make this config, its nested configs and its dict/list values read-only.

        Assignments afterwards raise `ConfigError`; dict and list values become `dict`/`list`
        subclasses whose mutating methods raise `ConfigError` too.
        """
        self._frozen = True
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, Config):
                value.freeze()
            elif isinstance(value, (dict, list)):
                self.__dict__[name] = _deep_freeze(value, f"{type(self).__name__}.{name}")

    @property
    def frozen(self) -> bool:
        """`True` once `freeze` has been called."""
        return self._frozen

    def validate(self) -> None:  # type: ignore[override]
        """Re-run every field check and cross-field rule (``lsst.pex.config.Config.validate``).

        Useful after in-place changes to dict/list values, which assignment validation cannot see.

        Raises
        ------
        ConfigError
            Naming the field(s) or the rule that fails.
        """
        type(self).from_dict(self.to_dict())

    def save(self, path: str | os.PathLike[str], *, docs: bool = True) -> None:
        """Write the config as ``config.<field>=<value>`` Python lines (readable by `load` and ``-C``).

        Parameters
        ----------
        path : path-like
            Output file (written atomically).
        docs : `bool`
            Include each field's description as a comment.
        """
        text = "\n".join(format_config(self, docs=docs)) + "\n"
        target = os.fspath(path)
        tmp = f"{target}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, target)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Apply an override file in place (``lsst.pex.config.Config.load``).

        Parameters
        ----------
        path : path-like
            A Python file of ``config.<field> = <literal>`` lines (e.g. written by `save`) or a YAML
            mapping of field paths to values; parsed, never executed.

        Raises
        ------
        ConfigError
            For unknown fields or bad values (the config is left unchanged).
        PipelineDefinitionError
            If the file cannot be read or parsed.
        """
        if self._frozen:
            raise ConfigError(f"cannot load {os.fspath(path)!r} into a frozen {type(self).__name__}")
        new = apply_overrides(self, parse_override_file(path))
        for name in type(self).model_fields:
            self.__dict__[name] = new.__dict__[name]

    def retarget(self, target: type, ConfigClass: type[Config] | None = None) -> None:
        """Retarget the subtask this (nested) config belongs to, keeping its current values.

        Only a target whose ``ConfigClass`` is this config's class can be set in place; to switch to
        a different config class use ``parent.retarget_field(name, target)``.

        Parameters
        ----------
        target : `type`
            The replacement `~pipeline.task.Task` subclass.
        ConfigClass : `type`, optional
            Its config class; defaults to ``target.ConfigClass``.

        Raises
        ------
        ConfigError
            If the config is frozen or the new config class differs.
        """
        cc = ConfigClass or getattr(target, "ConfigClass", None)
        if self._frozen:
            raise ConfigError(f"cannot retarget a frozen {type(self).__name__}")
        if cc is not None and cc is not type(self):
            raise ConfigError(
                f"cannot retarget {type(self).__name__} in place to {target.__name__} whose config class "
                f"is {cc.__name__}; call parent_config.retarget_field(<field name>, {target.__name__})"
            )
        self._target = target

    def retarget_field(
        self, name: str, target: type[Configurable], ConfigClass: type[Config] | None = None
    ) -> None:
        """Replace the subtask config ``name`` with a default config of ``target``.

        Parameters
        ----------
        name : `str`
            Name of a `ConfigurableField`.
        target : `type`
            The replacement task class; its config class must be the field's class or a subclass.
        ConfigClass : `type`, optional
            Config class to use; defaults to ``target.ConfigClass``.

        Raises
        ------
        ConfigError
            If the field is not a subtask config or the config class does not fit.
        """
        cls = type(self)
        field_cls = _config_field_class(cls, name)
        if field_cls is None:
            raise ConfigError(
                f"{cls.__name__}.{name} is not a subtask (ConfigurableField) config", field=name
            )
        cc = ConfigClass or target.ConfigClass
        if not issubclass(cc, field_cls):
            raise ConfigError(
                f"cannot retarget {cls.__name__}.{name} to {target.__name__}: its config class "
                f"{cc.__name__} is not a subclass of {field_cls.__name__}",
                field=name,
            )
        new = cc()
        new._target = target
        setattr(self, name, new)

    @property
    def target(self) -> type | None:
        """Task class this config is for when it is a subtask config (`None` if unknown)."""
        return self._target

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain Python values (nested dicts, lists, numbers, strings).

        Returns
        -------
        data : `dict`
            Field name → value; subtask configs are nested dicts, with ``"__target__"`` holding the
            dotted path of a retargeted subtask. Tuples become lists. Round-trips via `from_dict`.
        """
        out: dict[str, Any] = {}
        cls = type(self)
        for name, info in cls.model_fields.items():
            value = getattr(self, name)
            if isinstance(value, Config):
                sub = value.to_dict()
                default_target = (
                    (info.json_schema_extra or {}).get(_TARGET_EXTRA)
                    if isinstance(info.json_schema_extra, dict)
                    else None
                )
                if value._target is not None and _dotted_name(value._target) != default_target:
                    sub[TARGET_KEY] = _dotted_name(value._target)
                out[name] = sub
            else:
                out[name] = _plain(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, label: str | None = None) -> Config:
        """Build a config from `to_dict` output or any nested mapping of overrides.

        Parameters
        ----------
        data : `~collections.abc.Mapping`
            Field name → value; nested mappings for subtask configs (``"__target__"`` retargets).
        label : `str`, optional
            Task label used in error messages.

        Returns
        -------
        config : `Config`
            A new, unfrozen config of this class.

        Raises
        ------
        ConfigError
            For an unknown field, a wrong type, or a failed cross-field rule.
        """
        prepared = _prepare(cls, data, label, ())
        try:
            return cls.model_validate(prepared)
        except ValidationError as exc:
            raise _convert_validation_error(exc, cls, label) from None

    @classmethod
    def from_overrides(
        cls, overrides: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), *, label: str | None = None
    ) -> Config:
        """Build a default config of this class with overrides applied (see `apply_overrides`).

        Parameters
        ----------
        overrides : `~collections.abc.Mapping` or iterable of ``(path, value)``
            Dotted field paths (or field names with nested mappings) and values.
        label : `str`, optional
            Task label for error messages.

        Returns
        -------
        config : `Config`
            A new, unfrozen config.

        Raises
        ------
        ConfigError
            For unknown fields, wrong types or a failed cross-field rule.
        """
        return apply_overrides(cls(), overrides, label=label)

    def __eq__(self, other: object) -> bool:
        # NaN-aware: two configs with a NaN in the same field are equal.
        return type(self) is type(other) and not diff_configs(self, other)

    __hash__ = None  # type: ignore[assignment]


def _frozen_error(where: str) -> ConfigError:
    return ConfigError(
        f"cannot modify {where}: the config is frozen (configs are frozen before execution); "
        "change it through a pipeline override instead"
    )


class _FrozenDict(dict):
    """A read-only dict (a `dict` for isinstance checks) used for the dict fields of frozen configs."""

    _where = "a dict field"

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise _frozen_error(self._where)

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse  # type: ignore

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))

    def __copy__(self) -> dict[Any, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        import copy

        return {k: copy.deepcopy(v, memo) for k, v in self.items()}


class _FrozenList(list):
    """A read-only list used for the list fields of frozen configs."""

    _where = "a list field"

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise _frozen_error(self._where)

    __setitem__ = __delitem__ = append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __iadd__ = __imul__ = _refuse  # type: ignore

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        import copy

        return [copy.deepcopy(v, memo) for v in self]


def _deep_freeze(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        out = _FrozenDict({k: _deep_freeze(v, f"{where}[{k!r}]") for k, v in value.items()})
        out._where = where
        return out
    if isinstance(value, list):
        lst = _FrozenList(_deep_freeze(v, f"{where}[{i}]") for i, v in enumerate(value))
        lst._where = where
        return lst
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()  # numpy scalars and arrays
    return value


def _prepare(cls: type[Config], data: Mapping[str, Any], label: str | None, prefix: tuple[str, ...]) -> Any:
    """Turn nested dicts with ``__target__`` into retargeted config instances (recursively)."""
    if not isinstance(data, Mapping):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == TARGET_KEY:
            continue
        sub_cls = _config_field_class(cls, key) if isinstance(key, str) else None
        if sub_cls is not None and isinstance(value, Mapping):
            target = None
            if TARGET_KEY in value:
                path = ".".join(prefix + (key,))
                try:
                    target = import_dotted(str(value[TARGET_KEY]))
                except ImportError as exc:
                    raise ConfigError(
                        f"{_who(label)}field '{path}': cannot import retarget {value[TARGET_KEY]!r} ({exc})",
                        label=label,
                        field=path,
                    ) from None
                sub_cls = getattr(target, "ConfigClass", sub_cls)
            sub_data = _prepare(sub_cls, value, label, prefix + (key,))
            try:
                inst = sub_cls.model_validate(sub_data)
            except ValidationError as exc:
                raise _convert_validation_error(exc, sub_cls, label, prefix=prefix + (key,)) from None
            if target is not None:
                inst._target = target
            out[key] = inst
        else:
            out[key] = value
    return out


def ConfigurableField(
    target: type[Configurable],
    *,
    description: str = "",
    doc: str | None = None,
    ConfigClass: type[Config] | None = None,
) -> Any:
    """Declare a retargetable subtask config field (``lsst.pex.config.ConfigurableField``).

    Use as ``overscan: OverscanCorrectionTaskConfig = ConfigurableField(OverscanCorrectionTask,
    description="...")``; the task then calls ``self.makeSubtask("overscan")``.

    Parameters
    ----------
    target : `type`
        Default subtask class (a `~pipeline.task.Task` subclass with a ``ConfigClass``).
    description : `str`
        Field documentation.
    doc : `str`, optional
        Alias of ``description`` (pex_config spelling).
    ConfigClass : `type`, optional
        Config class of the subtask; defaults to ``target.ConfigClass``.

    Returns
    -------
    field : `pydantic.fields.FieldInfo`
        A pydantic field whose default is a fresh config bound to ``target``.
    """
    config_class = ConfigClass or target.ConfigClass

    def factory() -> Config:
        inst = config_class()
        inst._target = target
        return inst

    return Field(
        default_factory=factory,
        description=description or doc or "",
        json_schema_extra={_TARGET_EXTRA: _dotted_name(target)},
    )


def configurable_target(config: Config, name: str) -> type:
    """Return the task class of subtask field ``name`` (retarget or the field's default target).

    Parameters
    ----------
    config : `Config`
        Parent config.
    name : `str`
        Field name declared with `ConfigurableField`.

    Returns
    -------
    target : `type`
        Task class.

    Raises
    ------
    ConfigError
        If the field does not exist or is not a `ConfigurableField`.
    """
    cls = type(config)
    info = cls.model_fields.get(name)
    if info is None:
        raise _unknown_field_error(cls, name, (), None)
    sub = getattr(config, name)
    if isinstance(sub, Config) and sub._target is not None:
        return sub._target
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    path = extra.get(_TARGET_EXTRA)
    if path is None:
        raise ConfigError(
            f"{cls.__name__}.{name} is not a ConfigurableField; cannot make a subtask from it", field=name
        )
    return import_dotted(str(path))


# ---------------------------------------------------------------------- error conversion
def _who(label: str | None) -> str:
    return f"task '{label}': " if label else ""


def _unknown_field_error(
    cls: type[Config], name: str, prefix: tuple[str, ...], label: str | None
) -> ConfigError:
    path = ".".join(prefix + (name,))
    allowed = sorted(cls.model_fields)
    import difflib  # imported for a "did you mean" hint only

    close = difflib.get_close_matches(name, allowed, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(
        f"{_who(label)}unknown config field '{path}' for {cls.__name__}{hint} "
        f"(allowed fields: {', '.join(allowed)})",
        label=label,
        field=path,
    )


def _walk(cls: type[Config], loc: Iterable[Any]) -> tuple[type[Config] | None, list[str], Any]:
    """Resolve a pydantic error location to (owning config class, field path, annotation)."""
    path: list[str] = []
    current: Any = cls
    annotation: Any = None
    for part in loc:
        if isinstance(current, type) and issubclass(current, Config):
            if isinstance(part, str) and part in current.model_fields:
                annotation = current.model_fields[part].annotation
                path.append(part)
                sub = _config_field_class(current, part)
                current = sub if sub is not None else annotation
                continue
            return current, path, annotation if annotation is not None else None
        origin = get_origin(current)
        if origin in (dict, Mapping) and isinstance(part, (str, int)):
            path.append(str(part))
            args = get_args(current)
            current = args[1] if len(args) == 2 else Any
            continue
        if origin in (list, tuple) and isinstance(part, int):
            path.append(str(part))
            continue
        break  # union branch tags and the like
    owner = current if isinstance(current, type) and issubclass(current, Config) else None
    return owner, path, annotation


_CONSTRAINTS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "multiple_of",
    "too_short",
    "too_long",
    "string_too_short",
    "string_too_long",
    "string_pattern_mismatch",
    "finite_number",
}
_SELF_EXPLAINED = {
    "literal_error",
    "bool_parsing",
    "bool_type",
    "int_parsing",
    "int_type",
    "float_parsing",
    "float_type",
    "string_type",
    "dict_type",
    "list_type",
    "model_type",
    "int_from_float",
    "model_attributes_type",
}


def _literal_choices(annotation: Any) -> tuple[Any, ...]:
    """Return the allowed values of a ``Literal[...]`` (or ``Literal[...] | None``) annotation, else ()."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if get_origin(annotation) in (typing.Union, types.UnionType):
        out: tuple[Any, ...] = ()
        for arg in get_args(annotation):
            out += _literal_choices(arg)
        return out
    return ()


def _convert_validation_error(
    exc: ValidationError,
    cls: type[Config],
    label: str | None,
    *,
    prefix: tuple[str, ...] = (),
    value_hint: Mapping[str, Any] | None = None,
) -> ConfigError:
    messages: list[str] = []
    first_field: str | None = None
    seen: set[str] = set()
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        etype = err.get("type", "")
        if etype == "extra_forbidden":
            owner, path, _ = _walk(cls, loc[:-1])
            owner = owner or cls
            sub = _unknown_field_error(owner, str(loc[-1]), prefix + tuple(path), None)
            text = str(sub)
            field = sub.field
        elif not loc:
            msg = err.get("msg", "")
            msg = msg.removeprefix("Value error, ")
            text = f"{'.'.join(prefix) + ': ' if prefix else ''}{cls.__name__} check failed: {msg}"
            field = ".".join(prefix) or None
        else:
            owner, path, annotation = _walk(cls, loc)
            field = ".".join(prefix + tuple(path))
            got = err.get("input")
            allowed = describe_type(annotation) if annotation is not None else "a valid value"
            msg = err.get("msg", "")
            if etype.startswith("value_error") or etype == "assertion_error":
                text = f"config field '{field}' = {got!r}: {msg.removeprefix('Value error, ')}"
            elif etype in _CONSTRAINTS:
                text = f"config field '{field}' = {got!r} is invalid: {msg[0].lower() + msg[1:]}"
            else:
                text = f"config field '{field}' = {got!r} is invalid: expected {allowed}"
                choices = _literal_choices(annotation)
                if choices and isinstance(got, str):
                    import difflib  # imported for a "did you mean" hint only

                    close = difflib.get_close_matches(got, [str(c) for c in choices], n=1, cutoff=0.6)
                    if not close:
                        close = [str(c) for c in choices if str(c).lower() == got.lower()]
                    if close:
                        text += f"; did you mean {close[0]!r}?"
                elif etype not in _SELF_EXPLAINED:
                    text += f" ({msg})"
        if field and field in seen:
            continue  # one message per field (unions report each branch)
        if field:
            seen.add(field)
        first_field = first_field or field
        messages.append(text)
    head = _who(label)
    if len(messages) == 1:
        return ConfigError(head + messages[0], label=label, field=first_field)
    body = "\n  - ".join(messages)
    return ConfigError(f"{head}{len(messages)} config errors:\n  - {body}", label=label, field=first_field)


# --------------------------------------------------------------------------- overrides
def _set_path(
    cls: type[Config], data: dict[str, Any], path: list[str], value: Any, label: str | None, full: str
) -> None:
    key = path[0]
    if key == TARGET_KEY:
        data[key] = value
        return
    if TARGET_KEY in data:  # a retargeted subtask: validate against the target's config class
        try:
            cls = getattr(import_dotted(str(data[TARGET_KEY])), "ConfigClass", cls)
        except ImportError as exc:
            raise ConfigError(
                f"{_who(label)}field '{full}': cannot import retarget {data[TARGET_KEY]!r} ({exc})",
                label=label,
                field=full,
            ) from None
    if key not in cls.model_fields:
        raise _unknown_field_error(
            cls, key, tuple(full.split(".")[: len(full.split(".")) - len(path)]), label
        )
    sub_cls = _config_field_class(cls, key)
    if len(path) == 1:
        if sub_cls is not None and isinstance(value, Mapping):
            current = data.get(key)
            if not isinstance(current, dict):
                current = {}
                data[key] = current
            items = sorted(value.items(), key=lambda kv: kv[0] != TARGET_KEY)  # retarget first
            for k, v in items:
                _set_path(sub_cls, current, [k], v, label, f"{full}.{k}")
        else:
            data[key] = value
        return
    if sub_cls is not None:
        current = data.setdefault(key, {})
        _set_path(sub_cls, current, path[1:], value, label, full)
        return
    ann = cls.model_fields[key].annotation
    origin = get_origin(ann)
    container = data.get(key)
    union_of_dict = origin in (typing.Union, types.UnionType) and any(
        get_origin(a) in (dict, Mapping) or a is dict for a in get_args(ann)
    )
    if origin in (dict, Mapping) or union_of_dict:
        if container is None:
            container = {}
        container = dict(container)
        _set_plain(container, path[1:], value)
        data[key] = container
        return
    raise ConfigError(
        f"{_who(label)}config field '{'.'.join(full.split('.')[: len(full.split('.')) - len(path) + 1])}' is "
        f"{describe_type(ann)}, it has no sub-field '{'.'.join(path[1:])}'",
        label=label,
        field=full,
    )


def _set_plain(container: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        nxt = container.get(key)
        nxt = dict(nxt) if isinstance(nxt, dict) else {}
        container[key] = nxt
        container = nxt
    container[path[-1]] = value


def apply_overrides(
    config: Config, overrides: Mapping[str, Any] | Iterable[tuple[str, Any]], *, label: str | None = None
) -> Config:
    """Return a new config with overrides applied and validated all together.

    Parameters
    ----------
    config : `Config`
        Starting config (not modified).
    overrides : `~collections.abc.Mapping` or iterable of ``(path, value)``
        Dotted field paths (``"overscan.fitType"``, ``"saturation.C1"`` for a dict field) or field
        names with nested mappings as values; applied in order.
    label : `str`, optional
        Task label for error messages.

    Returns
    -------
    config : `Config`
        A new config of the same class (unfrozen).

    Raises
    ------
    ConfigError
        Naming the label, the field, the allowed values or type (with close-match suggestions for
        unknown fields), or the cross-field rule that failed.
    """
    data = config.to_dict()
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    for path, value in items:
        path = str(path).strip()
        if path.startswith("config."):
            path = path[len("config.") :]
        if not path:
            raise ConfigError(f"{_who(label)}empty config field name in override", label=label)
        _set_path(type(config), data, path.split("."), value, label, path)
    return type(config).from_dict(data, label=label)


def flatten_config(data: Config | Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted path, value)`` for every leaf field of a config (or its `Config.to_dict`).

    Parameters
    ----------
    data : `Config` or `~collections.abc.Mapping`
        Config or saved config.
    prefix : `str`
        Prefix for the paths.

    Yields
    ------
    path, value : `tuple` [`str`, `object`]
        Dict-valued fields are yielded whole (not flattened).
    """
    cls = type(data) if isinstance(data, Config) else None
    mapping = data.to_dict() if isinstance(data, Config) else data
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        is_sub = isinstance(value, Mapping) and (
            (cls is not None and _config_field_class(cls, key) is not None)
            or (cls is None and TARGET_KEY in value)
        )
        if cls is not None and is_sub:
            yield from flatten_config(getattr(data, key), path + ".")
        elif is_sub:
            yield from flatten_config(value, path + ".")
        else:
            yield path, value


def field_descriptions(config: Config, prefix: str = "") -> dict[str, str]:
    """Return dotted field path → description for every leaf field of a config.

    Parameters
    ----------
    config : `Config`
        The config (its actual, possibly retargeted, sub-config classes are used).
    prefix : `str`
        Prefix for the paths.

    Returns
    -------
    descriptions : `dict` [`str`, `str`]
        Same paths as `flatten_config`; an empty string when a field has no description.
    """
    out: dict[str, str] = {}
    for name, info in type(config).model_fields.items():
        value = getattr(config, name)
        if isinstance(value, Config):
            out.update(field_descriptions(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = info.description or ""
    return out


def format_config(config: Config, *, docs: bool = True, root: str = "config") -> list[str]:
    """Render a config as ``config.<path>=<value>`` lines (pex_config style).

    Parameters
    ----------
    config : `Config`
        The config.
    docs : `bool`
        Precede each line with ``# <description>``.
    root : `str`
        Name the lines start with.

    Returns
    -------
    lines : `list` [`str`]
        One line per leaf field (two with ``docs``); a retargeted subtask gets a
        ``<root>.<path>.retarget(<dotted.Task>)`` line first.
    """
    lines: list[str] = []
    cls = type(config)
    data = config.to_dict()
    for name, info in cls.model_fields.items():
        value = getattr(config, name)
        if isinstance(value, Config):
            target = data[name].get(TARGET_KEY) if isinstance(data[name], dict) else None
            if target:
                lines.append(f"{root}.{name}.retarget({target})")
            lines += format_config(value, docs=docs, root=f"{root}.{name}")
            continue
        if docs and info.description:
            lines.append("# " + " ".join(info.description.split()))
        lines.append(f"{root}.{name}={py_repr(_plain(value))}")
    return lines


def py_repr(value: Any) -> str:
    """Return ``repr(value)`` that Python (and the override-file parser) reads back, NaN/inf included."""
    if isinstance(value, float) and value != value:
        return "float('nan')"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "float('inf')" if value > 0 else "-float('inf')"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_repr(k)}: {py_repr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(py_repr(v) for v in value) + "]"
    return repr(value)


def diff_configs(old: Config | Mapping[str, Any], new: Config | Mapping[str, Any]) -> list[str]:
    """Describe the differences between two configs (used when a run is extended).

    Parameters
    ----------
    old, new : `Config` or `~collections.abc.Mapping`
        Configs or their `Config.to_dict` forms.

    Returns
    -------
    differences : `list` [`str`]
        One ``"path: old != new"`` line per differing leaf, sorted; empty when equal.
    """
    a = _flat_all(old.to_dict() if isinstance(old, Config) else old)
    b = _flat_all(new.to_dict() if isinstance(new, Config) else new)
    lines = []
    missing = object()
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if not _same(va, vb):
            sa = "<absent>" if va is missing else repr(va)
            sb = "<absent>" if vb is missing else repr(vb)
            lines.append(f"{key}: {sa} != {sb}")
    return lines


def _flat_all(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            out.update(_flat_all(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = _plain(value)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # NaN == NaN for config purposes
    return a == b
