"""ccdflow."""
