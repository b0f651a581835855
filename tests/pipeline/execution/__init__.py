"""Tests of quantum execution: the graph walker, executors and the runner."""
