"""Tests of configs and config overrides."""
