"""Copy the files of datasets out of a repository (`retrieve_artifacts`)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import DatastoreError

if TYPE_CHECKING:
    from ..datasets import DatasetRef
    from ._repository import Repository

__all__ = ["RETRIEVE_TRANSFER_MODES", "retrieve_artifacts"]

RETRIEVE_TRANSFER_MODES = ("auto", "copy", "hardlink", "symlink", "relsymlink")
"""How files reach the destination (``auto``: copy)."""


def retrieve_artifacts(
    butler: Repository,
    refs: Iterable[DatasetRef],
    destination: str | os.PathLike[str],
    *,
    transfer: str = "auto",
    preserve_path: bool = True,
    overwrite: bool = False,
) -> list[Path]:
    """Copy (or link) the files of datasets into a directory.

    Parameters
    ----------
    butler : `Repository` (a `Butler`)
    refs : iterable of `DatasetRef`
        Datasets whose files to retrieve (a file shared by several is retrieved once).
    destination : path
        Directory (created if missing).
    transfer : {"auto", "copy", "hardlink", "symlink", "relsymlink"}
    preserve_path : `bool`
        Keep each file's path relative to the repository root (default); otherwise put every
        file directly in ``destination`` under its own name.
    overwrite : `bool`
        Replace files that already exist in ``destination`` (LSST's ``--clobber``).

    Returns
    -------
    paths : `list` of `pathlib.Path`
        The files written, in the order of ``refs``.

    Raises
    ------
    DatastoreError
        If a dataset has no file, a file is missing, two files would land on the same name
        (``preserve_path=False``), or a destination file exists without ``overwrite``. Files
        written before the error are removed again.
    """
    if transfer not in RETRIEVE_TRANSFER_MODES:
        raise DatastoreError(
            f"unknown transfer mode {transfer!r}; use one of {', '.join(RETRIEVE_TRANSFER_MODES)}"
        )
    refs = list(refs)
    dest_root = Path(destination).absolute()
    infos = butler.registry.get_file_records([r.id for r in refs])
    plan: dict[Path, Path] = {}  # destination -> source
    for r in refs:
        info = infos.get(r.id)
        if info is None:
            raise DatastoreError(
                f"dataset {r.dataset_type.name} {r.data_id.required} (run {r.run!r}) has no file in "
                f"{butler.root}; nothing was retrieved"
            )
        src = butler.datastore.abspath(info.path)
        rel = Path(info.path)
        if rel.is_absolute():
            rel = Path(*rel.parts[1:])
        dest = dest_root / (rel if preserve_path else rel.name)
        other = plan.get(dest)
        if other is not None and other != src:
            raise DatastoreError(
                f"{other} and {src} would both be retrieved as {dest}; use --preserve-path"
            )
        plan[dest] = src
    for dest, src in plan.items():
        if not src.exists():
            raise DatastoreError(f"file {src} is missing from {butler.root}; nothing was retrieved")
        if os.path.lexists(dest) and not overwrite:
            raise DatastoreError(
                f"{dest} already exists; pass --clobber (overwrite=True) to replace it, or choose "
                "another destination; nothing was retrieved"
            )
    written: list[Path] = []
    try:
        for dest, src in plan.items():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
            if transfer == "symlink":
                os.symlink(src.resolve(), tmp)
            elif transfer == "relsymlink":
                os.symlink(os.path.relpath(src.resolve(), dest.parent), tmp)
            elif transfer == "hardlink":
                os.link(src.resolve(), tmp)
            else:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
            written.append(dest)
    except BaseException as exc:
        for p in written:
            p.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DatastoreError(f"cannot retrieve into {dest_root}: {exc}") from exc
        raise
    order = {dest: i for i, dest in enumerate(plan)}
    return sorted(written, key=order.__getitem__)
