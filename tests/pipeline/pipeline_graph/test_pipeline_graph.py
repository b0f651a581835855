"""Pipeline graph: resolution, automatic outputs, ordering, subgraphs and every validation error."""

from __future__ import annotations

import pytest

import pipeline.connection_types as cT  # noqa: N812 - the LSST spelling
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.definitions import Pipeline
from pipeline.exceptions import PipelineGraphError
from pipeline.pipeline_graph import PipelineGraph, make_task_node, sort_dimensions
from pipeline.task import PipelineTask

T = "tests.pipeline.toy_tasks"
TOY = f"""
description: toy
tasks:
  isr: {T}.SubtractTask
  measure: {T}.MeasureTask
  combine: {T}.CombineTask
  norm: {T}.NormTask
"""


def graph_of(text: str) -> PipelineGraph:
    """Graph of."""
    return Pipeline.from_string(text).to_graph()


def test_resolved_connections_and_automatic_outputs():
    """Resolved connections and automatic outputs."""
    graph = graph_of(TOY)
    assert list(graph.tasks) == ["isr", "measure", "combine", "norm"]
    isr = graph.tasks["isr"]
    assert isr.dimensions == ("instrument", "detector", "exposure")
    calib = isr.prerequisite_inputs["calib"]
    assert (
        calib.dataset_type_name,
        calib.dimensions,
        calib.storage_class,
        calib.is_calibration,
        calib.minimum,
        calib.prerequisite,
        calib.multiple,
    ) == ("bias", ("instrument", "detector"), "NumpyArray", True, 0, True, False)
    combine_in = graph.tasks["combine"].inputs["inputExps"]
    assert combine_in.multiple and combine_in.dimensions == ("instrument", "detector", "exposure")
    assert isr.metadata_output.dataset_type_name == "isr_metadata"
    assert (
        isr.metadata_output.storage_class == "TaskMetadata"
        and isr.metadata_output.dimensions == isr.dimensions
    )
    assert (
        isr.log_output.dataset_type_name == "isr_log" and isr.log_output.storage_class == "ButlerLogRecords"
    )
    assert isr.config_output.dataset_type_name == "isr_config" and isr.config_output.dimensions == ()
    assert set(isr.all_outputs) == {"outputExp", "_metadata", "_log"}
    assert graph.dataset_types["isr_metadata"].producer == "isr"
    assert graph.dataset_types["toyPostIsr"].consumers == ["measure", "combine"]
    assert set(graph.overall_inputs()) == {"raw"}
    assert set(graph.prerequisite_inputs()) == {"bias", "toyCamera"}
    assert graph.producer_of("toyStats").label == "measure"
    assert graph.upstream_tasks("norm") == ["isr", "measure"]
    assert graph.downstream_tasks("isr") == ["measure", "combine", "norm"]
    assert isr.config.frozen
    assert graph.packages_dataset_type == ("packages", (), "Packages")


def test_topological_order_ignores_declaration_order():
    """Test topological order ignores declaration order."""
    graph = graph_of(f"""
description: reversed
tasks:
  norm: {T}.NormTask
  combine: {T}.CombineTask
  measure: {T}.MeasureTask
  isr: {T}.SubtractTask
""")
    order = list(graph.tasks)
    assert order.index("isr") < order.index("measure") < order.index("norm")
    assert order.index("isr") < order.index("combine")


def test_metadata_consumed_with_wrong_storage_class():
    """Metadata consumed with wrong storage class."""
    with pytest.raises(PipelineGraphError) as exc:
        graph_of(
            TOY
            + f"""  meta:
    class: {T}.MeasureTask
    config:
      connections.inputExp: isr_metadata
      connections.stats: metaStats
"""
        )
    assert str(exc.value) == (
        "dataset type 'isr_metadata' has inconsistent storage classes: 'TaskMetadata' in task 'isr' "
        "(connection "
        "'_metadata') vs 'NumpyArray' in task 'meta' (connection 'inputExp')"
    )


def test_independent_subgraphs():
    """Test independent subgraphs."""
    graph = graph_of(f"""
description: two chains
tasks:
  isrA: {T}.SubtractTask
  combineA: {T}.CombineTask
  isrB:
    class: {T}.SubtractTask
    config:
      connections.inputExp: rawB
      connections.outputExp: postB
""")
    subs = graph.independent_subgraphs()
    assert [list(s.tasks) for s in subs] == [["isrA", "combineA"], ["isrB"]]
    # Sharing only a prerequisite (bias) does not join them; sharing an overall input does.
    joined = graph_of(f"""
description: shared raw
tasks:
  isrA: {T}.SubtractTask
  isrB:
    class: {T}.SubtractTask
    config:
      connections.outputExp: postB
""")
    assert [list(s.tasks) for s in joined.independent_subgraphs()] == [["isrA", "isrB"]]


def test_produced_twice():
    """Produced twice."""
    with pytest.raises(PipelineGraphError) as exc:
        graph_of(f"description: x\ntasks:\n  a: {T}.SubtractTask\n  b: {T}.SubtractTask\n")
    assert str(exc.value) == (
        "dataset type 'toyPostIsr' is produced by more than one task: task 'a' (connection 'outputExp') and "
        "task 'b' (connection 'outputExp'); rename one output with config.connections.<name>"
    )


def test_cycle():
    """Cycle."""
    with pytest.raises(PipelineGraphError) as exc:
        graph_of(f"""
description: cycle
tasks:
  a:
    class: {T}.SubtractTask
    config: {{connections.inputExp: loop}}
  b:
    class: {T}.SubtractTask
    config: {{connections.inputExp: toyPostIsr, connections.outputExp: loop}}
""")
    text = str(exc.value)
    assert text.startswith("pipeline graph has a cycle: ")
    assert text.endswith("; a task cannot (indirectly) consume its own output")
    assert "task 'a'" in text and "task 'b'" in text and "'loop'" in text and "'toyPostIsr'" in text


def test_inconsistent_storage_class():
    """Inconsistent storage class."""
    with pytest.raises(PipelineGraphError) as exc:
        graph_of(f"""
description: sc
tasks:
  isr: {T}.SubtractTask
  norm:
    class: {T}.NormTask
    config: {{connections.inputStats: toyPostIsr}}
""")
    assert str(exc.value) == (
        "dataset type 'toyPostIsr' has inconsistent storage classes: 'NumpyArray' in task 'isr' (connection "
        "'outputExp') vs 'StructuredDataDict' in task 'norm' (connection 'inputStats')"
    )


def test_inconsistent_dimensions():
    """Inconsistent dimensions."""
    with pytest.raises(PipelineGraphError) as exc:
        graph_of(f"""
description: dims
tasks:
  isr: {T}.SubtractTask
  combine: {T}.CombineTask
  combine2:
    class: {T}.CombineTask
    config: {{connections.inputExps: toyCombined, connections.outputCalib: toyCombined2}}
""")
    assert str(exc.value) == (
        "dataset type 'toyCombined' has inconsistent dimensions: (instrument, detector) in task 'combine' "
        "(connection 'outputCalib') vs (instrument, detector, exposure) in task 'combine2' "
        "(connection 'inputExps')"
    )


def test_prerequisite_produced_in_pipeline():
    """Prerequisite produced in pipeline."""
    with pytest.raises(PipelineGraphError) as exc:
        graph_of(f"""
description: prereq
tasks:
  combine: {T}.CombineTask
  isr:
    class: {T}.SubtractTask
    config: {{connections.calibType: toyCombined, connections.inputExp: raw}}
""")
    text = str(exc.value)
    assert text.startswith("2 pipeline graph errors:")
    assert (
        "dataset type 'toyCombined' is a PrerequisiteInput of task 'isr' (connection 'calib') but is "
        "produced "
        "by task 'combine' in the same pipeline"
    ) in text
    assert "dataset type 'toyCombined' is a calibration in one connection and not in another" in text


class WideConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """A scalar input with more dimensions than the task: ambiguous."""

    inputExp = cT.Input(
        name="raw", storageClass="NumpyArray", dimensions=("instrument", "exposure", "detector")
    )
    flat = cT.PrerequisiteInput(
        name="flat",
        storageClass="NumpyArray",
        isCalibration=True,
        dimensions=("instrument", "detector", "physical_filter"),
    )
    out = cT.Output(name="wideOut", storageClass="NumpyArray", dimensions=("instrument", "detector"))


class WideConfig(PipelineTaskConfig, pipelineConnections=WideConnections):
    """Config."""


class WideTask(PipelineTask):
    """Task with ambiguous connections."""

    ConfigClass = WideConfig
    _DefaultName = "wide"


class ExposureConnections(PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    """A flat (physical_filter) prerequisite is fine for an exposure task: exposure implies the filter."""

    inputExp = cT.Input(
        name="raw", storageClass="NumpyArray", dimensions=("instrument", "exposure", "detector")
    )
    flat = cT.PrerequisiteInput(
        name="flat",
        storageClass="NumpyArray",
        isCalibration=True,
        dimensions=("instrument", "detector", "physical_filter"),
    )
    out = cT.Output(
        name="flattened", storageClass="NumpyArray", dimensions=("instrument", "detector", "exposure")
    )


class ExposureConfig(PipelineTaskConfig, pipelineConnections=ExposureConnections):
    """Config."""


class ExposureTask(PipelineTask):
    """Task."""

    ConfigClass = ExposureConfig
    _DefaultName = "flatten"


class TypoConnections(PipelineTaskConnections, dimensions=("instrument", "detecter")):
    """Unknown dimension."""

    out = cT.Output(name="x", storageClass="NumpyArray", dimensions=("instrument",))


class TypoConfig(PipelineTaskConfig, pipelineConnections=TypoConnections):
    """Config."""


class TypoTask(PipelineTask):
    """Task."""

    ConfigClass = TypoConfig


def test_scalar_connection_wider_than_task():
    """Scalar connection wider than task."""
    with pytest.raises(PipelineGraphError) as exc:
        make_task_node("wide", WideTask, "WideTask", WideConfig())
    text = str(exc.value)
    assert text.startswith("2 connection errors:")
    assert (
        "task 'wide': connection 'inputExp' (dataset type 'raw') has dimensions (instrument, detector, "
        "exposure) beyond the task's (instrument, detector) (exposure) but is not multiple=True"
    ) in text
    assert "connection 'flat' (dataset type 'flat')" in text
    node = make_task_node("flatten", ExposureTask, "ExposureTask", ExposureConfig())
    assert node.prerequisite_inputs["flat"].dimensions == ("instrument", "physical_filter", "detector")


def test_unknown_dimension():
    """Unknown dimension."""
    with pytest.raises(
        PipelineGraphError,
        match=r"task 'typo': quantum dimensions: unknown dimension 'detecter'; "
        r"did you mean 'detector'\?",
    ):
        make_task_node("typo", TypoTask, "TypoTask", TypoConfig())
    assert sort_dimensions(["exposure", "detector"]) == ("instrument", "detector", "exposure")


def test_not_a_pipeline_task():
    """Not a pipeline task."""
    from pipeline.exceptions import PipelineDefinitionError

    with pytest.raises(
        PipelineDefinitionError,
        match="task 'o': tests.pipeline.toy_tasks.OffsetTask is not a PipelineTask",
    ):
        graph_of(f"description: x\ntasks:\n  o: {T}.OffsetTask\n")


def test_text_and_dot_rendering():
    """Text and dot rendering."""
    graph = graph_of(TOY)
    assert graph.to_text() == (
        "○  bias (instrument, detector) NumpyArray [prerequisite, calibration]\n"
        "│ ○  raw (instrument, detector, exposure) NumpyArray\n"
        "├─╯\n"
        "■  isr: SubtractTask (instrument, detector, exposure)\n"
        "○  toyPostIsr (instrument, detector, exposure) NumpyArray\n"
        "├─╮\n"
        "■ │  measure: MeasureTask (instrument, detector, exposure)\n"
        "○ │  toyStats (instrument, detector, exposure) StructuredDataDict\n"
        "│ ■  combine: CombineTask (instrument, detector)\n"
        "│ ○  toyCombined (instrument, detector) NumpyArray\n"
        "│ ○  toyCamera (instrument) StructuredDataDict [prerequisite, calibration]\n"
        "├─╯\n"
        "■  norm: NormTask (instrument, physical_filter)\n"
        "○  toyScales (instrument, physical_filter) StructuredDataDict\n"
    )
    dot = graph.to_dot()
    assert dot.startswith("digraph pipeline {")
    dashed = [line for line in dot.splitlines() if "style=dashed" in line]
    assert len(dashed) == 2  # bias -> isr, toyCamera -> norm
    assert dot.count("->") == 10 and "isr_metadata" not in dot


def test_networkx_view_is_lazy_and_consistent():
    """Networkx view is lazy and consistent."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\nfrom pipeline.definitions import Pipeline\n"
        f"g = Pipeline.from_string({TOY!r}).to_graph()\n"
        "assert 'networkx' not in sys.modules\n"
        "import networkx as nx\nx = g.xgraph\nassert nx.is_directed_acyclic_graph(x)\n"
        "assert x.number_of_nodes() == len(g.tasks) + len(g.dataset_types)\n"
        "assert x.edges[('dataset', 'toyPostIsr'), ('task', 'combine')]['connection'].multiple\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3])


class BrokenConnections(PipelineTaskConnections, dimensions=("instrument",)):
    """Connections whose __init__ reads a config field that does not exist."""

    out = cT.Output(name="brokenOut", storageClass="NumpyArray", dimensions=("instrument",))

    def __init__(self, *, config=None):
        super().__init__(config=config)
        if not config.doSomething:
            self.outputs.remove("out")


class BrokenConfig(PipelineTaskConfig, pipelineConnections=BrokenConnections):
    """Config."""


class BrokenTask(PipelineTask):
    """Task."""

    ConfigClass = BrokenConfig


def test_broken_connections_and_module_are_one_error(tmp_path, monkeypatch):
    """Broken connections and module are one error."""
    from pipeline.exceptions import PipelineDefinitionError

    with pytest.raises(
        PipelineDefinitionError,
        match=r"task 'b': BrokenConnections\(config=\.\.\.\) failed with "
        r"AttributeError: .*doSomething",
    ):
        make_task_node("b", BrokenTask, "BrokenTask", BrokenConfig())
    (tmp_path / "broken_toy_module.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        PipelineDefinitionError,
        match="task 'x': importing task class 'broken_toy_module.Task' "
        "failed with RuntimeError: boom at import",
    ):
        graph_of("description: x\ntasks:\n  x: broken_toy_module.Task\n")


class SchemaConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Writes a schema as an init-output."""

    schema = cT.InitOutput(name="toySchema", storageClass="StructuredDataDict")
    out = cT.Output(name="schemaUser", storageClass="NumpyArray", dimensions=("instrument", "detector"))


class SchemaConfig(PipelineTaskConfig, pipelineConnections=SchemaConnections):
    """Config."""


class SchemaTask(PipelineTask):
    """Task."""

    ConfigClass = SchemaConfig


class SchemaReaderConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Reads the schema as a regular input by mistake."""

    schema = cT.Input(
        name="toySchema", storageClass="StructuredDataDict", dimensions=("instrument", "detector")
    )
    initSchema = cT.InitInput(name="toySchema", storageClass="StructuredDataDict")
    out = cT.Output(name="readerOut", storageClass="NumpyArray", dimensions=("instrument", "detector"))


class SchemaReaderConfig(PipelineTaskConfig, pipelineConnections=SchemaReaderConnections):
    """Config."""


class SchemaReaderTask(PipelineTask):
    """Task."""

    ConfigClass = SchemaReaderConfig


def test_init_and_regular_use_of_one_dataset_type():
    """Init and regular use of one dataset type."""
    writer = make_task_node("writer", SchemaTask, "SchemaTask", SchemaConfig())
    assert writer.init_outputs["schema"].dimensions == () and writer.init_outputs["schema"].is_init
    assert set(writer.all_init_outputs) == {"schema", "_config"}
    reader = make_task_node("reader", SchemaReaderTask, "SchemaReaderTask", SchemaReaderConfig())
    with pytest.raises(PipelineGraphError) as exc:
        PipelineGraph([writer, reader])
    assert str(exc.value) == (
        "dataset type 'toySchema' is used both as an init dataset and a regular one: task 'writer' "
        "(connection "
        "'schema') vs task 'reader' (connection 'schema')"
    )
    ok = PipelineGraph([writer])
    assert ok.dataset_types["toySchema"].is_init and ok.dataset_types["writer_config"].is_init


def test_select_tasks_expressions():
    """Select tasks expressions."""
    from pipeline.exceptions import PipelineDefinitionError
    from pipeline.pipeline_graph import select_tasks

    graph = Pipeline.from_string(TOY + "subsets:\n  front: [isr, measure]\n").to_graph()
    cases = {
        "isr": ["isr"],
        "<=norm": ["isr", "measure", "norm"],
        "<norm": ["isr", "measure"],
        ">isr": ["measure", "combine", "norm"],
        ">=toyPostIsr": ["measure", "combine", "norm"],
        "<=norm & ~isr": ["measure", "norm"],
        "front | combine": ["isr", "measure", "combine"],
        "S:front & >=isr": ["isr", "measure"],
        "~(front | norm)": ["combine"],
        "D:toyStats": [],
        ">= D:raw & <= T:combine": ["isr", "combine"],
    }
    for expression, expected in cases.items():
        assert select_tasks(graph, expression) == expected, expression
    for expression, msg in [
        ("nrom", r"'nrom' is not a task label, dataset type or subset; did you mean 'norm'\?"),
        ("isr |", "unexpected end of expression"),
        ("(isr", "missing '\\)'"),
        ("isr norm", "unexpected 'norm'"),
        ("X:isr", "unknown prefix 'X'"),
        ("", "empty expression"),
    ]:
        with pytest.raises(PipelineDefinitionError, match=msg):
            select_tasks(graph, expression)


def test_select_tasks_option(tmp_path):
    """Select tasks option."""
    from click.testing import CliRunner

    from pipeline.cli import pipetask

    path = tmp_path / "toy.yaml"
    path.write_text(TOY)
    result = CliRunner().invoke(
        pipetask, ["build", "-p", str(path), "--select-tasks", "<=norm & ~isr", "--show", "task-graph"]
    )
    assert result.exit_code == 0, result.output
    assert result.output == (
        "■  measure: MeasureTask (instrument, detector, exposure)\n"
        "■  norm: NormTask (instrument, physical_filter)\n"
    )
    result = CliRunner().invoke(pipetask, ["build", "-p", str(path), "--select-tasks", "D:raw"])
    assert result.exit_code == 1 and "--select-tasks 'D:raw' selects no task" in result.output
