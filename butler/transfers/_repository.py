"""What the transfer functions need of a repository: its root, registry and datastore.

The transfers sit above the `Butler` class in the layers (`Butler.export`, `Butler.import_`,
`Butler.transfer_from` and `Butler.retrieve_artifacts` call them), so they type their repository
arguments with this protocol instead of importing `Butler`. A `Butler` satisfies it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..datastore.file_datastore import FileDatastore
    from ..registry.registry import Registry

__all__ = ["Repository"]


class Repository(Protocol):
    """A data repository as the transfers use it (`butler.Butler` is one).

    Attributes
    ----------
    root : `pathlib.Path`
        The repository's root directory (absolute).
    registry : `butler.registry.Registry`
        Its registry: dimension records, dataset types, collections, datasets.
    datastore : `butler.datastore.file_datastore.FileDatastore`
        Its file datastore (paths of the dataset files, transfers in and out).
    """

    root: Path
    registry: Registry
    datastore: FileDatastore
