"""Every config field of every task either acts or is a documented no-op that warns when set.

Issue reproduction: ``saveMetadata`` / ``saveLogOutput`` were accepted on the PTC extract task
and ignored; IsrTask ``doWrite=False`` still wrote postISRCCD; ``datasetType``,
``bias/dark/flat/illuminationCorrectionDataProductName``, ``useFallbackDate``, ``expectWcs``,
``fwhm``, ``doAssembleIsrExposures``, ``doCameraSpecificMasking`` and ``doTweakFlat`` did nothing
without a word.

`test_every_field_acts_or_warns` walks `pipeline.tasks` for `PipelineTask` subclasses and puts
each field of each config (nested configs included) in one class:

- ``connections.<name>``: changing it renames that connection's dataset type (checked here);
- the framework fields ``saveMetadata`` / ``saveLogOutput``: tests below;
- ``noOpFields`` of the config class: setting a non-default value warns (checked here);
- every other field is shown to act by behaviour: the task's sweep in a
  ``test_config_behaviour_*`` module changes it and sees the outputs or the graph change (or
  the run refused), or maps it to the named test showing its effect. Tasks running the same
  code with the same config fields share a sweep (`SAME_RUN`).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import pipeline
import pipeline.tasks
from pipeline.config import Config
from pipeline.exceptions import ConfigError
from pipeline.task import PipelineTask
from pipeline.tasks.isr import IsrTask

#: Tasks whose ``run`` is their parent's on the same config fields -> the swept parent.
SAME_RUN = {
    "CalibCombineByFilterTask": "CalibCombineTask",
    "MeasureDefectsCombinedTask": "MeasureDefectsTask",
    "MeasureDefectsCombinedWithFilterTask": "MeasureDefectsTask",
    "CfhtIsrTask": "IsrTask",
}
#: Base tasks whose ``run`` needs a subclass (abstract ``measure``) -> the subclasses' sweeps.
ABSTRACT = {
    "CpVerifyStatsTask": ("CpVerifyBiasTask", "CpVerifyDarkTask", "CpVerifyFlatTask", "CpVerifyDefectsTask"),
}
#: Fields of a task not in its `SAME_RUN` parent's sweep -> the test showing their effect.
EXTRA_EVIDENCE = {("CfhtIsrTask", "safe"): "tests/tasks/test_config_behaviour_isr.py::test_cfht_safe_factor"}


def _coverage() -> dict[str, dict[str, str]]:
    """Task name -> field -> how its effect is shown (``behaviour``, ``named``, ``inert``)."""
    from tests.tasks import (
        test_config_behaviour_cp,
        test_config_behaviour_cti,
        test_config_behaviour_isr,
        test_config_behaviour_ptc,
        test_config_behaviour_verify,
        test_config_behaviour_xtalk,
    )

    isr = test_config_behaviour_isr
    out: dict[str, dict[str, str]] = {
        "IsrTask": {
            **{d: "behaviour" for d, _, _ in isr._cases()},
            **{d: "named" for d in isr.NAMED_TESTS},
        }
    }
    for module in (
        test_config_behaviour_cp,
        test_config_behaviour_ptc,
        test_config_behaviour_xtalk,
        test_config_behaviour_cti,
        test_config_behaviour_verify,
    ):
        for sweep in module.SWEEPS:
            out[sweep.task.__name__] = {
                **{d: "behaviour" for d, _, _ in sweep.swept_cases()},
                **{d: "named" for d in sweep.named},
                **{d: "inert" for d in sweep.inert},  # a listed gap: not acting
            }
    return out


FRAMEWORK_EVIDENCE = {
    "saveMetadata": "test_save_metadata_false_is_refused",
    "saveLogOutput": "test_save_log_output_false_removes_the_log_output",
}


def _task_classes() -> list[type]:
    found: list[type] = []
    for info in pkgutil.walk_packages(pipeline.tasks.__path__, "pipeline.tasks."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, PipelineTask)
                and obj is not PipelineTask
                and getattr(obj, "ConfigClass", None) is not None
                and obj not in found
            ):
                found.append(obj)
    return found


def _fields(cfg: type[Config], prefix: str = "") -> list[tuple[str, type[Config], str]]:
    out = []
    for name, field in cfg.model_fields.items():
        if prefix == "" and name == "connections":
            continue  # checked by renaming
        out.append((prefix + name, cfg, name))
        ann = field.annotation
        if inspect.isclass(ann) and issubclass(ann, Config):
            out += _fields(ann, f"{prefix}{name}.")
    return out


def _non_default(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        if value != value:
            return 2.0  # NaN
        return value / 2 if 0 < value <= 1 else value + 1.5  # fractions stay in [0, 1]
    if isinstance(value, str):
        return value + "X"
    raise TypeError(f"no non-default value for {value!r}")


def test_task_walk_finds_the_tasks():
    """The walk sees the ISR and cp tasks (so the checks below cover them)."""
    names = {t.__name__ for t in _task_classes()}
    assert {
        "IsrTask",
        "CpFlatNormalizationTask",
        "PhotonTransferCurveExtractTask",
        "CalibCombineTask",
    } <= names
    assert len(names) >= 25


@pytest.mark.parametrize("task", _task_classes(), ids=lambda t: t.__name__)
def test_every_field_acts_or_warns(task):
    """One class per field: renamed connection, framework field, warning no-op, or shown to act."""
    cfg_cls = task.ConfigClass
    config = cfg_cls()
    coverage = _coverage()
    shown = coverage.get(task.__name__) or coverage.get(SAME_RUN.get(task.__name__, ""), {})
    for sub in ABSTRACT.get(task.__name__, ()):  # acting in one subclass is acting
        shown = {**shown, **{d: how for d, how in coverage[sub].items() if how != "inert"}}
    unexplained = []
    for dotted, owner, name in _fields(cfg_cls):
        if name in FRAMEWORK_EVIDENCE and owner is cfg_cls:
            continue
        if name in getattr(owner, "noOpFields", {}):
            fresh = owner()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                setattr(fresh, name, _non_default(getattr(fresh, name)))
            assert any(f"{owner.__name__}.{name} = " in str(w.message) for w in caught), dotted
            assert any("has no effect in ccdflow" in str(w.message) for w in caught), dotted
            continue
        if (task.__name__, dotted) in EXTRA_EVIDENCE:
            continue
        ann = owner.model_fields[name].annotation
        if inspect.isclass(ann) and issubclass(ann, Config):
            continue  # a nested config: its leaf fields are checked
        if dotted not in shown:
            unexplained.append(dotted)
    assert not unexplained, (
        f"{task.__name__}: fields no behaviour sweep shows acting and that are not documented "
        f"no-ops: {unexplained}"
    )
    # connections.<name>: each renames its connection's dataset type
    if "connections" in cfg_cls.model_fields:
        for conn_name in config.connections.to_dict():
            if conn_name not in type(config).ConnectionsClass._connection_decls:
                continue  # a template value
            renamed = cfg_cls()
            setattr(renamed.connections, conn_name, f"renamed{conn_name[0].upper()}{conn_name[1:]}")
            conns = renamed.make_connections()
            assert getattr(conns, conn_name).name == f"renamed{conn_name[0].upper()}{conn_name[1:]}"


def test_no_op_fields_are_real_fields_and_quiet_at_default():
    """Every listed no-op names a field; the defaults warn nothing."""
    for task in _task_classes():
        cfg_cls = task.ConfigClass
        for name in getattr(cfg_cls, "noOpFields", {}):
            assert name in cfg_cls.model_fields, (cfg_cls.__name__, name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cfg_cls()


def test_save_metadata_false_is_refused():
    """saveMetadata=False: refused on every task (metadata marks a quantum done), naming the field."""
    for task in (IsrTask, *[t for t in _task_classes() if t.__name__ == "PhotonTransferCurveExtractTask"]):
        config = task.ConfigClass()
        with pytest.raises(ConfigError, match="saveMetadata=False is not supported"):
            config.saveMetadata = False
        assert config.saveMetadata is True


def test_isr_do_write_false_removes_postisrccd():
    """IsrTask doWrite=False: no outputExposure connection, so no postISRCCD in the pipeline graph."""
    from pipeline.definitions import Pipeline

    default = IsrTask.ConfigClass().make_connections()
    assert "outputExposure" in default.outputs and default.outputExposure.name == "postISRCCD"
    config = IsrTask.ConfigClass(doWrite=False)
    assert "outputExposure" not in config.make_connections().outputs
    text = "description: x\ntasks:\n  isr:\n    class: pipeline.tasks.isr.IsrTask\n    config:\n"
    graph = Pipeline.from_string(text + "      doWrite: false\n").to_graph()
    assert "postISRCCD" not in graph.dataset_types
    assert "postISRCCD" in Pipeline.from_string(text + "      doWrite: true\n").to_graph().dataset_types


def test_isr_data_product_names_rename_the_connections():
    """DatasetType and bias/dark/flatDataProductName name the raw and calibration inputs (LSST)."""
    config = IsrTask.ConfigClass(
        datasetType="rawAlt",
        biasDataProductName="biasAlt",
        darkDataProductName="darkAlt",
        flatDataProductName="flatAlt",
    )
    conns = config.make_connections()
    assert (conns.ccdExposure.name, conns.bias.name, conns.dark.name, conns.flat.name) == (
        "rawAlt",
        "biasAlt",
        "darkAlt",
        "flatAlt",
    )
    # an explicit connections.<name> rename wins
    config.connections.bias = "biasExplicit"
    assert config.make_connections().bias.name == "biasExplicit"
    # defaults: LSST's names
    conns = IsrTask.ConfigClass().make_connections()
    assert (conns.ccdExposure.name, conns.bias.name, conns.dark.name, conns.flat.name) == (
        "raw",
        "bias",
        "dark",
        "flat",
    )


def test_save_log_output_false_removes_the_log_output(tmp_path):
    """saveLogOutput=False: no <label>_log in the graph nor in the repository; metadata still written."""
    bench = Path(__file__).resolve().parents[2] / "bench"
    sys.path.insert(0, str(bench))
    try:
        import _toy_tasks as toy
    finally:
        sys.path.remove(str(bench))
    from pipeline.execution.executors import SerialExecutor
    from pipeline.execution.runner import pre_exec_init, run_graph
    from pipeline.graph.builder import build_quantum_graph
    from pipeline.graph.collections import resolve_output_collections

    butler, _ = toy.make_toy_repo(tmp_path / "repo", 2, 1, shape=(8, 8))
    tasks = [
        ("subtractMedian", toy.SubtractMedianTask, toy.SubtractMedianConfig(saveLogOutput=False)),
        ("gatherMedians", toy.GatherMediansTask, toy.GatherMediansConfig()),
    ]
    colls = resolve_output_collections(butler.registry, inputs=[toy.TOY_RAW_RUN], output="u/nolog")
    graph = build_quantum_graph(butler, tasks, collections=colls, where="")
    pre_exec_init(butler, graph, register_dataset_types=True)
    ex = SerialExecutor(graph, butler.root)
    try:
        report = run_graph(butler, graph, ex, progress="none")
    finally:
        ex.shutdown()
    assert report.count("done") == 4  # 2 subtractMedian + 2 gatherMedians (one per exposure)
    types = {dt.name for dt in butler.registry.query_dataset_types("*")}
    assert "subtractMedian_log" not in types and "gatherMedians_log" in types
    assert len(butler.query_datasets("subtractMedian_metadata", collections="u/nolog")) == 2
    assert len(butler.query_datasets("gatherMedians_log", collections="u/nolog")) == 2
