"""`CpDarkTask`: mask cosmic rays on ISR-processed darks before they are combined.

cp_pipe ``cpDark.py``: each dark is searched for cosmic rays, their footprints are grown and
marked in the ``CR`` mask plane (which ``CalibCombineTask`` then excludes), and planes listed in
``maskListToClear`` (BAD by default) are cleared so the combination is not starved of pixels.
Detection uses astroscrappy (van Dokkum 2001, PASP 113, 1420, L.A.Cosmic), a well-kept
implementation, on the image in electrons.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import pipeline.connection_types as cT
from pipeline.config import Field
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask

__all__ = ["CpDarkConfig", "CpDarkTask", "find_cosmic_rays"]


def find_cosmic_rays(image: np.ndarray, bad: np.ndarray | None, *, gain: float, read_noise: float,
                     sigclip: float = 4.5, sigfrac: float = 0.3, objlim: float = 5.0,
                     grow: int = 2, satlevel: float = np.inf) -> np.ndarray:
    """Boolean cosmic-ray mask of an image (L.A.Cosmic via astroscrappy), grown by ``grow``.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Image (ADU), background ~0 (dark current only).
    bad : `numpy.ndarray` of `bool`, shape ``(ny, nx)``, optional
        Pixels to ignore in the detection.
    gain : `float`
        e⁻/ADU (the detection works in electrons).
    read_noise : `float`
        e⁻.
    sigclip, sigfrac, objlim : `float`
        L.A.Cosmic detection limit (σ), neighbour fraction and object contrast limit.
    grow : `int`
        Diamond (4-connected) growth of each detection, pixels.
    satlevel : `float`
        Saturation (e⁻).

    Returns
    -------
    cr : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
    """
    import astroscrappy

    data = np.nan_to_num(np.asarray(image, np.float32))
    inmask = None if bad is None else np.asarray(bad, bool)
    cr, _ = astroscrappy.detect_cosmics(data, inmask=inmask, sigclip=sigclip, sigfrac=sigfrac,
                                        objlim=objlim, gain=gain, readnoise=read_noise,
                                        satlevel=satlevel, niter=4, cleantype="meanmask",
                                        sepmed=True)
    if grow > 0 and cr.any():
        from scipy import ndimage  # here, not with the task classes (graph building imports those)

        cr = ndimage.binary_dilation(cr, structure=ndimage.generate_binary_structure(2, 1),
                                     iterations=grow)
    return cr


class CpDarkConnections(PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    """Input and output of `CpDarkTask`: one ISR-processed dark in, its cosmic-ray-masked copy out."""

    inputExp = cT.Input(name="cpDarkIsr", storageClass="Exposure", doc="ISR-processed dark.",
                        dimensions=("instrument", "exposure", "detector"))
    outputExp = cT.Output(name="cpDarkProc", storageClass="Exposure",
                          doc="Dark with cosmic rays in the CR mask plane.",
                          dimensions=("instrument", "exposure", "detector"))


class CpDarkConfig(PipelineTaskConfig, pipelineConnections=CpDarkConnections):
    """Configuration of `CpDarkTask`."""

    sigClip: float = Field(4.5, gt=0, description="L.A.Cosmic detection limit (sigma).")
    sigFrac: float = Field(0.3, gt=0, description="L.A.Cosmic neighbour detection fraction.")
    objLim: float = Field(5.0, gt=0, description="L.A.Cosmic object contrast limit.")
    crGrow: int = Field(2, ge=0, description="Grow the cosmic-ray mask by this many pixels (diamond).")
    maskListToClear: list[str] = Field(default_factory=lambda: ["BAD"],
                                       description="Mask planes cleared before combination.")


class CpDarkTask(PipelineTask):
    """Mask cosmic rays on a dark (cp_pipe ``CpDarkTask``)."""

    ConfigClass = CpDarkConfig
    _DefaultName = "cpDark"

    def run(self, inputExp: Any) -> Struct:
        """Detect cosmic rays per amp and set the CR plane.

        Parameters
        ----------
        inputExp : `~pipeline.image.Exposure`
            ISR-processed dark (ADU) with its detector (gain, read noise per amp).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputExp``: a copy with CR set and ``maskListToClear`` cleared.
        """
        exp = inputExp.copy()
        mi = exp.masked_image
        cr_bit = mi.get_plane_bitmask("CR", add=True)
        clear = mi.get_plane_bitmask([p for p in self.config.maskListToClear if p in mi.mask_planes])
        bad = (exp.mask & clear) != 0 if clear else None
        regions = [(a.bbox.slices, a.gain, a.read_noise) for a in exp.detector] if exp.detector else \
            [((slice(None), slice(None)), 1.0, 5.0)]
        n_cr = 0
        for sl, gain, rn in regions:
            g = gain if np.isfinite(gain) and gain > 0 else 1.0
            cr = find_cosmic_rays(exp.image[sl], None if bad is None else bad[sl], gain=g,
                                  read_noise=rn if np.isfinite(rn) and rn > 0 else 5.0,
                                  sigclip=self.config.sigClip, sigfrac=self.config.sigFrac,
                                  objlim=self.config.objLim, grow=self.config.crGrow)
            exp.mask[sl][cr] |= cr_bit
            n_cr += int(cr.sum())
        if clear:
            exp.mask[:] &= ~np.int32(clear)
        self.metadata["crPixels"] = n_cr
        self.log.info("exposure %s: %d pixels masked CR", exp.info.id, n_cr)
        return Struct(outputExp=exp)
