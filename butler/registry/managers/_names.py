"""Helpers for the managers' error messages (`did_you_mean` lives in `butler._errors`, SQLAlchemy-free)."""

from __future__ import annotations

from ..._errors import did_you_mean

__all__ = ["did_you_mean"]
