"""Calibration products: combination, flat normalization, PTC, crosstalk, serial CTI, defects,
linearity.

Tasks are thin glue over pure numpy modules (``*_math.py``, `flat.measure_scales`).
"""

from __future__ import annotations

from butler.utils import lazy_exports

# Names are imported on first use (PEP 562), so reading a PTC or running one cp task does not
# import every task module (matplotlib for the plots, scipy.stats, astroscrappy, ...).
_LAZY = {
    "CalibCombineByFilterConfig": "combine",
    "CalibCombineByFilterTask": "combine",
    "CalibCombineConfig": "combine",
    "CalibCombineTask": "combine",
    "CrosstalkExtractConfig": "crosstalk",
    "CrosstalkExtractTask": "crosstalk",
    "CrosstalkSolveConfig": "crosstalk",
    "CrosstalkSolveTask": "crosstalk",
    "MeasuredCrosstalkCalib": "crosstalk",
    "CpCtiMeasureConfig": "cti",
    "CpCtiMeasureTask": "cti",
    "CpCtiSolveConfig": "cti",
    "CpCtiSolveTask": "cti",
    "CpDarkConfig": "dark",
    "CpDarkTask": "dark",
    "CpFlatMeasureConfig": "flat",
    "CpFlatMeasureTask": "flat",
    "CpFlatNormalizationConfig": "flat",
    "CpFlatNormalizationTask": "flat",
    "LinearityPlotConfig": "linearity",
    "LinearityPlotTask": "linearity",
    "LinearitySolveConfig": "linearity",
    "LinearitySolveTask": "linearity",
    "MeasureDefectsCombinedConfig": "defects",
    "MeasureDefectsCombinedTask": "defects",
    "MeasureDefectsCombinedWithFilterConfig": "defects",
    "MeasureDefectsCombinedWithFilterTask": "defects",
    "MeasureDefectsConfig": "defects",
    "MeasureDefectsTask": "defects",
    "MergeDefectsCombinedConfig": "defects",
    "MergeDefectsCombinedTask": "defects",
    "MergeDefectsConfig": "defects",
    "MergeDefectsTask": "defects",
    "PhotonTransferCurveDataset": "ptc_dataset",
    "PtcFormatter": "ptc_dataset",
    "PhotonTransferCurveExtractConfig": "ptc_extract",
    "PhotonTransferCurveExtractTask": "ptc_extract",
    "PhotonTransferCurvePlotConfig": "ptc_plots",
    "PhotonTransferCurvePlotTask": "ptc_plots",
    "PhotonTransferCurveSolveConfig": "ptc_solve",
    "PhotonTransferCurveSolveTask": "ptc_solve",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "CalibCombineByFilterConfig",
    "CalibCombineByFilterTask",
    "CalibCombineConfig",
    "CalibCombineTask",
    "CrosstalkExtractConfig",
    "CrosstalkExtractTask",
    "CrosstalkSolveConfig",
    "CrosstalkSolveTask",
    "CpCtiMeasureConfig",
    "CpCtiMeasureTask",
    "CpCtiSolveConfig",
    "CpCtiSolveTask",
    "CpDarkConfig",
    "CpDarkTask",
    "CpFlatMeasureConfig",
    "CpFlatMeasureTask",
    "CpFlatNormalizationConfig",
    "CpFlatNormalizationTask",
    "MeasuredCrosstalkCalib",
    "LinearityPlotConfig",
    "LinearityPlotTask",
    "LinearitySolveConfig",
    "LinearitySolveTask",
    "MeasureDefectsCombinedConfig",
    "MeasureDefectsCombinedTask",
    "MeasureDefectsCombinedWithFilterConfig",
    "MeasureDefectsCombinedWithFilterTask",
    "MeasureDefectsConfig",
    "MeasureDefectsTask",
    "MergeDefectsCombinedConfig",
    "MergeDefectsCombinedTask",
    "MergeDefectsConfig",
    "MergeDefectsTask",
    "PhotonTransferCurveDataset",
    "PhotonTransferCurveExtractConfig",
    "PhotonTransferCurveExtractTask",
    "PhotonTransferCurvePlotConfig",
    "PhotonTransferCurvePlotTask",
    "PhotonTransferCurveSolveConfig",
    "PhotonTransferCurveSolveTask",
    "PtcFormatter",
]
