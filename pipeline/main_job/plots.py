"""The main job's PNGs: the PTC plot datasets and a quick-look of one science image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._queries import query
from .flows import Flow

__all__ = ["write_plots"]


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
    _save_tight(fig, path, dpi=80)


def _save_tight(fig: Any, path: Path, dpi: float) -> None:
    """``fig.savefig(path, dpi=dpi, bbox_inches="tight")`` with one draw instead of two.

    matplotlib's ``"tight"`` draws the whole figure once (renderer output discarded, but the
    image resampled all the same) to find the bounding box; the bounding box only needs the
    artists' extents. The same box (`Figure.get_tightbbox`, padded by
    ``savefig.pad_inches``) given explicitly gives the same image from a single draw.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_dpi(dpi)
    renderer = FigureCanvasAgg(fig).get_renderer()
    bbox = fig.get_tightbbox(renderer).padded(matplotlib.rcParams["savefig.pad_inches"])
    # zlib level 3 instead of PIL's default 6: the same pixels, written ~3x faster and, for
    # these noisy images, in a smaller file
    fig.savefig(path, dpi=dpi, bbox_inches=bbox, pil_kwargs={"compress_level": 3})


def _is_newer(path: Path, source: Path) -> bool:
    """Whether ``path`` exists and was written after ``source`` (a missing source counts as older)."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return False
    try:
        return mtime >= source.stat().st_mtime
    except OSError:
        return True


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
        (from the cpPtc run's ``Plot`` datasets) and ``<instrument>_postISRCCD_<obs_id>.png``
        (kept when it is newer than its image: a re-run does not draw it again).
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
            for ref in query(b, name, [flow.calib_run("ptc")], f"instrument = '{inst}'"):
                path = out / f"{inst}_det{ref.data_id['detector']}_{name}.png"
                path.write_bytes(b.get(ref))
                written.append(path)
        refs = query(b, "postISRCCD", [flow.isr_run], f"instrument = '{inst}'")
        if refs:
            # the longest science exposure: the one with most to see
            def exptime(r: Any) -> float:
                return float(r.data_id.records["exposure"].exposure_time) if r.data_id.has_records() else 0.0

            ref = max(refs, key=lambda r: (exptime(r), r.data_id["exposure"]))
            rec = ref.data_id.records.get("exposure") if ref.data_id.has_records() else None
            obs_id = rec.obs_id if rec is not None else str(ref.data_id["exposure"])
            what = (
                f"{rec.target_name}, {rec.exposure_time:g} s, {rec.physical_filter}"
                if rec is not None
                else ""
            )
            title = f"{inst} postISRCCD {obs_id} detector {ref.data_id['detector']} ({what})"
            path = out / f"{inst}_postISRCCD_{obs_id.replace('/', '_').replace(':', '')}.png"
            if not _is_newer(path, b.get_uri(ref)):  # a re-run keeps a quick-look drawn from this image
                _quicklook(b.get(ref), title, path)
            written.append(path)
    return written
