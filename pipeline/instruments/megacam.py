"""MegaCam quirks: the translator class named by ``megacam.yaml``.

* 2003-era MegaCam raws store one HDU per *amplifier* (72 or 80 image HDUs of 1056 × 4644 with
  per-HDU DATASEC/BIASSEC); ccdflow's ``megacam`` camera describes the spliced 2-amplifier-per-CCD
  files written since 2004 (Elixir ``imsplice``), so those files are refused with a clear error.
* Old data store RDNOISEA/RDNOISEB = 65535; the per-file read noise then comes from RDNOISE
  (reference-algorithms.md §6.2, CfhtIsrTask).
"""

from __future__ import annotations

from collections.abc import Sequence

from astropy.io import fits

from pipeline.image.geometry import Detector

from .translator import TranslationError, Translator

__all__ = ["MegaCamTranslator"]

_AMP_HDU_WIDTH = 1056


class MegaCamTranslator(Translator):
    """Header translator for CFHT MegaPrime/MegaCam raws (YAML-driven plus the quirks above)."""

    def check_headers(self, headers: Sequence[fits.Header], source: str) -> None:
        """Refuse per-amplifier (2003-era) files.

        Raises
        ------
        TranslationError
            If the file has one HDU per amplifier.
        """
        if len(headers) < 2:
            raise TranslationError(
                f"{source}: a MegaCam raw is a multi-extension file (one HDU per CCD); this file has a "
                "single HDU"
            )
        ext = headers[1]
        width = int(ext.get("ZNAXIS1", ext.get("NAXIS1", 0)) or 0)
        ampname = str(ext.get("AMPNAME", ""))
        if width == _AMP_HDU_WIDTH or (ampname and "+" not in ampname and len(headers) > 41):
            raise TranslationError(
                f"{source}: this MegaCam file has one HDU per amplifier ({len(headers) - 1} HDUs of "
                f"{width} columns, AMPNAME {ampname.strip()!r}: the 2003-era layout). ccdflow's megacam "
                "camera describes the 2-amplifier-per-CCD files written since 2004; splice the amplifiers "
                "into one HDU per CCD (Elixir imsplice) or write a camera description for that layout"
            )

    def amp_overrides(self, header: fits.Header, detector: Detector) -> dict[str, dict[str, float]]:
        """GAINA/GAINB, RDNOISEA/RDNOISEB; a read noise above 60000 (old files: 65535) → RDNOISE."""
        out = super().amp_overrides(header, detector)
        for values in out.values():
            rn = values.get("read_noise")
            if rn is not None and rn > 60000:
                if "RDNOISE" in header and float(header["RDNOISE"]) < 60000:
                    values["read_noise"] = float(header["RDNOISE"])
                else:
                    del values["read_noise"]
        return out
