"""Run ~100 bad inputs through ``butler`` and ``pipetask`` and check each is refused cleanly.

Usage: ``python scripts/bad_input_sweep.py [--repo-dir DIR] [--only SUBSTRING] [--quick]``

Builds a small SQLite repository of the ``testcam`` camera (``butler create``,
``register-instrument``, ``ingest-raws`` of a few simulated raws), then runs each bad input as a
subprocess (the commands as users type them) and checks:

- the exit status (non-zero, or the stated status where success is right);
- no ``Traceback`` and no SQL text (``SELECT ``, ``INSERT ``, ``[SQL:``) in stdout or stderr;
- one clear error message (a line starting ``Error``/``error``) when the command fails;
- the repository unchanged: the row count of every registry table and the listing of every file
  (path, size) under the repository, before and after, are the same (lock files excluded).

Prints a summary table (inputs run, passed, every failure with its message) and exits 1 if any
input failed. ``tests/cli/test_bad_input_sweep.py`` runs a fast subset and (slow) the whole sweep.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Instrument of the sweep's repository.
INSTRUMENT = "testcam"
#: The RUN that holds the ingested raws.
RAW_RUN = f"{INSTRUMENT}/raw/all"
#: Text that must never reach the user.
FORBIDDEN = ("Traceback", "SELECT ", "INSERT INTO", "[SQL:", "sqlalchemy.exc", "psycopg.")


@dataclass
class Case:
    """One bad input.

    Attributes
    ----------
    name : str
        Short label printed in the summary.
    argv : list of str or bytes
        Command line; ``{repo}``, ``{work}`` are replaced by the repository and scratch paths.
    status : str
        ``"fail"`` (non-zero exit expected), ``"ok"`` (exit 0 expected) or ``"any"``.
    setup : callable, optional
        Called with the scratch directory before the command (writes bad files).
    hold_lock : str, optional
        RUN whose writer lock the sweep holds while the command runs.
    """

    name: str
    argv: list[Any]
    status: str = "fail"
    setup: Callable[[Path], None] | None = None
    hold_lock: str | None = None


@dataclass
class Outcome:
    """What one case did and what was wrong with it."""

    case: Case
    returncode: int
    output: str
    problems: list[str] = field(default_factory=list)


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def _run(argv: Sequence[Any], timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, LANG="C.UTF-8", COLUMNS="120")
    return subprocess.run(
        [a if isinstance(a, bytes) else str(a) for a in argv],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=timeout,
    )


def build_repo(root: Path, raws: Path) -> None:
    """Create the sweep's repository at ``root`` with 3 biases and 2 flats of ``testcam``.

    Parameters
    ----------
    root : `pathlib.Path`
        Repository root (must not exist).
    raws : `pathlib.Path`
        Directory for the simulated raw files.

    Raises
    ------
    RuntimeError
        If a set-up command fails.
    """
    from pipeline.instruments.simulate import simulate_raws

    exposures: list[dict[str, Any]] = [{"type": "bias"}] * 3 + [
        {"type": "flat", "exposure_time": 2.0, "flux": 2000.0, "physical_filter": "r_test"}
    ] * 2
    simulate_raws(INSTRUMENT, raws, exposures=exposures, seed=15)
    for argv in (
        [_tool("butler"), "create", root],
        [_tool("butler"), "register-instrument", root, INSTRUMENT],
        [_tool("butler"), "ingest-raws", root, raws],
    ):
        r = _run(argv)
        if r.returncode:
            raise RuntimeError(f"set-up command {argv[1:]} failed: {r.stderr.decode(errors='replace')}")


def snapshot(root: Path) -> dict[str, Any]:
    """Row count of every registry table and (path, size) of every file under ``root``.

    Parameters
    ----------
    root : `pathlib.Path`
        Repository root (SQLite registry).

    Returns
    -------
    snap : dict
        ``{"rows": {table: count}, "files": {relpath: size}}``.
    """
    rows: dict[str, int] = {}
    for db in sorted(root.glob("*.sqlite3")):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for t in names:
                rows[f"{db.name}:{t}"] = con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
        finally:
            con.close()
    files = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_dir() or "/locks/" in f"/{rel}" or rel.endswith(("-wal", "-shm", "-journal")):
            continue
        files[rel] = 0 if p.suffix == ".sqlite3" else p.stat().st_size
    return {"rows": rows, "files": files}


def _diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    out = []
    for kind in ("rows", "files"):
        a, b = before[kind], after[kind]
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out.append(f"{kind} {k}: {a.get(k)} -> {b.get(k)}")
    return out


# ---------------------------------------------------------------------------------------- bad files


def _write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        p = work / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def _raw_variant(rel: str, edit: Callable[[Any], None]) -> Callable[[Path], None]:
    """Copy the first simulated raw to ``work/rel`` after ``edit(hdulist)``."""

    def setup(work: Path) -> None:
        from astropy.io import fits

        src = sorted((work / "raws").rglob("*.fits"))[0]
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        with fits.open(src) as hdul:
            edit(hdul)
            hdul.writeto(dst, overwrite=True)

    return setup


def _truncated(rel: str, keep: float) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        src = sorted((work / "raws").rglob("*.fits"))[0]
        data = src.read_bytes()
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data[: int(len(data) * keep)])

    return setup


def _drop(key: str) -> Callable[[Any], None]:
    def edit(hdul: Any) -> None:
        for h in hdul:
            h.header.remove(key, ignore_missing=True, remove_all=True)

    return edit


def _set(key: str, value: Any) -> Callable[[Any], None]:
    def edit(hdul: Any) -> None:
        hdul[0].header[key] = value

    return edit


# ---------------------------------------------------------------------------------------- the cases


def cases() -> list[Case]:
    """Return the bad inputs of the sweep."""
    B, P = "butler", "pipetask"
    R = "{repo}"
    W = "{work}"
    cb = "pipelines/cpBias.yaml"
    run = [P, "run", "-b", R, "-i", RAW_RUN, "-d", f"instrument='{INSTRUMENT}'"]
    qg = [P, "qgraph", "-b", R, "-i", RAW_RUN]
    c: list[Case] = [
        # --- repository paths
        Case("create on existing repo", [B, "create", R]),
        Case("create where a file is", [B, "create", f"{W}/afile.txt"], setup=_write("afile.txt", "x")),
        Case("query missing repo", [B, "query-datasets", f"{W}/no_repo", "raw"]),
        Case("query repo that is a file", [B, "query-datasets", f"{W}/afile.txt", "raw"],
             setup=_write("afile.txt", "x")),
        Case("query empty dir as repo", [B, "query-collections", f"{W}/emptydir"],
             setup=lambda w: (w / "emptydir").mkdir(exist_ok=True)),
        Case("query repo with corrupt butler.yaml", [B, "query-collections", f"{W}/badrepo"],
             setup=_write("badrepo/butler.yaml", "registry: [unclosed\n")),
        Case("query repo with garbage sqlite", [B, "query-collections", f"{W}/badrepo2"],
             setup=lambda w: (_write("badrepo2/butler.yaml", (w / "repo" / "butler.yaml").read_text())(w),
                              _write("badrepo2/gen3.sqlite3", b"not a database" * 100)(w))),
        Case("unknown command", [B, "query-everything", R]),
        Case("unknown option", [B, "query-datasets", R, "raw", "--frobnicate"]),
        Case("bad --log-level", [B, "--log-level", "LOUD", "query-collections", R]),
        Case("missing argument", [B, "query-datasets"]),
        # --- queries
        Case("unknown dataset type", [B, "query-datasets", R, "nosuchtype", "--collections", RAW_RUN]),
        Case("unknown collection", [B, "query-datasets", R, "raw", "--collections", "no/such/coll"]),
        Case("unknown dimension", [B, "query-data-ids", R, "nosuchdim"]),
        Case("unknown element", [B, "query-dimension-records", R, "nosuchelement"]),
        Case("unknown dataset type glob ok", [B, "query-dataset-types", R, "zzz*"], status="ok"),
    ]
    wheres = [
        "instrument =",
        "exposure IN (",
        "instrument = 'testcam' AND",
        "exposure = 1 OR OR detector = 0",
        "'",
        "exposure.nosuchfield = 1",
        "nosuchdim = 3",
        "detector > 'abc'",
        "instrument = testcam",
        "exposure IN (1..)",
        "exposure = 1; DROP TABLE dataset",
        "detector = 1e999999",
        "((((",
        "exposure.timespan OVERLAPS 'abc'",  # a bare number would be an MJD (valid)
        "instrument = 'testcam' AND exposure = :bind",
        "detector IN (0..2:0)",
    ]
    for w in wheres:
        c.append(Case(f"where {w!r}", [B, "query-datasets", R, "raw", "--collections", RAW_RUN, "--where", w]))
    for w in wheres[:6]:
        c.append(Case(f"data-ids where {w!r}", [B, "query-data-ids", R, "exposure", "--where", w]))
    c += [
        Case("where non-UTF-8", [B, "query-datasets", R, "raw", "--where", b"instrument = '\xff'"]),
        Case("collection non-UTF-8", [B, "query-datasets", R, "raw", b"--collections=a\xed\xa0\x80"]),
        # --- instruments
        Case("register unknown instrument", [B, "register-instrument", R, "nosuchcam"]),
        Case("register missing camera yaml", [B, "register-instrument", R, f"{W}/missing.yaml"]),
        Case("register corrupt camera yaml", [B, "register-instrument", R, f"{W}/bad.yaml"],
             setup=_write("bad.yaml", "name: x\ndetectors: [ {id: 0, \n")),
        Case("register camera yaml not mapping", [B, "register-instrument", R, f"{W}/list.yaml"],
             setup=_write("list.yaml", "- 1\n- 2\n")),
        Case("register camera yaml missing keys", [B, "register-instrument", R, f"{W}/nodet.yaml"],
             setup=_write("nodet.yaml", "name: nodet\nfilters: []\n")),
        Case("register directory as camera", [B, "register-instrument", R, f"{W}/emptydir"],
             setup=lambda w: (w / "emptydir").mkdir(exist_ok=True)),
        Case("register again (no change) ok", [B, "register-instrument", R, INSTRUMENT], status="ok"),
        # --- ingest
        Case("ingest missing file", [B, "ingest-raws", R, f"{W}/missing.fits"]),
        Case("ingest empty file", [B, "ingest-raws", R, f"{W}/empty.fits"], setup=_write("empty.fits", b"")),
        Case("ingest text as fits", [B, "ingest-raws", R, f"{W}/text.fits"], setup=_write("text.fits", "hello\n" * 100)),
        Case("ingest random bytes", [B, "ingest-raws", R, f"{W}/rand.fits"], setup=_write("rand.fits", os.urandom(8640))),
        Case("ingest truncated 50%", [B, "ingest-raws", R, f"{W}/trunc50.fits"], setup=_truncated("trunc50.fits", 0.5)),
        Case("ingest truncated 1%", [B, "ingest-raws", R, f"{W}/trunc1.fits"], setup=_truncated("trunc1.fits", 0.01)),
        Case("ingest truncated 99%", [B, "ingest-raws", R, f"{W}/trunc99.fits"], setup=_truncated("trunc99.fits", 0.99)),
        Case("ingest empty directory", [B, "ingest-raws", R, f"{W}/emptydir"],
             setup=lambda w: (w / "emptydir").mkdir(exist_ok=True)),
        Case("ingest no INSTRUME", [B, "ingest-raws", R, f"{W}/noinst.fits"], setup=_raw_variant("noinst.fits", _drop("INSTRUME"))),
        Case("ingest no DATE-OBS", [B, "ingest-raws", R, f"{W}/nodate.fits"], setup=_raw_variant("nodate.fits", _drop("DATE-OBS"))),
        Case("ingest no EXPTIME", [B, "ingest-raws", R, f"{W}/noexp.fits"], setup=_raw_variant("noexp.fits", _drop("EXPTIME"))),
        Case("ingest no IMAGETYP/OBSTYPE", [B, "ingest-raws", R, f"{W}/notype.fits"],
             setup=_raw_variant("notype.fits", lambda h: (_drop("IMAGETYP")(h), _drop("OBSTYPE")(h)))),
        Case("ingest unknown instrument", [B, "ingest-raws", R, f"{W}/othercam.fits"],
             setup=_raw_variant("othercam.fits", _set("INSTRUME", "NOSUCHCAM"))),
        Case("ingest bad DATE-OBS", [B, "ingest-raws", R, f"{W}/baddate.fits"],
             setup=_raw_variant("baddate.fits", _set("DATE-OBS", "yesterday"))),
        Case("ingest text EXPTIME", [B, "ingest-raws", R, f"{W}/textexp.fits"],
             setup=_raw_variant("textexp.fits", _set("EXPTIME", "long"))),
        Case("ingest unknown filter", [B, "ingest-raws", R, f"{W}/badfilt.fits"],
             setup=_raw_variant("badfilt.fits", lambda h: [h[0].header.set(k, "nosuchfilter") for k in ("FILTER",) ])),
        Case("ingest bad --transfer", [B, "ingest-raws", R, f"{W}/raws", "--transfer", "teleport"]),
        Case("ingest -j 0", [B, "ingest-raws", R, f"{W}/raws", "-j", "0"]),
        Case("ingest -j -3", [B, "ingest-raws", R, f"{W}/raws", "-j", "-3"]),
        Case("ingest path non-UTF-8", [B, "ingest-raws", R, b"/tmp/\xc3(.fits"]),
        Case("re-ingest same raws", [B, "ingest-raws", R, f"{W}/raws"], status="any"),
        Case("ingest into missing repo", [B, "ingest-raws", f"{W}/no_repo", f"{W}/raws"]),
        # --- dataset types / collections
        Case("register dataset type bad storage class", [B, "register-dataset-type", R, "myType", "NoSuchClass", "detector"]),
        Case("register dataset type bad dimension", [B, "register-dataset-type", R, "myType", "NumpyArray", "nosuchdim"]),
        Case("register dataset type bad name", [B, "register-dataset-type", R, "1bad name!", "NumpyArray"]),
        Case("register raw differently", [B, "register-dataset-type", R, "raw", "NumpyArray", "detector"]),
        Case("chain onto a RUN", [B, "collection-chain", R, RAW_RUN, "testcam/calib"]),
        Case("chain with unknown child", [B, "collection-chain", R, "mychain", "no/such/child"]),
        Case("chain parent = child", [B, "collection-chain", R, "selfchain", "selfchain"]),
        Case("associate unknown collection", [B, "associate", R, "mytag", "--collections", "no/such", "--datasets", "raw"]),
        Case("remove-runs unknown (nothing to do)", [B, "remove-runs", R, "no_such_run*", "--no-confirm"], status="any"),
        Case("remove-collections unknown", [B, "remove-collections", R, "no_such_coll*", "--no-confirm"], status="any"),
        Case("prune unknown collection", [B, "prune-datasets", R, "no/such/coll", "--no-confirm"], status="any"),
        # --- certify
        Case("certify unknown input run", [B, "certify-calibrations", R, "no/such/run", "testcam/calib", "bias"]),
        Case("certify unknown dataset type", [B, "certify-calibrations", R, RAW_RUN, "testcam/calib", "nosuchtype"]),
        Case("certify non-calibration type", [B, "certify-calibrations", R, RAW_RUN, "testcam/calib", "raw"]),
        Case("certify bad begin date", [B, "certify-calibrations", R, RAW_RUN, "testcam/calib", "raw", "--begin-date", "yesterday"]),
        Case("certify impossible date", [B, "certify-calibrations", R, RAW_RUN, "testcam/calib", "raw", "--begin-date", "2020-13-45"]),
        Case("certify end before begin", [B, "certify-calibrations", R, RAW_RUN, "testcam/calib", "raw",
                                          "--begin-date", "2021-01-01", "--end-date", "2020-01-01"]),
        Case("certify into a RUN", [B, "certify-calibrations", R, RAW_RUN, RAW_RUN, "raw"]),
        Case("decertify bad date", [B, "decertify", R, "testcam/calib", "bias", "--begin-date", "2020-02-30"]),
        Case("decertify unknown collection", [B, "decertify", R, "no/such/calib", "bias"]),
        # --- get / export / import / transfer
        Case("get unknown type", [B, "get", R, "nosuchtype", "--collections", RAW_RUN]),
        Case("get bad data id", [B, "get", R, "raw", "--collections", RAW_RUN, "--data-id", "exposure=notanint"]),
        Case("export to a file path", [B, "export", R, f"{W}/afile.txt"], setup=_write("afile.txt", "x")),
        Case("import missing dir", [B, "import", R, f"{W}/no_export"]),
        Case("import empty dir", [B, "import", R, f"{W}/emptydir"], setup=lambda w: (w / "emptydir").mkdir(exist_ok=True)),
        Case("import corrupt export", [B, "import", R, f"{W}/badexport"], setup=_write("badexport/export.yaml", "{{{\n")),
        Case("transfer from missing repo", [B, "transfer-datasets", f"{W}/no_repo", R]),
        Case("retrieve unknown type", [B, "retrieve-artifacts", R, f"{W}/out", "--dataset-type", "nosuchtype"]),
        # --- pipetask: pipelines
        Case("pipeline file missing", [*run, "-p", f"{W}/missing.yaml", "--output-run", "sw/a"]),
        Case("pipeline is a directory", [*run, "-p", f"{W}/emptydir", "--output-run", "sw/a"],
             setup=lambda w: (w / "emptydir").mkdir(exist_ok=True)),
        Case("pipeline bad YAML", [*run, "-p", f"{W}/bad.yaml", "--output-run", "sw/a"],
             setup=_write("bad.yaml", "tasks: {a: [\n")),
        Case("pipeline YAML is a list", [*run, "-p", f"{W}/list.yaml", "--output-run", "sw/a"],
             setup=_write("list.yaml", "- 1\n")),
        Case("pipeline empty file", [*run, "-p", f"{W}/empty.yaml", "--output-run", "sw/a"],
             setup=_write("empty.yaml", "")),
        Case("pipeline unknown task class", [*run, "-p", f"{W}/badclass.yaml", "--output-run", "sw/a"],
             setup=_write("badclass.yaml", "description: x\ntasks:\n  a:\n    class: no.such.Task\n")),
        Case("pipeline task without class", [*run, "-p", f"{W}/noclass.yaml", "--output-run", "sw/a"],
             setup=_write("noclass.yaml", "description: x\ntasks:\n  a:\n    config: {}\n")),
        Case("pipeline imports missing", [*run, "-p", f"{W}/badimport.yaml", "--output-run", "sw/a"],
             setup=_write("badimport.yaml", "description: x\nimports:\n  - location: /no/such.yaml\n")),
        Case("pipeline unknown subset", [*run, "-p", f"{cb}#nosuchsubset", "--output-run", "sw/a"]),
        Case("pipeline non-UTF-8 file", [*run, "-p", f"{W}/latin1.yaml", "--output-run", "sw/a"],
             setup=_write("latin1.yaml", b"description: caf\xe9\ntasks: {}\n")),
        Case("-t unknown class", [*run, "-t", "no.such.module.Task", "--output-run", "sw/a"]),
        Case("-t not a task", [*run, "-t", "os.path.join", "--output-run", "sw/a"]),
        Case("--delete unknown label", [*run, "-p", cb, "--delete", "nosuchlabel", "--output-run", "sw/a"]),
        # --- pipetask: config overrides
        Case("-c unknown field", [*run, "-p", cb, "-c", "cpBiasIsr:noSuchField=1", "--output-run", "sw/a"]),
        Case("-c bad bool", [*run, "-p", cb, "-c", "cpBiasIsr:doOverscan=maybe", "--output-run", "sw/a"]),
        Case("-c bad int", [*run, "-p", cb, "-c", "cpBiasCombine:maxIter=many", "--output-run", "sw/a"]),
        Case("-c bad choice", [*run, "-p", cb, "-c", "cpBiasCombine:combine=nosuchstat", "--output-run", "sw/a"]),
        Case("-c unknown label", [*run, "-p", cb, "-c", "nosuchlabel:doOverscan=True", "--output-run", "sw/a"]),
        Case("-c no '='", [*run, "-p", cb, "-c", "cpBiasIsr:doOverscan", "--output-run", "sw/a"]),
        Case("-c no label", [*run, "-p", cb, "-c", "doOverscan=True", "--output-run", "sw/a"]),
        Case("-c bad YAML value", [*run, "-p", cb, "-c", "cpBiasIsr:doOverscan=[", "--output-run", "sw/a"]),
        Case("-c unknown parameter", [*run, "-p", cb, "-c", "parameters:noSuchParam=3", "--output-run", "sw/a"]),
        Case("-C missing file", [*run, "-p", cb, "-C", f"cpBiasIsr:{W}/missing.py", "--output-run", "sw/a"]),
        Case("-C bad python", [*run, "-p", cb, "-C", f"cpBiasIsr:{W}/bad.py", "--output-run", "sw/a"],
             setup=_write("bad.py", "config.doOverscan = (\n")),
        Case("-C python unknown field", [*run, "-p", cb, "-C", f"cpBiasIsr:{W}/unk.py", "--output-run", "sw/a"],
             setup=_write("unk.py", "config.noSuchField = 3\n")),
        Case("-C python code", [*run, "-p", cb, "-C", f"cpBiasIsr:{W}/code.py", "--output-run", "sw/a"],
             setup=_write("code.py", "import os\nconfig.doOverscan = os.getcwd()\n")),
        Case("-C non-UTF-8 file", [*run, "-p", cb, "-C", f"cpBiasIsr:{W}/latin1.py", "--output-run", "sw/a"],
             setup=_write("latin1.py", b"config.doOverscan = True  # caf\xe9\n")),
        Case("-C bad yaml", [*run, "-p", cb, "-C", f"cpBiasIsr:{W}/c.yaml", "--output-run", "sw/a"],
             setup=_write("c.yaml", "doOverscan: [\n")),
        # --- pipetask: repo, collections, queries
        Case("-b missing repo", [P, "run", "-b", f"{W}/no_repo", "-i", RAW_RUN, "-p", cb, "--output-run", "sw/a"]),
        Case("-b is a file", [P, "run", "-b", f"{W}/afile.txt", "-i", RAW_RUN, "-p", cb, "--output-run", "sw/a"],
             setup=_write("afile.txt", "x")),
        Case("-i unknown collection", [P, "run", "-b", R, "-i", "no/such/coll", "-p", cb, "--output-run", "sw/a"]),
        Case("no -i", [P, "run", "-b", R, "-p", cb, "--output-run", "sw/a"]),
        Case("-d malformed", [*qg, "-p", cb, "-d", "instrument = ", "--output-run", "sw/a"]),
        Case("-d unknown dimension", [*qg, "-p", cb, "-d", "nosuchdim = 3", "--output-run", "sw/a"]),
        Case("-d bad literal", [*qg, "-p", cb, "-d", "exposure = 'abc' AND", "--output-run", "sw/a"]),
        Case("-d matches nothing", [*qg, "-p", cb, "-d", "exposure = 999999", "--output-run", "sw/a"], status="any"),
        Case("--instrument unknown", [*run, "-p", cb, "--instrument", "nosuchcam", "--output-run", "sw/a"]),
        Case("--select-tasks malformed", [*run, "-p", cb, "--select-tasks", "cpBiasIsr & (", "--output-run", "sw/a"]),
        Case("--select-tasks unknown", [*run, "-p", cb, "--select-tasks", "nosuchlabel", "--output-run", "sw/a"]),
        Case("--show unknown item", [P, "build", "-p", cb, "--show", "nosuchitem"]),
        Case("-j 0", [*run, "-p", cb, "-j", "0", "--output-run", "sw/a"]),
        Case("--executor bad", [*run, "-p", cb, "--executor", "cloud", "--output-run", "sw/a"]),
        Case("-g missing", [P, "run", "-b", R, "-g", f"{W}/missing.qgraph"]),
        Case("-g random bytes", [P, "run", "-b", R, "-g", f"{W}/rand.qgraph"], setup=_write("rand.qgraph", os.urandom(5000))),
        Case("-g empty", [P, "run", "-b", R, "-g", f"{W}/empty.qgraph"], setup=_write("empty.qgraph", b"")),
        Case("-g a YAML file", [P, "run", "-b", R, "-g", f"{W}/list.yaml"], setup=_write("list.yaml", "- 1\n")),
        Case("--qgraph-node-id bad", [P, "run", "-b", R, "-g", f"{W}/rand.qgraph", "--qgraph-node-id", "notauuid"],
             setup=_write("rand.qgraph", os.urandom(5000))),
        Case("--output-run is raw RUN", [*run, "-p", cb, "--output-run", RAW_RUN]),
        Case("-o is a RUN", [*run, "-p", cb, "-o", RAW_RUN]),
        Case("--extend-run without run", [*run, "-p", cb, "--extend-run", "--output-run", "sw/none"]),
        Case("run lock held", [*run, "-p", cb, "--output-run", "sw/locked"], hold_lock="sw/locked"),
        Case("-o non-UTF-8", [*run, "-p", cb, "-o", b"u/\xff"]),
        Case("-p non-UTF-8", [P, "build", "-p", b"\xff.yaml"]),
        Case("pipetask unknown command", [P, "fly"]),
        Case("pipetask build missing pipeline", [P, "build", "-p", f"{W}/missing.yaml"]),
        Case("pipetask build -c unknown field", [P, "build", "-p", cb, "-c", "cpBiasIsr:noSuchField=1"]),
        Case("pipetask -q into missing dir", [*qg, "-p", cb, "-q", f"{W}/no/such/dir/g.qgraph", "--output-run", "sw/a"],
             status="any"),  # the parent directories are made: fine, nothing in the repository changes
    ]
    return c


@contextlib.contextmanager
def _held_lock(root: Path, run: str | None) -> Iterator[None]:
    if not run:
        yield
        return
    from butler import Butler
    from pipeline.execution.run_lock import run_lock

    b = Butler(root, writeable=False)
    try:
        with run_lock(b, run):
            yield
    finally:
        b.close()


def _error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if re.match(r"\s*(Error|error|ERROR)\b", ln)]


def check(case: Case, root: Path, work: Path) -> Outcome:
    """Run one case and return what was wrong with it (``problems`` empty: passed).

    Parameters
    ----------
    case : `Case`
        The bad input.
    root : `pathlib.Path`
        The sweep's repository.
    work : `pathlib.Path`
        Scratch directory (bad files are written here).

    Returns
    -------
    outcome : `Outcome`
    """
    if case.setup:
        case.setup(work)
    argv: list[Any] = [_tool(case.argv[0])]
    for a in case.argv[1:]:
        argv.append(a.replace("{repo}", str(root)).replace("{work}", str(work)) if isinstance(a, str) else a)
    before = snapshot(root)
    try:
        with _held_lock(root, case.hold_lock):
            r = _run(argv)
        rc, out = r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        rc, out = -9, "timed out"
    o = Outcome(case, rc, out)
    if case.status == "fail" and rc == 0:
        o.problems.append("exit status 0")
    if case.status == "ok" and rc != 0:
        o.problems.append(f"exit status {rc}")
    if rc < 0:
        o.problems.append(f"killed by signal {-rc}")
    for bad in FORBIDDEN:
        if bad in out:
            o.problems.append(f"output contains {bad!r}")
    if rc != 0 and not _error_lines(out):
        o.problems.append("no line starting 'Error'")
    diff = _diff(before, snapshot(root))
    if diff:
        o.problems.append("repository changed: " + "; ".join(diff[:4]))
    return o


def _message(o: Outcome) -> str:
    lines = _error_lines(o.output) or [ln for ln in o.output.splitlines() if ln.strip()][-1:]
    return (lines[0].strip() if lines else "")[:200]


def sweep(repo_dir: Path, only: str | None = None, names: Sequence[str] | None = None,
          verbose: bool = True) -> list[Outcome]:
    """Build the repository under ``repo_dir`` and run the cases.

    Parameters
    ----------
    repo_dir : `pathlib.Path`
        Working directory (``repo/``, ``raws/`` and the bad files are written in it).
    only : str, optional
        Run only cases whose name contains this.
    names : sequence of str, optional
        Run only the cases with these names.
    verbose : bool
        Print a line per case.

    Returns
    -------
    outcomes : list of `Outcome`
    """
    repo_dir.mkdir(parents=True, exist_ok=True)
    root = repo_dir / "repo"
    if not root.exists():
        build_repo(root, repo_dir / "raws")
    todo = [c for c in cases() if (only is None or only in c.name) and (names is None or c.name in names)]
    outcomes = []
    for i, case in enumerate(todo, 1):
        o = check(case, root, repo_dir)
        outcomes.append(o)
        if verbose:
            mark = "ok  " if not o.problems else "FAIL"
            print(f"{i:3d} {mark} rc={o.returncode:<3d} {case.name}: {_message(o)}", flush=True)
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 if any case failed)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo-dir", type=Path, help="working directory (default: a temporary one, removed)")
    ap.add_argument("--only", help="run only cases whose name contains this")
    args = ap.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    os.chdir(root)  # pipelines/*.yaml paths are relative to the checkout
    tmp = None
    if args.repo_dir is None:
        tmp = tempfile.mkdtemp(prefix="bad_input_sweep_")
        args.repo_dir = Path(tmp)
    try:
        outcomes = sweep(args.repo_dir.resolve(), only=args.only)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    failed = [o for o in outcomes if o.problems]
    print(f"\ninputs run: {len(outcomes)}   passed: {len(outcomes) - len(failed)}   failed: {len(failed)}")
    if failed:
        print(f"\n{'case':40s} {'rc':>3s}  problems | message")
        for o in failed:
            print(f"{o.case.name[:40]:40s} {o.returncode:3d}  {'; '.join(o.problems)} | {_message(o)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
