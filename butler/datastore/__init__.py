"""File datastore, path templates and generic formatters."""

from __future__ import annotations

from .file_datastore import DEFAULT_TEMPLATES, TRANSFER_MODES, FileDatastore, PathTemplate
from .records import StoredFileInfo

__all__ = ["DEFAULT_TEMPLATES", "FileDatastore", "PathTemplate", "StoredFileInfo", "TRANSFER_MODES"]
