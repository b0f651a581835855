"""A pipeline from the usual options: a file, tasks, deletions, overrides, instrument, selection.

``-p``, ``-t``, ``--delete``, ``-c``, ``-C``, ``--instrument`` and ``--select-tasks``; used by
``pipetask`` and by batch submission files alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..exceptions import PipelineDefinitionError
from ._pipeline import Pipeline, check_instrument_name

__all__ = ["parse_config_file_option", "parse_config_override", "parse_yaml_value", "pipeline_from_options"]


def parse_yaml_value(text: str) -> Any:
    """Parse a config override value with YAML rules.

    ``1`` is an int, ``1.0e3`` a float, ``no`` false, ``[1, 2]`` a list; text that is not valid YAML
    stays a string.
    """
    import yaml  # only for -c overrides: not imported by commands without them

    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def parse_config_override(item: str) -> tuple[str, str, Any]:
    """Split ``label:field=value`` into ``(label, field, parsed value)``.

    Raises
    ------
    PipelineDefinitionError
        If the text is not of that form.
    """
    label, sep, rest = item.partition(":")
    field, eq, value = rest.partition("=")
    if not sep or not eq or not label.strip() or not field.strip():
        raise PipelineDefinitionError(f"{item!r} is not of the form LABEL:FIELD=VALUE (e.g. isr:doBias=false)")
    return label.strip(), field.strip(), parse_yaml_value(value)


def parse_config_file_option(item: str) -> tuple[str, str]:
    """Split ``label:file`` into ``(label, file)``.

    Raises
    ------
    PipelineDefinitionError
        If the text is not of that form.
    """
    label, sep, path = item.partition(":")
    if not sep or not path:
        raise PipelineDefinitionError(f"{item!r} is not of the form LABEL:FILE")
    return label.strip(), path.strip()


def pipeline_from_options(
    pipeline: str | None = None,
    tasks: Sequence[str] = (),
    delete: Sequence[str] = (),
    config_overrides: Sequence[tuple[str, str, Any]] = (),
    config_files: Sequence[tuple[str, str]] = (),
    instrument: str | None = None,
    select_tasks: str | None = None,
    *,
    registered_instruments: Sequence[str] | None = None,
    repo: str | None = None,
) -> Pipeline:
    """Build a `Pipeline` from the pipeline options.

    Parameters
    ----------
    pipeline : `str`, optional
        A pipeline file, ``file.yaml#subset`` or ``file.yaml#label1,label2`` (``-p``).
    tasks : sequence of `str`
        ``CLASS[:LABEL]`` tasks to add (``-t``).
    delete : sequence of `str`
        Labels to remove (``--delete``).
    config_overrides : sequence of ``(label, field, value)``
        Config overrides (``-c``; see `parse_config_override`).
    config_files : sequence of ``(label, file)``
        Config override files (``-C``).
    instrument : `str`, optional
        The instrument whose config overrides apply (``--instrument``).
    select_tasks : `str`, optional
        ``--select-tasks`` expression (see `pipeline.pipeline_graph.select_tasks`).
    registered_instruments : sequence of `str`, optional
        Instruments registered in the repository ``repo`` the pipeline will run on; the
        pipeline's instrument must be one of them. Without a repository it must be built in
        (`check_instrument_name`).
    repo : `str`, optional
        That repository (for messages).

    Returns
    -------
    pipeline : `Pipeline`
        Not yet validated; call ``.to_graph()``.

    Raises
    ------
    PipelineDefinitionError
        For bad files or labels, an unknown instrument, no tasks left, or a selection that selects
        nothing.
    """
    from ..pipeline_graph import select_tasks as _select

    pipe = Pipeline.from_file(pipeline) if pipeline else Pipeline("Pipeline built on the command line.")
    if instrument:
        pipe.instrument = instrument
    if pipe.instrument:
        check_instrument_name(pipe.instrument, registered_instruments, repo=repo,
                              where="--instrument" if instrument else f"pipeline {pipeline}")
    for item in tasks:
        cls, _, label = item.partition(":")
        pipe.add_task(cls.strip(), label.strip() or None)
    for label in delete:
        pipe.remove_task(label)
    for label, field, value in config_overrides:
        pipe.add_config_override(label, field, value)
    for label, path in config_files:
        pipe.add_config_file(label, path)
    if not pipe.tasks:
        raise PipelineDefinitionError("the pipeline has no tasks left after the selection and --delete")
    if select_tasks:
        labels = _select(pipe.to_graph(), select_tasks)
        if not labels:
            raise PipelineDefinitionError(f"--select-tasks {select_tasks!r} selects no task")
        pipe = pipe.subset(labels)
    return pipe
