"""``register_instrument`` and ``ingest_raws``: put an instrument and its raw files in a repository.

Ingest reads headers only. For every file it finds the registered instrument whose ``match:``
keywords fit the primary header, translates the headers (one `ObservationInfo` per detector /
HDU), then in a few registry transactions inserts the missing ``physical_filter``, ``day_obs``
and ``exposure`` records and ingests one ``raw`` dataset per (exposure, detector) into the RUN
``<instrument>/raw/all`` with reproducible UUIDv5 ids (``id_generation="dataid_type"``), so a
re-ingest is a no-op. Files that fail (not FITS, truncated -- from the header sizes against the file
size, no pixel read --, a detector image whose shape is not the camera's ``raw_shape``, unknown
instrument, missing keyword or a value the registry cannot store, conflicting exposure record, a
different file for a dataset already ingested, transfer error) are reported as ``FAILED <file>:
reason`` and skipped; the others still land. A multi-detector file without the HDU of a detector
the camera description lists is ingested with a ``WARNING <file>`` naming the missing detector(s).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .headers import FITS_SUFFIXES, MergedHeader, RawFileError, read_headers
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
    ingested_files : list of str
        Files that gave at least one new dataset.
    skipped : list of str
        Files whose datasets were all already present with the same content (a re-ingest).
    failed : list of (str, str)
        ``(file, reason)`` for files that were not ingested.
    warnings : list of (str, str)
        ``(file, message)`` for files that were ingested with something to say (a multi-detector
        file without the HDU of some detector of the camera description).
    seconds : float
        Wall time.
    """

    ingested: list[Any] = field(default_factory=list)
    ingested_files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed

    def headline(self) -> str:
        """One line counting files (and the datasets of the ingested ones).

        Example: ``Ingested 3 file(s) (9 raw datasets); 2 file(s) already present; 1 file(s)
        failed; 1 file(s) with warnings.``
        """
        text = (
            f"Ingested {len(self.ingested_files)} file(s) ({len(self.ingested)} raw dataset(s)); "
            f"{len(self.skipped)} file(s) already present; {len(self.failed)} file(s) failed"
        )
        if self.warnings:
            text += f"; {len(self.warnings)} file(s) with warnings"
        return text + "."

    def summary(self) -> str:
        """Return a human-readable summary (the headline, then one line per warning and failure)."""
        lines = [f"{self.headline()} ({self.seconds:.2f} s)"]
        lines += [f"  WARNING {path}: {message}" for path, message in self.warnings]
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


def _init_worker(texts: Sequence[tuple[str, str]], driver_pid: int | None = None) -> None:
    if driver_pid is not None:  # exit when the ingesting process dies (kill -9 included)
        from butler.process_guard import exit_with_driver

        exit_with_driver(driver_pid)
    from .instrument import _from_text

    _WORKER_INSTRUMENTS[:] = [_from_text(text, source) for text, source in texts]


def _translate_file(
    path: str,
) -> tuple[str, str | None, list[ObservationInfo] | None, str | None, str | None]:
    """``(path, instrument name, infos, error, warning)`` for one file (headers only)."""
    try:
        headers = read_headers(path, fast=True)
        _check_complete(path, headers)
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
                None,
            )
        pairs = inst.translator.detectors_in_headers(headers, path)
        _check_shapes(path, inst, headers, pairs)
        warning = _missing_detectors(inst, headers, pairs)
        infos = [
            inst.translate(
                MergedHeader(headers[0], headers[hdu] if hdu else None), hdu, detector=det, source=path
            )
            for det, hdu in pairs
        ]
        return path, inst.name, infos, None, warning
    except Exception as exc:  # noqa: BLE001 - every failure (also OverflowError...) becomes a report line
        text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        text = text.removeprefix(f"{path}: ")  # the report line names the file already
        return path, None, None, text, None


def _data_bytes(header: Any) -> int:
    """Size in bytes of an HDU's data unit without padding (FITS standard 4.0, eq. 2)."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    n = 1
    for i in range(1, naxis + 1):
        n *= int(header.get(f"NAXIS{i}", 0))
    bits = abs(int(header.get("BITPIX", 8)))
    return bits // 8 * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + n)


def _header_bytes(header: Any) -> int | None:
    """Size in bytes of a header read by `read_headers` (whole 2880-byte blocks), if known."""
    text = getattr(header, "_text", None)  # FastHeader: the cards before END
    if text is None:
        return None
    return (len(text) + 80 + 2879) // 2880 * 2880


def _layout(headers: Sequence[Any]) -> tuple[int, int, list[int]] | None:
    """``(end of the last data unit, padded total, HDU boundaries)`` in bytes, or None if unknown.

    The boundaries are the offsets where each header and each data unit starts.
    """
    total = 0
    last_end = 0
    starts: list[int] = []
    for header in headers:
        nh = _header_bytes(header)
        if nh is None:
            return None
        nd = _data_bytes(header)
        starts += [total, total + nh]
        last_end = total + nh + nd
        total += nh + (nd + 2879) // 2880 * 2880
    return last_end, total, starts


def _check_complete(path: str, headers: Sequence[Any]) -> None:
    """Raise `RawFileError` if the file ends before the data its headers announce.

    Plain FITS (also tile-compressed ``.fz``): the file size against the header sizes plus
    NAXISn x BITPIX (x GCOUNT, + PCOUNT) of every HDU read (no pixel is read). gzip: the size
    in the gzip trailer (ISIZE: the uncompressed size of the last gzip member, modulo 2**32)
    must be the size from an HDU boundary (a header or data start) to the end; the bytes of a
    truncated stream match that by chance with a probability of ~1e-9. Otherwise (and for
    bzip2) the stream is decompressed to its end to count its bytes.
    """
    layout = _layout(headers)
    if layout is None:
        return
    need, padded, starts = layout
    with open(path, "rb") as fh:
        magic = fh.read(3)
        compressed = magic[:2] == b"\x1f\x8b" or magic == b"BZh"
        if magic[:2] == b"\x1f\x8b":
            fh.seek(-4, os.SEEK_END)
            isize = int.from_bytes(fh.read(4), "little")
            if any((end - b) % 2**32 == isize for end in (need, padded) for b in starts):
                return
            have = _decompressed_size(path, "gzip")
        elif magic == b"BZh":
            have = _decompressed_size(path, "bz2")
        else:
            have = os.fstat(fh.fileno()).st_size
    if have < need:
        raise RawFileError(
            f"{path}: truncated FITS file: its {len(headers)} HDU header(s) announce {need} bytes "
            f"(headers + NAXISn x BITPIX data) but the {'decompressed ' if compressed else ''}"
            f"file has {have}; copy the file again from its source"
        )


def _decompressed_size(path: str, kind: str) -> int:
    import bz2
    import gzip

    opener: Any = gzip.open if kind == "gzip" else bz2.open
    n = 0
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                n += len(chunk)
    except (OSError, EOFError) as exc:
        raise RawFileError(
            f"{path}: truncated or corrupted {kind} file ({type(exc).__name__}: {exc})"
        ) from None
    return n


def _image_shape(header: Any) -> tuple[int, int] | None:
    """``(ny, nx)`` of an image HDU (the image of a tile-compressed HDU), or None if not 2-D."""
    prefix = "Z" if header.get("ZIMAGE") else ""
    if int(header.get(f"{prefix}NAXIS", 0)) != 2:
        return None
    return int(header.get(f"{prefix}NAXIS2", 0)), int(header.get(f"{prefix}NAXIS1", 0))


def _check_shapes(
    path: str, inst: Instrument, headers: Sequence[Any], pairs: Sequence[tuple[int, int]]
) -> None:
    """Raise `RawFileError` if a detector's HDU is not a 2-D image of the camera's ``raw_shape``."""
    for det_id, hdu in pairs:
        det = inst.camera[det_id]
        header = headers[hdu]
        shape = _image_shape(header)
        naxis = int(header.get("ZNAXIS" if header.get("ZIMAGE") else "NAXIS", 0))
        if shape is None:
            raise RawFileError(
                f"{path}: HDU {hdu} (detector {det.name}) holds a {naxis}-D array, expected a 2-D image"
            )
        if det.raw_shape != (0, 0) and shape != tuple(det.raw_shape):
            raise RawFileError(
                f"{path}: HDU {hdu} image is {shape} (ny, nx) but the {inst.name} camera description says "
                f"detector {det.name} raw_shape is {tuple(det.raw_shape)}; this file is not a {inst.name} "
                "raw of that detector (or fix raw_shape in the camera YAML)"
            )


def _missing_detectors(
    inst: Instrument, headers: Sequence[Any], pairs: Sequence[tuple[int, int]]
) -> str | None:
    """Warning text if a multi-detector file lacks the HDU of some detector it should hold.

    Expected detectors: all of the camera description, or, when the primary header has
    ``NEXTEND``, those whose ``hdu`` index is within ``NEXTEND`` (a 36-CCD MegaCam file of a
    40-CCD camera description is complete); a file with fewer extensions than its ``NEXTEND``
    is always reported.
    """
    if len(inst.camera) < 2:
        return None
    found = {det for det, _ in pairs}
    nextend = headers[0].get("NEXTEND")
    try:
        nextend = None if nextend is None else int(nextend)
    except (TypeError, ValueError):
        nextend = None
    expected = [
        d
        for d in inst.camera
        if nextend is None or not isinstance(d.hdu, int) or isinstance(d.hdu, bool) or d.hdu <= nextend
    ]
    missing = [d for d in expected if d.id not in found]
    short = nextend is not None and len(headers) - 1 < nextend
    if not missing and not short:
        return None
    names = [f"{d.name} (id {d.id})" for d in missing]
    listed = ", ".join(names if len(names) <= 8 else names[:4] + ["..."] + names[-2:])
    text = f"no HDU for {len(missing)} of the {len(expected)} {inst.name} detector(s): {listed}"
    if short:
        text = f"{len(headers) - 1} extension(s) but NEXTEND = {nextend}; " + (text if missing else "")
    return text.rstrip("; ") + f"; ingested the {len(found)} detector(s) present"


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
        with ProcessPoolExecutor(max_workers=processes, initializer=_init_worker,
                                 initargs=(texts, os.getpid())) as pool:
            results = list(
                pool.map(
                    _translate_file, [str(f) for f in files], chunksize=max(1, len(files) // (4 * processes))
                )
            )
    else:
        _WORKER_INSTRUMENTS[:] = instruments
        results = [_translate_file(str(f)) for f in files]
    good: list[tuple[str, str, list[ObservationInfo]]] = []
    warned: dict[str, str] = {}
    for path, inst_name, infos, error, warning in results:
        if error is not None or inst_name is None or not infos:
            report.failed.append((path, error or "no detector found in the file"))
        else:
            good.append((path, inst_name, infos))
            if warning:
                warned[path] = warning

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
        exposure_records = list(butler.query_dimension_records("exposure", instrument=inst_name))
        known_exposures = {int(r.get("id")): r.get("obs_id") for r in exposure_records}
        known_exposure_filters = {int(r.get("id")): r.get("physical_filter") for r in exposure_records}
        new_filters: dict[str, str] = {}
        new_days: dict[int, Any] = {}
        new_exposures: dict[int, dict[str, Any]] = {}
        mine: list[tuple[str, list[ObservationInfo]]] = []
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
            owner_filter = known_exposure_filters.get(info.exposure_id) or (
                new_exposures[info.exposure_id].get("physical_filter")
                if info.exposure_id in new_exposures
                else None
            )
            if owner_filter is not None and owner_filter != info.physical_filter:
                # refuse before any record is written: a new filter would otherwise stay behind
                report.failed.append(
                    (
                        path,
                        f"exposure {info.exposure_id} ({info.obs_id!r}) is already registered with "
                        f"physical_filter {owner_filter!r}, but this file says {info.physical_filter!r}; "
                        "check the file's filter keyword (or its camera description's translation)",
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
            mine.append((path, infos))
        try:
            _insert_records(
                reg, inst_name, new_filters, list(new_days.values()), list(new_exposures.values())
            )
        except Exception:  # noqa: BLE001 - isolate the file(s) whose records the database refuses
            kept = []
            for path, infos in mine:
                info = infos[0]
                try:
                    _insert_records(
                        reg,
                        inst_name,
                        {info.physical_filter: new_filters[info.physical_filter]}
                        if info.physical_filter in new_filters
                        else {},
                        [new_days[info.day_obs]] if info.day_obs in new_days else [],
                        [new_exposures[info.exposure_id]] if info.exposure_id in new_exposures else [],
                    )
                    kept.append((path, infos))
                except Exception as exc:  # noqa: BLE001
                    report.failed.append(
                        (path, f"its exposure record cannot be stored: {type(exc).__name__}: {exc}")
                    )
            mine = kept
        accepted.extend((path, inst_name, infos) for path, infos in mine)

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
    by_path = dict(datasets)
    present = [(path, by_path[path]) for path in report.skipped]
    differing = _differing_content(butler, raw_type, present)
    if differing:
        report.skipped = [p for p in report.skipped if p not in differing]
        report.failed.extend(differing.items())
    failed = {path for path, _ in report.failed}
    report.warnings.extend((p, w) for p, w in warned.items() if p not in failed)
    report.seconds = time.perf_counter() - t0
    return report


def _insert_records(
    reg: Any, instrument: str, filters: dict[str, str], days: list[Any], exposures: list[dict[str, Any]]
) -> None:
    """Insert missing physical_filter (and band), day_obs and exposure records in one transaction."""
    with reg.transaction():
        for name, band in filters.items():
            reg.insert_dimension_data("band", {"name": band}, skip_existing=True)
            reg.insert_dimension_data(
                "physical_filter", {"instrument": instrument, "name": name, "band": band}, skip_existing=True
            )
        if days:
            reg.insert_dimension_data("day_obs", *days, skip_existing=True)
        if exposures:
            reg.insert_dimension_data("exposure", *exposures, skip_existing=True)


def _account(report: IngestReport, datasets: list[tuple[str, Any]], new: list[Any]) -> None:
    report.ingested.extend(new)
    new_keys = {(r.data_id["exposure"], r.data_id["detector"], r.data_id["instrument"]) for r in new}
    for path, fd in datasets:
        keys = {(r.data_id["exposure"], r.data_id["detector"], r.data_id["instrument"]) for r in fd.refs}
        if keys & new_keys:
            report.ingested_files.append(path)
        else:
            report.skipped.append(path)


def _differing_content(butler: Any, raw_type: Any, present: list[tuple[str, Any]]) -> dict[str, str]:
    """``{file: reason}`` for files whose datasets are already ingested from a different file.

    The stored file of each file's first dataset is compared with the new file: the same file
    (or a link to it) is equal at once; otherwise the sizes, then the checksum recorded by the
    datastore (blake2b) or the bytes of both files. A stored file that no longer exists is not
    compared (the datasets are present; `butler` reports the lost file when it is read).
    """
    import filecmp
    import hashlib

    from butler import DatasetRef

    if not present:
        return {}
    ids = {
        path: DatasetRef.make_id(raw_type, dict(fd.refs[0].data_id), fd.refs[0].run, "dataid_type")
        for path, fd in present
    }
    records = butler.registry.get_file_records(list(ids.values()))
    out: dict[str, str] = {}
    for path, fd in present:
        info = records.get(ids[path])
        if info is None:
            continue
        stored = butler.datastore.abspath(info.path)
        if os.path.abspath(stored) == os.path.abspath(path):  # ingested in place ("direct"): no stat
            continue
        try:
            if os.path.samefile(stored, path):
                continue
            new_size = os.path.getsize(path)
            old_size = (
                os.path.getsize(stored) if info.file_size is None or info.file_size < 0 else info.file_size
            )
        except OSError:
            continue
        ref = fd.refs[0]
        what = (
            f"{ref.dataset_type.name} {ref.data_id['instrument']} exposure {ref.data_id['exposure']} "
            f"detector {ref.data_id['detector']} is already ingested from {stored}"
        )
        fix = (
            f"; if this file is the right one, remove the old {ref.dataset_type.name} datasets of that "
            f"exposure from RUN {ref.run} first, else leave this file out"
        )
        if new_size != old_size:
            out[path] = f"{what} ({old_size} bytes) and this file differs ({new_size} bytes){fix}"
            continue
        if info.checksum:
            digest = hashlib.blake2b(digest_size=32)
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            same = digest.hexdigest() == info.checksum
        else:
            try:
                same = filecmp.cmp(stored, path, shallow=False)
            except OSError:
                continue
        if not same:
            out[path] = f"{what} and this file has the same size but different content{fix}"
    return out


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
