"""Tests of pipeline definitions (YAML, imports, parameters, contracts, subsets)."""
