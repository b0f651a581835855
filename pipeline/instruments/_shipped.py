"""The instruments shipped with ccdflow, as pipeline definitions find them.

`SHIPPED_INSTRUMENTS` is offered through the entry-point group ``ccdflow.instruments``
(``pyproject.toml``): a pipeline's ``instrument:`` (or ``pipetask --instrument``) finds its task
config override directory ``pipeline/instruments/<name>/`` here. This module imports nothing
heavy (no astropy, no camera parsing): the framework lists and checks instrument names without
loading the instruments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SHIPPED_INSTRUMENTS", "ShippedInstrument", "ShippedInstruments"]

_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ShippedInstrument:
    """A shipped instrument as a pipeline definition sees it: its name and override directory."""

    name: str
    task_config_dir: Path


class ShippedInstruments:
    """The camera descriptions shipped in ``pipeline/instruments`` (``<name>.yaml``)."""

    def names(self) -> list[str]:
        """Return the names of the shipped camera descriptions, sorted."""
        return sorted(p.stem for p in _HERE.glob("*.yaml") if p.is_file())

    def get(self, name: str) -> ShippedInstrument:
        """Return the shipped instrument ``name``.

        Raises
        ------
        LookupError
            If no camera description of that name is shipped.
        """
        if not name or "/" in name or name.startswith(".") or not (_HERE / f"{name}.yaml").is_file():
            raise LookupError(f"no shipped instrument {name!r}")
        return ShippedInstrument(name, _HERE / name)


#: The entry point of ccdflow's own instruments (group ``ccdflow.instruments``).
SHIPPED_INSTRUMENTS = ShippedInstruments()
