"""Exceptions raised by the butler.

Every error derives from `ButlerError`; each message names the thing that is wrong and says how
to fix it, so the CLI can print ``str(error)`` alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "ButlerError",
    "CalibrationLookupError",
    "CollectionTypeError",
    "ConflictingDefinitionError",
    "DataIdError",
    "DatasetNotFoundError",
    "DatastoreError",
    "FastPathUnavailableError",
    "InvalidQueryError",
    "LockHeldError",
    "MissingCollectionError",
    "MissingDatasetTypeError",
    "RepositoryError",
    "RepositoryLockedError",
    "RepositoryReadOnlyError",
    "StorageFullError",
    "dataset_insert_conflict",
    "dataset_type_conflict",
    "did_you_mean",
    "missing_collection",
    "missing_dataset_type",
    "storage_error",
]


class ButlerError(Exception):
    """Base class of every error the butler raises on purpose."""


class RepositoryError(ButlerError):
    """The repository is missing, not a repository, already exists, or has another schema version."""


class RepositoryLockedError(RepositoryError):
    """Another process held the SQLite write lock for longer than the busy timeout."""


class RepositoryReadOnlyError(RepositoryError):
    """A file or directory of the repository (registry database, datastore) cannot be written."""


class StorageFullError(ButlerError):
    """The disk (or the user's quota) holding the repository is full."""


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


class FastPathUnavailableError(Exception):
    """A read-only fast query must go through the SQLAlchemy registry (which reports any error).

    Raised by a database backend's read-only fast path (`butler.registry.backends`) whenever it
    does not handle a repository or query exactly like the registry; never shown to users.
    """


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest of ``candidates`` to a mistyped ``name``.

    Uses `difflib.get_close_matches` (ratio >= 0.75); returns ``""`` when nothing is close. The
    registry's managers and its SQLAlchemy-free read-only path word their "no such name" errors
    with it.
    """
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


# The registry's "not found" and conflict errors, worded once: the SQLAlchemy managers, the
# read-only butler and the SQLite run writer (`butler.registry`) all raise these.
def missing_collection(name: str, existing: Iterable[str]) -> MissingCollectionError:
    """Return the error for an unknown collection ``name``, suggesting the closest of ``existing``."""
    return MissingCollectionError(
        f"collection {name!r} does not exist{did_you_mean(name, existing)}; "
        "see `butler query-collections` for the existing ones"
    )


def missing_dataset_type(name: str, existing: Iterable[str]) -> MissingDatasetTypeError:
    """Return the error for an unregistered dataset type ``name``, suggesting the closest of ``existing``."""
    return MissingDatasetTypeError(
        f"dataset type {name!r} is not registered{did_you_mean(name, existing)}; "
        "register it first (butler register-dataset-type, or pipetask --register-dataset-types)"
    )


def dataset_type_conflict(existing: object, new: object) -> ConflictingDefinitionError:
    """Return the error for registering ``new`` under the name of the different ``existing`` type."""
    name = getattr(new, "name", new)
    return ConflictingDefinitionError(
        f"dataset type {name!r} is already registered as {existing}, not {new}; "
        "use another name or remove the old one"
    )


def dataset_insert_conflict(
    dataset_type: str,
    run: str,
    data_ids: Sequence[tuple[str, object]],
    duplicate_keys: Sequence[str],
    existing_id: object | None,
    exc: object,
) -> ConflictingDefinitionError:
    """Explain a failed insert of datasets of one type into one RUN.

    Parameters
    ----------
    dataset_type, run : `str`
        Names of the dataset type and the RUN.
    data_ids : sequence of ``(key, required)``
        Canonical data ID key (``data_id_key`` column) and printable required values of each
        dataset to insert, in order.
    duplicate_keys : sequence of `str`
        Keys among them that the RUN already holds (a query of the registry).
    existing_id : `uuid.UUID` or `None`
        One of their dataset ids already registered, if any.
    exc : `BaseException` or `None`
        The database's error, quoted when nothing above explains it.

    Returns
    -------
    error : `ConflictingDefinitionError`
    """
    if duplicate_keys:
        first = next(req for key, req in data_ids if key == duplicate_keys[0])
        return ConflictingDefinitionError(
            f"a {dataset_type} dataset with data ID {first} is already in RUN {run!r} "
            f"({len(duplicate_keys)} conflict(s)); a RUN holds one dataset per dataset type and data ID - "
            "use another run or remove the old dataset"
        )
    if existing_id is not None:
        return ConflictingDefinitionError(f"dataset id {existing_id} is already registered")
    keys = [key for key, _ in data_ids]
    if len(set(keys)) < len(keys):
        return ConflictingDefinitionError(
            f"the {dataset_type} datasets to insert into RUN {run!r} repeat a data ID"
        )
    return ConflictingDefinitionError(f"cannot insert {dataset_type} datasets into {run!r}: {exc}")


_FULL_ERRNOS = {28, 122}  # ENOSPC, EDQUOT
_READ_ONLY_ERRNOS = {1, 13, 30}  # EPERM, EACCES, EROFS


def storage_error(exc: BaseException, database: str | None = None) -> ButlerError | None:
    """Return a one-line butler error for a full disk or a read-only path behind ``exc``, if any.

    Looks through ``exc`` and the exceptions it was raised from (``__cause__``/``__context__``)
    for an `OSError` with ``ENOSPC``/``EDQUOT`` (full disk, quota) or ``EROFS``/``EACCES``/``EPERM``
    (read-only), and for SQLite's "database or disk is full", "attempt to write a readonly
    database" and "unable to open database file", and PostgreSQL's ``disk_full`` and
    ``read_only_sql_transaction`` SQLSTATEs.

    Parameters
    ----------
    exc : `BaseException`
        An error raised while writing to a repository.
    database : `str`, optional
        Path of the SQLite registry file, named in the messages of SQLite errors.

    Returns
    -------
    error : `StorageFullError`, `RepositoryReadOnlyError` or `None`
        The message names the path (when known) and the fix; `None` when ``exc`` is something else.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (StorageFullError, RepositoryReadOnlyError)):
            return e
        if isinstance(e, OSError) and e.errno is not None:
            path = e.filename if e.filename is not None else None
            where = f" writing {path}" if path else ""
            if e.errno in _FULL_ERRNOS:
                return StorageFullError(
                    f"the disk is full (or the quota is exhausted){where}: {e.strerror}; free some space "
                    "and rerun (pipetask run: --extend-run --skip-existing finishes the job)"
                )
            if e.errno in _READ_ONLY_ERRNOS:
                what = path or "the repository"
                why = ("is on a read-only file system" if e.errno == 30
                       else "cannot be written (permission denied)")
                return RepositoryReadOnlyError(
                    f"{what} {why}: the repository (or this output directory) is read-only for this "
                    "user; make it writable, or use a repository you can write to"
                )
        text = str(getattr(e, "orig", None) or "") if type(e).__module__.startswith("sqlalchemy") else (
            str(e) if type(e).__module__ in ("sqlite3", "_sqlite3") else "")
        low = text.lower()
        db = f" {database}" if database else ""
        sqlstate = getattr(getattr(e, "orig", None), "sqlstate", None) or getattr(e, "sqlstate", None)
        if sqlstate in ("53100", "53400"):  # PostgreSQL disk_full, configuration_limit_exceeded
            return StorageFullError(
                "the PostgreSQL server's disk is full (or a limit is reached); free space on the "
                "database server and rerun (pipetask run: --extend-run --skip-existing finishes the job)"
            )
        if sqlstate == "25006":  # read_only_sql_transaction
            return RepositoryReadOnlyError(
                "the PostgreSQL registry is read-only for this connection (a hot standby or a "
                "read-only role); write through the primary server or a role with write access"
            )
        if "database or disk is full" in low:
            return StorageFullError(
                f"the disk holding the registry database{db} is full (SQLite: database or disk is full); "
                "free some space and rerun (pipetask run: --extend-run --skip-existing finishes the job)"
            )
        if "readonly database" in low or "read-only database" in low:
            return RepositoryReadOnlyError(
                f"the registry database{db} is read-only (SQLite: attempt to write a readonly database); "
                "make the repository's registry file and its directory writable, or open the "
                "repository read-only"
            )
        e = e.__cause__ or e.__context__
    return None
