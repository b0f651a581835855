"""Calibration products: combination (bias, dark, flat), flat normalization, photon transfer curve.

Tasks are thin glue over pure numpy modules (``*_math.py``, `flat.measure_scales`).
"""

from __future__ import annotations

from .combine import (
    CalibCombineByFilterConfig,
    CalibCombineByFilterTask,
    CalibCombineConfig,
    CalibCombineTask,
)
from .dark import CpDarkConfig, CpDarkTask
from .flat import (
    CpFlatMeasureConfig,
    CpFlatMeasureTask,
    CpFlatNormalizationConfig,
    CpFlatNormalizationTask,
)
from .ptc_dataset import PhotonTransferCurveDataset, PtcFormatter
from .ptc_extract import PhotonTransferCurveExtractConfig, PhotonTransferCurveExtractTask
from .ptc_plots import PhotonTransferCurvePlotConfig, PhotonTransferCurvePlotTask
from .ptc_solve import PhotonTransferCurveSolveConfig, PhotonTransferCurveSolveTask

__all__ = [
    "CalibCombineByFilterConfig",
    "CalibCombineByFilterTask",
    "CalibCombineConfig",
    "CalibCombineTask",
    "CpDarkConfig",
    "CpDarkTask",
    "CpFlatMeasureConfig",
    "CpFlatMeasureTask",
    "CpFlatNormalizationConfig",
    "CpFlatNormalizationTask",
    "PhotonTransferCurveDataset",
    "PhotonTransferCurveExtractConfig",
    "PhotonTransferCurveExtractTask",
    "PhotonTransferCurvePlotConfig",
    "PhotonTransferCurvePlotTask",
    "PhotonTransferCurveSolveConfig",
    "PhotonTransferCurveSolveTask",
    "PtcFormatter",
]
