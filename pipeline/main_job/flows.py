"""What the main job does for each instrument (`Flow`, `FLOWS`) and how (`run_flow`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._queries import collection_exists, query
from .commands import StepFailed, StepRecord, run_command, say, tool

__all__ = ["FLOWS", "VERIFY_STEPS", "Flow", "preload", "run_flow", "run_verification"]


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


def _expected_keys(butler: Any, flow: Flow, expr: str, keys: Sequence[str]) -> set[tuple]:
    """Return the data IDs (restricted to ``keys``) an output should cover, from the selected raws."""
    refs = query(butler, "raw", [flow.raw_collection], flow.where(expr))
    return {tuple(ref.data_id[k] for k in keys) for ref in refs}


def _missing(butler: Any, flow: Flow, expr: str, dataset_type: str, run: str, keys: Sequence[str]) -> int:
    """How many expected ``dataset_type`` data IDs are absent from ``run`` (-1: no raw selected)."""
    expected = _expected_keys(butler, flow, expr, keys)
    if not expected:
        return -1
    if not collection_exists(butler, run):
        return len(expected)
    have = {tuple(r.data_id[k] for k in keys) for r in query(butler, dataset_type, [run])}
    return len(expected - have)


#: Pipelines run on a subset of their tasks (``file#labels``): the main job has no darks.
_PIPELINE_FILES = {"cpDefects": "cpDefects.yaml#cpMeasureBiasDefects,cpMeasureFlatDefects,cpMergeDefects"}
#: Pipelines whose quanta have no exposure dimension: queried by instrument only.
_NO_EXPOSURE_QUERY = {"cpDefects"}


def _pipeline_file(name: str, pipelines: Path | None) -> str | Path:
    """``-p`` argument of a main-job pipeline (by name, or in ``pipelines``)."""
    file = _PIPELINE_FILES.get(name, f"{name}.yaml")
    return file if pipelines is None else f"{pipelines / file}"


#: Every pipeline the main job runs (`run_flow` and its verification steps), by ``-p`` name.
_PIPELINES = ("cpBias", "cpFlat", "cpDefects", "cpPtc", "isr", "VerifyBias", "VerifyFlat")
#: Modules the commands of every flow import besides the task classes: the ``butler`` and
#: ``pipetask`` commands, raw-header reading (astropy.io.fits), the registry (SQLAlchemy), the
#: butler's lazily imported parts, scipy.ndimage (verification, defects) and the plots' PNG writer.
_COMMAND_MODULES = (
    "butler.cli.commands",
    "pipeline.cli.pipetask",
    "pipeline.cli.graph_commands",
    "pipeline.instruments.headers",
    "pipeline.instruments.ingest",
    "pipeline.graph.builder",
    "pipeline.execution.runner",
    "butler.registry.sqlite",
    "butler._butler",
    "butler._quantum_backed",
    "butler.cli_logging",
    "scipy.ndimage",
    "matplotlib.backends.backend_agg",
    "astropy.visualization",
)


def preload(pipelines: Path | None = None) -> None:
    """Import the modules the main job's commands import: its task classes and `_COMMAND_MODULES`.

    Called before the flows of several instruments are forked into worker processes, so that
    they are imported once (about 2 s of CPU) instead of once per process. Importing is the only
    effect: nothing is opened or started.

    Parameters
    ----------
    pipelines : `pathlib.Path`, optional
        Directory of the pipeline files (as for `run_flow`; default: ccdflow's own).

    Raises
    ------
    pipeline.exceptions.PipelineDefinitionError
        If a pipeline file cannot be read.
    ImportError
        If a task class cannot be imported.
    """
    import importlib

    from pipeline.definitions import Pipeline

    for name in _COMMAND_MODULES:
        importlib.import_module(name)
    for name in _PIPELINES:
        definition = Pipeline.from_file(_pipeline_file(name, pipelines))
        for label in definition.tasks:
            definition.task_class(label)


def _certified(butler: Any, flow: Flow, dataset_type: str) -> bool:
    return bool(query(butler, dataset_type, [flow.calib_collection], f"instrument = '{flow.instrument}'"))


def run_flow(
    flow: Flow,
    data_dir: Path,
    repo: Path,
    *,
    processes: int = 2,
    log: list[StepRecord] | None = None,
    pipelines: Path | None = None,
    progress: bool | None = None,
    claim: Callable[[str], bool] | None = None,
) -> list[StepRecord]:
    """Run the whole calibration flow for one instrument through the CLI.

    ``butler register-instrument`` and ``ingest-raws`` (idempotent), then cpBias, cpFlat,
    cpDefects (combined bias and flat) and cpPtc, each certified into ``<instrument>/calib``, then
    the science ISR (with the defects). A pipeline step
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
    pipelines : `pathlib.Path`, optional
        Directory of ``cpBias.yaml``, ``cpFlat.yaml``, ``cpPtc.yaml`` and ``isr.yaml``; by
        default they are given to ``pipetask`` by name (ccdflow's own, found after any install).
    progress : `bool`, optional
        Force ``pipetask --progress`` on or off (default: a bar on a terminal, log lines
        otherwise).
    claim : callable, optional
        ``claim(label)`` is asked before each verification step (label ``"<instrument>
        VerifyBias"`` / ``"... VerifyFlat"``); `False` means another process has taken the
        step (`run_verification`) and it is left out here. Default: every step is run.

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
    butler_cli, pipetask = tool("butler"), tool("pipetask")
    inst = flow.instrument
    raw_dir = (data_dir / flow.raw_subdir) if flow.raw_subdir else data_dir
    if not raw_dir.is_dir():
        raise FileNotFoundError(
            f"{raw_dir} does not exist: pass the directory that holds {flow.raw_subdir or 'the raws'}"
        )
    say(f"\n=== {inst}: raws from {raw_dir} ===", bold=True)
    run_command([butler_cli, "register-instrument", repo, inst], label=f"{inst} register-instrument", log=log)
    run_command(
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
    isr_extra = ["-c", "isr:doFlat=True", "-c", "isr:usePtcGains=True", "-c", "isr:usePtcReadNoise=True",
                 "-c", "isr:doDefect=True"]
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
        # defects from the combined bias and flat (the flows have no darks): cpDefects without its
        # dark task; the quanta have no exposure, so the flat query only sets the expected detectors
        (
            "cpDefects",
            "defects",
            flow.flat_where,
            "defects",
            ("detector",),
            ["-c", "cpMergeDefects:defectSources=[bias, flat]"],
            [raws, calib],
            flow.calib_run("defects"),
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
        query = flow.where(expr) if pipeline_name not in _NO_EXPOSURE_QUERY else f"instrument = '{inst}'"
        say(f"\n--- [{inst} {k}/{len(steps)}] {pipeline_name}: {query} ---", bold=True)
        b = Butler(repo, writeable=False)
        missing = _missing(b, flow, expr, output_type, run, keys)
        if missing < 0:
            raise StepFailed(
                f"{label}: no raw exposure matches {flow.where(expr)!r}; check the data directory"
            )
        if missing == 0:
            say(f"  {output_type} already complete in {run}: skipped (--mode rebuild redoes it)")
            log.append(StepRecord(label, "", skipped=True))
        else:
            cmd = [
                pipetask,
                "run",
                "-b",
                repo,
                "-p",
                _pipeline_file(pipeline_name, pipelines),
                "-i",
                ",".join(inputs),
                "--output-run",
                run,
                "-d",
                query,
                "--register-dataset-types",
                "-j",
                str(processes),
                *progress_opt,
                *extra,
            ]
            if collection_exists(b, run):
                cmd.append("--extend-run")
            run_command(cmd, label=label, log=log)
        if calib_type is not None:
            b = Butler(repo, writeable=False)
            if _certified(b, flow, calib_type):
                say(f"  {calib_type} already certified in {calib}")
            else:
                cert = [butler_cli, "certify-calibrations", repo, run, calib, calib_type]
                if flow.calib_begin:
                    cert += ["--begin-date", flow.calib_begin]
                if flow.calib_end:
                    cert += ["--end-date", flow.calib_end]
                run_command(cert, label=f"{inst} certify {calib_type}", log=log)
    _verify_bias_flat(flow, repo, pipetask, pipelines, processes, progress_opt, log, claim=claim)
    return log


#: The verification steps of a flow, in the order `run_flow` runs them, with the calibration
#: each one verifies (it must be certified first).
VERIFY_STEPS = (("VerifyBias", "bias"), ("VerifyFlat", "flat"))


def run_verification(
    flow: Flow,
    repo: Path,
    claim: Callable[[str], bool],
    *,
    processes: int = 1,
    log: list[StepRecord] | None = None,
    pipelines: Path | None = None,
    progress: bool | None = None,
) -> list[str]:
    """Take over the verification steps of a flow running in another process, where possible.

    For the main job's side-by-side flows: the process whose own flow finished first runs the
    other flow's VerifyFlat and then VerifyBias (the reverse of the other process's order),
    each when the calibration it verifies is already certified and ``claim(label)`` gives
    the step to this process; `run_flow` there, asking the same ``claim``, leaves such a step
    out. Both processes then work until the end instead of one waiting for the other.

    Parameters
    ----------
    flow : `Flow`
        The other process's flow.
    repo : `pathlib.Path`
        Repository root.
    claim : callable
        ``claim(label) -> bool``: `True` exactly once per label across the processes.
    processes, log, pipelines, progress
        As for `run_flow`.

    Returns
    -------
    names : `list` [`str`]
        The steps run here, in the order run (``"VerifyFlat"``, ``"VerifyBias"``), possibly
        none.

    Raises
    ------
    StepFailed
        If a command exits non-zero.
    """
    from butler import Butler

    log = [] if log is None else log
    b = Butler(repo, writeable=False)
    ready = [name for name, calib_type in VERIFY_STEPS if _certified(b, flow, calib_type)]
    progress_opt = [] if progress is None else (["--progress"] if progress else ["--no-progress"])
    taken = []
    for name in reversed(ready):  # one at a time: the other process may take the next one
        if claim(f"{flow.instrument} {name}"):
            _verify_bias_flat(flow, repo, tool("pipetask"), pipelines, processes, progress_opt, log,
                              names=(name,))
            taken.append(name)
    return taken


def _verify_bias_flat(
    flow: Flow,
    repo: Any,
    pipetask: str,
    pipelines: Path | None,
    processes: int,
    progress_opt: list[str],
    log: list[StepRecord],
    *,
    claim: Callable[[str], bool] | None = None,
    names: Sequence[str] = ("VerifyBias", "VerifyFlat"),
) -> None:
    """Run VerifyBias / VerifyFlat (cp_verify) on the flow's biases and flats; print the verdicts.

    The real data sets have too few frames to keep some aside, so the bias and the flat are
    verified on the frames they were made from (a weaker test: the residual noise is below the
    read noise by ``sqrt(1 - 1/N)``). A failed test is reported, not fatal. Only the steps in
    ``names`` that ``claim`` (when given) grants are run; the verdicts printed are theirs.
    """
    from butler import Butler
    from pipeline.tasks.verify.summary import format_summary

    runs = []
    for name, expr in (("VerifyBias", flow.bias_where), ("VerifyFlat", flow.flat_where)):
        label = f"{flow.instrument} {name}"
        if name not in names:
            continue
        if claim is not None and not claim(label):
            say(f"\n--- [{flow.instrument}] {name}: run by the other process of the main job ---", bold=True)
            continue
        result_type = f"verify{name[6:]}Results"
        run = flow.calib_run(f"verify{name[6:]}")
        say(f"\n--- [{flow.instrument}] {name}: {flow.where(expr)} ---", bold=True)
        b = Butler(repo, writeable=False)
        if query(b, result_type, [run]):
            say(f"  {result_type} already in {run}: skipped")
        else:
            pipeline_file = f"{name}.yaml" if pipelines is None else pipelines / f"{name}.yaml"
            cmd = [
                pipetask, "run", "-b", repo, "-p", pipeline_file,
                "-i", ",".join([flow.raw_collection, flow.calib_collection]), "--output-run", run,
                "-d", flow.where(expr), "--register-dataset-types", "-j", str(processes), *progress_opt,
            ]  # fmt: skip
            if collection_exists(b, run):
                cmd.append("--extend-run")
            run_command(cmd, label=label, log=log)
        runs.append((result_type, run))
    if not runs:
        return
    b = Butler(repo, writeable=False)
    results = [(t, r, b.get(ref)) for t, r in runs for ref in query(b, t, [r])]
    say(f"\n=== {flow.instrument}: calibration verification (cp_verify) ===", bold=True)
    say(format_summary(results, max_rows=40))
