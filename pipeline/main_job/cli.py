"""The ``ccdflow-demo`` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .commands import StepFailed, StepRecord, children_cpu, prepare_repo, say, self_cpu
from .flows import FLOWS, Flow, preload, run_flow, run_verification
from .plots import write_plots
from .report import summarize_reusing

__all__ = ["STATE_FILE", "main"]

STATE_FILE = "main_job_state.json"
"""File in ``REPO/report/`` holding the results table's inputs of the last run (`summarize_reusing`)."""
_IDEMPOTENT = ("register-instrument", "ingest-raws")


def _package_summary() -> str:
    """First line of the ``pipeline.main_job`` docstring (read at call time: no import cycle)."""
    return (sys.modules[__package__].__doc__ or "").strip().splitlines()[0]


def _phase(label: str, since: float) -> float:
    """Print how long a phase after the commands took (``[plots: 0.8 s]``); return the time now."""
    now = time.perf_counter()
    say(f"  [{label}: {now - since:.2f} s]")
    return now


def _claimer(directory: Path) -> Callable[[str], bool]:
    """``claim(label)``: `True` for the first process to ask for ``label`` (a file made in ``directory``)."""

    def claim(label: str) -> bool:
        try:
            os.close(os.open(directory / label.replace("/", "_"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    return claim


def _flow_in_child(
    instrument: str, data_dir: Path, repo: Path, processes: int, output: Path,
    claims: Path | None = None,
) -> list[StepRecord]:
    """Run one instrument's flow in a worker process, its stdout and stderr into files.

    The files are ``output`` and ``output`` with the suffix ``.err``. ``claims``: directory of
    the verification steps' claims shared with the main process (`run_verification`).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    for path, stream in ((output, 1), (output.with_suffix(".err"), 2)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, stream)
        os.close(fd)
    log: list[StepRecord] = []
    try:
        run_flow(FLOWS[instrument], data_dir, repo, processes=processes, log=log,
                 claim=None if claims is None else _claimer(claims))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return log


def _write_report_page(repo: Path, sections: Sequence[Any] = ()) -> tuple[Path, float]:
    """Write ``REPO/report/index.html`` (`pipeline.report.write_report`); return it and the seconds taken.

    ``sections``: report sections collected earlier into ``REPO/report`` (`run_flows`).
    """
    from pipeline.report import write_report

    t0 = time.perf_counter()
    page = write_report(repo, repo / "report", sections=sections)
    return page, time.perf_counter() - t0


def _start_report_page(repo: Path, stack: contextlib.ExitStack, sections: Sequence[Any]) -> Any:
    """Start `_write_report_page` in a forked worker (shut down by ``stack``); `None` if unsafe.

    A fork is only safe while this process runs no other thread; the registry keeps no
    connection open between calls.

    Returns
    -------
    future : `concurrent.futures.Future` or `None`
        Its result is what `_write_report_page` returns.
    """
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor

    if threading.active_count() > 1:
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")))
    return pool.submit(_write_report_page, repo, sections)


def run_flows(
    flows: Sequence[Flow],
    data_dir: Path,
    repo: Path,
    *,
    processes: int,
    log: list[StepRecord],
    parallel: bool,
) -> list[Any]:
    """Run the flows of several instruments, the later ones alongside the first when ``parallel``.

    The instruments' steps are independent (their own raws, runs and calibration collections in one
    repository; the registry serializes the writes). The first flow prints as it goes; each other
    one runs in a worker process whose output (stdout and stderr) is printed, whole, when it has
    finished. Meanwhile the first flow's plots and its sections of the report page are made, and
    then the first process takes over the other flows' verification steps that they have not
    started yet (`run_verification`; a step is run by whichever process claims it first).

    Parameters
    ----------
    flows : sequence of `Flow`
        The instruments' flows.
    data_dir, repo : `pathlib.Path`
        Data directory and repository root (created already).
    processes : `int`
        ``-j`` of ``pipetask run``.
    log : `list` [`StepRecord`]
        Receives the step records of every flow, in flow order.
    parallel : `bool`
        Run the flows after the first in worker processes at the same time as the first.

    Returns
    -------
    sections : `list` [`pipeline.report.DetectorSection`]
        The report page's sections of the first flow's instrument, collected (with their images
        in ``REPO/report/img``) while the other flows finished; empty when not ``parallel``.

    Raises
    ------
    StepFailed
        If a step of any flow failed (after every flow has finished).
    """
    if not parallel or len(flows) < 2:
        for flow in flows:
            run_flow(flow, data_dir, repo, processes=processes, log=log)
        return []
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    # Forked workers that inherit the modules every flow imports, imported here once (spawned
    # ones would import them again: ~2 s of CPU each). Nothing else is inherited: the registry
    # opens no connection between commands (no pool) and no thread runs yet.
    preload()
    sys.stdout.flush()
    sys.stderr.flush()
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="ccdflow-demo-") as tmp, ProcessPoolExecutor(
        max_workers=len(flows) - 1, mp_context=context
    ) as pool:
        outputs = [Path(tmp) / f"{flow.instrument}.out" for flow in flows[1:]]
        claims = Path(tmp) / "claims"
        claims.mkdir()
        futures = [
            pool.submit(_flow_in_child, flow.instrument, data_dir, repo, processes, out, claims)
            for flow, out in zip(flows[1:], outputs)
        ]
        say(
            f"\n({', '.join(f.instrument for f in flows[1:])} running alongside {flows[0].instrument}: "
            "its output follows when it has finished)"
        )
        failure: BaseException | None = None
        sections: list[Any] = []
        try:
            run_flow(flows[0], data_dir, repo, processes=processes, log=log)
            # While the others finish (Kast's flow is shorter than EFOSC2's), draw this one's plots
            # (the write_plots after every flow keeps a quick-look newer than its image) and collect
            # its sections of the report page (they depend on its own datasets only).
            t0 = time.perf_counter()
            write_plots(repo, flows[:1])
            from pipeline.report import collect_report

            sections = collect_report(
                repo, repo / "report", instruments=[flows[0].instrument], run_reports=False
            ).sections
            say(
                f"\n  [{flows[0].instrument} plots and report-page sections, while the others finish: "
                f"{time.perf_counter() - t0:.2f} s]"
            )
            # then the others' verification steps they have not started yet (their
            # calibrations certified): both cores work until the end
            for flow, future in zip(flows[1:], futures):
                if not future.done():
                    run_verification(flow, repo, _claimer(claims), processes=processes, log=log)
        except StepFailed as exc:
            failure = exc
        for flow, future, out in zip(flows[1:], futures, outputs):
            try:
                log.extend(future.result())
            except StepFailed as exc:
                failure = failure or exc
            finally:
                say(f"\n=== output of the {flow.instrument} flow ===", bold=True)
                for path, stream in ((out, sys.stdout), (out.with_suffix(".err"), sys.stderr)):
                    if path.exists():
                        stream.write(path.read_text(errors="replace"))
                        stream.flush()
        if failure is not None:
            raise failure
    return sections


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
    parser = argparse.ArgumentParser(prog="ccdflow-demo", description=_package_summary())
    parser.add_argument(
        "data_dir",
        help="directory holding raw/kast_blue and raw/efosc2 (scripts/demo.sh passes ../shared/data)",
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
    parser.add_argument(
        "--serial",
        action="store_true",
        help="run the instruments one after the other (default: side by side on a machine with "
        "more than one core, the first one's output live, the others' when they finish)",
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
    t0, c0 = time.perf_counter(), children_cpu() + self_cpu()
    log: list[StepRecord] = []
    try:
        prepare_repo(repo, args.mode, log)
        # side by side only from scratch: a reused repository has little or nothing to do, less
        # than the start-up of a second interpreter
        created = any(r.label == "butler create" for r in log)
        parallel = created and not args.serial and (os.cpu_count() or 1) > 1
        early = run_flows(flows, data_dir, repo, processes=args.processes, log=log, parallel=parallel)
        say("\n=== results ===", bold=True)
        with contextlib.ExitStack() as stack:
            # From scratch (the page is rewritten anyway) the report page, which only reads the
            # repository, is written by a forked worker while this process makes the table and
            # the plots.
            page_job = _start_report_page(repo, stack, early) if parallel else None
            tp = time.perf_counter()
            report, changed = summarize_reusing(repo, flows, repo / "report" / STATE_FILE)
            # register-instrument and ingest-raws run every time; what they add shows in the counts
            changed = changed or any(not r.skipped and not r.label.endswith(_IDEMPOTENT) for r in log)
            tp = _phase("results table", tp)
            plots = write_plots(repo, flows)
            tp = _phase("plots", tp)
            page = repo / "report" / "index.html"
            if page_job is not None:
                page, seconds = page_job.result()
                say(
                    f"  [report page: {seconds:.2f} s, in a worker alongside the table and the plots"
                    f"{' (and its first sections earlier, see above)' if early else ''}; "
                    f"waited {time.perf_counter() - tp:.2f} s]"
                )
            elif changed or not page.exists():
                page, seconds = _write_report_page(repo, early)
                say(f"  [report page: {seconds:.2f} s]")
            else:
                say(f"  report page up to date: {page} (ccdflow-report rewrites it)")
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
    print(f"\nreport page (open it in a browser): {page}")
    ran = [r for r in log if not r.skipped]
    wall, cpu = time.perf_counter() - t0, children_cpu() + self_cpu() - c0
    print(
        f"\nmain job finished in {wall:.0f} s wall, {cpu:.0f} s CPU (user+sys, this process and the "
        f"commands it ran): {len(ran)} commands run, {len(log) - len(ran)} steps already done"
    )
    return 0
