"""The main job (``ccdflow-demo``): the whole calibration flow on real raw data, through the CLI.

For each instrument found in the data directory (``kast_blue``, ``efosc2``) it runs, as a user
would type them and showing each command and its progress:

``butler create`` → ``butler register-instrument`` → ``butler ingest-raws`` → ``pipetask run``
cpBias → ``butler certify-calibrations`` → cpFlat (Kast dome flats; EFOSC2 twilight flats) →
certify → cpPtc on the flats with the GRID measurement region (Kast b11/b12/b13; EFOSC2 the
10.31 s and 24.54 s dome-flat triplets) → certify → ``pipetask run`` isr on the science frames
with the certified bias and flat and the PTC's gains and read noise.

It then prints a table per amplifier (PTC gain and read noise against the nominal values, the
read noise measured in the overscan of the science frames, the overscan level) and the number
of datasets of each type, and writes the PTC plots and a quick-look PNG of one ``postISRCCD``
per instrument into ``REPO/plots/``.

Re-running is safe: ``--mode reuse`` (default) skips every step whose outputs are complete and
finishes interrupted ones (``--extend-run``); ``--mode rebuild`` deletes the repository first.

The flow of each instrument is data (`Flow`, `FLOWS`); the numbers come back through the
`butler.Butler` Python API (`collect_results`). The end-to-end test runs the same `run_flow`
on simulated MegaCam raws.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "AmpResult",
    "FLOWS",
    "Flow",
    "StepFailed",
    "StepRecord",
    "collect_results",
    "dataset_counts",
    "format_report",
    "main",
    "prepare_repo",
    "run_flow",
    "summarize",
    "write_plots",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINES = REPO_ROOT / "pipelines"

#: Header keywords written by IsrTask (contracts §5), per amplifier.
_OVERSCAN_LEVEL_KEY = "LSST ISR OVERSCAN SERIAL MEAN {amp}"
_OVERSCAN_NOISE_KEY = "LSST ISR OVERSCAN RESIDUAL SERIAL STDEV {amp}"
_GAIN_USED_KEY = "LSST ISR GAIN {amp}"


@dataclasses.dataclass(frozen=True)
class Flow:
    """What the main job does for one instrument.

    Parameters
    ----------
    instrument : `str`
        Instrument name known to ``butler register-instrument`` (``kast_blue``, ``efosc2``,
        ``megacam``, ...).
    raw_subdir : `str`
        Directory of raw files, relative to the data directory (``""``: the data directory).
    bias_where, flat_where, ptc_where, science_where : `str`
        Data query expressions (the ``-d`` of ``pipetask run``) selecting the exposures of each
        step; ``instrument = '<name>'`` is added automatically.
    calib_begin, calib_end : `str` or `None`
        Validity range (ISO, TAI) given to ``butler certify-calibrations``; `None` = unbounded.
    nominal_gain : `float` or `None`
        Nominal gain (e⁻/ADU) printed beside the measured one; `None` = each amplifier's value
        in the camera description.
    nominal_read_noise : `float` or `None`
        Nominal read noise (e⁻); `None` = the camera description's.
    gain_tolerance : `float`
        Fractional tolerance of the PTC gain against the nominal one, flagged in the table
        (the calibration-products issue: 5 % for Kast, 10 % for EFOSC2).
    ptc_grid_size : `int` or `None`
        Box size (pixels) of the GRID measurement region of the PTC extraction; `None` measures
        whole amplifiers (``detectorMeasurementRegion=AMP``, for uniformly lit flat sequences).
    ptc_config : `tuple` [`str`, ...]
        Further ``-c LABEL:FIELD=VALUE`` overrides of the cpPtc pipeline.
    isr_config : `tuple` [`str`, ...]
        Further overrides of the science ISR (``isr`` label), after the main job's own
        (``doFlat``, ``usePtcGains``, ``usePtcReadNoise``).
    """

    instrument: str
    raw_subdir: str
    bias_where: str
    flat_where: str
    ptc_where: str
    science_where: str
    calib_begin: str | None
    calib_end: str | None
    nominal_gain: float | None
    nominal_read_noise: float | None
    gain_tolerance: float = 0.05
    ptc_grid_size: int | None = 64
    ptc_config: tuple[str, ...] = ()
    isr_config: tuple[str, ...] = ()

    @property
    def calib_collection(self) -> str:
        """CALIBRATION collection the products are certified into (``<instrument>/calib``)."""
        return f"{self.instrument}/calib"

    @property
    def raw_collection(self) -> str:
        """RUN collection of the ingested raws (``<instrument>/raw/all``)."""
        return f"{self.instrument}/raw/all"

    def calib_run(self, calib_type: str) -> str:
        """RUN collection where the ``calib_type`` (bias, flat, ptc) pipeline writes."""
        return f"{self.instrument}/calib/{calib_type}/run"

    @property
    def isr_run(self) -> str:
        """RUN collection of the science ``postISRCCD`` images."""
        return f"{self.instrument}/run/isr"

    def where(self, expr: str) -> str:
        """``expr`` restricted to this instrument."""
        return f"instrument = '{self.instrument}' AND ({expr})"


FLOWS: dict[str, Flow] = {
    "kast_blue": Flow(
        instrument="kast_blue",
        raw_subdir="raw/kast_blue",
        bias_where="exposure.observation_type = 'bias'",
        # the three 15 s dome flats b11/b12/b13 (OBJECT 'Dome Flat')
        flat_where="exposure.observation_type = 'flat' AND exposure.observation_reason = 'dome'",
        ptc_where="exposure.observation_type = 'flat' AND exposure.observation_reason = 'dome'",
        science_where="exposure.observation_type = 'science'",
        calib_begin="2015-05-01T00:00:00",
        calib_end="2015-06-01T00:00:00",
        nominal_gain=1.2,
        nominal_read_noise=3.7,
        gain_tolerance=0.05,
    ),
    "efosc2": Flow(
        instrument="efosc2",
        raw_subdir="raw/efosc2",
        bias_where="exposure.observation_type = 'bias'",
        # SKY,FLAT: the g#782 twilight flats, the filter of the science frames
        flat_where="exposure.observation_type = 'flat' AND exposure.observation_reason = 'twilight'",
        # the Gr#3 spectral dome flats: a 10.31 s and a 24.54 s triplet
        ptc_where="exposure.observation_type = 'flat' AND exposure.observation_reason = 'dome'",
        science_where="exposure.observation_type = 'science'",
        calib_begin="2022-01-01T00:00:00",
        calib_end="2022-03-01T00:00:00",
        nominal_gain=1.1,
        nominal_read_noise=7.8,
        gain_tolerance=0.10,
        # Boxes below 2000 ADU lie in the vignetted / scattered-light rows of the spectrum, whose
        # variance is not shot noise (see tests/cp/test_ptc_real_data.py).
        ptc_config=("ptcSolve:minMeanSignal.ALL_AMPS=2000",),
    ),
}


class StepFailed(RuntimeError):  # noqa: N818 - the lead's name, kept
    """A command of the main job exited non-zero (its own output says why)."""


@dataclasses.dataclass
class StepRecord:
    """One command the main job ran (or skipped).

    Attributes
    ----------
    label : `str`
        Short name (``kast_blue cpBias``).
    command : `str`
        The shell-quoted command line (empty when skipped).
    wall : `float`
        Wall-clock time (s).
    cpu : `float`
        User + system CPU time of the command and its worker processes (s).
    skipped : `bool`
        True when ``--mode reuse`` found the step complete.
    """

    label: str
    command: str
    wall: float = 0.0
    cpu: float = 0.0
    skipped: bool = False


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _say(text: str, *, bold: bool = False) -> None:
    if bold and sys.stdout.isatty():
        text = f"\033[1m{text}\033[0m"
    print(text, flush=True)


def _run(cmd: Sequence[Any], *, label: str, log: list[StepRecord]) -> StepRecord:
    """Print and run one command, streaming its output.

    Raises
    ------
    StepFailed
        If the command exits non-zero.
    """
    text = " ".join(shlex.quote(str(c)) for c in cmd)
    _say(f"\n$ {text}", bold=True)
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run([str(c) for c in cmd], check=False)
    rec = StepRecord(label, text, time.perf_counter() - t0, _children_cpu() - c0)
    log.append(rec)
    if proc.returncode != 0:
        raise StepFailed(f"{label} failed (exit {proc.returncode}); the command was:\n  {text}")
    _say(f"  [{label}: {rec.wall:.1f} s wall, {rec.cpu:.1f} s CPU]")
    return rec


def _tool(name: str) -> str:
    """Return the path of a console script installed beside this interpreter (else ``name``)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _collection_exists(butler: Any, name: str) -> bool:
    try:
        butler.registry.get_collection_type(name)
    except Exception:  # noqa: BLE001 - the registry's missing-collection error
        return False
    return True


def _query(butler: Any, dataset_type: str, collections: Sequence[str], where: str = "") -> list[Any]:
    """Datasets of a type in collections (every match), [] when the type or collection is unknown."""
    try:
        return list(
            butler.query_datasets(dataset_type, collections=list(collections), where=where, find_first=False)
        )
    except Exception:  # noqa: BLE001 - MissingDatasetTypeError / MissingCollectionError: nothing yet
        return []


def _expected_keys(butler: Any, flow: Flow, expr: str, keys: Sequence[str]) -> set[tuple]:
    """Return the data IDs (restricted to ``keys``) an output should cover, from the selected raws."""
    refs = _query(butler, "raw", [flow.raw_collection], flow.where(expr))
    return {tuple(ref.data_id[k] for k in keys) for ref in refs}


def _missing(butler: Any, flow: Flow, expr: str, dataset_type: str, run: str, keys: Sequence[str]) -> int:
    """How many expected ``dataset_type`` data IDs are absent from ``run`` (-1: no raw selected)."""
    expected = _expected_keys(butler, flow, expr, keys)
    if not expected:
        return -1
    if not _collection_exists(butler, run):
        return len(expected)
    have = {tuple(r.data_id[k] for k in keys) for r in _query(butler, dataset_type, [run])}
    return len(expected - have)


def _certified(butler: Any, flow: Flow, dataset_type: str) -> bool:
    return bool(_query(butler, dataset_type, [flow.calib_collection], f"instrument = '{flow.instrument}'"))


def run_flow(
    flow: Flow,
    data_dir: Path,
    repo: Path,
    *,
    processes: int = 2,
    log: list[StepRecord] | None = None,
    pipelines: Path = PIPELINES,
    progress: bool | None = None,
) -> list[StepRecord]:
    """Run the whole calibration flow for one instrument through the CLI.

    ``butler register-instrument`` and ``ingest-raws`` (idempotent), then cpBias, cpFlat and
    cpPtc, each certified into ``<instrument>/calib``, then the science ISR. A pipeline step
    whose outputs already cover every selected data ID is skipped; an incomplete one is
    finished with ``--extend-run``.

    Parameters
    ----------
    flow : `Flow`
        The instrument's flow.
    data_dir : `pathlib.Path`
        Directory holding ``flow.raw_subdir``.
    repo : `pathlib.Path`
        Repository root (created beforehand with ``butler create``).
    processes : `int`
        ``-j`` of ``pipetask run``.
    log : `list` [`StepRecord`], optional
        Receives one record per command run or skipped (created when not given).
    pipelines : `pathlib.Path`
        Directory of ``cpBias.yaml``, ``cpFlat.yaml``, ``cpPtc.yaml`` and ``isr.yaml``.
    progress : `bool`, optional
        Force ``pipetask --progress`` on or off (default: a bar on a terminal, log lines
        otherwise).

    Returns
    -------
    log : `list` [`StepRecord`]
        ``log``, extended.

    Raises
    ------
    StepFailed
        If a command exits non-zero, or a step selects no exposure.
    FileNotFoundError
        If the raw directory does not exist.
    """
    from butler import Butler

    log = [] if log is None else log
    butler_cli, pipetask = _tool("butler"), _tool("pipetask")
    inst = flow.instrument
    raw_dir = (data_dir / flow.raw_subdir) if flow.raw_subdir else data_dir
    if not raw_dir.is_dir():
        raise FileNotFoundError(
            f"{raw_dir} does not exist: pass the directory that holds {flow.raw_subdir or 'the raws'}"
        )
    _say(f"\n=== {inst}: raws from {raw_dir} ===", bold=True)
    _run([butler_cli, "register-instrument", repo, inst], label=f"{inst} register-instrument", log=log)
    _run(
        [butler_cli, "ingest-raws", repo, raw_dir, "--transfer", "symlink"],
        label=f"{inst} ingest-raws",
        log=log,
    )

    grid = (
        ["-c", "ptcExtract:detectorMeasurementRegion=GRID", "-c", f"ptcExtract:gridSize={flow.ptc_grid_size}"]
        if flow.ptc_grid_size
        else ["-c", "ptcExtract:detectorMeasurementRegion=AMP"]
    )
    # Kast b11-b13 and the EFOSC2 dome flats come in triplets of one exposure time: pair the third
    # flat with the second instead of dropping it (LSST drops it), for 2 pairs per triplet.
    grid += ["-c", "ptcExtract:pairExtraExposures=True"]
    ptc_extra = grid + [a for c in flow.ptc_config for a in ("-c", c)]
    isr_extra = ["-c", "isr:doFlat=True", "-c", "isr:usePtcGains=True", "-c", "isr:usePtcReadNoise=True"]
    isr_extra += [a for c in flow.isr_config for a in ("-c", c)]
    raws, calib = flow.raw_collection, flow.calib_collection
    # (pipeline, step name, calibration type or None, query, output dataset type, its data-ID keys,
    #  extra overrides, inputs, output run)
    steps = [
        ("cpBias", "bias", flow.bias_where, "bias", ("detector",), [], [raws], flow.calib_run("bias")),
        (
            "cpFlat",
            "flat",
            flow.flat_where,
            "flat",
            ("detector", "physical_filter"),
            [],
            [raws, calib],
            flow.calib_run("flat"),
        ),
        (
            "cpPtc",
            "ptc",
            flow.ptc_where,
            "ptc",
            ("detector",),
            ptc_extra,
            [raws, calib],
            flow.calib_run("ptc"),
        ),
        (
            "isr",
            None,
            flow.science_where,
            "postISRCCD",
            ("exposure", "detector"),
            isr_extra,
            [raws, calib],
            flow.isr_run,
        ),
    ]
    progress_opt = [] if progress is None else (["--progress"] if progress else ["--no-progress"])
    for k, (pipeline_name, calib_type, expr, output_type, keys, extra, inputs, run) in enumerate(steps, 1):
        label = f"{inst} {pipeline_name}"
        _say(f"\n--- [{inst} {k}/{len(steps)}] {pipeline_name}: {flow.where(expr)} ---", bold=True)
        b = Butler(repo, writeable=False)
        missing = _missing(b, flow, expr, output_type, run, keys)
        if missing < 0:
            raise StepFailed(
                f"{label}: no raw exposure matches {flow.where(expr)!r}; check the data directory"
            )
        if missing == 0:
            _say(f"  {output_type} already complete in {run}: skipped (--mode rebuild redoes it)")
            log.append(StepRecord(label, "", skipped=True))
        else:
            cmd = [
                pipetask,
                "run",
                "-b",
                repo,
                "-p",
                pipelines / f"{pipeline_name}.yaml",
                "-i",
                ",".join(inputs),
                "--output-run",
                run,
                "-d",
                flow.where(expr),
                "--register-dataset-types",
                "-j",
                str(processes),
                *progress_opt,
                *extra,
            ]
            if _collection_exists(b, run):
                cmd.append("--extend-run")
            _run(cmd, label=label, log=log)
        if calib_type is not None:
            b = Butler(repo, writeable=False)
            if _certified(b, flow, calib_type):
                _say(f"  {calib_type} already certified in {calib}")
            else:
                cert = [butler_cli, "certify-calibrations", repo, run, calib, calib_type]
                if flow.calib_begin:
                    cert += ["--begin-date", flow.calib_begin]
                if flow.calib_end:
                    cert += ["--end-date", flow.calib_end]
                _run(cert, label=f"{inst} certify {calib_type}", log=log)
    _verify_bias_flat(flow, repo, pipetask, pipelines, processes, progress_opt, log)
    return log


def _verify_bias_flat(
    flow: Flow, repo: Any, pipetask: str, pipelines: Path, processes: int, progress_opt: list[str],
    log: list[StepRecord],
) -> None:
    """Run VerifyBias / VerifyFlat (cp_verify) on the flow's biases and flats; print the verdicts.

    The real data sets have too few frames to keep some aside, so the bias and the flat are
    verified on the frames they were made from (a weaker test: the residual noise is below the
    read noise by ``sqrt(1 - 1/N)``). A failed test is reported, not fatal.
    """
    from butler import Butler
    from pipeline.tasks.verify.summary import format_summary

    runs = []
    for name, expr in (("VerifyBias", flow.bias_where), ("VerifyFlat", flow.flat_where)):
        result_type = f"verify{name[6:]}Results"
        run = flow.calib_run(f"verify{name[6:]}")
        label = f"{flow.instrument} {name}"
        _say(f"\n--- [{flow.instrument}] {name}: {flow.where(expr)} ---", bold=True)
        b = Butler(repo, writeable=False)
        if _query(b, result_type, [run]):
            _say(f"  {result_type} already in {run}: skipped")
        else:
            cmd = [pipetask, "run", "-b", repo, "-p", pipelines / f"{name}.yaml",
                   "-i", ",".join([flow.raw_collection, flow.calib_collection]), "--output-run", run,
                   "-d", flow.where(expr), "--register-dataset-types", "-j", str(processes), *progress_opt]
            if _collection_exists(b, run):
                cmd.append("--extend-run")
            _run(cmd, label=label, log=log)
        runs.append((result_type, run))
    b = Butler(repo, writeable=False)
    results = [(t, r, b.get(ref)) for t, r in runs for ref in _query(b, t, [r])]
    _say(f"\n=== {flow.instrument}: calibration verification (cp_verify) ===", bold=True)
    _say(format_summary(results, max_rows=40))


@dataclasses.dataclass
class AmpResult:
    """Main-job results of one amplifier.

    Attributes
    ----------
    instrument, detector, amp : `str`, `int`, `str`
        Which amplifier.
    gain, gain_err : `float`
        PTC gain and its fit error (e⁻/ADU).
    ptc_noise, ptc_noise_err : `float`
        Read noise from the PTC fit and its error (e⁻); poorly constrained when the PTC has no
        low-signal points (see `ptc_noise_constrained`).
    overscan_noise : `float`
        Median over the science frames of the overscan-residual rms × the gain used (e⁻).
    overscan_level : `float`
        Mean over the science frames of the serial-overscan level (ADU).
    n_points : `int`
        PTC points kept by the fit.
    nominal_gain, nominal_noise : `float`
        Nominal values (e⁻/ADU, e⁻).
    gain_tolerance : `float`
        Fractional tolerance on the gain.
    """

    instrument: str
    detector: int
    amp: str
    gain: float
    gain_err: float
    ptc_noise: float
    ptc_noise_err: float
    overscan_noise: float
    overscan_level: float
    n_points: int
    nominal_gain: float
    nominal_noise: float
    gain_tolerance: float

    @property
    def gain_ok(self) -> bool:
        """Whether the PTC gain is within ``gain_tolerance`` of the nominal gain."""
        return math.isfinite(self.gain) and abs(self.gain / self.nominal_gain - 1.0) <= self.gain_tolerance

    @property
    def ptc_noise_constrained(self) -> bool:
        """Whether the PTC fit measured the read noise (> 0.5 e⁻ and > 3 × its error).

        Flats that are all well above the read-noise floor (the real spectral dome flats) leave
        the PTC's constant term at its bound, 0.
        """
        return (
            math.isfinite(self.ptc_noise)
            and self.ptc_noise > 0.5
            and self.ptc_noise > 3.0 * self.ptc_noise_err
        )


def _header_float(header: Any, key: str) -> float:
    try:
        return float(header[key])
    except (KeyError, TypeError, ValueError):
        return math.nan


def collect_results(repo: Path, flows: Sequence[Flow]) -> list[AmpResult]:
    """Read the certified PTCs and the science ``postISRCCD`` headers back through the butler.

    Parameters
    ----------
    repo : `pathlib.Path`
        Repository root.
    flows : sequence of `Flow`
        The instruments processed.

    Returns
    -------
    results : `list` [`AmpResult`]
        One per (instrument, detector, amplifier) with a PTC.
    """
    import numpy as np

    from butler import Butler
    from pipeline.image import Box
    from pipeline.instruments import get_instrument

    b = Butler(repo, writeable=False)
    out: list[AmpResult] = []
    for flow in flows:
        inst = flow.instrument
        camera = get_instrument(inst, repo_root=repo).camera
        headers: dict[int, list[Any]] = {}
        for ref in _query(b, "postISRCCD", [flow.isr_run], f"instrument = '{inst}'"):
            # header only: a 1x1 sub-image read
            exp = b.get(ref, parameters={"bbox": Box(0, 0, 1, 1)})
            headers.setdefault(int(ref.data_id["detector"]), []).append(exp.metadata)
        ptc_refs = _query(b, "ptc", [flow.calib_run("ptc")], f"instrument = '{inst}'")
        for ref in sorted(ptc_refs, key=lambda r: r.data_id["detector"]):
            ptc = b.get(ref)
            det = int(ref.data_id["detector"])
            hdrs = headers.get(det, [])
            for amp in ptc.ampNames:
                cam_amp = camera[det][amp]
                levels = [_header_float(h, _OVERSCAN_LEVEL_KEY.format(amp=amp)) for h in hdrs]
                noises = [
                    _header_float(h, _OVERSCAN_NOISE_KEY.format(amp=amp))
                    * _header_float(h, _GAIN_USED_KEY.format(amp=amp))
                    for h in hdrs
                ]
                mask = np.asarray(ptc.expIdMask.get(amp, []), dtype=bool)
                out.append(
                    AmpResult(
                        instrument=inst,
                        detector=det,
                        amp=amp,
                        gain=float(ptc.gain.get(amp, math.nan)),
                        gain_err=float(ptc.gainErr.get(amp, math.nan)),
                        ptc_noise=float(ptc.noise.get(amp, math.nan)),
                        ptc_noise_err=float(ptc.noiseErr.get(amp, math.nan)),
                        overscan_noise=float(np.nanmedian(noises)) if noises else math.nan,
                        overscan_level=float(np.nanmean(levels)) if levels else math.nan,
                        n_points=int(mask.sum()),
                        nominal_gain=flow.nominal_gain if flow.nominal_gain is not None else cam_amp.gain,
                        nominal_noise=(
                            flow.nominal_read_noise
                            if flow.nominal_read_noise is not None
                            else cam_amp.read_noise
                        ),
                        gain_tolerance=flow.gain_tolerance,
                    )
                )
    return out


def dataset_counts(repo: Path) -> dict[str, dict[str, int]]:
    """Count the datasets of each type in the repository's RUN collections.

    Parameters
    ----------
    repo : `pathlib.Path`
        Repository root.

    Returns
    -------
    counts : `dict` [`str`, `dict` [`str`, `int`]]
        ``{dataset type: {instrument (or "-" for dimensionless types): count}}``, non-zero only.
    """
    from butler import Butler, CollectionType

    b = Butler(repo, writeable=False)
    runs = list(b.registry.query_collections("*", types=[CollectionType.RUN]))
    counts: dict[str, dict[str, int]] = {}
    if not runs:
        return counts
    for dt in b.registry.query_dataset_types("*"):
        for ref in _query(b, dt.name, runs):
            inst = str(ref.data_id.get("instrument", "-")) if "instrument" in ref.data_id.dimensions else "-"
            per = counts.setdefault(dt.name, {})
            per[inst] = per.get(inst, 0) + 1
    return counts


def format_report(results: Sequence[AmpResult], counts: Mapping[str, Mapping[str, int]]) -> str:
    """Aligned plain-text tables of `collect_results` and `dataset_counts`.

    Parameters
    ----------
    results : sequence of `AmpResult`
        Per-amplifier results.
    counts : mapping
        Dataset counts per type and instrument.

    Returns
    -------
    text : `str`
        The two tables.
    """
    lines = []
    head = (
        f"{'instrument':<10} {'det':>3} {'amp':<3} {'PTC gain':>8} {'±':>6} {'nominal':>7} "
        f"{'ratio':>6} {'gain ok':<10} {'PTC noise':>9} {'overscan noise':>14} {'nominal':>7} "
        f"{'overscan level':>14} {'PTC points':>10}"
    )
    units = (
        f"{'':<10} {'':>3} {'':<3} {'e-/ADU':>8} {'':>6} {'e-/ADU':>7} {'':>6} {'':<10} "
        f"{'e-':>9} {'e-':>14} {'e-':>7} {'ADU':>14} {'':>10}"
    )
    lines += [head, units, "-" * len(head)]
    for r in results:
        flag = f"yes (<{r.gain_tolerance:.0%})" if r.gain_ok else f"NO (>{r.gain_tolerance:.0%})"
        ptc_noise = f"{r.ptc_noise:.2f}" if r.ptc_noise_constrained else "n/c"
        lines.append(
            f"{r.instrument:<10} {r.detector:>3} {r.amp:<3} {r.gain:>8.3f} {r.gain_err:>6.3f} "
            f"{r.nominal_gain:>7.2f} {r.gain / r.nominal_gain:>6.3f} {flag:<10} {ptc_noise:>9} "
            f"{r.overscan_noise:>14.2f} {r.nominal_noise:>7.2f} {r.overscan_level:>14.1f} {r.n_points:>10d}"
        )
    lines.append(
        "PTC gain: PhotonTransferCurveSolveTask fit of the certified ptc; PTC noise: its read-noise "
        "term (n/c: not constrained,\n  no flat near the noise floor); overscan noise / level: "
        "serial-overscan residual rms x gain and mean level\n  of the science postISRCCD frames."
    )
    lines.append("")
    insts = sorted({i for per in counts.values() for i in per if i != "-"}) + ["-"]
    insts = [i for i in insts if any(i in per for per in counts.values())]
    width = max((len(k) for k in counts), default=12)
    head = f"{'dataset type':<{width}} " + " ".join(f"{i:>10}" for i in insts)
    lines += [head, "-" * len(head)]
    for name in sorted(counts, key=str.lower):
        lines.append(f"{name:<{width}} " + " ".join(f"{counts[name].get(i, 0) or '':>10}" for i in insts))
    return "\n".join(lines)


def summarize(repo: Path, flows: Sequence[Flow]) -> str:
    """Build the end-of-job report: per-amp PTC results vs nominal, and dataset counts.

    Parameters
    ----------
    repo : `pathlib.Path`
        Repository root.
    flows : sequence of `Flow`
        The instruments processed.

    Returns
    -------
    text : `str`
        Aligned plain-text tables (`format_report`).
    """
    return format_report(collect_results(repo, flows), dataset_counts(repo))


def _quicklook(exp: Any, title: str, path: Path) -> None:
    """Write a zscale PNG of an assembled image with its median profile along x."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from astropy.visualization import ZScaleInterval
    from matplotlib.figure import Figure

    img = np.asarray(exp.image, dtype=np.float32)
    finite = np.isfinite(img)
    vmin, vmax = ZScaleInterval().get_limits(img[finite])
    ny, nx = img.shape
    img_h = min(8.0, max(2.5, 10.0 * ny / nx))
    fig = Figure(figsize=(11, img_h + 3.2))
    gs = fig.add_gridspec(2, 2, height_ratios=[img_h, 2.2], width_ratios=[40, 1], hspace=0.25, wspace=0.03)
    ax = fig.add_subplot(gs[0, 0])
    im = ax.imshow(
        img, origin="lower", cmap="gray", vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest"
    )
    fig.colorbar(im, cax=fig.add_subplot(gs[0, 1]), label="ADU (zscale)")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("y [pixel]")
    prof = fig.add_subplot(gs[1, 0], sharex=ax)
    with np.errstate(all="ignore"):
        col = np.nanmedian(np.where(finite, img, np.nan), axis=0)
    prof.plot(np.arange(nx), col, lw=0.6, color="k")
    lo, hi = np.nanpercentile(col, [2, 98]) if np.isfinite(col).any() else (0, 1)
    pad = 0.3 * (hi - lo) + 1e-3
    prof.set_ylim(lo - pad, hi + pad)
    det = getattr(exp, "detector", None)
    bounds = sorted({amp.bbox.x0 for amp in det if amp.bbox.x0 > 0}) if det is not None else []
    for x in bounds:
        prof.axvline(x, color="C3", lw=0.8, ls="--")
        ax.axvline(x, color="C3", lw=0.5, ls="--", alpha=0.6)
    prof.set_xlabel("x [pixel]" + ("   (red dashed: amplifier boundaries)" if bounds else ""))
    prof.set_ylabel("column median [ADU]")
    fig.savefig(path, dpi=80, bbox_inches="tight")


def write_plots(repo: Path, flows: Sequence[Flow]) -> list[Path]:
    """Copy the PTC plot datasets and write a quick-look PNG of one postISRCCD per instrument.

    Parameters
    ----------
    repo : `pathlib.Path`
        Repository root.
    flows : sequence of `Flow`
        The instruments processed.

    Returns
    -------
    paths : `list` [`pathlib.Path`]
        The PNG files written under ``repo/plots/``: ``<instrument>_det<N>_<plot type>.png``
        (from the cpPtc run's ``Plot`` datasets) and ``<instrument>_postISRCCD_<obs_id>.png``.
    """
    from butler import Butler

    b = Butler(repo, writeable=False)
    out = repo / "plots"
    out.mkdir(exist_ok=True)
    written = []
    plot_types = [dt.name for dt in b.registry.query_dataset_types("*") if dt.storage_class == "Plot"]
    for flow in flows:
        inst = flow.instrument
        for name in plot_types:
            for ref in _query(b, name, [flow.calib_run("ptc")], f"instrument = '{inst}'"):
                path = out / f"{inst}_det{ref.data_id['detector']}_{name}.png"
                path.write_bytes(b.get(ref))
                written.append(path)
        refs = _query(b, "postISRCCD", [flow.isr_run], f"instrument = '{inst}'")
        if refs:
            # the longest science exposure: the one with most to see
            def exptime(r: Any) -> float:
                return float(r.data_id.records["exposure"].exposure_time) if r.data_id.has_records() else 0.0

            ref = max(refs, key=lambda r: (exptime(r), r.data_id["exposure"]))
            exp = b.get(ref)
            rec = ref.data_id.records.get("exposure") if ref.data_id.has_records() else None
            obs_id = rec.obs_id if rec is not None else str(ref.data_id["exposure"])
            what = (
                f"{rec.target_name}, {rec.exposure_time:g} s, {rec.physical_filter}"
                if rec is not None
                else ""
            )
            title = f"{inst} postISRCCD {obs_id} detector {ref.data_id['detector']} ({what})"
            path = out / f"{inst}_postISRCCD_{obs_id.replace('/', '_').replace(':', '')}.png"
            _quicklook(exp, title, path)
            written.append(path)
    return written


def prepare_repo(repo: Path, mode: str = "reuse", log: list[StepRecord] | None = None) -> None:
    """Create the repository with ``butler create``, or reuse / rebuild an existing one.

    Parameters
    ----------
    repo : `pathlib.Path`
        Repository root.
    mode : {"reuse", "rebuild"}
        Keep an existing repository, or delete it first.
    log : `list` [`StepRecord`], optional
        Receives the ``butler create`` record.

    Raises
    ------
    StepFailed
        If ``repo`` is a non-empty directory that is not a repository (never deleted), or
        ``butler create`` fails.
    """
    log = [] if log is None else log
    is_repo = (repo / "butler.yaml").exists()
    if repo.exists() and not is_repo and any(repo.iterdir()):
        raise StepFailed(
            f"{repo} exists and is not a ccdflow repository (no butler.yaml); "
            "choose another --repo or remove it"
        )
    if mode == "rebuild" and is_repo:
        _say(f"removing {repo} (--mode rebuild)")
        shutil.rmtree(repo)
        is_repo = False
    if is_repo:
        _say(f"reusing {repo} (--mode reuse: completed steps are skipped)")
    else:
        _run([_tool("butler"), "create", repo], label="butler create", log=log)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the main job (console script ``ccdflow-demo``).

    Parameters
    ----------
    argv : sequence of `str`, optional
        Command-line arguments.

    Returns
    -------
    status : `int`
        0 on success, 1 if a step failed (its error is printed).
    """
    parser = argparse.ArgumentParser(prog="ccdflow-demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "data_dir",
        nargs="?",
        default=str(REPO_ROOT / ".." / "shared" / "data"),
        help="directory holding raw/kast_blue and raw/efosc2 (default ../shared/data)",
    )
    parser.add_argument(
        "--repo", default="demo_repo", help="repository to create or reuse (default demo_repo)"
    )
    parser.add_argument(
        "--mode",
        choices=["reuse", "rebuild"],
        default="reuse",
        help="reuse an existing repository (steps already done are skipped) or "
        "delete and rebuild it (default reuse)",
    )
    parser.add_argument(
        "--instrument",
        action="append",
        choices=sorted(FLOWS),
        help="only these instruments (repeatable; default: every one found in DATA_DIR)",
    )
    parser.add_argument(
        "-j",
        "--processes",
        type=int,
        default=1,
        help="worker processes per pipetask run (default 1: the Kast and EFOSC2 frames "
        "are small, so starting workers costs more than it saves)",
    )
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    repo = Path(args.repo).resolve()
    if not data_dir.is_dir():
        print(
            f"error: data directory {data_dir} does not exist; pass the directory that holds raw/kast_blue "
            "and raw/efosc2",
            file=sys.stderr,
        )
        return 1
    names = args.instrument or [n for n, f in FLOWS.items() if (data_dir / f.raw_subdir).is_dir()]
    if not names:
        print(
            f"error: no raw/kast_blue or raw/efosc2 under {data_dir}; pass the data directory",
            file=sys.stderr,
        )
        return 1
    flows = [FLOWS[n] for n in names]
    t0, c0 = time.perf_counter(), _children_cpu() + _self_cpu()
    log: list[StepRecord] = []
    try:
        prepare_repo(repo, args.mode, log)
        for flow in flows:
            run_flow(flow, data_dir, repo, processes=args.processes, log=log)
        _say("\n=== results ===", bold=True)
        report = summarize(repo, flows)
        plots = write_plots(repo, flows)
    except (StepFailed, FileNotFoundError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to finish ({repo} is reused)", file=sys.stderr)
        return 130
    print("\n" + report)
    print(f"\nplots written to {repo / 'plots'}:")
    for p in plots:
        print(f"  {p.relative_to(repo)}")
    ran = [r for r in log if not r.skipped]
    wall, cpu = time.perf_counter() - t0, _children_cpu() + _self_cpu() - c0
    print(
        f"\nmain job finished in {wall:.0f} s wall, {cpu:.0f} s CPU (user+sys, this process and the "
        f"commands it ran): {len(ran)} commands run, {len(log) - len(ran)} steps already done"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
