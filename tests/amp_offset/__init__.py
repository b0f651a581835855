"""Tests of amp_offset."""
