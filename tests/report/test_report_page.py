"""The calibration report page (``ccdflow-report``) on a simulated repository and the main job's.

The simulated repository is the main job's flow (`pipeline.main_job.run_flow`: bias, flat, PTC,
certification, science ISR) on seeded ``testcam`` raws with injected per-amplifier gains, so
the amplifier table can be checked against the truth. The tests marked ``browser`` open the pages
in Debian's headless chromium (`tests.report._cdp`): every image loads, the amplifier tables
have one row per amplifier with the certified PTC gains, the console has no error, nothing is
requested from the network, and a 1280x800 screenshot is not blank. They skip only when chromium
is missing and ``CCDFLOW_REQUIRE_BROWSER`` is unset (CI sets it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.report import collect_report, write_report
from pipeline.report.cli import main as report_main
from tests.builders import run_simulated_flow, simulated_flow

from ._cdp import Browser, find_chromium

DETECTORS = (0, 1)
#: Injected gains (e-/ADU), different from the camera description's nominal values.
GAINS = {
    (0, "C00"): 1.50,
    (0, "C01"): 1.80,
    (0, "C10"): 1.20,
    (0, "C11"): 2.20,
    (1, "C00"): 1.65,
    (1, "C01"): 1.35,
    (1, "C02"): 1.25,
    (1, "C03"): 1.95,
    (1, "C10"): 2.00,
    (1, "C11"): 1.10,
    (1, "C12"): 1.45,
    (1, "C13"): 1.70,
}
AMPS = {0: ["C00", "C01", "C10", "C11"], 1: ["C00", "C01", "C02", "C03", "C10", "C11", "C12", "C13"]}
NOISES = {k: 5.0 for k in GAINS}
FILTER = "r_test"

SIM_FLOW = simulated_flow(
    "testcam",
    calib_begin="2024-01-01T00:00:00",
    gain_tolerance=0.05,
    # testcam amplifiers have 64 x 48 pixels
    ptc_config=("ptcExtract:minNumberGoodPixelsForCovariance=1000",),
)


@pytest.fixture(scope="module")
def sim_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A repository with the whole calibration flow run on simulated testcam raws."""
    from pipeline.instruments.simulate import simulate_raws

    base = tmp_path_factory.mktemp("report_sim")
    raws = base / "raws"
    exposures: list[dict[str, Any]] = [{"type": "bias"}] * 3
    for t in (1.0, 2.0, 5.0, 10.0, 20.0):
        exposures += [{"type": "flat", "exposure_time": t, "flux": 1000.0, "physical_filter": FILTER}] * 2
    exposures += [
        {
            "type": "science",
            "exposure_time": 30.0,
            "level": 2000.0,
            "physical_filter": FILTER,
            "target_name": "sim_field",
        }
    ] * 2
    simulate_raws(
        "testcam",
        raws,
        exposures=exposures,
        seed=16,
        detectors=DETECTORS,
        gains=GAINS,
        read_noises=NOISES,
        flat_rms=0.02,
    )
    repo = base / "repo"
    run_simulated_flow(SIM_FLOW, raws, repo)
    yield repo
    shutil.rmtree(base, ignore_errors=True)


def _certified_gains(repo: Path) -> dict[tuple[int, str], float]:
    from butler import Butler

    b = Butler(repo, writeable=False)
    out = {}
    for det in DETECTORS:
        ptc = b.get(
            "ptc",
            collections=["testcam/calib"],
            instrument="testcam",
            detector=det,
            exposure=_an_exposure(b, det),
        )
        out.update({(det, amp): float(ptc.gain[amp]) for amp in ptc.ampNames})
    return out


def _an_exposure(butler: Any, det: int) -> int:
    ref = butler.query_datasets("raw", collections=["testcam/raw/all"], where=f"detector = {det}")[0]
    return int(ref.data_id["exposure"])


def test_collect_amp_rows_match_ptc_and_truth(sim_repo: Path, tmp_path: Path) -> None:
    data = collect_report(sim_repo, tmp_path / "r", thumbnails=False, run_reports=False)
    sections = {(s.instrument, s.detector): s for s in data.sections}
    assert set(sections) == {("testcam", d) for d in DETECTORS}
    certified = _certified_gains(sim_repo)
    for det in DETECTORS:
        s = sections[("testcam", det)]
        assert [r.amp for r in s.amps] == AMPS[det]
        for r in s.amps:
            assert r.gain == pytest.approx(certified[(det, r.amp)], rel=1e-12)
            assert r.gain == pytest.approx(GAINS[(det, r.amp)], rel=0.05)
            # overscan noise of the science frames: injected 5 e- read noise
            assert r.overscan_noise == pytest.approx(5.0, rel=0.2)
            assert r.n_isr == 2
        types = sorted({c.dataset_type for c in s.calibs})
        assert types == ["bias", "defects", "flat", "ptc"]
        assert all(c.begin == "2024-01-01T00:00:00.000" and c.end is None for c in s.calibs)
        assert [i.kind for i in s.images].count("plot") >= 3


def test_write_report_page_content(sim_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    page = write_report(sim_repo, out)
    text = page.read_text()
    # self-contained: no external URL is referenced, every image is a file in img/
    assert not re.search(r"""(src|href)=["'](https?:)?//""", text)
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert srcs and all(s.startswith("img/") and (out / s).is_file() for s in srcs)
    assert len(srcs) == len(set(srcs))
    kinds = text.count("<figure>")
    # per detector: >= 3 PTC plots, bias + flat thumbnails, 2 science postISRCCD
    assert kinds >= len(DETECTORS) * (3 + 2 + 2)
    # one amp row per amplifier, data-gain = certified PTC gain
    rows = re.findall(r'<tr data-amp="([^"]+)" data-gain="([^"]*)"', text)
    certified = _certified_gains(sim_repo)
    assert len(rows) == len(certified)
    assert sorted(float(g) for _, g in rows) == pytest.approx(sorted(certified.values()), rel=1e-12)
    # the runs with their pipetask report summaries
    for run in (
        "testcam/calib/bias/run",
        "testcam/calib/flat/run",
        "testcam/calib/ptc/run",
        "testcam/run/isr",
    ):
        assert f"<b>{run}</b>" in text
    assert "failed" not in re.sub(r"<[^>]+>", "", text).split("Runs")[-1].replace("0 failed", "")


def test_cli_errors_and_collections(sim_repo: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    r = CliRunner().invoke(report_main, [str(tmp_path), "-o", str(tmp_path / "x")])
    assert r.exit_code == 1 and "is not a butler repository" in r.output
    r = CliRunner().invoke(report_main, [str(sim_repo), "-i", "nope/*", "-o", str(tmp_path / "x")])
    assert r.exit_code == 1 and "no collection matches nope/*" in r.output
    r = CliRunner().invoke(
        report_main, [str(sim_repo), "-i", "testcam/calib", "-o", str(tmp_path / "c"), "--no-thumbnails"]
    )
    assert r.exit_code == 0, r.output
    text = (tmp_path / "c" / "index.html").read_text()
    # only the CALIBRATION collection: certified calibrations, no runs, no ISR thumbnails
    assert "Certified calibrations" in text and 'id="runs"' not in text and "postISRCCD" not in text


# --------------------------------------------------------------------------- in a real browser
def _chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CCDFLOW_REQUIRE_BROWSER"):
            pytest.fail(
                "chromium is not installed but CCDFLOW_REQUIRE_BROWSER is set (apt-get install chromium)"
            )
        pytest.skip("chromium not installed")
    return path


def _check_page(page: Path, screenshot: Path, expected_gains: dict[tuple[str, int, str], float]) -> None:
    """Open a report page in headless chromium and check it (see the module docstring)."""
    with Browser(_chromium()) as b:
        b.open(page.resolve().as_uri(), 1280, 800)
        images = b.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        assert images, "no image on the page"
        assert [src for src, w in images if not w > 0] == []
        tables = b.evaluate(
            "Array.from(document.querySelectorAll('table.amps')).map(t => [t.dataset.instrument, "
            "Number(t.dataset.detector), Array.from(t.tBodies[0].rows).map(r => [r.dataset.amp, "
            "parseFloat(r.dataset.gain), r.cells[1].textContent])])"
        )
        seen = {}
        for inst, det, rows in tables:
            amps = [a for a, _, _ in rows]
            assert len(amps) == len(set(amps)), f"{inst} {det}: duplicate amplifier rows"
            for amp, gain, shown in rows:
                seen[(inst, det, amp)] = gain
                assert shown == f"{gain:.3f}"
        assert set(seen) == set(expected_gains)
        for key, gain in expected_gains.items():
            assert seen[key] == pytest.approx(gain, rel=1e-9), key
        # sorting: a click on the gain header orders the rows by gain
        order = b.evaluate(
            "(() => { const t = document.querySelector('table.amps'); t.tHead.rows[0].cells[1].click(); "
            "return Array.from(t.tBodies[0].rows).map(r => parseFloat(r.dataset.gain)); })()"
        )
        assert order == sorted(order)
        assert b.console_errors() == []
        external = [u for u in b.requested_urls() if not u.startswith(("file:", "data:", "about:"))]
        assert external == []
        b.screenshot(screenshot)
        # the phone layout: no horizontal overflow of the page itself (tables scroll in their box)
        b.open(page.resolve().as_uri(), 390, 844)
        assert b.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    _check_screenshot(screenshot)
    keep = os.environ.get("CCDFLOW_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(keep) / screenshot.name)


def _check_screenshot(path: Path) -> None:
    from matplotlib.image import imread

    img = imread(path)
    assert img.shape[:2] == (800, 1280)
    grey = img[..., :3].mean(axis=2)
    assert float(np.std(grey)) > 0.02, "blank screenshot"
    assert float((grey < 0.5).mean()) > 0.005, "no dark pixels (text) on the screenshot"


@pytest.mark.browser
def test_browser_simulated_repository_report(sim_repo: Path, tmp_path: Path) -> None:
    page = write_report(sim_repo, tmp_path / "report")
    expected = {("testcam", d, a): g for (d, a), g in _certified_gains(sim_repo).items()}
    _check_page(page, tmp_path / "report_simulated_1280x800.png", expected)


@pytest.fixture(scope="module")
def demo_repo(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The main job (``ccdflow-demo``) run on ../shared/data; returns its repository."""
    repo = tmp_path_factory.mktemp("report_demo") / "demo_repo"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ccdflow-demo"), str(shared_data), "--repo", str(repo)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"report page (open it in a browser): {repo / 'report' / 'index.html'}" in proc.stdout
    return repo


@pytest.mark.browser
@pytest.mark.slow
def test_browser_main_job_report(demo_repo: Path, tmp_path: Path) -> None:
    from butler import Butler

    page = demo_repo / "report" / "index.html"  # written by the main job itself
    assert page.is_file()
    b = Butler(demo_repo, writeable=False)
    expected = {}
    for inst in ("kast_blue", "efosc2"):
        ref = b.query_datasets("ptc", collections=[f"{inst}/calib/ptc/run"], find_first=False)[0]
        ptc = b.get(ref)
        expected.update({(inst, 0, amp): float(ptc.gain[amp]) for amp in ptc.ampNames})
    assert len(expected) == 3  # Kast A, B; EFOSC2 L
    assert expected[("kast_blue", 0, "A")] == pytest.approx(1.2, rel=0.05)
    _check_page(page, tmp_path / "report_main_job_1280x800.png", expected)
    doc = json.dumps(sorted(expected))
    assert "efosc2" in doc


def test_runs_with_quanta_equal_runs_with_a_summary(sim_repo: Path, tmp_path: Path) -> None:
    """The runs the page summarizes (one query) are those whose summary has a task, graph or not."""
    from butler import Butler
    from pipeline.execution.report import report_from_collections
    from pipeline.report.collect import _resolve, _runs_with_quanta

    copy = tmp_path / "repo"
    shutil.copytree(sim_repo, copy, symlinks=True)
    for graphs_kept in (True, False):
        if not graphs_kept:  # the runs are then summarized from their _log / _metadata datasets
            shutil.rmtree(copy / ".ccdflow" / "graphs")
        butler = Butler(copy, writeable=False)
        runs, _ = _resolve(butler, None)
        plain = [run for run in runs if report_from_collections(butler, [run]).tasks]
        assert len(plain) >= 4 and len(plain) < len(runs)  # the raws' run has none
        assert _runs_with_quanta(butler, runs) == plain


def test_sections_collected_earlier_give_the_same_page(sim_repo: Path, tmp_path: Path) -> None:
    """write_report with sections collected beforehand (instruments=...) writes the same page and images."""
    plain = write_report(sim_repo, tmp_path / "plain")
    out = tmp_path / "early"
    early = collect_report(sim_repo, out, instruments=["testcam"], run_reports=False).sections
    assert [s.detector for s in early] == sorted(DETECTORS) and all(s.images for s in early)
    assert not collect_report(sim_repo, tmp_path / "x", instruments=["other"], run_reports=False).sections
    (out / "img" / "stale.png").write_bytes(b"not an image of this page")
    page = write_report(sim_repo, out, sections=early)

    def text(path: Path) -> str:  # the page without its creation time
        return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", "TIME", path.read_text(encoding="utf-8"))

    assert text(page) == text(plain)
    images = sorted(p.name for p in (out / "img").iterdir())
    assert images == sorted(p.name for p in (tmp_path / "plain" / "img").iterdir())
    for name in images:
        assert (out / "img" / name).read_bytes() == (tmp_path / "plain" / "img" / name).read_bytes()
