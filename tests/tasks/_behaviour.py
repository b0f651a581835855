"""Helpers of the config-behaviour sweeps: field enumeration, mutation values, output fingerprints.

A *fingerprint* is a flat ``{name: value}`` of everything a task run produces (arrays, scalars,
metadata, connections); two runs "differ" when any entry differs (NaN equal to NaN). The
sweeps run a baseline and, for each config field, the baseline with that one field changed, and
assert the fingerprints differ.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import Config

#: Task-metadata keys that change from run to run (timers).
_VOLATILE = ("Utc", "WallTime", "CpuTime", "Duration", "CpuDuration", "MaxResidentSetSize")


def leaf_fields(cfg: type[Config], prefix: str = "") -> list[str]:
    """Dotted names of every leaf field of ``cfg`` (nested configs recursed, ``connections`` skipped)."""
    out = []
    for name, field in cfg.model_fields.items():
        if prefix == "" and name == "connections":
            continue
        ann = field.annotation
        if inspect.isclass(ann) and issubclass(ann, Config):
            out += leaf_fields(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def field_owner(cfg: type[Config], dotted: str) -> tuple[type[Config], str]:
    """Return the config class declaring the last component of ``dotted`` and that component."""
    *parents, name = dotted.split(".")
    owner = cfg
    for p in parents:
        owner = owner.model_fields[p].annotation
    return owner, name


def get_dotted(config: Config, dotted: str) -> Any:
    """Value of a dotted field."""
    obj: Any = config
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def with_field(config_cls: type[Config], base: Mapping[str, Any], dotted: str, value: Any) -> Config:
    """Build a config from ``base`` (dotted keys) with ``dotted`` set to ``value``."""
    kw = dict(base)
    kw[dotted] = value
    return build_config(config_cls, kw)


def build_config(config_cls: type[Config], dotted_kw: Mapping[str, Any]) -> Config:
    """Build ``config_cls`` from dotted keyword values (``{"overscan.fitType": "POLY"}``)."""
    nested: dict[str, Any] = {}
    for key, value in dotted_kw.items():
        parts = key.split(".")
        d = nested
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = value
    return config_cls(**nested)


def auto_value(config_cls: type[Config], dotted: str, current: Any) -> list[Any]:
    """Non-default values tried for a field when no explicit one is given.

    Bools flip; ``Literal`` fields take every other allowed value. Other types need an explicit
    value (a meaningful change is field-specific).

    Raises
    ------
    LookupError
        If no automatic value exists for the field's type.
    """
    owner, name = field_owner(config_cls, dotted)
    ann = owner.model_fields[name].annotation
    if typing.get_origin(ann) is typing.Literal:
        return [v for v in typing.get_args(ann) if v != current]
    if isinstance(current, bool):
        return [not current]
    raise LookupError(f"{dotted}: give an explicit non-default value ({type(current).__name__})")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}", v, out)
    elif hasattr(value, "to_dict") and callable(value.to_dict):
        _flatten(prefix, value.to_dict(), out)
    else:
        out[prefix] = value


def metadata_dict(md: Any) -> dict[str, Any]:
    """Flatten a task metadata / header into a dict without the run-dependent timer entries."""
    out: dict[str, Any] = {}
    if md is None:
        return out
    if hasattr(md, "to_dict"):
        md = md.to_dict()
    elif not isinstance(md, Mapping):
        md = dict(md.items())
    _flatten("", md, out)
    return {k: v for k, v in out.items() if not k.endswith(_VOLATILE)}


def exposure_entries(prefix: str, exp: Any) -> dict[str, Any]:
    """Image, mask, variance, mask planes, header, photo calib and transmission of an exposure."""
    if exp is None:
        return {prefix: None}
    mi = exp.masked_image
    out = {
        f"{prefix}.image": np.array(mi.image),
        f"{prefix}.mask": np.array(mi.mask),
        f"{prefix}.variance": None if mi.variance is None else np.array(mi.variance),
        f"{prefix}.planes": dict(mi.mask_planes),
        f"{prefix}.photo_calib": getattr(exp, "photo_calib", None),
        f"{prefix}.transmission": sorted((getattr(exp, "transmission_curve", None) or {}).keys()),
    }
    for k, v in metadata_dict(exp.metadata).items():
        if k.rsplit("/", 1)[-1].removeprefix("HIERARCH ") in _CLOCK:
            continue  # the wall-clock time of the run (a second boundary would make runs differ)
        out[f"{prefix}.md{k}"] = v
    return out


def connection_entries(config: Any) -> dict[str, Any]:
    """Every connection of the config: kind, connection name -> dataset type name."""
    conns = config.make_connections()
    out: dict[str, Any] = {}
    for kind in ("inputs", "prerequisiteInputs", "outputs", "initInputs", "initOutputs"):
        for name in sorted(getattr(conns, kind, ())):
            out[f"conn.{kind}.{name}"] = getattr(conns, name).name
    return out


def same(a: Any, b: Any) -> bool:
    """Deep equality with NaN == NaN, arrays compared element-wise (shape and dtype included)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - objects without a usable ==
        return a is b


def differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ (or exist in one fingerprint only)."""
    return sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not same(a[k], b[k]))


REPO = Path(__file__).resolve().parents[2]


def assert_named_tests_exist(named: Mapping[str, str]) -> None:
    """Each ``path::function`` of ``named`` names an existing test function."""
    for field, ref in named.items():
        path, _, func = ref.partition("::")
        text = (REPO / path).read_text()
        assert re.search(rf"^def {func}\(", text, re.M), f"{field}: {ref} does not exist"


# ============================================================================================
# Table-driven sweeps over a task's ``run``
# ============================================================================================
FRAMEWORK = frozenset({"saveMetadata", "saveLogOutput"})  # tests/tasks/test_config_fields.py
#: Header / metadata keys holding the wall-clock time of a run.
_CLOCK = ("CALIB_CREATION_DATE", "CALIB_CREATION_TIME", "CALIBDATE", "DATE")


def value_entries(prefix: str, value: Any, out: dict[str, Any], depth: int = 0) -> None:
    """Flatten a task output (exposures, arrays, mappings, calibration objects) into ``out``."""
    from pipeline.image import Exposure

    if depth > 6:
        out[prefix] = repr(value)
    elif isinstance(value, Exposure):
        out.update(exposure_entries(prefix, value))
    elif isinstance(value, np.ndarray) or value is None or isinstance(value, (str, bytes, int, float, bool)):
        out[prefix] = value
    elif isinstance(value, Mapping) or hasattr(value, "items") and callable(value.items):
        for k, v in value.items():
            if str(k).removeprefix("HIERARCH ") in _CLOCK:
                continue
            value_entries(f"{prefix}/{k}", v, out, depth + 1)
    elif isinstance(value, (list, tuple)):
        out[f"{prefix}#len"] = len(value)
        for i, v in enumerate(value):
            value_entries(f"{prefix}[{i}]", v, out, depth + 1)
    elif hasattr(value, "getDict"):  # Struct
        value_entries(prefix, value.getDict(), out, depth + 1)
    elif hasattr(value, "__dict__") and not inspect.isroutine(value) and not isinstance(value, type):
        value_entries(prefix, {k: v for k, v in vars(value).items() if not k.startswith("_")}, out, depth + 1)
    else:
        out[prefix] = value


class _Records(logging.Handler):
    """Collect the WARNING and higher messages a task logs (a warning is an output)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Sweep:
    """One task's behaviour sweep: a baseline config, inputs, and per-field changes.

    Parameters
    ----------
    task : `type`
        The `PipelineTask` subclass.
    inputs : callable
        Returns the keyword arguments of ``task.run`` (called once per run: fresh objects).
    base : dict
        Dotted config values of the baseline.
    variants : dict
        Name -> dotted overrides of another baseline (``"main"`` is the baseline itself), or
        ``(overrides, inputs)`` with the variant's own inputs callable.
    cases : dict
        Field -> list of ``(value, variant)``; other fields get `auto_value` in ``"main"``.
    named : dict
        Field -> ``"path::test"`` showing an effect the sweep's input cannot give.
    expect_raise : dict
        Field -> exception type: the field's changed value makes the run refuse (the behaviour).
    inert : dict
        Field -> ``(value, reason)``: a field of a config shared with sibling tasks that this
        task does not read (a known gap, asserted to change nothing so that the table stays true).
    """

    def __init__(
        self,
        task: type,
        inputs: Any,
        base: Mapping[str, Any] | None = None,
        variants: Mapping[str, Mapping[str, Any]] | None = None,
        cases: Mapping[str, list[tuple[Any, str]]] | None = None,
        named: Mapping[str, str] | None = None,
        expect_raise: Mapping[str, type] | None = None,
        inert: Mapping[str, tuple[Any, str]] | None = None,
    ) -> None:
        self.task = task
        self.inputs = inputs
        self.base = dict(base or {})
        self.variants: dict[str, tuple[dict[str, Any], Any]] = {"main": ({}, inputs)}
        for name, v in (variants or {}).items():
            self.variants[name] = (dict(v[0]), v[1]) if isinstance(v, tuple) else (dict(v), inputs)
        self.cases = dict(cases or {})
        self.named = dict(named or {})
        self.expect_raise = dict(expect_raise or {})
        self.inert = dict(inert or {})
        self._baselines: dict[str, dict[str, Any]] = {}

    @property
    def config_cls(self) -> type[Config]:
        return self.task.ConfigClass

    def config(self, variant: str, extra: Mapping[str, Any] | None = None) -> Config:
        """Build the variant's config with ``extra`` dotted values on top."""
        return build_config(self.config_cls, {**self.base, **self.variants[variant][0], **(extra or {})})

    def fingerprint(self, config: Config, variant: str = "main") -> dict[str, Any]:
        """Return the connections, outputs and task metadata of one run (a refusal is recorded)."""
        out = connection_entries(config) if hasattr(config, "make_connections") else {}
        task = self.task(config=config)
        records = _Records()
        # The task's warnings are recorded whatever logging state earlier tests of this process
        # left (a CLI test's --log-level, logging.disable): a baseline computed before such a
        # test must equal a run after it.
        log = logging.getLogger(task.log.name)
        level, disabled = log.level, logging.root.manager.disable
        log.setLevel(logging.WARNING)
        logging.disable(logging.NOTSET)
        task.log.addHandler(records)
        try:
            res = task.run(**self.variants[variant][1]())
        except Exception as exc:  # noqa: BLE001 - a refusal is an output too
            out["raised"] = type(exc)
            out["message"] = str(exc)
            return out
        finally:
            task.log.removeHandler(records)
            log.setLevel(level)
            logging.disable(disabled)
        out["warnings"] = records.messages
        value_entries("result", res, out)
        for k, v in metadata_dict(task.getFullMetadata()).items():
            out[f"taskmd{k}"] = v
        return out

    def baseline(self, variant: str) -> dict[str, Any]:
        """Fingerprint of a variant's baseline (computed once)."""
        if variant not in self._baselines:
            self._baselines[variant] = self.fingerprint(self.config(variant), variant)
        return self._baselines[variant]

    def swept_cases(self) -> list[tuple[str, Any, str]]:
        """Every ``(field, value, variant)`` the sweep runs."""
        out = []
        base_cfg = self.config("main")
        no_ops = getattr(self.config_cls, "noOpFields", {})
        for dotted in leaf_fields(self.config_cls):
            if dotted in FRAMEWORK or dotted in no_ops or dotted in self.named or dotted in self.inert:
                continue
            if dotted in self.cases:
                out += [(dotted, value, variant) for value, variant in self.cases[dotted]]
            else:
                current = get_dotted(base_cfg, dotted)
                out += [(dotted, v, "main") for v in auto_value(self.config_cls, dotted, current)]
        return out

    def check_case(self, dotted: str, value: Any, variant: str) -> None:
        """Assert that changing ``dotted`` to ``value`` (from ``variant``) changes the run."""
        import warnings

        base = self.baseline(variant)
        assert "raised" not in base, (variant, base.get("message"))
        assert get_dotted(self.config(variant), dotted) != value, f"{dotted}: the value is the baseline's"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a documented no-op would warn: not expected here
            try:
                changed = self.config(variant, {dotted: value})
            except Exception as exc:  # a refusal by the config itself
                if dotted in self.expect_raise and isinstance(exc, self.expect_raise[dotted]):
                    return
                raise
        fp = self.fingerprint(changed, variant)
        if dotted in self.expect_raise:
            assert fp.get("raised") is self.expect_raise[dotted], fp.get("message")
            return
        assert "raised" not in fp, fp.get("message")
        assert differing(base, fp), f"{self.task.__name__}.{dotted}={value!r} ({variant}) changed nothing"

    def check_accounted(self) -> None:
        """Each leaf field is swept, named, a documented no-op or a framework field (exactly one)."""
        swept = {d for d, _, _ in self.swept_cases()}
        no_ops = getattr(self.config_cls, "noOpFields", {})
        for dotted in leaf_fields(self.config_cls):
            classes = [
                dotted in swept,
                dotted in self.named,
                dotted in no_ops,
                dotted in FRAMEWORK,
                dotted in self.inert,
            ]
            assert sum(classes) == 1, (self.task.__name__, dotted, classes)
        assert set(self.cases) <= set(leaf_fields(self.config_cls))
        assert set(self.expect_raise) <= swept
        assert_named_tests_exist(self.named)
        base = self.baseline("main")
        assert "raised" not in base, base.get("message")
        again = self.fingerprint(self.config("main"))
        diff = differing(base, again)
        assert diff == [], f"the baseline is not reproducible: {[(k, base.get(k), again.get(k)) for k in diff][:5]}"
        for dotted, (value, why) in self.inert.items():  # the known gaps are still gaps
            changed = self.fingerprint(self.config("main", {dotted: value}))
            assert differing(base, changed) == [], f"{dotted} now acts ({why}): sweep it"


def sweep_tests(sweeps: list[Sweep]) -> tuple[Any, Any]:
    """Return a module's two sweep tests over ``sweeps``; assign both to module-level names.

    ``test_every_field_is_accounted_for``: each field is swept, named, a documented no-op or a
    framework field, and the baseline is stable. ``test_field_changes_the_output``: changing one
    field (from the variant's baseline) changes the outputs or the connections.
    """

    @pytest.mark.parametrize("sweep", sweeps, ids=lambda s: s.task.__name__)
    def test_every_field_is_accounted_for(sweep: Sweep) -> None:
        """Each field is swept, named, a documented no-op or a framework field; the baseline is stable."""
        sweep.check_accounted()

    @pytest.mark.parametrize(
        "sweep,dotted,value,variant",
        [(s, *case) for s in sweeps for case in s.swept_cases()],
        ids=lambda v: v.task.__name__ if isinstance(v, Sweep) else str(v)[:30],
    )
    def test_field_changes_the_output(sweep: Sweep, dotted: str, value: Any, variant: str) -> None:
        """Changing one field (from the variant's baseline) changes the outputs or the connections."""
        sweep.check_case(dotted, value, variant)

    return test_every_field_is_accounted_for, test_field_changes_the_output
