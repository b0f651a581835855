"""Exceptions raised by the pipeline framework and by tasks.

Task authors raise `NoWorkFound` from ``run``/``runQuantum``/``adjustQuantum`` when a quantum has
nothing to do (a qualified success, as ``lsst.pipe.base.NoWorkFound``); the framework raises the
definition errors below, each with a message that names the task label, the field or dataset type
and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "AlgorithmError",
    "ConfigError",
    "ContractError",
    "InvalidQuantumError",
    "NoWorkFound",
    "PipelineDefinitionError",
    "PipelineError",
    "PipelineGraphError",
    "UpstreamFailureNoWorkFound",
]


class NoWorkFound(Exception):  # noqa: N818 - the LSST name
    """Raised by a task when a quantum has nothing to do.

    The quantum counts as successful (its metadata is written) but its outputs are not.
    Raised by the default `~pipeline.connections.PipelineTaskConnections.adjustQuantum` when a
    regular input has fewer datasets than its connection's ``minimum``.
    """


class UpstreamFailureNoWorkFound(NoWorkFound):
    """Raised when a quantum has no work because an upstream quantum produced nothing usable."""


class AlgorithmError(RuntimeError):
    """Raised by a task's algorithm when it fails on this data (not a framework bug)."""


class PipelineError(Exception):
    """Base class of the framework's definition errors (config, pipeline YAML, pipeline graph)."""


class ConfigError(PipelineError, ValueError):
    """A config field is unknown, has the wrong type or value, or a cross-field rule failed.

    Parameters
    ----------
    message : `str`
        Full message naming the task label (when known), the field and the allowed values.
    label : `str`, optional
        Task label the config belongs to.
    field : `str`, optional
        Dotted field path.
    """

    def __init__(self, message: str, *, label: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.label = label
        self.field = field


class PipelineDefinitionError(PipelineError):
    """A pipeline YAML file, import, subset, parameter or command-line task spec is invalid."""


class ContractError(PipelineDefinitionError):
    """A pipeline ``contracts:`` expression evaluated to false (or could not be evaluated)."""


class PipelineGraphError(PipelineError):
    """The pipeline graph is inconsistent.

    A cycle, a dataset type produced twice, or conflicting storage classes / dimensions for one
    dataset type.
    """


class InvalidQuantumError(PipelineError):
    """A quantum's inputs or outputs violate its connections.

    For example several refs for a scalar connection, or a missing required prerequisite.
    """
