"""Calibration products used by ISR (non-image calibs) and their FITS formatter.

`IsrCalib` is the base class (metadata + ``to_table``/``from_table``), with `Defects`,
`Linearizer`, `CrosstalkCalib` and `BrighterFatterKernel`. `IsrCalibFormatter` reads and
writes any of them as a FITS file: a primary HDU whose header holds the metadata and
``CALIBCLS`` (the dotted class name), followed by one binary table per `to_table` entry
(astropy `~astropy.table.Table`). Storage class name: ``IsrCalib``.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from butler import Formatter

if TYPE_CHECKING:  # pragma: no cover
    from astropy.io import fits
    from astropy.table import Table

__all__ = [
    "BrighterFatterKernel",
    "CrosstalkCalib",
    "Defects",
    "IsrCalib",
    "IsrCalibFormatter",
    "Linearizer",
]


class IsrCalib:
    """Base class of the table-like ISR calibrations.

    Parameters
    ----------
    metadata : mapping, optional
        Header-like metadata (``CALIBDATE``, ``DETECTOR``, ``INSTRUME``, ``LSST ISR UNITS`` ...).
    detector_name : `str`, optional
    detector_id : `int`, optional

    Notes
    -----
    Subclasses implement `to_table` (list of astropy Tables) and `from_table`.
    """

    calib_type: ClassVar[str] = "IsrCalib"

    def __init__(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        detector_name: str | None = None,
        detector_id: int | None = None,
    ) -> None:
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.metadata.setdefault("OBSTYPE", self.calib_type)
        if detector_name is not None:
            self.metadata["DETECTOR_NAME"] = detector_name
        if detector_id is not None:
            self.metadata["DETECTOR"] = int(detector_id)

    # -- table interface ----------------------------------------------------------------------
    def to_table(self) -> list[Table]:
        """Return the calibration as a list of astropy Tables (metadata in ``table.meta``)."""
        raise NotImplementedError

    @classmethod
    def from_table(cls, tables: Sequence[Table]) -> IsrCalib:
        """Build the calibration from `to_table` output.

        Raises
        ------
        ValueError
            If a required column is missing.
        """
        raise NotImplementedError

    def getMetadata(self) -> dict[str, Any]:
        """Return the metadata dict (LSST-style accessor used by ``extractCalibDate``)."""
        return self.metadata

    # -- FITS --------------------------------------------------------------------------------
    def write_fits(self, path: str | os.PathLike[str]) -> None:
        """Write to a FITS file (see module docstring)."""
        IsrCalibFormatter().write(self, path)

    @classmethod
    def read_fits(cls, path: str | os.PathLike[str]) -> IsrCalib:
        """Read a FITS file written by `write_fits`.

        Raises
        ------
        ValueError
            If the file holds a different calibration class.
        """
        obj = IsrCalibFormatter().read(path)
        if not isinstance(obj, cls):
            raise ValueError(f"{path} holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj


def _need(table: Table, cols: Iterable[str], what: str) -> None:
    missing = [c for c in cols if c not in table.colnames]
    if missing:
        raise ValueError(f"{what} table lacks column(s) {missing}; has {table.colnames}")


class Defects(IsrCalib):
    """A list of defect boxes ``(x0, y0, width, height)`` in assembled detector pixels.

    Parameters
    ----------
    boxes : iterable of `pipeline.image.Box` or 4-tuples, optional
    **kwargs
        See `IsrCalib`.
    """

    calib_type = "defects"

    def __init__(self, boxes: Iterable[Any] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.boxes: list[tuple[int, int, int, int]] = []
        for b in boxes:
            self.append(b)

    def append(self, box: Any) -> None:
        """Add a box (`Box` or ``(x0, y0, nx, ny)``)."""
        if hasattr(box, "x0"):
            self.boxes.append((int(box.x0), int(box.y0), int(box.nx), int(box.ny)))
        else:
            x0, y0, nx, ny = box
            self.boxes.append((int(x0), int(y0), int(nx), int(ny)))

    def __len__(self) -> int:
        return len(self.boxes)

    def __iter__(self):
        return iter(self.boxes)

    def to_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Rasterise the boxes into a boolean ``(ny, nx)`` array (clipped to the shape)."""
        out = np.zeros(shape, bool)
        for x0, y0, nx, ny in self.boxes:
            out[max(y0, 0) : max(y0 + ny, 0), max(x0, 0) : max(x0 + nx, 0)] = True
        return out

    def covers(self, box: Any) -> bool:
        """Whether one defect box contains ``box`` entirely (a fully bad amplifier)."""
        for x0, y0, nx, ny in self.boxes:
            if x0 <= box.x0 and y0 <= box.y0 and box.x1 <= x0 + nx and box.y1 <= y0 + ny:
                return True
        return False

    def to_table(self) -> list[Table]:
        """Return the calibration as astropy Tables (see `IsrCalib.to_table`)."""
        from astropy.table import Table

        t = Table(
            rows=self.boxes or None,
            names=("x0", "y0", "width", "height"),
            dtype=(np.int32, np.int32, np.int32, np.int32),
        )
        t.meta.update(self.metadata)
        return [t]

    @classmethod
    def from_table(cls, tables: Sequence[Table]) -> Defects:
        """Build from `to_table` output (see `IsrCalib.from_table`)."""
        t = tables[0]
        _need(t, ("x0", "y0", "width", "height"), "defects")
        return cls(zip(t["x0"], t["y0"], t["width"], t["height"]), metadata=dict(t.meta))


class Linearizer(IsrCalib):
    """Per-amplifier linearity model.

    Parameters
    ----------
    linearity_type : mapping of amp name to `str`
        ``"None"``, ``"Polynomial"``, ``"Squared"``, ``"LookupTable"``, ``"Spline"``, ``"Proportional"``.
    linearity_coeffs : mapping of amp name to sequence of `float`
    table : `numpy.ndarray`, shape ``(n_rows, n_cols)``, optional
        Lookup table (ADU) for ``LookupTable`` amps.
    **kwargs
        See `IsrCalib`.
    """

    calib_type = "linearizer"

    def __init__(
        self,
        linearity_type: Mapping[str, str] | None = None,
        linearity_coeffs: Mapping[str, Sequence[float]] | None = None,
        table: np.ndarray | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.linearity_type = dict(linearity_type or {})
        self.linearity_coeffs = {
            k: np.asarray(v, dtype=np.float64) for k, v in (linearity_coeffs or {}).items()
        }
        self.table = None if table is None else np.asarray(table)

    @classmethod
    def from_detector(cls, detector: Any) -> Linearizer:
        """Linearizer from the camera's per-amp ``linearity_type`` / ``linearity_coeffs``."""
        return cls(
            {a.name: a.linearity_type for a in detector},
            {a.name: a.linearity_coeffs for a in detector},
            detector_name=detector.name,
            detector_id=detector.id,
        )

    def to_table(self) -> list[Table]:
        """Return the calibration as astropy Tables (see `IsrCalib.to_table`)."""
        from astropy.table import Table

        names = list(self.linearity_type)
        width = max([len(self.linearity_coeffs.get(n, ())) for n in names] + [1])
        coeffs = np.full((len(names), width), np.nan)
        for i, n in enumerate(names):
            c = self.linearity_coeffs.get(n, np.zeros(0))
            coeffs[i, : c.size] = c
        t = Table(
            {
                "AMPLIFIER_NAME": names,
                "TYPE": [self.linearity_type[n] for n in names],
                "COEFFS": coeffs,
                "NCOEFFS": [len(self.linearity_coeffs.get(n, ())) for n in names],
            }
        )
        t.meta.update(self.metadata)
        out = [t]
        if self.table is not None:
            out.append(Table({"LOOKUP_VALUES": np.asarray(self.table)}))
        return out

    @classmethod
    def from_table(cls, tables: Sequence[Table]) -> Linearizer:
        """Build from `to_table` output (see `IsrCalib.from_table`)."""
        t = tables[0]
        _need(t, ("AMPLIFIER_NAME", "TYPE", "COEFFS", "NCOEFFS"), "linearizer")
        types = {str(n): str(ty) for n, ty in zip(t["AMPLIFIER_NAME"], t["TYPE"])}
        coeffs = {
            str(n): np.asarray(c)[: int(k)] for n, c, k in zip(t["AMPLIFIER_NAME"], t["COEFFS"], t["NCOEFFS"])
        }
        table = np.asarray(tables[1]["LOOKUP_VALUES"]) if len(tables) > 1 else None
        return cls(types, coeffs, table, metadata=dict(t.meta))


class CrosstalkCalib(IsrCalib):
    """Intra-detector crosstalk coefficients, indexed ``coeffs[source, target]`` (see crosstalk.py).

    Parameters
    ----------
    coeffs : `numpy.ndarray`, shape ``(n_amp, n_amp)``
    coeffs_sqr : `numpy.ndarray`, optional
        Quadratic coefficients.
    amp_names : sequence of `str`, optional
        Amplifier order of the matrix.
    units : `str`
        ``"adu"`` or ``"electron"`` (``crosstalkRatiosUnits``).
    interChip : mapping of source detector name to `numpy.ndarray`, optional
        Inter-detector coefficients ``[source amp, target amp]`` per source detector (LSST
        ``CrosstalkCalib.interChip``), used with ``IsrTask.run(crosstalkSources=...)``.
    **kwargs
        See `IsrCalib`.
    """

    calib_type = "crosstalk"

    def __init__(
        self,
        coeffs: np.ndarray | None = None,
        coeffs_sqr: np.ndarray | None = None,
        amp_names: Sequence[str] = (),
        units: str = "adu",
        interChip: Mapping[str, np.ndarray] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.interChip = {str(k): np.asarray(v, dtype=np.float64) for k, v in (interChip or {}).items()}
        self.coeffs = None if coeffs is None else np.asarray(coeffs, dtype=np.float64)
        self.coeffs_sqr = None if coeffs_sqr is None else np.asarray(coeffs_sqr, dtype=np.float64)
        self.amp_names = list(amp_names)
        self.units = units

    @property
    def nAmp(self) -> int:
        """Number of amplifiers."""
        return 0 if self.coeffs is None else self.coeffs.shape[0]

    def to_table(self) -> list[Table]:
        """Return the calibration as astropy Tables (see `IsrCalib.to_table`)."""
        from astropy.table import Table

        cols: dict[str, Any] = {"COEFFS": self.coeffs}
        if self.coeffs_sqr is not None:
            cols["COEFFS_SQR"] = self.coeffs_sqr
        t = Table(cols)
        t.meta.update(self.metadata)
        t.meta["AMPNAMES"] = json.dumps(self.amp_names)
        t.meta["UNITS"] = self.units
        out = [t]
        for name, m in sorted(self.interChip.items()):  # one table per source detector
            ti = Table({"COEFFS": m})
            ti.meta["SOURCE_DETECTOR"] = name
            out.append(ti)
        return out

    @classmethod
    def from_table(cls, tables: Sequence[Table]) -> CrosstalkCalib:
        """Build from `to_table` output (see `IsrCalib.from_table`)."""
        t = tables[0]
        _need(t, ("COEFFS",), "crosstalk")
        meta = dict(t.meta)
        names = json.loads(meta.pop("AMPNAMES", "[]"))
        units = meta.pop("UNITS", "adu")
        sqr = np.asarray(t["COEFFS_SQR"]) if "COEFFS_SQR" in t.colnames else None
        inter = {str(ti.meta["SOURCE_DETECTOR"]): np.asarray(ti["COEFFS"]) for ti in tables[1:]}
        return cls(np.asarray(t["COEFFS"]), sqr, names, units, interChip=inter, metadata=meta)


class BrighterFatterKernel(IsrCalib):
    """Brighter-fatter kernel(s): a detector-level kernel and/or one kernel per amplifier.

    Parameters
    ----------
    kernel : `numpy.ndarray`, shape ``(ky, kx)``, odd sizes, optional
        Detector-level kernel in ``[y, x]`` order (dimensionless, applied to an image in e⁻).
    gains : mapping of amp name to `float`, optional
        Gains (e⁻/ADU) the kernel(s) were measured with.
    ampKernels : mapping of amp name to `numpy.ndarray`, optional
        Per-amplifier kernels (LSST ``BrighterFatterKernel.ampKernels``), used by
        ``brighterFatterLevel='AMP'``.
    **kwargs
        See `IsrCalib`.

    Raises
    ------
    ValueError
        If a kernel is not 2-D with odd sizes.
    """

    calib_type = "bfk"

    def __init__(
        self,
        kernel: np.ndarray | None = None,
        gains: Mapping[str, float] | None = None,
        ampKernels: Mapping[str, np.ndarray] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel = None if kernel is None else _check_kernel(kernel, "detector")
        self.gains = dict(gains or {})
        self.ampKernels = {str(a): _check_kernel(k, f"amp {a}") for a, k in (ampKernels or {}).items()}

    @property
    def level(self) -> str:
        """``"AMP"`` if per-amp kernels are present, else ``"DETECTOR"``."""
        return "AMP" if self.ampKernels else "DETECTOR"

    def detector_kernel(self) -> np.ndarray | None:
        """Return the detector kernel, or the mean of the amp kernels.

        The mean (LSST ``makeDetectorKernelFromAmpwiseKernels``) is used when only amp kernels
        are present; `None` when there is no kernel at all.
        """
        if self.kernel is not None:
            return self.kernel
        if not self.ampKernels:
            return None
        shapes = {k.shape for k in self.ampKernels.values()}
        if len(shapes) != 1:
            raise ValueError(f"amp kernels have different shapes {sorted(shapes)}; cannot average them")
        return np.mean(np.stack(list(self.ampKernels.values())), axis=0)

    def to_table(self) -> list[Table]:
        """Return the calibration as astropy Tables (see `IsrCalib.to_table`).

        Table 0: ``KERNEL`` (detector kernel; a 1×1 placeholder and ``HAS_DETECTOR_KERNEL``
        False when absent); table 1 (only with per-amp kernels): ``AMPLIFIER``, ``KERNEL`` per row.
        """
        from astropy.table import Table

        det = self.kernel if self.kernel is not None else np.zeros((1, 1))
        t = Table({"KERNEL": det[None]})
        t.meta.update(self.metadata)
        t.meta["GAINS"] = json.dumps(self.gains)
        t.meta["HAS_DETECTOR_KERNEL"] = self.kernel is not None
        out = [t]
        if self.ampKernels:
            names = sorted(self.ampKernels)
            out.append(Table({"AMPLIFIER": names, "KERNEL": np.stack([self.ampKernels[a] for a in names])}))
        return out

    @classmethod
    def from_table(cls, tables: Sequence[Table]) -> BrighterFatterKernel:
        """Build from `to_table` output (see `IsrCalib.from_table`)."""
        t = tables[0]
        _need(t, ("KERNEL",), "brighter-fatter kernel")
        meta = dict(t.meta)
        gains = json.loads(meta.pop("GAINS", "{}"))
        has_det = bool(meta.pop("HAS_DETECTOR_KERNEL", True))
        kernel = np.asarray(t["KERNEL"][0]) if has_det else None
        amp_kernels = None
        if len(tables) > 1:
            _need(tables[1], ("AMPLIFIER", "KERNEL"), "brighter-fatter amp kernels")
            amp_kernels = {str(a): np.asarray(k) for a, k in zip(tables[1]["AMPLIFIER"], tables[1]["KERNEL"])}
        return cls(kernel, gains, amp_kernels, metadata=meta)


def _check_kernel(kernel: Any, what: str) -> np.ndarray:
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"brighter-fatter {what} kernel must be 2-D with odd sizes, got shape {k.shape}")
    return k


def _header_safe(meta: Mapping[str, Any]) -> fits.Header:
    from astropy.io import fits  # here: the task classes (graph building) import no astropy

    hdr = fits.Header()
    for k, v in meta.items():
        if isinstance(v, (np.generic,)):
            v = v.item()
        if not isinstance(v, (str, int, float, bool)) or v is None:
            v = json.dumps(v, default=str)
        key = str(k).upper()
        if len(key) > 8 or " " in key:
            key = "HIERARCH " + key
        hdr[key] = v
    return hdr


class IsrCalibFormatter(Formatter):
    """Butler formatter for the ``IsrCalib`` storage class (FITS binary tables)."""

    extension = ".fits"

    def write(self, obj: IsrCalib, path: str | os.PathLike[str], ref: Any = None) -> None:
        """Write ``obj`` to ``path``.

        Raises
        ------
        TypeError
            If ``obj`` is not an `IsrCalib`.
        """
        from astropy.io import fits
        from astropy.table import Table

        if not isinstance(obj, IsrCalib):
            raise TypeError(f"IsrCalibFormatter can only write IsrCalib objects, got {type(obj).__name__}")
        primary = fits.PrimaryHDU(header=_header_safe(obj.metadata))
        primary.header["CALIBCLS"] = f"{type(obj).__module__}.{type(obj).__qualname__}"
        hdus = [primary]
        metas = []
        for table in obj.to_table():
            t = table.copy(copy_data=False)
            metas.append(json.dumps(dict(t.meta), default=str))
            t.meta.clear()
            hdus.append(fits.table_to_hdu(t))
        meta_hdu = fits.table_to_hdu(Table({"META": metas}))
        meta_hdu.name = "CALIBMETA"
        hdus.append(meta_hdu)
        fits.HDUList(hdus).writeto(path, overwrite=True)

    def read(
        self, path: str | os.PathLike[str], ref: Any = None, parameters: Any = None, repo_root: Any = None
    ) -> IsrCalib:
        """Read a file written by `write`.

        Raises
        ------
        ValueError
            If the file has no ``CALIBCLS`` keyword or names an unknown class.
        """
        from astropy.io import fits
        from astropy.table import Table

        with fits.open(path) as hdul:
            clsname = hdul[0].header.get("CALIBCLS")
            if not clsname:
                raise ValueError(f"{path} is not an ISR calibration file (no CALIBCLS keyword)")
            module, _, name = clsname.rpartition(".")
            try:
                cls = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                raise ValueError(f"{path}: unknown calibration class {clsname!r}") from None
            metas = [json.loads(str(m)) for m in Table.read(hdul["CALIBMETA"])["META"]]
            tables = []
            for hdu, meta in zip(hdul[1:-1], metas):
                t = Table.read(hdu)
                t.meta.clear()
                t.meta.update(meta)
                tables.append(t)
        return cls.from_table(tables)
