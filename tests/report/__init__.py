"""Tests of pipetask report and the calibration report page."""
