"""Tests of the pipeline graph (resolved connections, validation, task selection)."""
