"""Tests of the instruments package."""
