"""Tests of isr."""
