"""Moving datasets between repositories and out of them.

- `collect` + `write_export`: ``butler export`` (an ``export.yaml`` like daf_butler's, plus the
  files); `RepoContents.from_yaml` + `import_contents`: ``butler import``.
- `transfer_datasets`: ``butler transfer-datasets`` (repository to repository, any backends).
- `retrieve_artifacts`: ``butler retrieve-artifacts``.

`Butler.export`, `Butler.import_`, `Butler.transfer_from` and `Butler.retrieve_artifacts` are
the Python spellings. Only the public `Butler` / `Registry` API is used. Names are imported on
first use, so the ``butler`` CLI, which lists these commands, starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils import lazy_exports

if TYPE_CHECKING:
    from ._export import EXPORT_TRANSFER_MODES, ExportReport, collect, write_export
    from ._import import IMPORT_TRANSFER_MODES, ImportReport, import_contents
    from ._model import EXPORT_FILENAME, EXPORT_FORMAT_VERSION, CollectionEntry, ExportedFile, RepoContents
    from ._retrieve import RETRIEVE_TRANSFER_MODES, retrieve_artifacts
    from ._transfer import transfer_datasets

_LAZY = {
    **dict.fromkeys(["EXPORT_TRANSFER_MODES", "ExportReport", "collect", "write_export"], "._export"),
    **dict.fromkeys(["IMPORT_TRANSFER_MODES", "ImportReport", "import_contents"], "._import"),
    **dict.fromkeys(
        ["EXPORT_FILENAME", "EXPORT_FORMAT_VERSION", "CollectionEntry", "ExportedFile", "RepoContents"],
        "._model",
    ),
    **dict.fromkeys(["RETRIEVE_TRANSFER_MODES", "retrieve_artifacts"], "._retrieve"),
    "transfer_datasets": "._transfer",
}

__all__ = [
    "EXPORT_FILENAME",
    "EXPORT_FORMAT_VERSION",
    "EXPORT_TRANSFER_MODES",
    "IMPORT_TRANSFER_MODES",
    "RETRIEVE_TRANSFER_MODES",
    "CollectionEntry",
    "ExportReport",
    "ExportedFile",
    "ImportReport",
    "RepoContents",
    "collect",
    "import_contents",
    "retrieve_artifacts",
    "transfer_datasets",
    "write_export",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
