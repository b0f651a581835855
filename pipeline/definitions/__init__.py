"""Pipeline definitions: pipeline YAML files, imports, parameters, contracts and labeled subsets.

The ``lsst.pipe.base.pipelineIR`` / ``Pipeline`` role; `Pipeline.to_graph` turns a definition into
a `pipeline.pipeline_graph.PipelineGraph`.
"""

from __future__ import annotations

from ._pipeline import (
    ConfigBlock,
    Contract,
    LabeledSubset,
    Pipeline,
    TaskSpec,
    builtin_instrument_names,
    check_instrument_name,
    evaluate_contract,
    find_pipeline_file,
    parse_override_file,
    parse_python_overrides,
    pipeline_search_path,
)

__all__ = [
    "ConfigBlock",
    "Contract",
    "LabeledSubset",
    "Pipeline",
    "TaskSpec",
    "builtin_instrument_names",
    "check_instrument_name",
    "evaluate_contract",
    "find_pipeline_file",
    "parse_override_file",
    "parse_python_overrides",
    "pipeline_search_path",
]
