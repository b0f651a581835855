"""Task configuration: typed, validated `Config` classes, config overrides, and config display.

The ``lsst.pex.config`` role, built on pydantic v2; see `pipeline.config._config` for the model.
"""

from __future__ import annotations

from ._config import (
    Config,
    ConfigError,
    ConfigurableField,
    Field,
    apply_overrides,
    configurable_target,
    describe_type,
    diff_configs,
    field_descriptions,
    flatten_config,
    format_config,
    import_dotted,
    model_validator,
    py_repr,
)

__all__ = [
    "Config",
    "ConfigError",
    "ConfigurableField",
    "Field",
    "apply_overrides",
    "configurable_target",
    "describe_type",
    "diff_configs",
    "field_descriptions",
    "flatten_config",
    "format_config",
    "import_dotted",
    "model_validator",
    "py_repr",
]
