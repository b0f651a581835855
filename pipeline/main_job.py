"""The main job: from directories of real raw files to certified calibrations, a PTC and ISR images.

``ccdflow-demo [DATA_DIR] [--repo demo_repo] [--mode reuse|rebuild]`` runs, for each instrument
found under ``DATA_DIR/raw/`` (``kast_blue``, ``efosc2``), the whole calibration flow through the
real command-line tools, printing each command as it runs:

``butler create`` → ``butler register-instrument`` → ``butler ingest-raws`` → ``pipetask run``
cpBias → ``butler certify-calibrations`` → cpFlat → certify → cpPtc (GRID measurement region)
→ certify → ``pipetask run`` isr on the science frames (with the PTC's gains) — then prints a table
per amplifier (PTC gain and read noise vs the nominal values, overscan level) and the number of
datasets of each type, and writes PTC plots and a quick-look PNG of one ``postISRCCD`` per
instrument into ``REPO/plots/``.

The flow per instrument is data, in `FLOWS`; the numbers come back through the `butler.Butler`
Python API.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Flow", "FLOWS", "run_flow", "summarize", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINES = REPO_ROOT / "pipelines"


@dataclasses.dataclass(frozen=True)
class Flow:
    """What the main job does for one instrument.

    Parameters
    ----------
    instrument : `str`
        Built-in instrument name (``kast_blue``, ``efosc2``, ...).
    raw_subdir : `str`
        Directory of raw files, relative to the data directory.
    bias_where, flat_where, ptc_where, science_where : `str`
        Data query expressions (the ``-d`` of ``pipetask run``) selecting the exposures of each
        step; ``instrument`` is added automatically.
    calib_begin, calib_end : `str`
        Validity range (ISO, TAI) given to ``butler certify-calibrations``.
    nominal_gain : `float`
        Nominal gain (e⁻/ADU) printed beside the measured one.
    nominal_read_noise : `float`
        Nominal read noise (e⁻).
    ptc_grid_size : `int`
        Box size (pixels) of the GRID measurement region of PTC extraction.
    """

    instrument: str
    raw_subdir: str
    bias_where: str
    flat_where: str
    ptc_where: str
    science_where: str
    calib_begin: str
    calib_end: str
    nominal_gain: float
    nominal_read_noise: float
    ptc_grid_size: int = 64


FLOWS: dict[str, Flow] = {
    "kast_blue": Flow(
        instrument="kast_blue",
        raw_subdir="raw/kast_blue",
        bias_where="exposure.observation_type = 'bias'",
        flat_where="exposure.observation_type = 'flat'",
        ptc_where="exposure.observation_type = 'flat'",
        science_where="exposure.observation_type = 'science'",
        calib_begin="2015-05-01T00:00:00",
        calib_end="2015-06-01T00:00:00",
        nominal_gain=1.2,
        nominal_read_noise=3.7,
    ),
    "efosc2": Flow(
        instrument="efosc2",
        raw_subdir="raw/efosc2",
        bias_where="exposure.observation_type = 'bias'",
        flat_where="exposure.observation_type = 'flat' AND exposure.observation_reason = 'twilight'",
        ptc_where="exposure.observation_type = 'flat' AND exposure.observation_reason = 'dome'",
        science_where="exposure.observation_type = 'science'",
        calib_begin="2022-01-01T00:00:00",
        calib_end="2022-03-01T00:00:00",
        nominal_gain=1.1,
        nominal_read_noise=7.8,
    ),
}


class StepFailed(RuntimeError):
    """A command of the main job exited non-zero."""


def _run(cmd: Sequence[str], *, log: list[str]) -> None:
    """Print and run one command, streaming its output; raise `StepFailed` if it fails."""
    text = " ".join(shlex.quote(str(c)) for c in cmd)
    print(f"\n\033[1m$ {text}\033[0m" if sys.stdout.isatty() else f"\n$ {text}", flush=True)
    log.append(text)
    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd])
    if proc.returncode != 0:
        raise StepFailed(f"command failed (exit {proc.returncode}): {text}")
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)


def _tool(name: str) -> str:
    """Return the path of a console script installed beside this interpreter."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _certified(repo: Path, collection: str, dataset_type: str) -> bool:
    from butler import Butler

    b = Butler(repo)
    try:
        return bool(b.query_datasets(dataset_type, collections=[collection], find_first=False))
    except Exception:  # noqa: BLE001 - a missing collection or type means "not yet"
        return False


def _run_exists(repo: Path, run: str) -> bool:
    from butler import Butler

    b = Butler(repo)
    try:
        b.registry.get_collection_type(run)
    except Exception:  # noqa: BLE001
        return False
    return True


def run_flow(flow: Flow, data_dir: Path, repo: Path, *, processes: int = 2, log: list[str] | None = None) -> None:
    """Run the whole calibration flow for one instrument through the CLI.

    Parameters
    ----------
    flow : `Flow`
        The instrument's flow.
    data_dir : `pathlib.Path`
        Directory holding ``raw/<instrument>/``.
    repo : `pathlib.Path`
        Repository root (created beforehand).
    processes : `int`
        ``-j`` for ``pipetask run``.
    log : `list` [`str`], optional
        Receives every command line run.

    Raises
    ------
    StepFailed
        If a command exits non-zero (its own message says why).
    FileNotFoundError
        If the raw directory does not exist.
    """
    log = [] if log is None else log
    butler, pipetask = _tool("butler"), _tool("pipetask")
    inst = flow.instrument
    raw_dir = data_dir / flow.raw_subdir
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{raw_dir} does not exist: pass the directory that holds raw/{inst}/")
    calib = f"{inst}/calib"
    raws = f"{inst}/raw/all"
    j = ["-j", str(processes)]
    _run([butler, "register-instrument", repo, inst], log=log)
    _run([butler, "ingest-raws", repo, raw_dir, "--transfer", "symlink"], log=log)

    def where(expr: str) -> str:
        return f"instrument = '{inst}' AND {expr}"

    steps = [
        ("cpBias", "bias", flow.bias_where, [], [raws]),
        ("cpFlat", "flat", flow.flat_where, [], [raws, calib]),
        ("cpPtc", "ptc", flow.ptc_where,
         ["-c", "ptcExtract:detectorMeasurementRegion=GRID",
          "-c", f"ptcExtract:gridSize={flow.ptc_grid_size}"], [raws, calib]),
    ]
    for pipeline_name, calib_type, expr, extra, inputs in steps:
        run = f"{inst}/calib/{calib_type}/run"
        cmd = [pipetask, "run", "-b", repo, "-p", PIPELINES / f"{pipeline_name}.yaml",
               "-i", ",".join(inputs), "--output-run", run, "-d", where(expr),
               "--register-dataset-types", *j, *extra]
        if _run_exists(repo, run):
            cmd += ["--extend-run", "--skip-existing"]
        _run(cmd, log=log)
        if not _certified(repo, calib, calib_type):
            _run([butler, "certify-calibrations", repo, run, calib, calib_type,
                  "--begin-date", flow.calib_begin, "--end-date", flow.calib_end], log=log)
    run = f"{inst}/run/isr"
    cmd = [pipetask, "run", "-b", repo, "-p", PIPELINES / "isr.yaml", "-i", f"{raws},{calib}",
           "--output-run", run, "-d", where(flow.science_where), "--register-dataset-types", *j,
           "-c", "isr:doFlat=True", "-c", "isr:usePtcGains=True", "-c", "isr:usePtcReadNoise=True"]
    if _run_exists(repo, run):
        cmd += ["--extend-run", "--skip-existing"]
    _run(cmd, log=log)


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
        Aligned plain-text tables.
    """
    from butler import Butler

    b = Butler(repo)
    lines = []
    header = (f"{'instrument':<10} {'det':>3} {'amp':<4} {'gain e-/ADU':>11} {'nominal':>7} {'ratio':>6} "
              f"{'noise e-':>8} {'nominal':>7} {'overscan ADU':>12}")
    lines.append(header)
    lines.append("-" * len(header))
    for flow in flows:
        inst = flow.instrument
        ptc_refs = b.query_datasets("ptc", collections=[f"{inst}/calib"], find_first=False,
                                    where=f"instrument = '{inst}'")
        isr_refs = b.query_datasets("postISRCCD", collections=[f"{inst}/run/isr"], find_first=False,
                                    where=f"instrument = '{inst}'")
        overscan: dict[tuple[int, str], float] = {}
        for ref in isr_refs[:1]:
            md = b.get(ref).metadata
            prefix = "LSST ISR OVERSCAN SERIAL MEAN "
            for key, value in md.items():
                if key.startswith(prefix):
                    overscan[(ref.data_id["detector"], key[len(prefix):])] = float(value)
        for ref in ptc_refs:
            ptc = b.get(ref)
            det = ref.data_id["detector"]
            for amp in sorted(ptc.gain):
                gain = float(ptc.gain[amp])
                noise = float(ptc.noise[amp])
                level = overscan.get((det, amp), float("nan"))
                lines.append(
                    f"{inst:<10} {det:>3} {amp:<4} {gain:>11.3f} {flow.nominal_gain:>7.2f} "
                    f"{gain / flow.nominal_gain:>6.3f} {noise:>8.2f} {flow.nominal_read_noise:>7.2f} "
                    f"{level:>12.1f}"
                )
    lines.append("")
    counts: dict[str, int] = {}
    for dt in b.registry.query_dataset_types("*"):
        name = dt.name
        n = len(b.query_datasets(name, collections=["*"], find_first=False))
        if n:
            counts[name] = n
    width = max((len(k) for k in counts), default=10)
    lines.append(f"{'dataset type':<{width}} {'count':>6}")
    lines.append("-" * (width + 7))
    for name in sorted(counts):
        lines.append(f"{name:<{width}} {counts[name]:>6}")
    return "\n".join(lines)


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
        The PNG files written under ``repo/plots/``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from astropy.visualization import ZScaleInterval

    from butler import Butler

    b = Butler(repo)
    out = repo / "plots"
    out.mkdir(exist_ok=True)
    written = []
    plot_types = [dt.name for dt in b.registry.query_dataset_types("*") if dt.storage_class == "Plot"]
    for flow in flows:
        inst = flow.instrument
        for name in plot_types:
            for ref in b.query_datasets(name, collections=[f"{inst}/calib/ptc/run"], find_first=False,
                                        where=f"instrument = '{inst}'"):
                path = out / f"{inst}_{name}_det{ref.data_id['detector']}.png"
                path.write_bytes(b.get(ref))
                written.append(path)
        refs = b.query_datasets("postISRCCD", collections=[f"{inst}/run/isr"], find_first=False,
                                where=f"instrument = '{inst}'")
        if refs:
            ref = sorted(refs, key=lambda r: r.data_id["exposure"])[-1]
            exp = b.get(ref)
            img = np.asarray(exp.image, dtype=np.float32)
            vmin, vmax = ZScaleInterval().get_limits(img[np.isfinite(img)])
            ny, nx = img.shape
            fig, ax = plt.subplots(figsize=(10, max(2.5, 10 * ny / nx + 1)))
            ax.imshow(img, origin="lower", cmap="gray", vmin=vmin, vmax=vmax, aspect="auto",
                      interpolation="nearest")
            obs_id = ref.data_id.records["exposure"].obs_id if ref.data_id.has_records() else ref.data_id["exposure"]
            ax.set_title(f"{inst} postISRCCD {obs_id} detector {ref.data_id['detector']} (zscale)")
            ax.set_xlabel("x [pixel]")
            ax.set_ylabel("y [pixel]")
            path = out / f"{inst}_postISRCCD_quicklook.png"
            fig.savefig(path, dpi=90, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
    return written


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
    parser.add_argument("data_dir", nargs="?", default=str(REPO_ROOT / ".." / "shared" / "data"),
                        help="directory holding raw/kast_blue and raw/efosc2 (default ../shared/data)")
    parser.add_argument("--repo", default="demo_repo", help="repository to create (default demo_repo)")
    parser.add_argument("--mode", choices=["reuse", "rebuild"], default="reuse",
                        help="reuse an existing repository (steps already done are skipped) or "
                             "delete and rebuild it (default reuse)")
    parser.add_argument("--instrument", action="append", choices=sorted(FLOWS),
                        help="only these instruments (default: every one found in DATA_DIR)")
    parser.add_argument("-j", "--processes", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    repo = Path(args.repo).resolve()
    names = args.instrument or [n for n, f in FLOWS.items() if (data_dir / f.raw_subdir).is_dir()]
    if not names:
        print(f"error: no raw/kast_blue or raw/efosc2 under {data_dir}; pass the data directory", file=sys.stderr)
        return 1
    flows = [FLOWS[n] for n in names]
    t0 = time.perf_counter()
    log: list[str] = []
    try:
        if args.mode == "rebuild" and repo.exists():
            print(f"removing {repo} (--mode rebuild)")
            shutil.rmtree(repo)
        if not (repo / "butler.yaml").exists():
            _run([_tool("butler"), "create", repo], log=log)
        for flow in flows:
            run_flow(flow, data_dir, repo, processes=args.processes, log=log)
        report = summarize(repo, flows)
        plots = write_plots(repo, flows)
    except (StepFailed, FileNotFoundError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    print("\n" + report)
    print(f"\nplots written to {repo / 'plots'}:")
    for p in plots:
        print(f"  {p.relative_to(repo)}")
    print(f"\nmain job finished in {time.perf_counter() - t0:.0f} s ({len(log)} commands)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
