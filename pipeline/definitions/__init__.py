"""Pipeline definitions: pipeline YAML files, imports, parameters, contracts and labeled subsets.

The ``lsst.pipe.base.pipelineIR`` / ``Pipeline`` role; `Pipeline.to_graph` turns a definition into
a `pipeline.pipeline_graph.PipelineGraph`.
"""

from __future__ import annotations

from ._from_options import (
    parse_config_file_option,
    parse_config_override,
    parse_yaml_value,
    pipeline_from_options,
)
from ._instrument import (
    INSTRUMENT_ENTRY_POINT_GROUP,
    InstrumentConfigs,
    InstrumentSource,
    builtin_instrument_names,
    find_instrument,
)
from ._pipeline import (
    ConfigBlock,
    Contract,
    LabeledSubset,
    Pipeline,
    TaskSpec,
    check_instrument_name,
    evaluate_contract,
    find_pipeline_file,
    pipeline_search_path,
)

__all__ = [
    "INSTRUMENT_ENTRY_POINT_GROUP",
    "InstrumentConfigs",
    "InstrumentSource",
    "find_instrument",
    "parse_config_file_option",
    "parse_config_override",
    "parse_yaml_value",
    "pipeline_from_options",
    "ConfigBlock",
    "Contract",
    "LabeledSubset",
    "Pipeline",
    "TaskSpec",
    "builtin_instrument_names",
    "check_instrument_name",
    "evaluate_contract",
    "find_pipeline_file",
    "pipeline_search_path",
]
