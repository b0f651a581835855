"""Instrument signature removal: pure numpy modules and the `IsrTask` / `CfhtIsrTask` glue.

The task and calibration classes are re-exported lazily (PEP 562), so importing a pure module
such as ``pipeline.image.statistics`` (used by the calibration and amp-offset code) does
not import the task framework.
"""

from __future__ import annotations

from butler.utils import lazy_exports

__all__ = [
    "BrighterFatterKernel",
    "CfhtIsrTask",
    "CfhtIsrTaskConfig",
    "CrosstalkCalib",
    "DeferredChargeCalib",
    "DeferredChargeConfig",
    "DeferredChargeTask",
    "Defects",
    "IsrCalib",
    "IsrCalibFormatter",
    "IsrTask",
    "IsrTaskConfig",
    "IsrTaskConnections",
    "Linearizer",
    "OverscanCorrectionTask",
    "OverscanCorrectionTaskConfig",
    "SerialTrap",
]

_WHERE = {
    "BrighterFatterKernel": "calibs",
    "CrosstalkCalib": "calibs",
    "Defects": "calibs",
    "DeferredChargeCalib": "deferred_charge",
    "SerialTrap": "deferred_charge",
    "DeferredChargeConfig": "deferred_charge_task",
    "DeferredChargeTask": "deferred_charge_task",
    "IsrCalib": "calibs",
    "IsrCalibFormatter": "calibs",
    "Linearizer": "calibs",
    "CfhtIsrTask": "cfht_isr_task",
    "CfhtIsrTaskConfig": "cfht_isr_task",
    "IsrTask": "isr_task",
    "IsrTaskConfig": "isr_config",
    "IsrTaskConnections": "isr_config",
    "OverscanCorrectionTask": "overscan_task",
    "OverscanCorrectionTaskConfig": "overscan_task",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())
