"""``butler register-instrument --update``: change a registered camera description safely.

A new description of an instrument is compared with the one stored in the repository's
instrument record. The differences are listed (detectors and filters added or removed, and
every changed field by detector and amplifier). The update is refused when it would alter
datasets already in the repository: a detector that has datasets must keep its geometry
(raw shape, HDU, name, detector box, its amplifiers, their boxes, flips and readout corners),
must not disappear, and filters used by exposures must stay. Everything else (new detectors and
filters, nominal gains and read noises, saturation, linearity, crosstalk, purpose, header
translation) is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from butler import ConflictingDefinitionError, DataIdError

from .camera_yaml import CameraDescription, parse_camera_description
from .instrument import Instrument, get_instrument

__all__ = [
    "GEOMETRY_FIELDS",
    "CameraChange",
    "InstrumentUpdate",
    "InstrumentUpdateRefusedError",
    "camera_changes",
    "update_instrument",
]

#: Detector-level fields whose change alters the meaning of existing raws and calibrations.
DETECTOR_GEOMETRY = ("name", "hdu", "raw_shape", "bbox", "amplifiers")
#: Amplifier-level geometry fields.
AMPLIFIER_GEOMETRY = (
    "bbox",
    "raw_bbox",
    "raw_data_bbox",
    "raw_serial_overscan_bbox",
    "raw_serial_prescan_bbox",
    "raw_parallel_overscan_bbox",
    "raw_flip_x",
    "raw_flip_y",
    "readout_corner",
)
GEOMETRY_FIELDS = DETECTOR_GEOMETRY + AMPLIFIER_GEOMETRY


@dataclass(frozen=True)
class CameraChange:
    """One difference between two camera descriptions.

    Attributes
    ----------
    where : `str`
        ``camera``, ``detector 1 (S01)``, ``detector 1 (S01) amplifier C00`` or ``filter NAME``.
    what : `str`
        Field name, or ``added`` / ``removed``.
    old, new : `object`
        Values (`None` for added / removed).
    detector : `int` or `None`
        Detector id the change belongs to.
    geometry : `bool`
        Whether the change is to the detector's geometry (or removes the detector).
    filter : `str` or `None`
        Physical filter removed (for filter changes).
    """

    where: str
    what: str
    old: Any = None
    new: Any = None
    detector: int | None = None
    geometry: bool = False
    filter: str | None = None

    def __str__(self) -> str:
        if self.what in ("added", "removed"):
            return f"{self.where}: {self.what}"
        return f"{self.where}: {self.what} {_fmt(self.old)} -> {_fmt(self.new)}"


def _fmt(value: Any) -> str:
    if type(value).__name__ == "Box":  # as written in the camera YAML: [x0, y0, nx, ny]
        return f"[{value.x0}, {value.y0}, {value.nx}, {value.ny}]"
    s = repr(value)
    return s if len(s) <= 80 else s[:77] + "..."


def _dict_diff(prefix: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """Return the changed leaves of two nested mappings as ``(dotted.key, old, new)``."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += _dict_diff(f"{prefix}.{k}", a.get(k), b.get(k))
        return out
    return [] if a == b else [(prefix, a, b)]


def camera_changes(old: CameraDescription, new: CameraDescription) -> list[CameraChange]:
    """List the differences between two descriptions of one camera.

    Parameters
    ----------
    old, new : `CameraDescription`

    Returns
    -------
    changes : `list` of `CameraChange`
        Camera-level fields, then filters, then detectors by id (amplifiers by name).
    """
    out: list[CameraChange] = []
    o, n = old.model, new.model
    for name in ("description", "class_name", "match", "amplifier_defaults", "translation"):
        a, b = getattr(o, name), getattr(n, name)
        a = a.model_dump() if hasattr(a, "model_dump") else a
        b = b.model_dump() if hasattr(b, "model_dump") else b
        for key, va, vb in _dict_diff(name, a, b):
            out.append(CameraChange("camera", key, va, vb))
    of = {f.physical_filter: f.band for f in o.filters}
    nf = {f.physical_filter: f.band for f in n.filters}
    for pf in sorted(set(of) | set(nf)):
        if pf not in nf:
            out.append(CameraChange(f"filter {pf}", "removed", filter=pf))
        elif pf not in of:
            out.append(CameraChange(f"filter {pf} (band {nf[pf]})", "added"))
        elif of[pf] != nf[pf]:
            out.append(CameraChange(f"filter {pf}", "band", of[pf], nf[pf], filter=pf))
    od = {d.id: d for d in o.detectors}
    nd = {d.id: d for d in n.detectors}
    for i in sorted(set(od) | set(nd)):
        if i not in nd:
            out.append(CameraChange(f"detector {i} ({od[i].name})", "removed", detector=i, geometry=True))
            continue
        if i not in od:
            out.append(CameraChange(f"detector {i} ({nd[i].name})", "added", detector=i))
            continue
        a, b = od[i], nd[i]
        where = f"detector {i} ({a.name})"
        for name in ("name", "purpose", "hdu", "raw_shape", "bbox", "crosstalk"):
            va, vb = getattr(a, name), getattr(b, name)
            if va != vb:
                out.append(CameraChange(where, name, va, vb, i, name in DETECTOR_GEOMETRY))
        oa = {amp.name: amp for amp in a.amplifiers}
        na = {amp.name: amp for amp in b.amplifiers}
        if list(oa) != list(na):
            out.append(CameraChange(where, "amplifiers", list(oa), list(na), i, True))
        for amp in [x for x in oa if x in na]:
            for name in type(oa[amp]).model_fields:
                va, vb = getattr(oa[amp], name), getattr(na[amp], name)
                if va != vb:
                    out.append(
                        CameraChange(f"{where} amplifier {amp}", name, va, vb, i, name in AMPLIFIER_GEOMETRY)
                    )
    return out


@dataclass
class InstrumentUpdate:
    """Result of `update_instrument`.

    Attributes
    ----------
    name : `str`
    changes : `list` of `CameraChange`
    applied : `bool`
        Whether the repository was changed (False when nothing differs).
    detectors_added : `list` of `int`
    filters_added : `list` of `str`
    """

    name: str
    changes: list[CameraChange] = field(default_factory=list)
    applied: bool = False
    detectors_added: list[int] = field(default_factory=list)
    filters_added: list[str] = field(default_factory=list)

    def format(self) -> str:
        """Human-readable diff (one change per line)."""
        if not self.changes:
            return f"instrument {self.name}: the camera description is unchanged"
        lines = [f"instrument {self.name}: {len(self.changes)} change(s)"]
        lines += [f"  {c}" for c in self.changes]
        return "\n".join(lines)


class InstrumentUpdateRefusedError(ConflictingDefinitionError, ValueError):
    """The new camera description would change datasets already in the repository."""


def _datasets_per_detector(butler: Any, name: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for dt in butler.registry.query_dataset_types("*"):
        if "detector" not in dt.dimensions:
            continue
        for ref in butler.registry.query_datasets(
            dt.name, where="instrument = :inst", bind={"inst": name}, find_first=False
        ):
            d = int(ref.data_id["detector"])
            counts[d] = counts.get(d, 0) + 1
    return counts


def _filters_in_use(butler: Any, name: str) -> set[str]:
    recs = butler.registry.query_dimension_records(
        "exposure", where="instrument = :inst", bind={"inst": name}
    )
    return {r.physical_filter for r in recs}


def update_instrument(butler: Any, name_or_path: str | os.PathLike[str]) -> InstrumentUpdate:
    """Replace a registered instrument's camera description, if that leaves existing data valid.

    Parameters
    ----------
    butler : `butler.Butler`
        A writeable butler.
    name_or_path : `str` or path-like
        Built-in instrument name or camera description YAML path (the new description).

    Returns
    -------
    update : `InstrumentUpdate`
        The changes found and whether they were applied.

    Raises
    ------
    UnknownInstrumentError, CameraDescriptionError
        If the new description cannot be loaded.
    butler.DataIdError
        If the instrument is not registered yet.
    InstrumentUpdateRefusedError
        If a detector that has datasets would change geometry or disappear, or a filter used by
        exposures would disappear or change band. The message lists those changes; the
        repository is unchanged.
    """
    inst: Instrument = get_instrument(name_or_path)
    reg = butler.registry
    existing = reg.get_dimension_record("instrument", {"instrument": inst.name})
    if existing is None:
        raise DataIdError(
            f"instrument {inst.name!r} is not registered in {butler.root}; register it first "
            "(butler register-instrument without --update)"
        )
    old = parse_camera_description(existing.get("camera_yaml") or "", f"{butler.root} ({inst.name})")
    result = InstrumentUpdate(inst.name, camera_changes(old, inst.description))
    if not result.changes:
        return result
    with_data = _datasets_per_detector(butler, inst.name)
    used_filters = _filters_in_use(butler, inst.name)
    blocking = [
        c
        for c in result.changes
        if (c.geometry and c.detector in with_data) or (c.filter is not None and c.filter in used_filters)
    ]
    if blocking:
        lines = []
        for c in blocking:
            why = (
                f"{with_data[c.detector]} dataset(s) use detector {c.detector}"
                if c.detector is not None
                else f"exposures use filter {c.filter}"
            )
            lines.append(f"  {c}   [{why}]")
        raise InstrumentUpdateRefusedError(
            f"refusing to update instrument {inst.name!r}: {len(blocking)} change(s) would alter datasets "
            "already in the repository:\n" + "\n".join(lines) + "\nKeep the geometry of detectors that "
            "have data (and the filters exposures use), or register the new description under another "
            "instrument name."
        )
    _apply(butler, inst, old, result)
    result.applied = True
    return result


def _apply(butler: Any, inst: Instrument, old: CameraDescription, result: InstrumentUpdate) -> None:
    reg = butler.registry
    old_ids = {d.id for d in old.model.detectors}
    old_filters = {f.physical_filter for f in old.model.filters}
    with reg.transaction():
        reg.sync_dimension_data(
            "instrument",
            {
                "name": inst.name,
                "class_name": inst.class_name,
                "camera_yaml": inst.camera_yaml,
                "detector_max": max(max(d.id for d in inst.camera) + 1, max(old_ids) + 1),
            },
            update=True,
        )
        for d in inst.camera:
            rec: Mapping[str, Any] = {
                "instrument": inst.name,
                "id": d.id,
                "full_name": d.name,
                "purpose": d.purpose,
            }
            if d.id in old_ids:
                reg.sync_dimension_data("detector", rec, update=True)
            else:
                reg.insert_dimension_data("detector", rec, skip_existing=True)
                result.detectors_added.append(d.id)
        for physical_filter, band in inst.filters:
            if physical_filter not in old_filters:
                reg.insert_dimension_data(
                    "physical_filter",
                    {"instrument": inst.name, "name": physical_filter, "band": band},
                    skip_existing=True,
                )
                result.filters_added.append(physical_filter)
            else:
                reg.insert_dimension_data("band", {"name": band}, skip_existing=True)
                reg.sync_dimension_data(
                    "physical_filter",
                    {"instrument": inst.name, "name": physical_filter, "band": band},
                    update=True,
                )
    mirror = Path(butler.root) / "instruments" / f"{inst.name}.yaml"
    mirror.parent.mkdir(parents=True, exist_ok=True)
    tmp = mirror.with_suffix(f".yaml.{os.getpid()}.tmp")
    tmp.write_text(inst.camera_yaml)
    os.replace(tmp, mirror)
