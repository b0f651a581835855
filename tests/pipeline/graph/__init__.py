"""Tests of quantum-graph building, saving and loading."""
