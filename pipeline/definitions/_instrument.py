"""How a pipeline definition finds the instruments it may name and their task config overrides.

A pipeline's ``instrument:`` (or ``pipetask --instrument``) names an instrument. Packages that
ship instruments offer them through the entry-point group ``ccdflow.instruments``: each entry
point is an `InstrumentSource` (the names it knows, and ``name -> instrument``). The instrument
returned provides `InstrumentConfigs.task_config_dir`, the directory of its
``<label or _DefaultName>.yaml`` override files (ccdflow's own instruments:
``pipeline.instruments._shipped.SHIPPED_INSTRUMENTS``, e.g. ``megacam/isr.yaml``). The framework
never imports an instruments package by name.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from ..exceptions import PipelineDefinitionError

__all__ = [
    "INSTRUMENT_ENTRY_POINT_GROUP",
    "InstrumentConfigs",
    "InstrumentSource",
    "builtin_instrument_names",
    "find_instrument",
]

#: Entry-point group of the instrument sources.
INSTRUMENT_ENTRY_POINT_GROUP = "ccdflow.instruments"


class InstrumentConfigs(Protocol):
    """What a pipeline definition needs from an instrument: where its task config overrides are."""

    @property
    def name(self) -> str:
        """Instrument name."""
        ...

    @property
    def task_config_dir(self) -> Path:
        """Directory of the instrument's task config override files (``<label>.yaml``)."""
        ...


class InstrumentSource(Protocol):
    """A package's instruments, offered through the ``ccdflow.instruments`` entry-point group."""

    def names(self) -> Iterable[str]:
        """Names of the instruments this source knows."""
        ...

    def get(self, name: str) -> InstrumentConfigs:
        """Return the instrument ``name``; raise `LookupError` if this source does not know it."""
        ...


@functools.cache
def _sources() -> tuple[InstrumentSource, ...]:
    sources = tuple(ep.load() for ep in entry_points(group=INSTRUMENT_ENTRY_POINT_GROUP))
    if not sources:
        raise PipelineDefinitionError(
            f"no instruments are installed: the entry-point group {INSTRUMENT_ENTRY_POINT_GROUP!r} is "
            "empty (reinstall ccdflow, e.g. pip install -e .)"
        )
    return sources


def builtin_instrument_names() -> list[str]:
    """Names of the instruments the installed packages ship (ccdflow's camera descriptions).

    Returns
    -------
    names : `list` [`str`]
        Sorted, from every source of the ``ccdflow.instruments`` entry-point group.
    """
    return sorted({name for source in _sources() for name in source.names()})


@functools.lru_cache(maxsize=32)
def find_instrument(name: str) -> InstrumentConfigs | None:
    """Return the instrument a pipeline names, or `None` when no installed package knows it.

    Parameters
    ----------
    name : `str`
        The pipeline's ``instrument`` (e.g. ``megacam``; for a dotted class path such as
        ``lsst.obs.cfht.MegaPrime`` the last component, also tried in lower case).

    Returns
    -------
    instrument : `InstrumentConfigs` or `None`
    """
    short = name.rsplit(".", 1)[-1]
    for candidate in dict.fromkeys((short, short.lower())):
        for source in _sources():
            try:
                return source.get(candidate)
            except LookupError:
                continue
    return None
