"""Task configuration: typed, validated `Config` classes, config overrides, and config display.

The ``lsst.pex.config`` role, built on pydantic v2; see `pipeline.config._config` for the model.
"""

from __future__ import annotations

from ._config import (
    Config,
    ConfigError,
    Configurable,
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
from ._override_files import parse_override_file, parse_python_overrides

__all__ = [
    "Config",
    "ConfigError",
    "Configurable",
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
    "parse_override_file",
    "parse_python_overrides",
    "py_repr",
]
