"""``pipetask build`` through click's CliRunner: --show outputs, -s, --pipeline-dot, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import pipetask
from pipeline.definitions import Pipeline

T = "tests.pipeline.toy_tasks"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture()
def toy_yaml(tmp_path):
    """Toy yaml."""
    path = tmp_path / "toy.yaml"
    path.write_text(
        textwrap.dedent(f"""
        description: Toy pipeline.
        parameters: {{lvl: 1.0}}
        tasks:
          isr:
            class: {T}.SubtractTask
            config: {{level: parameters.lvl}}
          combine: {T}.CombineTask
        subsets:
          step1:
            subset: [isr]
            description: Only ISR.
    """)
    )
    return path


def run(*args):
    """Run."""
    return CliRunner().invoke(pipetask, list(args))


def test_show_config_pattern_and_override(toy_yaml):
    """Show config pattern and override."""
    result = run(
        "build",
        "-p",
        str(toy_yaml),
        "-c",
        "isr:offset.value=2.5",
        "-c",
        "isr:doCalib=no",
        "--show",
        "config=isr::offset*",
        "--show",
        "config=isr::doCalib",
    )
    assert result.exit_code == 0, result.output
    assert result.output == (
        "### Configuration for task 'isr'\n"
        "config.offset.method='ADD'\n"
        "config.offset.value=2.5\n"
        "### Configuration for task 'isr'\n"
        "config.doCalib=False\n"
    )


def test_show_tasks_subsets_inputs_graph(toy_yaml):
    """Show tasks subsets inputs graph."""
    result = run(
        "build",
        "-p",
        str(toy_yaml),
        "--show",
        "tasks",
        "--show",
        "subsets",
        "--show",
        "inputs",
        "--show",
        "pipeline-graph",
        "--show",
        "task-graph",
    )
    assert result.exit_code == 0, result.output
    assert result.output == (
        "### Subtasks for task 'isr'\n"
        f"isr: {T}.SubtractTask\n"
        f"isr.offset: {T}.OffsetTask\n"
        "### Subtasks for task 'combine'\n"
        f"combine: {T}.CombineTask\n"
        "step1: isr  # Only ISR.\n"
        "### Overall inputs\n"
        "raw (instrument, detector, exposure) NumpyArray\n"
        "### Prerequisite inputs\n"
        "bias (instrument, detector) NumpyArray calibration\n"
        "○  bias (instrument, detector) NumpyArray [prerequisite, calibration]\n"
        "│ ○  raw (instrument, detector, exposure) NumpyArray\n"
        "├─╯\n"
        "■  isr: SubtractTask (instrument, detector, exposure)\n"
        "○  toyPostIsr (instrument, detector, exposure) NumpyArray\n"
        "■  combine: CombineTask (instrument, detector)\n"
        "○  toyCombined (instrument, detector) NumpyArray\n"
        "■  isr: SubtractTask (instrument, detector, exposure)\n"
        "■  combine: CombineTask (instrument, detector)\n"
    )


def test_show_pipeline_subset_and_save(toy_yaml, tmp_path):
    """Show pipeline subset and save."""
    saved = tmp_path / "saved.yaml"
    dot = tmp_path / "p.dot"
    result = run(
        "build",
        "-p",
        f"{toy_yaml}#step1",
        "-t",
        f"{T}.MeasureTask:meas",
        "-C",
        f"isr:{_write(tmp_path / 'o.py', 'config.statistic = ' + repr('MEAN'))}",
        "--show",
        "pipeline",
        "-s",
        str(saved),
        "--pipeline-dot",
        str(dot),
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("description: Toy pipeline.\nparameters:\n  lvl: 1.0\ntasks:\n  isr:\n")
    again = Pipeline.from_file(saved)
    assert list(again.tasks) == ["isr", "meas"]
    assert again.task_config("isr").statistic == "MEAN" and again.task_config("isr").level == 1.0
    text = dot.read_text()
    assert text.startswith("digraph pipeline {") and "style=dashed" in text and "meas\\nMeasureTask" in text


def test_errors_are_one_line_and_write_nothing(toy_yaml, tmp_path):
    """Errors are one line and write nothing."""
    saved = tmp_path / "never.yaml"
    result = run("build", "-p", str(toy_yaml), "-c", "isr:levle=3", "-s", str(saved))
    assert result.exit_code == 1
    assert result.output == (
        "Error: task 'isr': unknown config field 'levle' for SubtractConfig; did you mean 'level'? "
        "(allowed fields: "
        "connections, doCalib, level, offset, saturation, saveLogOutput, saveMetadata, statistic, threshold)\n"
    )
    assert not saved.exists()
    result = run("build", "-p", str(toy_yaml), "-c", "isr:statistic=MODE")
    assert result.exit_code == 1
    assert (
        "Error: task 'isr': config field 'statistic' = 'MODE' is invalid: expected one of 'MEAN', 'MEDIAN'"
        in result.output
    )
    result = run("build", "-p", str(toy_yaml), "-c", "parameters:noSuchParam=3", "-s", str(saved))
    assert result.exit_code == 1 and not saved.exists()
    assert result.output == (
        "Error: -c parameters:noSuchParam: the pipeline declares no parameter 'noSuchParam' "
        "(parameters: lvl); declare it under 'parameters:' in the pipeline YAML\n"
    )
    result = run("build", "-p", str(toy_yaml), "-c", "isr-level")
    assert result.exit_code == 2 and "is not of the form LABEL:FIELD=VALUE" in result.output
    result = run("build", "-p", str(toy_yaml), "--show", "pipline")
    assert result.exit_code == 2 and "Did you mean 'pipeline'?" in result.output
    result = run("build", "-p", str(toy_yaml), "--show", "config=isr::nothing*")
    assert result.exit_code == 2 and "no config field of task 'isr' matches 'nothing*'" in result.output
    result = run("build", "-p", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 1 and "missing.yaml' does not exist" in result.output
    result = run("build", "-p", str(toy_yaml), "-C", f"isr:{tmp_path / 'nope.yaml'}")
    assert result.exit_code == 1 and "config override file does not exist" in result.output
    result = run("build")
    assert result.exit_code == 2 and "give a pipeline with -p" in result.output
    assert "Traceback" not in result.output


def test_help_is_lazy():
    """Help is lazy."""
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom pipeline.cli import pipetask\n"
        "r = CliRunner().invoke(pipetask, ['--help'])\nassert r.exit_code == 0, r.output\n"
        "assert 'qgraph' in r.output and 'build' in r.output\n"
        "heavy = [m for m in ('pipeline.cli.graph_commands', 'numpy', 'pydantic', 'yaml', 'networkx', 'butler')"
        " if m in sys.modules]\nassert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def _write(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    return path


def test_show_history(tmp_path):
    """Show history."""
    path = tmp_path / "h.yaml"
    path.write_text(
        textwrap.dedent(f"""
        description: history
        parameters: {{lvl: 1.5}}
        tasks:
          isr:
            class: {T}.SubtractTask
            config:
              - level: parameters.lvl
              - offset: {{value: 2.0}}
              - dataId: {{detector: 2}}
                level: 3.0
    """)
    )
    result = run(
        "build",
        "-p",
        str(path),
        "-c",
        "isr:level=4",
        "--show",
        "history=isr::level",
        "--show",
        "history=isr::offset.value",
    )
    assert result.exit_code == 0, result.output
    assert result.output == (
        "### History of config field 'level' of task 'isr'\n"
        "default: level = 0.0\n"
        f"{path}: task 'isr', config block 1 [parameters.lvl]: level = 1.5\n"
        f"{path}: task 'isr', config block 3 (only quanta with dataId {{'detector': 2}}): level = 3.0\n"
        "-c isr:level: level = 4\n"
        "final: level = 4.0\n"
        "### History of config field 'offset.value' of task 'isr'\n"
        "default: offset.value = 0.0\n"
        f"{path}: task 'isr', config block 2: offset.value = 2.0\n"
        "final: offset.value = 2.0\n"
    )
    result = run("build", "-p", str(path), "--show", "history=isr::levl")
    assert result.exit_code == 1
    assert result.output == "Error: task 'isr' has no config field 'levl'; did you mean 'level'?\n"


def test_dump_config_round_trips_through_config_file(tmp_path):
    """Dump config round trips through config file."""
    from pipeline.config import apply_overrides
    from tests.pipeline.toy_tasks import SubtractConfig

    result = run(
        "build",
        "-t",
        f"{T}.SubtractTask:isr",
        "-c",
        f"isr:offset.__target__={T}.ScaledOffsetTask",
        "-c",
        "isr:level=.nan",
        "-c",
        "isr:saturation.C1=.inf",
        "-c",
        "isr:offset.scale=3",
        "--show",
        "dump-config",
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "### Configuration for task 'isr'"
    assert "# Extra constant to subtract (ADU)." in lines
    assert "config.level=float('nan')" in lines
    assert f"config.offset.retarget({T}.ScaledOffsetTask)" in lines
    assert "config.saturation={'ALL_AMPS': 1000000.0, 'C1': float('inf')}" in lines
    dumped = tmp_path / "dumped.py"
    dumped.write_text("\n".join(lines[1:]) + "\n")
    pipe = Pipeline("x")
    pipe.add_task(f"{T}.SubtractTask", "isr")
    pipe.add_config_file("isr", dumped)
    config = pipe.task_config("isr")
    expected = apply_overrides(
        SubtractConfig(),
        {
            "offset.__target__": f"{T}.ScaledOffsetTask",
            "level": float("nan"),
            "saturation.C1": float("inf"),
            "offset.scale": 3.0,
        },
    )
    assert config == expected
    assert type(config.offset).__name__ == "ScaledOffsetConfig" and config.offset.scale == 3.0


def test_render_pipeline_show_for_other_commands(toy_yaml):
    """Render pipeline show for other commands."""
    from pipeline.cli.pipetask import render_pipeline_show

    pipe = Pipeline.from_file(toy_yaml)
    graph = pipe.to_graph()
    assert render_pipeline_show("graph", pipe, graph) is None
    assert render_pipeline_show("config=isr::level", pipe, graph) == (
        "### Configuration for task 'isr'\nconfig.level=1.0\n"
    )
    assert render_pipeline_show("subsets", pipe, graph) == "step1: isr  # Only ISR.\n"


def test_pipeline_dot_image_formats(toy_yaml, tmp_path, monkeypatch):
    """Pipeline dot image formats."""
    import shutil

    out = tmp_path / "p.png"
    if shutil.which("dot") is None:
        result = run("build", "-p", str(toy_yaml), "--pipeline-dot", str(out))
        assert result.exit_code == 1 and "the Graphviz 'dot' program is not installed" in result.output
        assert not out.exists()
    else:
        result = run("build", "-p", str(toy_yaml), "--pipeline-dot", str(out))
        assert result.exit_code == 0 and out.read_bytes().startswith(b"\x89PNG")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = run("build", "-p", str(toy_yaml), "--pipeline-dot", str(tmp_path / "q.svg"))
    assert result.exit_code == 1 and "write q.dot instead" in result.output
