"""Tests that span every task of pipeline.tasks."""
