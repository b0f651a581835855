"""Config validation, overrides, freezing, retargeting, round trips and diffs."""

from __future__ import annotations

import math

import pytest

from pipeline.config import ConfigError, apply_overrides, diff_configs, flatten_config
from tests.pipeline.toy_tasks import (
    OffsetTask,
    ScaledOffsetConfig,
    ScaledOffsetTask,
    SubtractConfig,
    SubtractTask,
)


def test_defaults_and_to_dict():
    """Defaults and to dict."""
    config = SubtractConfig()
    data = config.to_dict()
    assert data["doCalib"] is True
    assert data["saturation"] == {"ALL_AMPS": 1e6}
    assert data["threshold"] is None
    assert data["offset"] == {"method": "ADD", "value": 0.0}
    assert data["connections"] == {
        "inputExp": "raw",
        "calib": "{calibType}",
        "outputExp": "toyPostIsr",
        "calibType": "bias",
    }
    assert SubtractConfig.model_fields["doCalib"].description == "Subtract the calibration?"


def test_unknown_field_suggests_close_match():
    """Unknown field suggests close match."""
    with pytest.raises(ConfigError) as exc:
        apply_overrides(SubtractConfig(), {"doCalb": False}, label="isr")
    assert str(exc.value) == (
        "task 'isr': unknown config field 'doCalb' for SubtractConfig; did you mean 'doCalib'? "
        "(allowed fields: connections, doCalib, level, offset, saturation, saveLogOutput, saveMetadata, statistic, threshold)"
    )
    assert exc.value.label == "isr" and exc.value.field == "doCalb"


def test_unknown_nested_field():
    """Unknown nested field."""
    with pytest.raises(
        ConfigError,
        match=r"unknown config field 'offset\.valeu' for OffsetConfig; "
        r"did you mean 'value'\?",
    ):
        apply_overrides(SubtractConfig(), {"offset.valeu": 1.0}, label="isr")


def test_choice_error_lists_allowed_values():
    """Choice error lists allowed values."""
    with pytest.raises(ConfigError) as exc:
        apply_overrides(SubtractConfig(), {"statistic": "MEDAN"}, label="isr")
    assert str(exc.value) == (
        "task 'isr': config field 'statistic' = 'MEDAN' is invalid: expected one of 'MEAN', 'MEDIAN'; "
        "did you mean 'MEDIAN'?"
    )
    with pytest.raises(ConfigError) as exc:
        apply_overrides(SubtractConfig(), {"statistic": "mean"}, label="isr")
    assert str(exc.value).endswith("did you mean 'MEAN'?")


def test_wrong_type_names_expected_type():
    """Wrong type names expected type."""
    with pytest.raises(
        ConfigError, match=r"task 'isr': config field 'level' = 'abc' is invalid: expected a number"
    ):
        apply_overrides(SubtractConfig(), {"level": "abc"}, label="isr")
    with pytest.raises(
        ConfigError,
        match=r"config field 'saturation\.C1' = 'x' is invalid: "
        r"expected a mapping of str to float",
    ):
        apply_overrides(SubtractConfig(), {"saturation.C1": "x"}, label="isr")
    with pytest.raises(ConfigError, match=r"'threshold' = 'q' is invalid: expected a number or None"):
        apply_overrides(SubtractConfig(), {"threshold": "q"}, label="isr")


def test_dict_field_and_optional_overrides():
    """Dict field and optional overrides."""
    config = apply_overrides(
        SubtractConfig(), {"saturation.C1": 5e4, "threshold": 10, "level": 2}, label="isr"
    )
    assert config.saturation == {"ALL_AMPS": 1e6, "C1": 5e4}
    assert config.threshold == 10.0
    config = apply_overrides(config, [("saturation", {"A": 1.0}), ("threshold", None)])
    assert config.saturation == {"A": 1.0} and config.threshold is None


def test_cross_field_check_sees_all_overrides_together():
    """Cross field check sees all overrides together."""
    # level=5 then threshold=6 is valid only when applied together.
    config = apply_overrides(SubtractConfig(), {"threshold": 6.0, "level": 5.0})
    assert (config.threshold, config.level) == (6.0, 5.0)
    with pytest.raises(ConfigError) as exc:
        apply_overrides(SubtractConfig(), {"threshold": 1.0, "level": 5.0}, label="isr")
    assert str(exc.value) == "task 'isr': SubtractConfig check failed: threshold (1.0) must be >= level (5.0)"


def test_assignment_validated_and_rolled_back():
    """Assignment validated and rolled back."""
    config = SubtractConfig()
    with pytest.raises(
        ConfigError, match="config field 'doCalib' = 'maybe' is invalid: expected true or false"
    ):
        config.doCalib = "maybe"
    assert config.doCalib is True
    with pytest.raises(ConfigError, match="did you mean 'level'"):
        config.levle = 3.0
    config.level = 3
    assert config.level == 3.0


def test_freeze_is_recursive():
    """Freeze is recursive."""
    config = SubtractConfig()
    config.freeze()
    assert config.frozen
    with pytest.raises(ConfigError, match="frozen"):
        config.level = 1.0
    with pytest.raises(ConfigError, match="frozen"):
        config.offset.value = 1.0
    # Overrides make a new, unfrozen config.
    new = apply_overrides(config, {"offset.value": 2.0})
    assert new.offset.value == 2.0 and not new.frozen and config.offset.value == 0.0


def test_retarget_round_trip_and_subtask():
    """Retarget round trip and subtask."""
    config = SubtractConfig()
    config.retarget_field("offset", ScaledOffsetTask)
    config.offset.value = 1.0
    data = config.to_dict()
    assert data["offset"]["__target__"] == "tests.pipeline.toy_tasks.ScaledOffsetTask"
    restored = SubtractConfig.from_dict(data)
    assert isinstance(restored.offset, ScaledOffsetConfig)
    assert restored.offset.target is ScaledOffsetTask
    task = SubtractTask(config=restored)
    assert isinstance(task.offset, ScaledOffsetTask)
    assert task.offset.run(3.0) == pytest.approx((3.0 + 1.0) * 2.0)
    # Not retargeted: the default target, no __target__ key.
    plain = SubtractConfig.from_dict(SubtractConfig().to_dict())
    assert "__target__" not in SubtractConfig().to_dict()["offset"]
    assert type(SubtractTask(config=plain).offset) is OffsetTask


def test_retarget_via_override_mapping():
    """Retarget via override mapping."""
    config = apply_overrides(
        SubtractConfig(),
        {"offset": {"__target__": "tests.pipeline.toy_tasks.ScaledOffsetTask", "scale": 3.0}},
    )
    assert isinstance(config.offset, ScaledOffsetConfig) and config.offset.scale == 3.0


def test_retarget_wrong_config_class():
    """Retarget wrong config class."""
    from tests.pipeline.toy_tasks import CombineTask

    with pytest.raises(ConfigError, match="is not a subclass of OffsetConfig"):
        SubtractConfig().retarget_field("offset", CombineTask)


def test_connections_renames_and_templates():
    """Connections renames and templates."""
    config = apply_overrides(
        SubtractConfig(), {"connections.outputExp": "myPostIsr", "connections.calibType": "dark"}
    )
    connections = config.make_connections()
    assert connections.outputExp.name == "myPostIsr"
    assert connections.calib.name == "dark"
    assert connections.inputExp.name == "raw"
    with pytest.raises(ConfigError, match="unknown config field 'connections.outptExp'.*'outputExp'"):
        apply_overrides(SubtractConfig(), {"connections.outptExp": "x"})


def test_diff_configs_and_flatten():
    """Diff configs and flatten."""
    a = SubtractConfig()
    b = apply_overrides(a, {"level": 2.0, "offset.method": "SUBTRACT", "saturation.C1": 1.0})
    assert diff_configs(a, b) == [
        "level: 0.0 != 2.0",
        "offset.method: 'ADD' != 'SUBTRACT'",
        "saturation.C1: <absent> != 1.0",
    ]
    assert diff_configs(a.to_dict(), SubtractConfig().to_dict()) == []
    flat = dict(flatten_config(b))
    assert flat["offset.method"] == "SUBTRACT" and flat["saturation"] == {"ALL_AMPS": 1e6, "C1": 1.0}
    nan = apply_overrides(a, {"level": float("nan")})
    assert math.isnan(nan.level) and diff_configs(nan, nan.to_dict()) == []


def test_from_dict_reports_every_bad_field():
    """From dict reports every bad field."""
    with pytest.raises(ConfigError) as exc:
        SubtractConfig.from_dict({"level": "x", "statistic": "MODE"}, label="isr")
    text = str(exc.value)
    assert text.startswith("task 'isr': 2 config errors:")
    assert "'level' = 'x'" in text and "'statistic' = 'MODE'" in text


def test_freeze_protects_dict_and_list_values():
    """Freeze protects dict and list values."""
    import copy
    import pickle

    config = apply_overrides(SubtractConfig(), {"saturation.C1": 2.0})
    config.freeze()
    assert isinstance(config.saturation, dict) and config.saturation["C1"] == 2.0
    with pytest.raises(ConfigError, match=r"cannot modify SubtractConfig\.saturation: the config is frozen"):
        config.saturation["C1"] = 3.0
    with pytest.raises(ConfigError, match="frozen"):
        config.saturation.update({"C2": 1.0})
    assert config.saturation == {"ALL_AMPS": 1e6, "C1": 2.0}
    # Copies and pickles are ordinary, mutable values; round trips keep the content.
    clone = copy.deepcopy(config)
    assert clone.saturation == config.saturation
    restored = pickle.loads(pickle.dumps(config))
    assert restored == config and restored.frozen
    assert SubtractConfig.from_dict(config.to_dict()) == config
    thawed = config.model_copy(deep=True)
    assert thawed.saturation == config.saturation


def test_from_overrides():
    """From overrides."""
    config = SubtractConfig.from_overrides({"level": 2, "offset.method": "SUBTRACT"}, label="isr")
    assert (config.level, config.offset.method) == (2.0, "SUBTRACT")
    with pytest.raises(ConfigError, match="task 'isr': unknown config field 'x'"):
        SubtractConfig.from_overrides([("x", 1)], label="isr")


def test_constraint_error_message():
    """Constraint error message."""
    from pipeline.config import Config, Field

    class Bounded(Config):
        order: int = Field(1, ge=0, description="Polynomial order.")

    with pytest.raises(ConfigError) as exc:
        Bounded.from_overrides({"order": -3}, label="isr")
    assert str(exc.value) == (
        "task 'isr': config field 'order' = -3 is invalid: input should be greater than or equal to 0"
    )


def test_optional_dict_field_dotted_override():
    """Optional dict field dotted override."""
    from pipeline.config import Config, Field

    class Opt(Config):
        gains: dict[str, float] | None = Field(None, description="Per-amp gains (e-/ADU).")

    assert Opt.from_overrides({"gains.C1": "1.5"}).gains == {"C1": 1.5}
    assert Opt.from_overrides({"gains": None}).gains is None


def test_to_dict_is_plain_yaml():
    """To dict is plain yaml."""
    import enum
    from pathlib import Path

    import yaml

    from pipeline.config import Config, Field

    class Mode(enum.Enum):
        A = "a"

    class Misc(Config):
        path: Path = Field(Path("/tmp/x"), description="A path.")
        mode: Mode = Field(Mode.A, description="An enum.")
        box: tuple[int, int] = Field((1, 2), description="A pair.")

    data = Misc().to_dict()
    assert data == {"path": "/tmp/x", "mode": "a", "box": [1, 2]}
    assert Misc.from_dict(yaml.safe_load(yaml.safe_dump(data))) == Misc()


def test_save_load_validate(tmp_path):
    """Save load validate."""
    config = SubtractConfig.from_overrides(
        {
            "level": 2.0,
            "saturation.C1": float("nan"),
            "offset.__target__": "tests.pipeline.toy_tasks.ScaledOffsetTask",
        }
    )
    path = tmp_path / "isr_config.py"
    config.save(path)
    text = path.read_text()
    assert "# Extra constant to subtract (ADU).\nconfig.level=2.0\n" in text
    loaded = SubtractConfig()
    loaded.load(path)
    assert loaded == config and type(loaded.offset).__name__ == "ScaledOffsetConfig"
    (tmp_path / "bad.yaml").write_text("levle: 1\n")
    with pytest.raises(ConfigError, match="did you mean 'level'"):
        loaded.load(tmp_path / "bad.yaml")
    assert loaded == config  # unchanged after a failed load
    loaded.validate()
    loaded.saturation["C1"] = "not a number"  # in-place change: assignment validation cannot see it
    with pytest.raises(ConfigError, match="config field 'saturation.C1' = 'not a number' is invalid"):
        loaded.validate()
    loaded.freeze()
    with pytest.raises(ConfigError, match="cannot load .* into a frozen SubtractConfig"):
        loaded.load(path)
