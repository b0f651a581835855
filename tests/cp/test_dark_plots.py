"""CpDarkTask cosmic-ray masking on injected cosmic rays; PTC plots are PNG-able figures."""

from __future__ import annotations

import io

import numpy as np

from pipeline.image import MASK_PLANES
from pipeline.tasks.cp import CpDarkTask, PhotonTransferCurvePlotTask
from pipeline.tasks.cp.ptc_dataset import PhotonTransferCurveDataset
from tests.cp._synth import SynthDetector, make_detector, make_exposure


def test_dark_cosmic_rays_found_grown_and_bad_cleared():
    truth = SynthDetector(gains=(1.0, 1.0), read_noise_e=(5.0, 5.0), ny=100, nx_amp=80)
    det = make_detector(truth)
    rng = np.random.default_rng(9)
    img = rng.normal(0.0, 5.0, truth.shape)
    hits = [(20, 15), (60, 100), (80, 40)]
    for y, x in hits:
        img[y, x] += 2000.0
        img[y, x + 1] += 800.0
    mask = np.zeros(truth.shape, np.int32)
    mask[5, 5] = 1 << MASK_PLANES["BAD"]
    out = CpDarkTask().run(inputExp=make_exposure(img, det, 1, 100.0, mask=mask, obs_type="dark")).outputExp
    cr = (out.mask & (1 << out.masked_image.mask_planes["CR"])) != 0
    for y, x in hits:
        assert cr[y, x] and cr[y, x + 1]
        assert cr[y, x - 2] and cr[y + 2, x] and not cr[y + 4, x + 4]    # grown by 2
    labelled = cr.sum()
    assert labelled < 3 * 30                                              # no false positives
    assert not (out.mask & (1 << MASK_PLANES["BAD"])).any()
    np.testing.assert_array_equal(out.image, img.astype(np.float32))     # pixels untouched


def test_ptc_plots_render_png():
    ptc = PhotonTransferCurveDataset(["A", "B"], "EXPAPPROXIMATION", 3)
    mu = np.geomspace(100, 50000, 12)
    for amp, g in (("A", 1.2), ("B", 2.0)):
        cov = np.zeros((12, 3, 3))
        cov[:, 0, 0] = mu / g
        cov[:, 0, 1] = cov[:, 1, 0] = 1e-6 * mu**2
        ptc.append_points(amp, rawMeans=mu, rawVars=mu / g, covariances=cov, gainList=np.full(12, g),
                          inputExpIdPairs=np.zeros((12, 2), int), expIdMask=mu < 40000)
        ptc.gain[amp], ptc.noise[amp] = g, 5.0
        ptc.finalModelVars[amp] = mu / g
        ptc.covariancesModel[amp] = cov
    res = PhotonTransferCurvePlotTask().run(inputPtc=ptc)
    for fig in (res.ptcPlot, res.covariancePlot, res.gainPlot):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.getvalue().startswith(b"\x89PNG") and len(buf.getvalue()) > 5000
    assert "g=1.200" in res.ptcPlot.axes[0].get_title()


def test_pair_gain_plot_one_panel_per_amp_with_binned_median():
    from pipeline.tasks.cp.ptc_plots import plot_pair_gains

    rng = np.random.default_rng(9)
    ptc = PhotonTransferCurveDataset(["A", "B"], "EXPAPPROXIMATION", 2)
    for amp, g in (("A", 1.2), ("B", 2.0)):
        for pair in ((1, 2), (2, 3), (1, 3)):            # GRID: 40 boxes per pair
            mu = np.geomspace(300, 30000, 40)
            gl = g * (1 + rng.normal(0, 0.03, 40))
            if pair == (1, 3):
                gl[0] = 10.0 * g                            # one wild box
            ptc.append_points(amp, rawMeans=mu, rawVars=mu / g, covariances=np.zeros((40, 2, 2)),
                              gainList=gl, inputExpIdPairs=np.tile(pair, (40, 1)),
                              expIdMask=np.ones(40, bool))
        ptc.gain[amp] = g
    fig = plot_pair_gains(ptc, "grid")
    axes = fig.axes
    assert len(axes) == 2
    for ax, g in zip(axes, (1.2, 2.0)):
        labels = [ln.get_label() for ln in ax.get_lines()]
        assert "binned median" in labels and f"PTC fit {g:.3f}" in labels
        med = next(ln for ln in ax.get_lines() if ln.get_label() == "binned median")
        np.testing.assert_allclose(med.get_ydata(), g, rtol=0.04)
        lo, hi = ax.get_ylim()
        assert lo < g < hi < 2 * g                          # the wild box does not set the range
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG")


def test_ptc_plot_title_says_when_the_noise_is_unconstrained():
    from pipeline.tasks.cp.ptc_plots import _fit_summary

    ptc = PhotonTransferCurveDataset(["A", "B"], "EXPAPPROXIMATION", 2)
    ptc.gain.update(A=1.2, B=1.24)
    ptc.gainErr.update(A=0.005, B=0.02)
    ptc.noise.update(A=4.86, B=4.7e-6)                 # B: bright boxes only (Kast amp B)
    ptc.noiseErr.update(A=0.29, B=2e7)
    assert _fit_summary(ptc, "A") == "A: g=1.200±0.005 e-/ADU, noise=4.86±0.29 e-"
    assert _fit_summary(ptc, "B") == "B: g=1.240±0.020 e-/ADU, noise unconstrained"


def test_ptc_plot_panels_and_labels_fit_in_the_figure_without_overlap():
    """The fixed margins (no tight_layout) keep every label inside the figure, panels apart."""
    from pipeline.tasks.cp.ptc_plots import plot_covariances, plot_pair_gains

    for names in (["A"], ["A", "B"], ["A", "B", "C", "D"]):
        ptc = PhotonTransferCurveDataset(names, "EXPAPPROXIMATION", 2)
        mu = np.geomspace(300, 40000, 30)
        for amp in names:
            cov = np.zeros((30, 2, 2))
            cov[:, 0, 1] = cov[:, 1, 0] = -1e-6 * mu**2   # negative: a minus sign on the tick labels
            ptc.append_points(amp, rawMeans=mu, rawVars=mu / 1.2, covariances=cov,
                              gainList=np.linspace(1.1, 1.3, 30), inputExpIdPairs=np.zeros((30, 2), int),
                              expIdMask=np.ones(30, bool))
            ptc.gain[amp] = 1.2
        for fig in (plot_covariances(ptc, "detector 0"), plot_pair_gains(ptc, "detector 0")):
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            canvas = FigureCanvasAgg(fig)
            canvas.draw()
            r = canvas.get_renderer()
            w, h = fig.bbox.width, fig.bbox.height
            boxes = [ax.get_tightbbox(r) for ax in fig.axes]
            assert len(boxes) == len(names)
            for b in boxes:
                assert b.x0 >= 0 and b.y0 >= 0 and b.x1 <= w and b.y1 <= h, (len(names), b)
            for i, b in enumerate(boxes):
                for c in boxes[i + 1:]:
                    assert not b.overlaps(c), (len(names), b, c)
            title = fig.texts[0].get_window_extent(r)
            assert all(title.y0 >= ax.get_tightbbox(r).y1 - 1 for ax in fig.axes[: min(len(names), 2)])
