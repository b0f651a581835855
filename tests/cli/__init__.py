"""Tests of what the command lines share."""
