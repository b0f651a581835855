"""Tests of the pipetask command line (build, qgraph, run)."""
