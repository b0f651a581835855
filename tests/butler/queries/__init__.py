"""Tests of the butler data query language (butler/registry/queries)."""
