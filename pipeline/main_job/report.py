"""The main job's results: per-amplifier PTC and overscan numbers, dataset counts, the table."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._queries import query
from .flows import Flow

__all__ = [
    "AmpResult",
    "collect_results",
    "dataset_counts",
    "format_report",
    "summarize",
    "summarize_reusing",
]

#: Header keywords written by IsrTask (contracts §5), per amplifier.
_OVERSCAN_LEVEL_KEY = "LSST ISR OVERSCAN SERIAL MEAN {amp}"
_OVERSCAN_NOISE_KEY = "LSST ISR OVERSCAN RESIDUAL SERIAL STDEV {amp}"
_GAIN_USED_KEY = "LSST ISR GAIN {amp}"


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
        for ref in query(b, "postISRCCD", [flow.isr_run], f"instrument = '{inst}'"):
            # header only: a 1x1 sub-image read
            exp = b.get(ref, parameters={"bbox": Box(0, 0, 1, 1)})
            headers.setdefault(int(ref.data_id["detector"]), []).append(exp.metadata)
        ptc_refs = query(b, "ptc", [flow.calib_run("ptc")], f"instrument = '{inst}'")
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
    types = [dt.name for dt in b.registry.query_dataset_types("*")]
    if not runs or not types:
        return counts
    # one query for every type (a query per type costs ~10 ms each)
    for ref in b.registry.query_datasets(types, collections=runs, find_first=False):
        inst = str(ref.data_id.get("instrument", "-")) if "instrument" in ref.data_id.dimensions else "-"
        per = counts.setdefault(ref.dataset_type.name, {})
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


def summarize_reusing(repo: Path, flows: Sequence[Flow], state_file: Path) -> tuple[str, bool]:
    """`summarize`, reusing the per-amplifier results of an earlier run when the repository is unchanged.

    The state file holds the per-amplifier results and a key: the dataset counts per type and
    instrument, the collections and their types, and the instruments. When the key equals the
    repository's now, the results are taken from the file instead of being read again from the
    PTCs and the science images (a re-run with nothing to do); otherwise they are read and the
    file is rewritten.

    Parameters
    ----------
    repo : `pathlib.Path`
        Repository root.
    flows : sequence of `Flow`
        The instruments processed.
    state_file : `pathlib.Path`
        The JSON state file (created or replaced).

    Returns
    -------
    text : `str`
        The same text as `summarize`.
    changed : `bool`
        False when the repository was as the state file describes it.
    """
    import json

    from butler import Butler, CollectionType

    counts = dataset_counts(repo)
    b = Butler(repo, writeable=False)
    collections = sorted(
        [name, kind.name]
        for kind in CollectionType
        for name in b.registry.query_collections("*", types=[kind])
    )
    key = {"counts": counts, "collections": collections, "instruments": [f.instrument for f in flows]}
    try:
        old = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    if old.get("key") == key and isinstance(old.get("results"), list):
        return format_report([AmpResult(**r) for r in old["results"]], counts), False
    results = collect_results(repo, flows)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(".tmp")
    state = {"key": key, "results": [dataclasses.asdict(r) for r in results]}
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(state_file)
    return format_report(results, counts), True
