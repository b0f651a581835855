"""`PhotonTransferCurveDataset`: per-amp PTC measurements and fit results, and its FITS formatter.

The same class holds a *partial* PTC (the measurements of one flat pair, written by
``PhotonTransferCurveExtractTask`` as ``cpPtcPartial``) and a *solved* PTC (all pairs of a
detector plus the fit, written by ``PhotonTransferCurveSolveTask`` as ``ptc``). Everything is
stored per amplifier, in dicts keyed by amp name, with LSST's attribute names (ip_isr
``ptcDataset.py``).

On disk (``PtcFormatter``) a PTC is one FITS binary table with one row per amplifier, readable
with plain ``astropy.table.Table.read(path)``: scalar columns (``gain``, ``noise``, ...),
per-point columns padded with NaN to the longest amp (``nPoints`` gives each amp's length),
and matrix columns. Dataset-level values (fit type, matrix side, ...) are header keywords.
Reading gives back exactly what was written (float64, bool and int columns preserved).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from butler import Formatter

if TYPE_CHECKING:
    from astropy.table import Table

# astropy is imported by the methods that read or write tables, not with the task classes
# (building a quantum graph imports every task module and reads no PTC).

__all__ = ["PhotonTransferCurveDataset", "PtcFormatter"]

#: Per-point float fields: one value per PTC point (one per pair, or per grid box).
POINT_FIELDS = (
    "rawExpTimes", "rawMeans", "rawVars", "rawDeltas", "rowMeanVariance", "gainList",
    "noiseList", "finalVars", "finalModelVars", "finalMeans", "photoCharges",
)
#: Per-point matrix fields, shape (nPoints, M, M).
POINT_MATRIX_FIELDS = ("covariances", "covariancesModel", "covariancesSqrtWeights",
                       "nPixelCovariances")
#: Per-amp matrix fields, shape (M, M).
AMP_MATRIX_FIELDS = ("aMatrix", "bMatrix", "noiseMatrix", "aMatrixErr", "bMatrixErr",
                     "noiseMatrixErr")
#: Per-amp scalars.
SCALAR_FIELDS = ("gain", "gainErr", "noise", "noiseErr", "ptcTurnoff",
                 "ptcTurnoffSamplingError", "ptcFitChiSq")


class PhotonTransferCurveDataset:
    """Photon transfer curve of one detector (or one flat pair of it).

    Parameters
    ----------
    ampNames : sequence of `str`
        Amplifier names (the keys of every per-amp dict).
    ptcFitType : `str`, optional
        ``EXPAPPROXIMATION``, ``FULLCOVARIANCE``, ``FULLCOVARIANCE_NO_B``, ``POLYNOMIAL`` or
        ``PARTIAL`` (an extract output, not yet fitted), or ``DUMMY``.
    covMatrixSide : `int`, optional
        ``M``: side of the covariance matrices (lags ``0 .. M-1``).

    Attributes
    ----------
    gain, gainErr : `dict` [`str`, `float`]
        Fitted gain per amp (e⁻/ADU).
    noise, noiseErr : `dict` [`str`, `float`]
        Fitted read noise per amp (e⁻).
    rawExpTimes, rawMeans, rawVars : `dict` [`str`, `numpy.ndarray`]
        Per-point exposure time (s), mean (ADU), variance (ADU²), shape ``(nPoints,)``.
    inputExpIdPairs : `dict` [`str`, `numpy.ndarray`]
        ``(nPoints, 2)`` int exposure ids of each point's pair.
    expIdMask : `dict` [`str`, `numpy.ndarray`]
        ``(nPoints,)`` bool: point used in the fit.
    gainList, noiseList : `dict` [`str`, `numpy.ndarray`]
        Per-pair gain (e⁻/ADU) and overscan read noise (ADU), ``(nPoints,)``.
    covariances, covariancesModel, covariancesSqrtWeights, nPixelCovariances : `dict`
        ``(nPoints, M, M)``, ``[point, dx, dy]`` (ADU², ADU², 1/ADU², count).
    aMatrix, bMatrix, noiseMatrix : `dict` [`str`, `numpy.ndarray`]
        ``(M, M)`` Astier+19 coefficients (1/e⁻, 1/e⁻, e⁻²); NaN when not fitted.
    ptcFitPars, ptcFitParsError : `dict` [`str`, `numpy.ndarray`]
        Parameters of the C00 fit (EXPAPPROXIMATION: ``a00, gain, n00``; POLYNOMIAL: ``p_k``).
    finalMeans, finalVars, finalModelVars : `dict`
        Means, variances and model variances of the points used (NaN where masked).
    ptcTurnoff, ptcTurnoffSamplingError : `dict` [`str`, `float`]
        Largest mean used in the fit and its sampling error (ADU).
    badAmps : `list` [`str`]
        Amps whose fit failed.
    metadata : `dict`
        Free-form provenance (JSON-serializable).
    """

    def __init__(self, ampNames: Sequence[str] = (), ptcFitType: str = "PARTIAL",
                 covMatrixSide: int = 8) -> None:
        self.ampNames = list(ampNames)
        self.ptcFitType = ptcFitType
        self.covMatrixSide = int(covMatrixSide)
        self.badAmps: list[str] = []
        self.metadata: dict[str, Any] = {}
        m = self.covMatrixSide
        for name in SCALAR_FIELDS:
            setattr(self, name, {a: float("nan") for a in self.ampNames})
        for name in POINT_FIELDS:
            setattr(self, name, {a: np.zeros(0) for a in self.ampNames})
        for name in POINT_MATRIX_FIELDS:
            setattr(self, name, {a: np.zeros((0, m, m)) for a in self.ampNames})
        for name in AMP_MATRIX_FIELDS:
            setattr(self, name, {a: np.full((m, m), np.nan) for a in self.ampNames})
        self.inputExpIdPairs: dict[str, np.ndarray] = {a: np.zeros((0, 2), np.int64) for a in self.ampNames}
        self.expIdMask: dict[str, np.ndarray] = {a: np.zeros(0, bool) for a in self.ampNames}
        self.ptcFitPars: dict[str, np.ndarray] = {a: np.zeros(0) for a in self.ampNames}
        self.ptcFitParsError: dict[str, np.ndarray] = {a: np.zeros(0) for a in self.ampNames}

    # ------------------------------------------------------------------ helpers
    def n_points(self, amp: str) -> int:
        """Return the number of PTC points of ``amp``."""
        return int(np.asarray(self.rawMeans[amp]).size)

    def noise_unconstrained(self, amp: str) -> bool:
        """Return whether the PTC fit leaves the read noise of ``amp`` unconstrained.

        True when the noise error exceeds 3 × ``max(abs(noise), 0.5 e⁻)``: no point was faint enough
        to constrain it (e.g. a PTC from bright spectral flats only).
        """
        err = float(self.noiseErr.get(amp, np.nan))
        return bool(np.isfinite(err) and err > 3.0 * max(abs(float(self.noise[amp])), 0.5))

    def append_points(self, amp: str, **values: np.ndarray) -> None:
        """Append points to one amp.

        Parameters
        ----------
        amp : `str`
            Amplifier name (added to ``ampNames`` if new).
        **values
            Per-point arrays: any of the point fields, ``inputExpIdPairs`` ``(k, 2)``,
            ``expIdMask`` ``(k,)``, matrix fields ``(k, M, M)``; fields not given are NaN.

        Raises
        ------
        ValueError
            If arrays have inconsistent lengths or an unknown field is given.
        """
        if amp not in self.ampNames:
            self.ampNames.append(amp)
            for name in SCALAR_FIELDS:
                getattr(self, name)[amp] = float("nan")
            for name in AMP_MATRIX_FIELDS:
                getattr(self, name)[amp] = np.full((self.covMatrixSide,) * 2, np.nan)
            self.ptcFitPars[amp] = np.zeros(0)
            self.ptcFitParsError[amp] = np.zeros(0)
        known = set(POINT_FIELDS) | set(POINT_MATRIX_FIELDS) | {"inputExpIdPairs", "expIdMask"}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown PTC point fields {sorted(unknown)}; known: {sorted(known)}")
        k = {len(np.atleast_1d(v)) if np.ndim(v) <= 1 else np.shape(v)[0] for v in values.values()}
        if len(k) != 1:
            raise ValueError(f"PTC point arrays for amp {amp} have different lengths {sorted(k)}")
        k = k.pop()
        m = self.covMatrixSide

        def cat(store: dict, new: np.ndarray, empty_shape: tuple, dtype) -> None:
            old = store.get(amp)
            if old is None:
                old = np.zeros((0,) + empty_shape, dtype)
            store[amp] = np.concatenate([np.asarray(old, dtype).reshape((-1,) + empty_shape),
                                         np.asarray(new, dtype).reshape((k,) + empty_shape)])

        for name in POINT_FIELDS:
            cat(getattr(self, name), values.get(name, np.full(k, np.nan)), (), np.float64)
        for name in POINT_MATRIX_FIELDS:
            cat(getattr(self, name), values.get(name, np.full((k, m, m), np.nan)), (m, m), np.float64)
        cat(self.inputExpIdPairs, values.get("inputExpIdPairs", np.full((k, 2), -1)), (2,), np.int64)
        cat(self.expIdMask, values.get("expIdMask", np.ones(k, bool)), (), bool)

    @classmethod
    def from_partials(cls, partials: Iterable[PhotonTransferCurveDataset],
                      ptcFitType: str = "PARTIAL") -> PhotonTransferCurveDataset:
        """Concatenate the points of several partial PTCs (``DUMMY`` ones are skipped).

        Parameters
        ----------
        partials : iterable of `PhotonTransferCurveDataset`
            Extract outputs of one detector.
        ptcFitType : `str`
            Fit type of the result.

        Returns
        -------
        ptc : `PhotonTransferCurveDataset`
            Points of every partial, sorted per amp by ``rawMeans``.

        Raises
        ------
        ValueError
            If no non-DUMMY partial is given or the covariance sides differ.
        """
        parts = [p for p in partials if p.ptcFitType != "DUMMY"]
        if not parts:
            raise ValueError("no cpPtcPartial with measurements was given (all are DUMMY or none)")
        sides = {p.covMatrixSide for p in parts}
        if len(sides) != 1:
            raise ValueError(f"cpPtcPartial inputs have different covariance sizes {sorted(sides)}")
        m = sides.pop()
        out = cls([], ptcFitType=ptcFitType, covMatrixSide=m)
        # gather every partial's arrays per amp, then one concatenation per field and amp
        shapes = {n: () for n in POINT_FIELDS}
        shapes.update({n: (m, m) for n in POINT_MATRIX_FIELDS})
        shapes.update(inputExpIdPairs=(2,), expIdMask=())
        gathered: dict[str, dict[str, list[np.ndarray]]] = {}
        for p in parts:
            for amp in p.ampNames:
                k = np.size(p.rawMeans[amp])
                if k == 0:
                    continue
                lists = gathered.setdefault(amp, {n: [] for n in shapes})
                for n, shape in shapes.items():
                    lists[n].append(np.asarray(getattr(p, n)[amp]).reshape((k,) + shape))
        for amp, lists in gathered.items():
            out.append_points(amp, **{n: np.concatenate(v) for n, v in lists.items()})
        for amp in out.ampNames:
            order = np.argsort(out.rawMeans[amp], kind="stable")
            for n in POINT_FIELDS + POINT_MATRIX_FIELDS + ("inputExpIdPairs", "expIdMask"):
                getattr(out, n)[amp] = getattr(out, n)[amp][order]
        out.metadata["nPartials"] = len(parts)
        if "detector" in parts[0].metadata:
            out.metadata["detector"] = parts[0].metadata["detector"]
        return out

    @classmethod
    def make_dummy(cls, ampNames: Sequence[str], covMatrixSide: int = 8) -> PhotonTransferCurveDataset:
        """Make a placeholder partial with no points (the second exposure of a pair)."""
        return cls(ampNames, ptcFitType="DUMMY", covMatrixSide=covMatrixSide)

    # ------------------------------------------------------------------ table I/O
    def to_table(self) -> Table:
        """One row per amp; see the module docstring.

        Returns
        -------
        table : `astropy.table.Table`
            Columns ``AMPLIFIER_NAME``, ``nPoints``, scalars, padded point columns, matrices;
            ``table.meta`` holds ``PTC_TYPE`` (fit type), ``COV_SIDE`` (matrix side), ``BAD_AMPS``,
            ``METADATA`` (JSON).
        """
        amps = self.ampNames
        m = self.covMatrixSide
        npts = np.array([self.n_points(a) for a in amps], dtype=np.int64)
        nmax = int(npts.max()) if len(amps) else 0
        nfit = max([np.size(self.ptcFitPars[a]) for a in amps] + [0])
        from astropy.table import Table

        t = Table()
        t["AMPLIFIER_NAME"] = np.array(amps, dtype="U32")
        t["nPoints"] = npts
        t["badAmp"] = np.array([a in self.badAmps for a in amps], bool)
        for name in SCALAR_FIELDS:
            t[name] = np.array([getattr(self, name)[a] for a in amps], np.float64)

        def pad(arrs: list[np.ndarray], shape: tuple, fill, dtype) -> np.ndarray:
            out = np.full((len(amps), nmax) + shape, fill, dtype)
            for i, arr in enumerate(arrs):
                arr = np.asarray(arr, dtype)
                out[i, : arr.shape[0]] = arr.reshape((arr.shape[0],) + shape)
            return out

        for name in POINT_FIELDS:
            t[name] = pad([getattr(self, name)[a] for a in amps], (), np.nan, np.float64)
        for name in POINT_MATRIX_FIELDS:
            t[name] = pad([getattr(self, name)[a] for a in amps], (m, m), np.nan, np.float64)
        t["inputExpIdPairs"] = pad([self.inputExpIdPairs[a] for a in amps], (2,), -1, np.int64)
        t["expIdMask"] = pad([self.expIdMask[a] for a in amps], (), False, bool)
        for name in AMP_MATRIX_FIELDS:
            t[name] = np.array([np.asarray(getattr(self, name)[a], float).reshape(m, m)
                                for a in amps]).reshape(len(amps), m, m)
        t["nFitPars"] = np.array([np.size(self.ptcFitPars[a]) for a in amps], np.int64)
        for name in ("ptcFitPars", "ptcFitParsError"):
            arr = np.full((len(amps), nfit), np.nan)
            for i, a in enumerate(amps):
                v = np.asarray(getattr(self, name)[a], float)
                arr[i, : v.size] = v
            t[name] = arr
        t.meta["PTC_TYPE"] = self.ptcFitType
        t.meta["COV_SIDE"] = m
        t.meta["BAD_AMPS"] = ",".join(self.badAmps)
        t.meta["METADATA"] = json.dumps(self.metadata, default=str)
        return t

    @classmethod
    def from_table(cls, table: Table) -> PhotonTransferCurveDataset:
        """Inverse of `to_table`.

        Raises
        ------
        KeyError
            If a required column or header keyword is missing (the file is not a PTC).
        """
        meta = {str(k).upper(): v for k, v in table.meta.items()}
        amps = [str(a).strip() for a in table["AMPLIFIER_NAME"]]
        ds = cls(amps, ptcFitType=str(meta["PTC_TYPE"]), covMatrixSide=int(meta["COV_SIDE"]))
        bad = str(meta.get("BAD_AMPS", "") or "")
        ds.badAmps = [b for b in bad.split(",") if b]
        ds.metadata = json.loads(meta.get("METADATA", "{}") or "{}")
        for i, a in enumerate(amps):
            k = int(table["nPoints"][i])
            for name in SCALAR_FIELDS:
                getattr(ds, name)[a] = float(table[name][i])
            for name in POINT_FIELDS + POINT_MATRIX_FIELDS:
                getattr(ds, name)[a] = np.array(table[name][i][:k], dtype=np.float64)
            ds.inputExpIdPairs[a] = np.array(table["inputExpIdPairs"][i][:k], np.int64).reshape(k, 2)
            ds.expIdMask[a] = np.array(table["expIdMask"][i][:k], bool)
            for name in AMP_MATRIX_FIELDS:
                getattr(ds, name)[a] = np.array(table[name][i], np.float64)
            nf = int(table["nFitPars"][i])
            ds.ptcFitPars[a] = np.array(table["ptcFitPars"][i][:nf], np.float64)
            ds.ptcFitParsError[a] = np.array(table["ptcFitParsError"][i][:nf], np.float64)
        return ds

    def writeFits(self, path: str | Path) -> None:
        """Write the PTC as a FITS binary table (overwrites ``path``)."""
        from astropy.io import fits

        t = self.to_table()
        hdu = fits.table_to_hdu(t)
        hdu.name = "PTC"
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)

    @classmethod
    def readFits(cls, path: str | Path) -> PhotonTransferCurveDataset:
        """Read a PTC written by `writeFits`.

        Raises
        ------
        OSError
            If the file cannot be read as FITS.
        KeyError
            If it is not a PTC table.
        """
        from astropy.table import Table

        return cls.from_table(Table.read(path, hdu=1, mask_invalid=False))

    def __repr__(self) -> str:
        return (f"PhotonTransferCurveDataset(ptcFitType={self.ptcFitType!r}, amps={self.ampNames}, "
                f"points={[self.n_points(a) for a in self.ampNames]})")


class PtcFormatter(Formatter):
    """Butler formatter for the ``PhotonTransferCurveDataset`` storage class (FITS table)."""

    extension = ".fits"

    def read(self, path: str | Path, ref: Any = None, parameters: dict | None = None,
             repo_root: str | Path | None = None) -> PhotonTransferCurveDataset:
        """Read the dataset at ``path`` (``parameters`` are not supported and must be empty).

        Raises
        ------
        ValueError
            If read parameters are given.
        """
        if parameters:
            raise ValueError(f"PtcFormatter takes no read parameters, got {sorted(parameters)}")
        return PhotonTransferCurveDataset.readFits(path)

    def write(self, obj: PhotonTransferCurveDataset, path: str | Path, ref: Any = None) -> None:
        """Write ``obj`` to ``path``.

        Raises
        ------
        TypeError
            If ``obj`` is not a `PhotonTransferCurveDataset`.
        """
        if not isinstance(obj, PhotonTransferCurveDataset):
            raise TypeError(f"PtcFormatter writes PhotonTransferCurveDataset, not {type(obj).__name__}")
        obj.writeFits(path)
