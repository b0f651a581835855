"""Tests of the image package."""
