"""Connection declarations, renames, templates, removal and adjustQuantum."""

from __future__ import annotations

import pytest

import pipeline.connection_types as cT  # noqa: N812 - the LSST spelling
from pipeline.config import apply_overrides
from pipeline.connections import InputQuantizedConnection, PipelineTaskConnections
from pipeline.exceptions import ConfigError, InvalidQuantumError, NoWorkFound
from tests.pipeline.toy_tasks import CombineConfig, SubtractConfig


def test_connection_sets_and_dimensions():
    """Connection sets and dimensions."""
    connections = SubtractConfig().make_connections()
    assert connections.dimensions == {"instrument", "exposure", "detector"}
    assert connections.inputs == {"inputExp"}
    assert connections.prerequisiteInputs == {"calib"}
    assert connections.outputs == {"outputExp"}
    assert connections.initInputs == set() and connections.initOutputs == set()
    calib = connections.calib
    assert (calib.name, calib.storageClass, calib.dimensions, calib.isCalibration, calib.minimum) == (
        "bias",
        "NumpyArray",
        ("instrument", "detector"),
        True,
        0,
    )
    assert list(connections.allConnections) == ["inputExp", "calib", "outputExp"]


def test_removal_in_init_by_config():
    """Removal in init by config."""
    connections = apply_overrides(SubtractConfig(), {"doCalib": False}).make_connections()
    assert connections.prerequisiteInputs == set()
    assert "calib" not in connections.allConnections


def test_template_without_default_rejected_at_class_creation():
    """Template without default rejected at class creation."""
    with pytest.raises(
        TypeError, match=r"C2\.out: dataset type name '\{a\}Out' uses template \{a\} with no default"
    ):

        class C2(PipelineTaskConnections, dimensions=("instrument",)):
            out = cT.Output(name="{a}Out", storageClass="NumpyArray", dimensions=("instrument",))


def test_connection_argument_checks():
    """Connection argument checks."""
    with pytest.raises(TypeError, match="minimum=2 needs multiple=True"):
        cT.Input(name="x", storageClass="NumpyArray", dimensions=("instrument",), minimum=2)
    with pytest.raises(TypeError, match="minimum=0 is only allowed for PrerequisiteInput"):
        cT.Input(name="x", storageClass="NumpyArray", dimensions=("instrument",), minimum=0)
    with pytest.raises(TypeError, match="not the string 'instrument'"):
        cT.Output(name="x", storageClass="NumpyArray", dimensions="instrument")
    with pytest.raises(TypeError, match="storageClass must be a non-empty string"):
        cT.Output(name="x", storageClass="", dimensions=("instrument",))


def test_adjust_quantum_default_rules():
    """Adjust quantum default rules."""
    connections = CombineConfig().make_connections()
    inputs = {"inputExps": (connections.inputExps, [])}
    with pytest.raises(NoWorkFound, match="connection 'inputExps' needs at least 1 'toyPostIsr' dataset"):
        connections.adjustQuantum(inputs, {}, "combine", {"detector": 1})
    ok_in, ok_out = connections.adjustQuantum(
        {"inputExps": (connections.inputExps, ["a", "b"])}, {}, "combine", {"detector": 1}
    )
    assert len(ok_in["inputExps"][1]) == 2
    sub = SubtractConfig().make_connections()
    with pytest.raises(InvalidQuantumError, match="'inputExp' .* is not multiple=True but got 2 datasets"):
        sub.adjustQuantum({"inputExp": (sub.inputExp, ["a", "b"])}, {}, "isr", {"detector": 1})
    # minimum=0 prerequisite: an empty list is fine.
    sub.adjustQuantum({"calib": (sub.calib, [])}, {}, "isr", {"detector": 1})
    required = cT.PrerequisiteInput(name="bias", storageClass="NumpyArray", dimensions=("instrument",))
    with pytest.raises(FileNotFoundError, match="needs at least 1 'bias'"):
        sub.adjustQuantum({"bias": (required, [])}, {}, "isr", {"detector": 1})


def test_quantized_connection_iteration():
    """Quantized connection iteration."""
    refs = InputQuantizedConnection(a=1, b=[2, 3])
    assert list(refs) == [("a", 1), ("b", [2, 3])] and refs.keys() == ["a", "b"] and "a" in refs


def test_rename_to_bad_type():
    """Rename to bad type."""
    with pytest.raises(ConfigError, match=r"'connections.outputExp' = \['a'\] is invalid: expected a string"):
        apply_overrides(SubtractConfig(), {"connections.outputExp": ["a"]})


class ByFilterConnections(
    PipelineTaskConnections, dimensions=("instrument", "detector"), defaultTemplates={"calibType": "flat"}
):
    """Replaces its output in __init__ (the cp_pipe combine-by-filter pattern)."""

    inputs_ = cT.Input(
        name="cpInputs",
        storageClass="NumpyArray",
        multiple=True,
        dimensions=("instrument", "exposure", "detector"),
    )
    outputData = cT.Output(
        name="{calibType}Proposal",
        storageClass="NumpyArray",
        dimensions=("instrument", "detector"),
        isCalibration=True,
    )

    def __init__(self, *, config=None):
        super().__init__(config=config)
        self.dimensions = {"instrument", "detector", "physical_filter"}
        self.outputData = cT.Output(
            name="{calibType}Proposal",
            storageClass="NumpyArray",
            dimensions=("instrument", "detector", "physical_filter"),
            isCalibration=True,
        )
        self.extraOutput = cT.Output(
            name="extra", storageClass="NumpyArray", dimensions=("instrument", "detector", "physical_filter")
        )


def test_connection_replaced_or_added_in_init():
    """Connection replaced or added in init."""
    from pipeline.connections import PipelineTaskConfig

    class ByFilterConfig(PipelineTaskConfig, pipelineConnections=ByFilterConnections):
        """Config."""

    connections = ByFilterConfig().make_connections()
    assert connections.outputs == {"outputData", "extraOutput"}
    assert connections.outputData.dimensions == ("instrument", "detector", "physical_filter")
    assert connections.outputData.name == "flatProposal"
    assert [n for n, _ in connections.iter_kind("outputs")] == ["outputData", "extraOutput"]
    assert connections.dimensions == {"instrument", "detector", "physical_filter"}


def test_bad_dataset_type_name_template():
    """Bad dataset type name template."""
    config = apply_overrides(SubtractConfig(), {"connections.outputExp": "post{"})
    with pytest.raises(
        ConfigError,
        match=r"SubtractConnections.outputExp: dataset type name 'post\{' is not a valid "
        r"name template",
    ):
        config.make_connections()
    config = apply_overrides(SubtractConfig(), {"connections.outputExp": "post{nope}"})
    with pytest.raises(
        ConfigError, match=r"uses template \{nope\} which has no value; set config.connections.nope"
    ):
        config.make_connections()


def test_invalid_dataset_type_name():
    """Invalid dataset type name."""
    config = apply_overrides(SubtractConfig(), {"connections.outputExp": "post isr"})
    with pytest.raises(
        ConfigError, match="SubtractConnections.outputExp: 'post isr' is not a valid dataset type name"
    ):
        config.make_connections()
