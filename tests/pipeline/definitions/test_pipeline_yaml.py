"""Pipeline YAML: tasks, config blocks, parameters, imports, subsets, contracts, data-ID scoping."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from pipeline.config import parse_python_overrides
from pipeline.definitions import Pipeline, evaluate_contract
from pipeline.exceptions import ConfigError, ContractError, PipelineDefinitionError

T = "tests.pipeline.toy_tasks"


def write(path: Path, text: str) -> Path:
    """Write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture()
def base_pipeline(tmp_path):
    """Write the base toy pipeline and its override files; return its path."""
    write(tmp_path / "over.yaml", "offset:\n  value: 4.0\nsaturation.C1: 5.0e4\n")
    write(tmp_path / "over.py", "import os\nconfig.statistic = 'MEAN'\nconfig.saturation['C2'] = 7.0\n")
    return write(
        tmp_path / "base.yaml",
        f"""
        description: Toy ISR + combine.
        parameters:
          lvl: 1.5
          method: MEDIAN
        tasks:
          isr:
            class: {T}.SubtractTask
            config:
              - level: parameters.lvl
              - file: [over.yaml, over.py]
              - python: "config.threshold = 9.0"
              - dataId: {{detector: 2}}
                level: 3.0
          combine:
            class: {T}.CombineTask
            config:
              combine: parameters.method
          measure: {T}.MeasureTask
        subsets:
          isrOnly: [isr]
          products:
            subset: [isr, combine]
            description: ISR and combination.
        contracts:
          - contract: "isr.level < isr.threshold"
            msg: threshold must exceed level
    """,
    )


def test_config_blocks_files_parameters(base_pipeline):
    """Config blocks files parameters."""
    pipe = Pipeline.from_file(base_pipeline)
    assert list(pipe.tasks) == ["isr", "combine", "measure"]
    config = pipe.task_config("isr")
    assert config.level == 1.5
    assert config.offset.value == 4.0
    assert config.saturation == {"ALL_AMPS": 1e6, "C1": 5e4, "C2": 7.0}
    assert config.statistic == "MEAN"
    assert config.threshold == 9.0
    assert pipe.task_config("combine").combine == "MEDIAN"


def test_data_id_scoped_block(base_pipeline):
    """Data id scoped block."""
    pipe = Pipeline.from_file(base_pipeline)
    assert pipe.task_config("isr", {"instrument": "x", "detector": 2, "exposure": 5}).level == 3.0
    assert pipe.task_config("isr", {"instrument": "x", "detector": 1, "exposure": 5}).level == 1.5
    assert pipe.task_config("isr", None).level == 1.5
    graph = pipe.to_graph()
    node = graph.tasks["isr"]
    assert node.has_data_id_overrides
    scoped = node.config_for({"detector": 2})
    assert scoped.level == 3.0 and scoped.frozen
    assert node.config_for({"detector": 7}) is node.config
    assert not graph.tasks["combine"].has_data_id_overrides


def test_subset_selection_by_name_and_labels(base_pipeline):
    """Subset selection by name and labels."""
    pipe = Pipeline.from_file(f"{base_pipeline}#products")
    assert list(pipe.tasks) == ["isr", "combine"]
    assert set(pipe.subsets) == {"isrOnly", "products"}
    pipe = Pipeline.from_file(f"{base_pipeline}#measure,isrOnly")
    assert list(pipe.tasks) == ["isr", "measure"]
    assert set(pipe.subsets) == {"isrOnly"}
    with pytest.raises(
        PipelineDefinitionError,
        match=r"'mesure' is neither a task label nor a subset; "
        r"did you mean 'measure'\?",
    ):
        Pipeline.from_file(f"{base_pipeline}#mesure")


def test_contract_pass_and_fail(base_pipeline):
    """Contract pass and fail."""
    Pipeline.from_file(base_pipeline).to_graph()
    pipe = Pipeline.from_file(base_pipeline)
    pipe.add_config_override("isr", "threshold", 20.0)
    pipe.add_config_override("isr", "level", 10.0)
    pipe.to_graph()
    pipe.add_config_override("isr", "level", 20.0)  # level == threshold: the contract fails
    with pytest.raises(ContractError) as exc:
        pipe.to_graph()
    assert (
        str(exc.value) == "pipeline contract 'isr.level < isr.threshold' failed: threshold must exceed level"
    )


def test_contract_evaluator_is_safe():
    """Contract evaluator is safe."""
    ns = {"a": {"x": 1}}
    assert evaluate_contract("a.x + 1 == 2 and len([1, 2]) == 2", ns) is True
    for expr, msg in [
        ("__import__('os')", "Call is not allowed"),
        ("a.__class__", "private attribute '__class__'"),
        ("(lambda: 1)()", "is not allowed"),
        ("b.x == 1", "unknown name 'b'"),
        ("[x for x in (1,)]", "ListComp is not allowed"),
    ]:
        with pytest.raises(ContractError, match=msg):
            evaluate_contract(expr, ns)


def test_contract_unknown_field(base_pipeline, tmp_path):
    """Test contract unknown field."""
    path = write(
        tmp_path / "c.yaml",
        f"""
        description: bad contract
        tasks:
          isr: {T}.SubtractTask
        contracts:
          - "isr.levle > 0"
    """,
    )
    with pytest.raises(ContractError, match="SubtractConfig has no field 'levle'; did you mean 'level'"):
        Pipeline.from_file(path).to_graph()


def test_imports_include_exclude_env_and_extension(base_pipeline, tmp_path, monkeypatch):
    """Imports include exclude env and extension."""
    monkeypatch.setenv("TOY_PIPELINES", str(tmp_path))
    sub = write(
        tmp_path / "sub" / "child.yaml",
        """
        description: Child.
        parameters:
          lvl: 2.5
        imports:
          - location: $TOY_PIPELINES/base.yaml
            exclude: [measure]
        tasks:
          isr:
            config:
              offset.method: SUBTRACT
          norm:
            class: tests.pipeline.toy_tasks.NormTask
    """,
    )
    pipe = Pipeline.from_file(sub)
    assert list(pipe.tasks) == ["isr", "combine", "norm"]
    config = pipe.task_config("isr")
    assert config.level == 2.5  # importing file's parameter wins
    assert config.offset.method == "SUBTRACT" and config.offset.value == 4.0
    assert [c.contract for c in pipe.contracts] == ["isr.level < isr.threshold"]
    inc = write(
        tmp_path / "sub" / "inc.yaml",
        """
        description: Include by subset, relative path.
        imports:
          - location: ../base.yaml
            include: [isrOnly]
            importContracts: false
    """,
    )
    pipe = Pipeline.from_file(inc)
    assert list(pipe.tasks) == ["isr"] and pipe.contracts == [] and list(pipe.subsets) == ["isrOnly"]


def test_import_subset_modify_modes(base_pipeline, tmp_path):
    """Import subset modify modes."""
    drop = write(
        tmp_path / "drop.yaml", "description: d\nimports:\n  - location: base.yaml\n    exclude: [combine]\n"
    )
    assert set(Pipeline.from_file(drop).subsets) == {"isrOnly"}
    edit = write(
        tmp_path / "edit.yaml",
        "description: d\nimports:\n  - location: base.yaml\n"
        "    exclude: [combine]\n    labeledSubsetModifyMode: EDIT\n",
    )
    assert Pipeline.from_file(edit).subsets["products"].labels == ["isr"]


def test_import_errors(base_pipeline, tmp_path, monkeypatch):
    """Import errors."""
    monkeypatch.delenv("NOPE_DIR", raising=False)
    cases = {
        "missing.yaml": ("description: x\nimports: [does_not_exist.yaml]\n", "does not exist"),
        "env.yaml": (
            "description: x\nimports:\n  - location: $NOPE_DIR/a.yaml\n",
            "environment variable NOPE_DIR is not set",
        ),
        "both.yaml": (
            "description: x\nimports:\n  - location: base.yaml\n    include: [isr]\n    exclude: [combine]\n",
            "has both include and exclude",
        ),
        "twice.yaml": (
            "description: x\nimports: [base.yaml, base.yaml]\n",
            "task label 'isr' is defined by two imports",
        ),
        "cls.yaml": (
            f"description: x\nimports: [base.yaml]\ntasks:\n  isr: {T}.CombineTask\n",
            "class 'tests.pipeline.toy_tasks.CombineTask' differs from the imported task's class",
        ),
    }
    for name, (text, msg) in cases.items():
        with pytest.raises(PipelineDefinitionError, match=msg):
            Pipeline.from_file(write(tmp_path / name, text))
    write(tmp_path / "cyc_a.yaml", "description: a\nimports: [cyc_b.yaml]\n")
    write(tmp_path / "cyc_b.yaml", "description: b\nimports: [cyc_a.yaml]\n")
    with pytest.raises(
        PipelineDefinitionError, match="pipeline import cycle: .*cyc_a.yaml -> .*cyc_b.yaml -> .*cyc_a.yaml"
    ):
        Pipeline.from_file(tmp_path / "cyc_a.yaml")


def test_definition_errors(tmp_path):
    """Definition errors."""
    cases = [
        ("tasks: {}\n", "missing required key 'description'"),
        ("description: x\ntask: {}\n", r"unknown key 'task'; did you mean 'tasks'\?"),
        (
            f"description: x\ntasks:\n  isr:\n    clas: {T}.SubtractTask\n",
            r"task 'isr': unknown key 'clas'; did you mean 'class'",
        ),
        ("description: x\ntasks:\n  isr:\n    config: {level: 1}\n", "task 'isr': missing 'class'"),
        (
            f"description: x\ntasks:\n  isr: {T}.SubtractTask\nsubsets:\n  s: [isrr]\n",
            r"subset 's' names unknown task label 'isrr'; did you mean 'isr'\?",
        ),
        (
            f"description: x\ntasks:\n  isr:\n    class: {T}.SubtractTask\n    config:\n      - "
            f"python: 'import os; os.remove(\"x\")'\n",
            "only 'config.<field> = <literal>' statements are allowed",
        ),
        ("description: [unclosed\n", "invalid YAML"),
    ]
    for i, (text, msg) in enumerate(cases):
        with pytest.raises(PipelineDefinitionError, match=msg):
            Pipeline.from_file(write(tmp_path / f"p{i}.yaml", text))


def test_unknown_parameter_and_bad_config(tmp_path):
    """Test unknown parameter and bad config."""
    path = write(
        tmp_path / "p.yaml",
        f"""
        description: x
        parameters: {{level: 1}}
        tasks:
          isr:
            class: {T}.SubtractTask
            config: {{level: parameters.levle}}
    """,
    )
    with pytest.raises(
        PipelineDefinitionError,
        match=r"task 'isr': unknown pipeline parameter 'levle'; did you mean 'level'\?",
    ):
        Pipeline.from_file(path).to_graph()
    path = write(
        tmp_path / "q.yaml",
        f"""
        description: x
        tasks:
          isr:
            class: {T}.SubtractTask
            config: {{statistic: MODE}}
    """,
    )
    with pytest.raises(
        ConfigError,
        match="task 'isr': config field 'statistic' = 'MODE' is invalid: expected one of 'MEAN', 'MEDIAN'",
    ):
        Pipeline.from_file(path).to_graph()
    with pytest.raises(PipelineDefinitionError, match="cannot import task class 'no.such.Task'"):
        Pipeline.from_string("description: x\ntasks:\n  a: no.such.Task\n").to_graph()


def test_python_override_parser():
    """Python override parser."""
    assert parse_python_overrides("config.a.b = [1, 2]\nconfig.d['k'] = (1, 2)\n", "f.py") == [
        ("a.b", [1, 2]),
        ("d.k", [1, 2]),
    ]
    with pytest.raises(
        PipelineDefinitionError, match=r"f.py, line 1: the value assigned to config.a must be a literal"
    ):
        parse_python_overrides("config.a = os.getcwd()\n", "f.py")


def test_round_trip_and_cli_style_edits(base_pipeline, tmp_path):
    """Round trip and cli style edits."""
    pipe = Pipeline.from_file(base_pipeline)
    pipe.add_task(f"{T}.NormTask")
    assert "norm" in pipe.tasks
    pipe.add_task(f"{T}.MeasureTask", "measure2")
    pipe.remove_task("measure2")
    pipe.add_config_override("combine", "combine", "MEAN")
    pipe.add_config_override("parameters", "lvl", 0.5)
    out = tmp_path / "saved.yaml"
    pipe.write(out)
    again = Pipeline.from_file(out)
    assert list(again.tasks) == ["isr", "combine", "measure", "norm"]
    for label in again.tasks:
        assert again.task_config(label) == pipe.task_config(label)
    assert again.task_config("isr").level == 0.5 and again.task_config("combine").combine == "MEAN"
    with pytest.raises(PipelineDefinitionError, match="-c: no task labelled 'comb'"):
        pipe.add_config_override("comb", "x", 1)
    with pytest.raises(PipelineDefinitionError, match="task label 'isr' already exists"):
        pipe.add_task(f"{T}.SubtractTask", "isr")


@dataclasses.dataclass
class _ToyInstrument:
    """An instrument as a pipeline definition sees it: a name and its task config override directory."""

    name: str
    task_config_dir: Path


def _install_toycam(monkeypatch, root: Path) -> None:
    """Make the pipeline definitions find the instrument ``toycam`` with overrides under ``root/toycam``."""
    import pipeline.definitions._pipeline as definitions

    monkeypatch.setattr(definitions, "find_instrument",
                        lambda name: _ToyInstrument(name, root / name) if name == "toycam" else None)


def test_ccdflow_instruments_are_found_by_name():
    """The pipeline's instrument name finds ccdflow's instruments (entry point) and their override files."""
    from pipeline.definitions._instrument import find_instrument

    megacam = find_instrument("megacam")
    assert megacam is not None and megacam.name == "megacam"
    assert (megacam.task_config_dir / "isr.yaml").is_file()
    assert find_instrument("lsst.obs.cfht.MegaCam").name == "megacam"  # dotted class path, any case
    assert find_instrument("toycam") is None


def test_instrument_overrides(tmp_path, monkeypatch):
    """Instrument overrides."""
    inst_root = tmp_path / "instruments"
    write(inst_root / "toycam" / "isr.yaml", "level: 0.25\noffset.method: SUBTRACT\n")
    write(inst_root / "toycam" / "combine.yaml", "combine: MEDIAN\n")  # by _DefaultName
    _install_toycam(monkeypatch, inst_root)
    pipe = Pipeline.from_string(f"""
description: x
instrument: toycam
tasks:
  isr:
    class: {T}.SubtractTask
    config: {{statistic: MEAN}}
  myCombine: {T}.CombineTask
""")
    config = pipe.task_config("isr")
    assert (config.level, config.offset.method, config.statistic) == (0.25, "SUBTRACT", "MEAN")
    assert pipe.task_config("myCombine").combine == "MEDIAN"
    # The pipeline's own config wins over the instrument's.
    pipe.add_config_override("isr", "level", 2.0)
    assert pipe.task_config("isr").level == 2.0


def test_python_override_retarget(tmp_path):
    """Python override retarget."""
    text = (
        "from tests.pipeline.toy_tasks import ScaledOffsetTask\n"
        "config.offset.retarget(ScaledOffsetTask)\nconfig.offset.scale = 5.0\n"
    )
    assert parse_python_overrides(text, "r.py") == [
        ("offset.__target__", "tests.pipeline.toy_tasks.ScaledOffsetTask"),
        ("offset.scale", 5.0),
    ]
    path = write(
        tmp_path / "p.yaml",
        f"""
        description: x
        tasks:
          isr:
            class: {T}.SubtractTask
            config:
              - python: |
                  import tests.pipeline.toy_tasks as toy
                  config.offset.retarget(toy.ScaledOffsetTask)
                  config.offset.value = 1.0
    """,
    )
    graph = Pipeline.from_file(path).to_graph()
    task = graph.tasks["isr"].make_task()
    assert type(task.offset).__name__ == "ScaledOffsetTask"
    assert task.offset.run(2.0) == (2.0 + 1.0) * 2.0


def test_numbers_coerced_for_string_fields():
    """Numbers coerced for string fields."""
    pipe = Pipeline.from_string(f"description: x\ntasks:\n  isr: {T}.SubtractTask\n")
    pipe.add_config_override("isr", "connections.outputExp", 123)
    assert pipe.task_config("isr").connections.outputExp == "123"


def test_config_cache_follows_parameters_and_instrument(tmp_path, monkeypatch):
    """Config cache follows parameters and instrument."""
    write(tmp_path / "instruments" / "toycam" / "isr.yaml", "statistic: MEAN\n")
    _install_toycam(monkeypatch, tmp_path / "instruments")
    pipe = Pipeline.from_string(
        f"description: x\nparameters: {{lvl: 1.0}}\ntasks:\n  isr:\n"
        f"    class: {T}.SubtractTask\n    config: {{level: parameters.lvl}}\n"
    )
    assert pipe.task_config("isr").level == 1.0
    pipe.add_config_override("parameters", "lvl", 2.0)
    assert pipe.task_config("isr").level == 2.0
    # An undeclared parameter is refused (it used to be accepted and silently unused).
    with pytest.raises(PipelineDefinitionError, match=r"no parameter 'lv'; did you mean 'lvl'\?"):
        pipe.add_config_override("parameters", "lv", 3.0)
    assert "lv" not in pipe.parameters and pipe.task_config("isr").level == 2.0
    assert pipe.task_config("isr").statistic == "MEDIAN"
    pipe.instrument = "toycam"
    assert pipe.task_config("isr").statistic == "MEAN"
    with pytest.raises(ContractError, match="BinOp is not allowed"):
        evaluate_contract("2 ** 100000 > 1", {})


def test_steps_and_instrument_from_import(tmp_path):
    """Test steps and instrument from import."""
    write(
        tmp_path / "base.yaml",
        f"""
        description: base
        instrument: toycam
        tasks:
          isr: {T}.SubtractTask
          combine: {T}.CombineTask
        subsets:
          s1: [isr]
          s2: [combine]
        steps:
          - label: s1
            dimensions: [instrument, exposure]
          - label: s2
            dimensions: [instrument]
    """,
    )
    child = write(tmp_path / "child.yaml", "description: child\nimports: [base.yaml]\n")
    pipe = Pipeline.from_file(child)
    assert pipe.instrument == "toycam"
    assert [s["label"] for s in pipe.steps] == ["s1", "s2"]
    again = Pipeline.from_string(pipe.to_yaml(), base_dir=tmp_path)
    assert again.steps == pipe.steps and again.instrument == "toycam"
    assert [s["label"] for s in Pipeline.from_file(f"{child}#s1").steps] == ["s1"]
    bad = write(
        tmp_path / "bad.yaml", f"description: x\ntasks:\n  isr: {T}.SubtractTask\nsteps:\n  - label: nope\n"
    )
    with pytest.raises(PipelineDefinitionError, match="step 'nope' must name a subset"):
        Pipeline.from_file(bad)
    clash = write(tmp_path / "clash.yaml", "description: x\ninstrument: other\nimports: [base.yaml]\n")
    assert Pipeline.from_file(clash).instrument == "other"  # the importing file's instrument wins
    two = write(tmp_path / "other.yaml", f"description: o\ninstrument: other\ntasks:\n  m: {T}.MeasureTask\n")
    both = write(tmp_path / "both.yaml", f"description: x\nimports: [base.yaml, {two.name}]\n")
    with pytest.raises(PipelineDefinitionError, match="imports declare different instruments"):
        Pipeline.from_file(both)


def test_task_node_to_dict():
    """Task node to dict."""
    graph = Pipeline.from_string(f"description: x\ntasks:\n  isr: {T}.SubtractTask\n").to_graph()
    data = graph.tasks["isr"].to_dict()
    assert data["task_class"] == f"{T}.SubtractTask" and data["dimensions"] == [
        "instrument",
        "detector",
        "exposure",
    ]
    assert data["connections"]["calib"] == {
        "connection_name": "calib",
        "kind": "prerequisite",
        "dataset_type_name": "bias",
        "dimensions": ["instrument", "detector"],
        "storage_class": "NumpyArray",
        "is_calibration": True,
        "multiple": False,
        "minimum": 0,
        "defer_load": False,
        "defer_graph_constraint": False,
        "has_lookup_function": False,
        "automatic": False,
    }
    assert data["connections"]["_metadata"]["dataset_type_name"] == "isr_metadata"
    assert data["config"]["level"] == 0.0
    assert graph.to_dict()["dataset_types"]["toyPostIsr"]["producer"] == "isr"


def test_pipeline_search_path(tmp_path, monkeypatch):
    """Pipeline search path."""
    write(tmp_path / "lib" / "mine.yaml", f"description: x\ntasks:\n  isr: {T}.SubtractTask\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("CCDFLOW_PIPELINE_PATH", str(tmp_path / "lib"))
    assert list(Pipeline.from_file("mine.yaml#isr").tasks) == ["isr"]
    with pytest.raises(
        PipelineDefinitionError,
        match=r"pipeline file 'none.yaml' does not exist \(looked in the "
        r"current directory and in .*lib, .*pipelines\)",
    ):
        Pipeline.from_file("none.yaml")


def test_written_yaml_keeps_multiline_text(tmp_path):
    """Python blocks and long descriptions survive write/read unchanged."""
    pipe = Pipeline.from_string(
        "description: " + "a long description " * 8 + "\n"
        f"tasks:\n  isr:\n    class: {T}.SubtractTask\n    config:\n"
        "      - python: |\n          config.level = 2.0\n          config.offset.value = 1.0\n"
    )
    out = tmp_path / "w.yaml"
    pipe.write(out)
    text = out.read_text()
    assert "python: |\n" in text and "description: >" in text
    again = Pipeline.from_file(out)
    assert again.description == pipe.description
    assert again.tasks["isr"].config[0].python == "config.level = 2.0\nconfig.offset.value = 1.0\n"
    assert again.task_config("isr").level == 2.0 and again.task_config("isr").offset.value == 1.0
