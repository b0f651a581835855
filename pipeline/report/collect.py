"""Gather what the calibration report shows, through the butler API, and write its images.

`collect_report` walks the collections of a repository (all of them, or those given with
``-i``): per instrument and detector the certified calibrations and their validity ranges, the
per-amplifier numbers (PTC gain and read noise and the camera's nominal values, the serial
overscan level and noise of the ISR outputs, defect count, linearity model, verification
results when such datasets exist), the plots the pipelines wrote (``Plot`` datasets), thumbnails
of every certified image calibration and of the ISR outputs (``postISRCCD``), and per RUN the
`pipetask report` summary of its quanta (`pipeline.execution.report`).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "AmpRow",
    "CalibEntry",
    "DetectorSection",
    "ImageEntry",
    "ReportData",
    "RunEntry",
    "collect_report",
]

_log = logging.getLogger("ccdflow.report")

#: IsrTask header keywords (per amplifier) read from the ISR outputs.
_OVERSCAN_LEVEL_KEY = "LSST ISR OVERSCAN SERIAL MEAN {amp}"
_OVERSCAN_NOISE_KEY = "LSST ISR OVERSCAN RESIDUAL SERIAL STDEV {amp}"
_GAIN_USED_KEY = "LSST ISR GAIN {amp}"

#: Longest side of a thumbnail (pixels).
THUMB_SIZE = 480
#: At most this many ISR-output thumbnails per detector (the latest exposures).
MAX_ISR_THUMBS = 12


@dataclasses.dataclass
class CalibEntry:
    """One certification: a calibration dataset and its validity range in a CALIBRATION collection.

    Attributes
    ----------
    dataset_type, collection, run : `str`
    begin, end : `str` or `None`
        ISO TAI bounds; `None` is unbounded.
    dataset_id : `str`
    """

    dataset_type: str
    collection: str
    run: str
    begin: str | None
    end: str | None
    dataset_id: str


@dataclasses.dataclass
class AmpRow:
    """The numbers of one amplifier (NaN when not measured).

    Attributes
    ----------
    amp : `str`
    gain, gain_err : `float`
        PTC gain and fit error (e⁻/ADU).
    nominal_gain : `float`
        Camera description's gain (e⁻/ADU).
    noise, noise_err : `float`
        PTC read noise and error (e⁻).
    noise_constrained : `bool`
        False when the PTC had no point near the noise floor.
    nominal_noise : `float`
        Camera description's read noise (e⁻).
    overscan_level : `float`
        Mean serial overscan level of the ISR outputs (ADU).
    overscan_noise : `float`
        Median serial-overscan residual rms × gain of the ISR outputs (e⁻).
    n_isr : `int`
        ISR outputs the overscan numbers come from.
    defects : `int` or `None`
        Defect boxes within the amplifier (`None`: no defects dataset).
    linearity : `str`
        Linearity type and coefficients (empty: no linearizer).
    verification : `str`
        Verification results (empty: none).
    """

    amp: str
    gain: float = math.nan
    gain_err: float = math.nan
    nominal_gain: float = math.nan
    noise: float = math.nan
    noise_err: float = math.nan
    noise_constrained: bool = False
    nominal_noise: float = math.nan
    overscan_level: float = math.nan
    overscan_noise: float = math.nan
    n_isr: int = 0
    defects: int | None = None
    linearity: str = ""
    verification: str = ""


@dataclasses.dataclass
class ImageEntry:
    """An image file of the report (relative to the report directory).

    Attributes
    ----------
    path : `str`
    title : `str`
    kind : `str`
        ``plot``, ``calib`` or ``isr``.
    """

    path: str
    title: str
    kind: str


@dataclasses.dataclass
class DetectorSection:
    """Everything shown for one detector.

    Attributes
    ----------
    instrument : `str`
    detector : `int`
    name : `str`
    calibs : `list` [`CalibEntry`]
    amps : `list` [`AmpRow`]
    ptc_source : `str`
        Where the PTC numbers come from (collection / run), or ``""``.
    images : `list` [`ImageEntry`]
    exposures : `list` [`tuple` [`str`, `str`]]
        ``(ISO TAI begin, observation type)`` of the detector's raw exposures (time line ticks).
    """

    instrument: str
    detector: int
    name: str = ""
    calibs: list[CalibEntry] = dataclasses.field(default_factory=list)
    amps: list[AmpRow] = dataclasses.field(default_factory=list)
    ptc_source: str = ""
    images: list[ImageEntry] = dataclasses.field(default_factory=list)
    exposures: list[tuple[str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RunEntry:
    """One RUN collection with the `pipetask report` summary of its quanta.

    Attributes
    ----------
    name : `str`
    summary : `pipeline.execution.report.Summary`
    """

    name: str
    summary: Any


@dataclasses.dataclass
class ReportData:
    """The whole report.

    Attributes
    ----------
    repo : `str`
    collections : `list` [`str`]
    created : `str`
        ISO UTC time of the report.
    sections : `list` [`DetectorSection`]
    runs : `list` [`RunEntry`]
    """

    repo: str
    collections: list[str]
    created: str
    sections: list[DetectorSection] = dataclasses.field(default_factory=list)
    runs: list[RunEntry] = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------- helpers
def _query(butler: Any, dataset_type: str, collections: Sequence[str], where: str = "") -> list[Any]:
    """Every dataset of a type in collections ([] when the type or collection is unknown)."""
    if not collections:
        return []
    try:
        return list(
            butler.query_datasets(dataset_type, collections=list(collections), where=where, find_first=False)
        )
    except Exception:  # noqa: BLE001 - missing dataset type / collection: nothing to show
        return []


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _iso(t: Any) -> str | None:
    return None if t is None else str(t.isot)


def _resolve(butler: Any, collections: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(RUN collections, CALIBRATION collections) reached from ``collections`` (all by default)."""
    from butler import CollectionType

    patterns = list(collections) if collections else ["*"]
    runs: list[str] = []
    calibs: list[str] = []
    for pattern in patterns:
        for name in butler.registry.query_collections(
            pattern, types=[CollectionType.RUN], flatten_chains=True
        ):
            if name not in runs:
                runs.append(name)
        for name in butler.registry.query_collections(
            pattern, types=[CollectionType.CALIBRATION], flatten_chains=True
        ):
            if name not in calibs:
                calibs.append(name)
    return runs, calibs


def _thumbnail(image: Any, path: Path, title: str = "") -> None:
    """Write a zscale grey PNG of a 2-d array, block-averaged to at most `THUMB_SIZE` pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from astropy.visualization import ZScaleInterval
    from matplotlib.image import imsave

    img = np.asarray(image, dtype=np.float32)
    step = max(1, int(math.ceil(max(img.shape) / THUMB_SIZE)))
    if step > 1:
        ny, nx = (img.shape[0] // step) * step, (img.shape[1] // step) * step
        with np.errstate(all="ignore"):
            img = np.nanmean(img[:ny, :nx].reshape(ny // step, step, nx // step, step), axis=(1, 3))
    finite = np.isfinite(img)
    if finite.any():
        vmin, vmax = ZScaleInterval().get_limits(img[finite])
    else:
        vmin, vmax = 0.0, 1.0
    if not vmax > vmin:
        vmax = vmin + 1.0
    img = np.where(finite, img, vmin)
    imsave(path, img, cmap="gray", vmin=vmin, vmax=vmax, origin="lower")


def _data_id_text(data_id: Mapping[str, Any], skip: Iterable[str] = ("instrument", "detector")) -> str:
    return ", ".join(f"{k}={v}" for k, v in data_id.items() if k not in skip)


# ----------------------------------------------------------------------------- main
def collect_report(
    repo: str | Path,
    outdir: str | Path,
    collections: Sequence[str] | None = None,
    *,
    thumbnails: bool = True,
    run_reports: bool = True,
    instruments: Sequence[str] | None = None,
    sections: Sequence[DetectorSection] = (),
) -> ReportData:
    """Read a repository and write the report's image files into ``outdir/img``.

    Parameters
    ----------
    repo : path-like
        Butler repository.
    outdir : path-like
        Report directory (created).
    collections : sequence of `str`, optional
        Collections (or glob patterns) to look in; chains are followed. Default: all.
    thumbnails : `bool`
        Write thumbnails of image calibrations and ISR outputs.
    run_reports : `bool`
        Summarize the quanta of each RUN (`pipeline.execution.report`).
    instruments : sequence of `str`, optional
        Only the detector sections of these instruments (default: every instrument).
    sections : sequence of `DetectorSection`, optional
        Sections collected earlier (with their images in ``outdir/img``), used as they are. A
        section depends only on its own instrument's datasets (every look-up is restricted to
        its instrument and detector), so it can be collected as soon as that instrument's
        processing has finished, e.g. while another instrument's still runs.

    Returns
    -------
    data : `ReportData`

    Raises
    ------
    LookupError
        If ``collections`` match no collection.
    """
    from butler import Butler

    butler = Butler(repo, writeable=False)
    outdir = Path(outdir)
    imgdir = outdir / "img"
    imgdir.mkdir(parents=True, exist_ok=True)
    runs, calib_colls = _resolve(butler, collections)
    if collections and not runs and not calib_colls:
        raise LookupError(
            f"no collection matches {', '.join(collections)}; butler query-collections REPO lists them"
        )
    data = ReportData(
        repo=str(Path(repo).resolve()),
        collections=list(collections or ["*"]),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    dataset_types = {dt.name: dt for dt in butler.registry.query_dataset_types("*")}
    calib_types = [n for n, dt in dataset_types.items() if dt.is_calibration]

    # certified calibrations, per (instrument, detector)
    certs: dict[tuple[str, int], list[tuple[CalibEntry, Any]]] = {}
    for coll in calib_colls:
        for name in calib_types:
            try:
                entries = butler.registry.query_calibration_validity(coll, name)
            except Exception:  # noqa: BLE001 - type never certified there
                continue
            for ref, span in entries:
                inst = str(ref.data_id.get("instrument", "")) if "instrument" in ref.data_id else ""
                det = int(ref.data_id["detector"]) if "detector" in ref.data_id else -1
                entry = CalibEntry(name, coll, ref.run, _iso(span.begin), _iso(span.end), str(ref.id))
                certs.setdefault((inst, det), []).append((entry, ref))

    # the detectors to show: those with certified calibrations or ISR outputs or raws
    keys: set[tuple[str, int]] = set(certs)
    raw_refs = _query(butler, "raw", runs)
    isr_refs = _query(butler, "postISRCCD", runs)
    for ref in raw_refs + isr_refs:
        keys.add((str(ref.data_id["instrument"]), int(ref.data_id["detector"])))
    keys.discard(("", -1))
    earlier = {(section.instrument, section.detector): section for section in sections}
    for inst, det in sorted(keys):
        if instruments is not None and inst not in instruments:
            continue
        if (inst, det) in earlier:
            data.sections.append(earlier[(inst, det)])
            continue
        section = DetectorSection(inst, det)
        _fill_section(
            butler,
            section,
            certs.get((inst, det), []),
            runs,
            raw_refs,
            isr_refs,
            dataset_types,
            imgdir,
            thumbnails,
        )
        data.sections.append(section)

    if run_reports:
        from ..execution.report import report_from_collections

        for run in _runs_with_quanta(butler, runs):
            try:
                summary = report_from_collections(butler, [run])
            except Exception as exc:  # noqa: BLE001 - a run the report cannot read: say so, go on
                _log.warning("no quanta report for %s: %s", run, exc)
                continue
            if summary.tasks:
                data.runs.append(RunEntry(run, summary))
    return data


def _runs_with_quanta(butler: Any, runs: Sequence[str]) -> list[str]:
    """The runs of ``runs`` whose quanta `report_from_collections` can summarize, in order.

    Those with a saved graph, and those holding a dataset of a ``<label>_log`` type or of its
    ``<label>_metadata``: the summary of any other run (the raws') has no task. One query for
    all of them instead of two per log type and run.
    """
    from ..execution.report import saved_graphs

    graphs = saved_graphs(butler.root)
    rest = [run for run in runs if run not in graphs]
    try:
        logs = [dt.name for dt in butler.registry.query_dataset_types("*_log")]
        names = logs + [f"{name[: -len('_log')]}_metadata" for name in logs]
        known = sorted(dt.name for dt in butler.registry.query_dataset_types(names))
        found = (
            {ref.run for ref in butler.query_datasets(known, collections=rest, find_first=False)}
            if known and rest
            else set()
        )
    except Exception:  # noqa: BLE001 - ask about every run, one by one
        return list(runs)
    return [run for run in runs if run in graphs or run in found]


def _fill_section(
    butler: Any,
    section: DetectorSection,
    certs: list[tuple[CalibEntry, Any]],
    runs: list[str],
    raw_refs: list[Any],
    isr_refs: list[Any],
    dataset_types: Mapping[str, Any],
    imgdir: Path,
    thumbnails: bool,
) -> None:
    inst, det = section.instrument, section.detector
    where = f"instrument = '{inst}' AND detector = {det}"
    section.calibs = sorted((c for c, _ in certs), key=lambda c: (c.dataset_type, c.begin or ""))
    camera_det = None
    try:
        from ..instruments import get_instrument

        camera_det = get_instrument(inst, repo_root=butler.root).camera[det]
        section.name = str(getattr(camera_det, "name", ""))
    except Exception:  # noqa: BLE001 - instrument not known: no nominal values
        camera_det = None
    for ref in raw_refs:
        if (
            ref.data_id["instrument"] == inst
            and int(ref.data_id["detector"]) == det
            and ref.data_id.has_records()
        ):
            rec = ref.data_id.records.get("exposure")
            if rec is not None and rec.timespan is not None and rec.timespan.begin is not None:
                section.exposures.append((rec.timespan.begin.isot, str(rec.observation_type)))
    section.exposures.sort()

    def latest(name: str) -> tuple[Any, str] | None:
        """Return the certified dataset of a type with the latest validity start, else the newest in a run."""
        cands = [(c, r) for c, r in certs if c.dataset_type == name]
        if cands:
            c, r = max(cands, key=lambda cr: cr[0].begin or "")
            return r, f"{c.collection} (run {c.run})"
        refs = _query(butler, name, runs, where)
        if refs:
            r = max(refs, key=lambda x: x.id.bytes)
            return r, f"run {r.run}"
        return None

    amp_names = [a.name for a in camera_det] if camera_det is not None else []
    rows: dict[str, AmpRow] = {}

    def row(amp: str) -> AmpRow:
        if amp not in rows:
            rows[amp] = AmpRow(amp)
            if camera_det is not None:
                try:
                    cam_amp = camera_det[amp]
                    rows[amp].nominal_gain = _float(cam_amp.gain)
                    rows[amp].nominal_noise = _float(cam_amp.read_noise)
                except Exception:  # noqa: BLE001
                    pass
        return rows[amp]

    for amp in amp_names:
        row(amp)
    found = latest("ptc")
    if found is not None:
        ref, source = found
        try:
            ptc = butler.get(ref)
            section.ptc_source = source
            for amp in ptc.ampNames:
                r = row(amp)
                r.gain = _float(ptc.gain.get(amp))
                r.gain_err = _float(ptc.gainErr.get(amp))
                r.noise = _float(ptc.noise.get(amp))
                r.noise_err = _float(ptc.noiseErr.get(amp))
                r.noise_constrained = (
                    math.isfinite(r.noise)
                    and r.noise > 0.5
                    and r.noise > 3.0 * (r.noise_err if math.isfinite(r.noise_err) else 0)
                )
        except Exception as exc:  # noqa: BLE001
            _log.warning("cannot read %s: %s", ref, exc)

    # overscan numbers from the headers of the ISR outputs of science exposures
    mine = [r for r in isr_refs if r.data_id["instrument"] == inst and int(r.data_id["detector"]) == det]
    science = [
        r
        for r in mine
        if r.data_id.has_records()
        and r.data_id.records.get("exposure") is not None
        and r.data_id.records["exposure"].observation_type == "science"
    ]
    science = science or mine
    from pipeline.image import Box

    levels: dict[str, list[float]] = {}
    noises: dict[str, list[float]] = {}
    for ref in science:
        try:
            md = butler.get(ref, parameters={"bbox": Box(0, 0, 1, 1)}).metadata
        except Exception:  # noqa: BLE001
            continue
        for amp in amp_names or list(rows):
            lv = _float(md.get(_OVERSCAN_LEVEL_KEY.format(amp=amp)))
            nz = _float(md.get(_OVERSCAN_NOISE_KEY.format(amp=amp))) * _float(
                md.get(_GAIN_USED_KEY.format(amp=amp))
            )
            if math.isfinite(lv):
                levels.setdefault(amp, []).append(lv)
            if math.isfinite(nz):
                noises.setdefault(amp, []).append(nz)
    import numpy as np

    for amp in set(levels) | set(noises):
        r = row(amp)
        r.overscan_level = float(np.mean(levels[amp])) if levels.get(amp) else math.nan
        r.overscan_noise = float(np.median(noises[amp])) if noises.get(amp) else math.nan
        r.n_isr = max(len(levels.get(amp, [])), len(noises.get(amp, [])))

    # defects, linearity, verification: shown when present
    found = latest("defects")
    if found is not None:
        try:
            defects = butler.get(found[0])
            boxes = list(getattr(defects, "boxes", defects))
            for amp in list(rows):
                bbox = camera_det[amp].bbox if camera_det is not None else None
                if bbox is None:
                    rows[amp].defects = len(boxes)
                    continue
                rows[amp].defects = sum(
                    1
                    for x0, y0, nx, ny in boxes
                    if x0 < bbox.x0 + bbox.nx
                    and x0 + nx > bbox.x0
                    and y0 < bbox.y0 + bbox.ny
                    and y0 + ny > bbox.y0
                )
        except Exception as exc:  # noqa: BLE001
            _log.warning("cannot read defects %s: %s", found[0], exc)
    found = latest("linearizer")
    if found is not None:
        try:
            lin = butler.get(found[0])
            for amp in list(rows):
                kind = getattr(lin, "linearity_type", {}).get(amp, "")
                coeffs = getattr(lin, "linearity_coeffs", {}).get(amp)
                text = str(kind)
                if coeffs is not None and len(coeffs) and kind not in ("None", "LookupTable"):
                    text += " " + ", ".join(f"{c:.3g}" for c in list(coeffs)[:4])
                rows[amp].linearity = text
        except Exception as exc:  # noqa: BLE001
            _log.warning("cannot read linearizer %s: %s", found[0], exc)
    for name in sorted(n for n in dataset_types if "erify" in n and "_" not in n):
        refs = _query(butler, name, runs, where)
        if not refs:
            continue
        ref = max(refs, key=lambda x: x.id.bytes)
        try:
            obj = butler.get(ref)
        except Exception:  # noqa: BLE001
            continue
        for amp in list(rows):
            text = _verify_text(obj, amp)
            if text:
                rows[amp].verification = "; ".join(filter(None, [rows[amp].verification, f"{name}: {text}"]))
    section.amps = [rows[a] for a in (amp_names + sorted(set(rows) - set(amp_names)))]

    # plots the pipelines wrote
    for name, dt in sorted(dataset_types.items()):
        if dt.storage_class != "Plot":
            continue
        refs = _query(butler, name, runs, where)
        if not refs:
            continue
        ref = max(refs, key=lambda x: x.id.bytes)
        path = imgdir / _safe_name(f"{inst}_det{det}_{name}.png")
        try:
            path.write_bytes(butler.get(ref))
        except Exception as exc:  # noqa: BLE001
            _log.warning("cannot write plot %s: %s", ref, exc)
            continue
        section.images.append(ImageEntry(f"img/{path.name}", f"{name} (run {ref.run})", "plot"))

    if not thumbnails:
        return
    for c, ref in certs:
        if dataset_types.get(c.dataset_type) is None or not dataset_types[
            c.dataset_type
        ].storage_class.startswith("Exposure"):
            continue
        path = imgdir / _safe_name(f"{inst}_det{det}_{c.dataset_type}_{c.dataset_id[:8]}.png")
        try:
            if not path.exists():
                _thumbnail(butler.get(ref).image, path)
        except Exception as exc:  # noqa: BLE001
            _log.warning("cannot draw %s: %s", ref, exc)
            continue
        span = f"{c.begin or '-∞'} … {c.end or '+∞'}"
        section.images.append(ImageEntry(f"img/{path.name}", f"{c.dataset_type} [{span}]", "calib"))
    chosen = sorted(science, key=lambda r: r.data_id.get("exposure", 0))[-MAX_ISR_THUMBS:]
    for ref in chosen:
        path = imgdir / _safe_name(
            f"{inst}_det{det}_postISRCCD_{_data_id_text(ref.data_id.required)}_{str(ref.id)[:8]}.png"
        )
        try:
            if not path.exists():
                _thumbnail(butler.get(ref).image, path)
        except Exception as exc:  # noqa: BLE001
            _log.warning("cannot draw %s: %s", ref, exc)
            continue
        title = f"postISRCCD {_data_id_text(ref.data_id.required)}"
        if ref.data_id.has_records() and ref.data_id.records.get("exposure") is not None:
            rec = ref.data_id.records["exposure"]
            title += f" ({rec.observation_type}, {rec.exposure_time:g} s, {rec.target_name or ''})"
        section.images.append(ImageEntry(f"img/{path.name}", title, "isr"))


def _verify_text(obj: Any, amp: str) -> str:
    """Return a short pass/fail text for one amplifier from a verification dataset (best effort)."""
    if not isinstance(obj, Mapping):
        return ""
    node: Any = obj
    for key in ("AMP", "amp", "amps"):
        if isinstance(node, Mapping) and key in node:
            node = node[key]
            break
    if isinstance(node, Mapping) and amp in node:
        node = node[amp]
    elif node is obj and not any(k in obj for k in ("SUCCESS", "success", "passed")):
        return ""
    if isinstance(node, Mapping):
        for key in ("SUCCESS", "success", "passed", "pass"):
            if key in node:
                return "pass" if bool(node[key]) else "FAIL"
        fails = [k for k, v in node.items() if isinstance(v, bool) and not v]
        if fails:
            return "FAIL: " + ", ".join(fails[:4])
        if any(isinstance(v, bool) for v in node.values()):
            return "pass"
    elif isinstance(node, bool):
        return "pass" if node else "FAIL"
    return ""
