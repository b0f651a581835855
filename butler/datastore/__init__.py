"""File datastore, path templates and generic formatters.

The names are imported from their submodules on first use (PEP 562): importing
`butler.datastore.records` (`StoredFileInfo`, which the SQLAlchemy-free read-only registry
paths return) does not import the file datastore and its hashing and path machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils import lazy_exports

if TYPE_CHECKING:
    from .file_datastore import DEFAULT_TEMPLATES, TRANSFER_MODES, FileDatastore, PathTemplate
    from .records import StoredFileInfo

_LAZY = {
    "DEFAULT_TEMPLATES": ".file_datastore",
    "FileDatastore": ".file_datastore",
    "PathTemplate": ".file_datastore",
    "StoredFileInfo": ".records",
    "TRANSFER_MODES": ".file_datastore",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = ["DEFAULT_TEMPLATES", "FileDatastore", "PathTemplate", "StoredFileInfo", "TRANSFER_MODES"]
