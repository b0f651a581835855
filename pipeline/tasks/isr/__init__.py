"""Instrument signature removal: pure numpy modules and the `IsrTask` / `CfhtIsrTask` glue."""

from __future__ import annotations

from .calibs import BrighterFatterKernel, CrosstalkCalib, Defects, IsrCalib, IsrCalibFormatter, Linearizer
from .cfht_isr_task import CfhtIsrTask, CfhtIsrTaskConfig
from .isr_task import (
    IsrTask,
    IsrTaskConfig,
    IsrTaskConnections,
    OverscanCorrectionTask,
    OverscanCorrectionTaskConfig,
)

__all__ = [
    "BrighterFatterKernel",
    "CfhtIsrTask",
    "CfhtIsrTaskConfig",
    "CrosstalkCalib",
    "Defects",
    "IsrCalib",
    "IsrCalibFormatter",
    "IsrTask",
    "IsrTaskConfig",
    "IsrTaskConnections",
    "Linearizer",
    "OverscanCorrectionTask",
    "OverscanCorrectionTaskConfig",
]
