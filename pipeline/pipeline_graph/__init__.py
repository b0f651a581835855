"""The pipeline graph: tasks and dataset types with resolved connections, validated before any query.

The ``lsst.pipe.base.pipeline_graph`` role: built from a `pipeline.definitions.Pipeline`
(`~pipeline.definitions.Pipeline.to_graph`), consumed by the quantum-graph builder and by ``pipetask build``.
"""

from __future__ import annotations

from ._pipeline_graph import (
    DataIdConfigs,
    DatasetTypeNode,
    PipelineGraph,
    ResolvedConnection,
    TaskNode,
    dimension_closure,
    make_task_node,
    select_tasks,
    sort_dimensions,
)

__all__ = [
    "DataIdConfigs",
    "DatasetTypeNode",
    "PipelineGraph",
    "ResolvedConnection",
    "TaskNode",
    "dimension_closure",
    "make_task_node",
    "select_tasks",
    "sort_dimensions",
]
