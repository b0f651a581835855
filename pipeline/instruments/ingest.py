"""``register_instrument`` and ``ingest_raws``: put an instrument and its raw files in a repository.

Ingest reads headers only. For every file it finds the registered instrument whose ``match:``
keywords fit the primary header, translates the headers (one `ObservationInfo` per detector /
HDU), then in a few registry transactions inserts the missing ``physical_filter``, ``day_obs``
and ``exposure`` records and ingests one ``raw`` dataset per (exposure, detector) into the RUN
``<instrument>/raw/all`` with reproducible UUIDv5 ids (``id_generation="dataid_type"``), so a
re-ingest is a no-op. Files that fail (not FITS, truncated, unknown instrument, missing keyword,
conflicting exposure record, transfer error) are reported and skipped; the others still land.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .headers import FITS_SUFFIXES, read_headers
from .instrument import Instrument, get_instrument, instrument_for_headers
from .translator import ObservationInfo

__all__ = [
    "IngestReport",
    "register_instrument",
    "ingest_raws",
    "RAW_FORMATTER",
    "raw_dataset_type",
    "find_raw_files",
]

#: Formatter recorded for ingested raws.
RAW_FORMATTER = "pipeline.instruments.raw.RawFormatter"
RAW_DIMENSIONS = ("instrument", "exposure", "detector")


@dataclass
class IngestReport:
    """Outcome of `ingest_raws`.

    Attributes
    ----------
    ingested : list of DatasetRef
        ``raw`` datasets newly registered.
    skipped : list of str
        Files whose datasets were all already present (a re-ingest).
    failed : list of (str, str)
        ``(file, reason)`` for files that were not ingested.
    seconds : float
        Wall time.
    """

    ingested: list[Any] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed

    def summary(self) -> str:
        """Return a human-readable summary (one line, then one line per failure)."""
        lines = [
            f"ingested {len(self.ingested)} raw dataset(s); {len(self.skipped)} file(s) already present; "
            f"{len(self.failed)} file(s) failed ({self.seconds:.2f} s)"
        ]
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def raw_dataset_type() -> Any:
    """Return the ``raw`` `~butler.DatasetType` (instrument, exposure, detector; Exposure)."""
    from butler import DatasetType

    return DatasetType("raw", RAW_DIMENSIONS, "Exposure")


def register_instrument(butler: Any, name_or_path: str | os.PathLike[str]) -> Instrument:
    """Insert an instrument, its detectors and filters (and the ``raw`` dataset type) into a repository.

    Parameters
    ----------
    butler : butler.Butler
        A writeable butler.
    name_or_path : str or path-like
        Built-in instrument name or camera description YAML path.

    Returns
    -------
    Instrument

    Raises
    ------
    UnknownInstrumentError, CameraDescriptionError
        If the instrument cannot be loaded.
    butler.ConflictingDefinitionError
        If an instrument of that name is registered with a different camera description.

    Notes
    -----
    Idempotent: registering the same description again changes nothing. The camera YAML text is
    stored in the instrument record (``camera_yaml``) and mirrored to
    ``REPO/instruments/<name>.yaml`` so that the repository is self-contained.
    """
    from butler import ConflictingDefinitionError

    inst = get_instrument(name_or_path)
    reg = butler.registry
    record = {
        "name": inst.name,
        "class_name": inst.class_name,
        "camera_yaml": inst.camera_yaml,
        "detector_max": max(d.id for d in inst.camera) + 1,
    }
    existing = (
        butler.query_dimension_records("instrument", instrument=inst.name)
        if _has_instrument(butler, inst.name)
        else []
    )
    if existing and (existing[0].get("camera_yaml") or "") != inst.camera_yaml:
        raise ConflictingDefinitionError(
            f"instrument {inst.name!r} is already registered in {butler.root} with a different camera "
            f"description; use another instrument name in {name_or_path}, or a new repository"
        )
    with reg.transaction():
        if not existing:
            reg.insert_dimension_data("instrument", record)
        reg.insert_dimension_data(
            "detector",
            *(
                {"instrument": inst.name, "id": d.id, "full_name": d.name, "purpose": d.purpose}
                for d in inst.camera
            ),
            skip_existing=True,
        )
        for physical_filter, band in inst.filters:
            reg.insert_dimension_data("band", {"name": band}, skip_existing=True)
            reg.insert_dimension_data(
                "physical_filter",
                {"instrument": inst.name, "name": physical_filter, "band": band},
                skip_existing=True,
            )
        reg.register_dataset_type(raw_dataset_type())
    mirror = Path(butler.root) / "instruments" / f"{inst.name}.yaml"
    mirror.parent.mkdir(parents=True, exist_ok=True)
    tmp = mirror.with_suffix(f".yaml.{os.getpid()}.tmp")
    tmp.write_text(inst.camera_yaml)
    os.replace(tmp, mirror)
    return inst


def _has_instrument(butler: Any, name: str) -> bool:
    return any(r.get("name") == name for r in butler.query_dimension_records("instrument"))


def find_raw_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and directories (recursively) into FITS files.

    Returns
    -------
    files : list of Path
        Sorted, unique.
    missing : list of (str, str)
        ``(path, reason)`` for arguments that do not exist.
    """
    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files.extend(
                f
                for f in sorted(path.rglob("*"))
                if f.is_file() and f.name.lower().endswith(FITS_SUFFIXES) and not f.name.startswith(".")
            )
        elif path.is_file():
            files.append(path)
        else:
            missing.append((str(path), "no such file or directory"))
    seen: set[str] = set()
    unique = []
    for f in files:
        key = os.path.abspath(f)  # no syscalls (resolve() costs ~1 ms per file on a busy disk)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, missing


# -- header reading (runs in worker processes when processes > 1) ---------------------------------
_WORKER_INSTRUMENTS: list[Instrument] = []


def _init_worker(texts: Sequence[tuple[str, str]]) -> None:
    from .instrument import _from_text

    _WORKER_INSTRUMENTS[:] = [_from_text(text, source) for text, source in texts]


def _translate_file(path: str) -> tuple[str, str | None, list[ObservationInfo] | None, str | None]:
    try:
        headers = read_headers(path, fast=True)
        inst = instrument_for_headers(headers[0], _WORKER_INSTRUMENTS)
        if inst is None:
            names = ", ".join(i.name for i in _WORKER_INSTRUMENTS)
            return (
                path,
                None,
                None,
                (
                    f"unknown instrument (INSTRUME={headers[0].get('INSTRUME')!r}); "
                    f"registered instruments: {names}; "
                    "register the right one with `butler register-instrument REPO NAME_OR_YAML`"
                ),
            )
        return path, inst.name, inst.translate_file_headers(headers, path), None
    except Exception as exc:  # noqa: BLE001 - every failure becomes a report line
        return path, None, None, str(exc)


def ingest_raws(
    butler: Any,
    paths: Iterable[str | os.PathLike[str]],
    *,
    transfer: str = "auto",
    processes: int = 1,
    run: str | None = None,
) -> IngestReport:
    """Ingest raw files (headers only) as ``raw`` datasets of the registered instruments.

    Parameters
    ----------
    butler : butler.Butler
        A writeable butler on a repository where the instruments are registered.
    paths : iterable of str or path-like
        Files and/or directories (searched recursively for ``*.fits``, ``*.fits.gz``, ``*.fz``...).
    transfer : {"auto", "copy", "symlink", "hardlink", "move", "direct"}
        How files enter the datastore (``auto``: in place if under the repository, else copy).
    processes : int
        Worker processes for reading and translating headers.
    run : str, optional
        RUN collection; default ``<instrument>/raw/all``.

    Returns
    -------
    IngestReport
        Ingested refs, files already present, and failures with reasons.

    Raises
    ------
    ValueError
        If no instrument is registered in the repository (nothing could be ingested).
    """
    from butler import DatasetRef, FileDataset

    t0 = time.perf_counter()
    report = IngestReport()
    records = butler.query_dimension_records("instrument")
    if not records:
        raise ValueError(
            f"no instrument is registered in {butler.root}; "
            f"run `butler register-instrument {butler.root} NAME` "
            "(kast_blue, efosc2, megacam, testcam or a camera YAML) first"
        )
    instruments = [get_instrument(r.get("name"), repo_root=butler.root) for r in records]
    texts = [(i.camera_yaml, i.description.source) for i in instruments]
    files, missing = find_raw_files(paths)
    report.failed.extend(missing)
    if not files and not missing:
        report.failed.append((", ".join(str(p) for p in paths) or "(none)", "no FITS files found"))

    # 1. headers -> observation infos
    if processes > 1 and len(files) > 1:
        with ProcessPoolExecutor(max_workers=processes, initializer=_init_worker, initargs=(texts,)) as pool:
            results = list(
                pool.map(
                    _translate_file, [str(f) for f in files], chunksize=max(1, len(files) // (4 * processes))
                )
            )
    else:
        _WORKER_INSTRUMENTS[:] = instruments
        results = [_translate_file(str(f)) for f in files]
    good: list[tuple[str, str, list[ObservationInfo]]] = []
    for path, inst_name, infos, error in results:
        if error is not None or inst_name is None or not infos:
            report.failed.append((path, error or "no detector found in the file"))
        else:
            good.append((path, inst_name, infos))

    # 2. dimension records (only the missing ones; conflicting exposures fail their files)
    reg = butler.registry
    by_inst: dict[str, list[tuple[str, list[ObservationInfo]]]] = {}
    for path, inst_name, infos in good:
        by_inst.setdefault(inst_name, []).append((path, infos))
    accepted: list[tuple[str, str, list[ObservationInfo]]] = []
    for inst_name, items in by_inst.items():
        inst = next(i for i in instruments if i.name == inst_name)
        known_filters = {
            r.get("name") for r in butler.query_dimension_records("physical_filter", instrument=inst_name)
        }
        known_days = {
            int(r.get("id")) for r in butler.query_dimension_records("day_obs", instrument=inst_name)
        }
        known_exposures = {
            int(r.get("id")): r.get("obs_id")
            for r in butler.query_dimension_records("exposure", instrument=inst_name)
        }
        new_filters: dict[str, str] = {}
        new_days: dict[int, Any] = {}
        new_exposures: dict[int, dict[str, Any]] = {}
        for path, infos in items:
            info = infos[0]
            owner = known_exposures.get(info.exposure_id) or (
                new_exposures[info.exposure_id]["obs_id"] if info.exposure_id in new_exposures else None
            )
            if owner is not None and owner != info.obs_id:
                report.failed.append(
                    (
                        path,
                        f"exposure id {info.exposure_id} is already used by obs_id {owner!r} "
                        f"(this file: {info.obs_id!r}); "
                        f"fix translation.exposure_id in the {inst_name} camera description",
                    )
                )
                continue
            if info.physical_filter not in known_filters:
                new_filters[info.physical_filter] = inst.translator.bands.get(
                    info.physical_filter, info.physical_filter
                )
            if info.day_obs not in known_days and info.day_obs not in new_days:
                new_days[info.day_obs] = _day_obs_record(inst_name, info.day_obs, inst)
            if info.exposure_id not in known_exposures:
                new_exposures[info.exposure_id] = info.exposure_record()
            accepted.append((path, inst_name, infos))
        with reg.transaction():
            for name, band in new_filters.items():
                reg.insert_dimension_data("band", {"name": band}, skip_existing=True)
                reg.insert_dimension_data(
                    "physical_filter",
                    {"instrument": inst_name, "name": name, "band": band},
                    skip_existing=True,
                )
            if new_days:
                reg.insert_dimension_data("day_obs", *new_days.values(), skip_existing=True)
            if new_exposures:
                reg.insert_dimension_data("exposure", *new_exposures.values(), skip_existing=True)

    # 3. datasets
    raw_type = raw_dataset_type()
    reg.register_dataset_type(raw_type)
    datasets: list[tuple[str, Any]] = []
    for path, inst_name, infos in accepted:
        run_name = run or f"{inst_name}/raw/all"
        refs = [
            DatasetRef(
                raw_type,
                {"instrument": inst_name, "exposure": i.exposure_id, "detector": i.detector},
                run_name,
            )
            for i in infos
        ]
        datasets.append((path, FileDataset(path=path, refs=refs, formatter=RAW_FORMATTER)))
    if datasets:
        try:
            new = butler.ingest(
                *(fd for _, fd in datasets),
                transfer=transfer,
                formatter=RAW_FORMATTER,
                id_generation="dataid_type",
            )
            _account(report, datasets, new)
        except Exception:  # noqa: BLE001 - isolate the bad file(s): retry one file at a time
            for path, fd in datasets:
                try:
                    new = butler.ingest(
                        fd, transfer=transfer, formatter=RAW_FORMATTER, id_generation="dataid_type"
                    )
                    _account(report, [(path, fd)], new)
                except Exception as exc:  # noqa: BLE001
                    report.failed.append((path, f"{type(exc).__name__}: {exc}"))
    report.seconds = time.perf_counter() - t0
    return report


def _account(report: IngestReport, datasets: list[tuple[str, Any]], new: list[Any]) -> None:
    report.ingested.extend(new)
    new_keys = {(r.data_id["exposure"], r.data_id["detector"], r.data_id["instrument"]) for r in new}
    for path, fd in datasets:
        keys = {(r.data_id["exposure"], r.data_id["detector"], r.data_id["instrument"]) for r in fd.refs}
        if not keys & new_keys:
            report.skipped.append(path)


def _day_obs_record(instrument: str, day_obs: int, inst: Instrument) -> dict[str, Any]:
    from astropy.time import Time, TimeDelta

    from butler import Timespan

    offset = inst.description.translation.day_obs_offset_hours
    text = str(day_obs)
    start = Time(f"{text[:4]}-{text[4:6]}-{text[6:]}T00:00:00", scale="utc") - TimeDelta(
        offset * 3600.0, format="sec"
    )
    return {
        "instrument": instrument,
        "id": day_obs,
        "timespan": Timespan(start.tai, (start + TimeDelta(86400.0, format="sec")).tai),
    }
