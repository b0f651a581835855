"""Exceptions raised by the butler.

Every error derives from `ButlerError`; each message names the thing that is wrong and says how
to fix it, so the CLI can print ``str(error)`` alone.
"""

from __future__ import annotations

__all__ = [
    "ButlerError",
    "CalibrationLookupError",
    "CollectionTypeError",
    "ConflictingDefinitionError",
    "DataIdError",
    "DatasetNotFoundError",
    "DatastoreError",
    "InvalidQueryError",
    "LockHeldError",
    "MissingCollectionError",
    "MissingDatasetTypeError",
    "RepositoryError",
    "RepositoryLockedError",
]


class ButlerError(Exception):
    """Base class of every error the butler raises on purpose."""


class RepositoryError(ButlerError):
    """The repository is missing, not a repository, already exists, or has another schema version."""


class RepositoryLockedError(RepositoryError):
    """Another process held the SQLite write lock for longer than the busy timeout."""


class MissingDatasetTypeError(ButlerError, LookupError):
    """A dataset type name is not registered in the repository."""


class MissingCollectionError(ButlerError, LookupError):
    """A collection name is not registered in the repository."""


class CollectionTypeError(ButlerError, TypeError):
    """A collection has the wrong type for the operation (e.g. ``put`` into a CHAINED collection)."""


class DatasetNotFoundError(ButlerError, LookupError):
    """No dataset matched the dataset type and data ID in the searched collections."""


class ConflictingDefinitionError(ButlerError):
    """A definition clashes with an existing one (dataset type, dataset in a RUN, calibration validity)."""


class DataIdError(ButlerError, ValueError):
    """A data ID lacks a required dimension, names an unknown dimension, or has an unknown value."""


class InvalidQueryError(ButlerError, ValueError):
    """A query names an unknown dimension or field, or its expression is malformed."""


class DatastoreError(ButlerError):
    """A dataset's file is missing, unreadable or corrupted (the message names dataset and path)."""


class CalibrationLookupError(ButlerError, LookupError):
    """A calibration lookup matched more than one validity range (or had no time to look up)."""


class LockHeldError(ButlerError):
    """A named lock (`Database.exclusive_lock`) is held by another process.

    Parameters
    ----------
    holder : `str`
        Who holds it, for a message (``"the driver host:pid (started ...)"`` or
        ``"another driver"``).
    """

    def __init__(self, holder: str) -> None:
        super().__init__(f"the lock is held by {holder}")
        self.holder = holder
