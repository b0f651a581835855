"""Tests of tasks, task metadata and connections."""
