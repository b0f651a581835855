"""Files under the repository root: path templates, atomic writes, checksums, ingest transfers.

The datastore never touches the registry: the `Butler` stores the `StoredFileInfo` it returns in
the registry's ``file_datastore_records`` table, and the `QuantumBackedButler` uses the same
class with records that travel in the quantum graph.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from .._errors import DatastoreError
from .._yaml import load_yaml_file
from ..storage_classes import get_formatter, get_storage_class
from .records import StoredFileInfo

__all__ = ["DEFAULT_TEMPLATES", "FileDatastore", "PathTemplate", "TRANSFER_MODES"]

DEFAULT_TEMPLATES: dict[str, str] = {
    # Used when the dataset type has an exposure dimension (LSST's raw-style layout).
    "exposure_default": (
        "{run}/{datasetType}/{day_obs:?}/{exposure.obs_id}/"
        "{datasetType}_{instrument}_{exposure.obs_id}_{detector.full_name:?}_{run}"
    ),
    # Everything else: optional fields render when the (expanded) data ID has them.
    "default": (
        "{run}/{datasetType}/{band:?}/{physical_filter:?}/"
        "{datasetType}_{instrument:?}_{band:?}_{physical_filter:?}_{day_obs:?}_{detector.full_name:?}_{run}"
    ),
}

TRANSFER_MODES = ("auto", "copy", "symlink", "hardlink", "move", "direct")

_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_FIELD = re.compile(r"\{(" + _NAME + r"(?:\|" + _NAME + r")*)(:\?)?\}")
_BRACE = re.compile(r"\{[^{}]*\}?|\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,+@=-]")
_SAFE = re.compile(r"[A-Za-z0-9_.,+@=-]*\Z")
#: Names of the temporary files of `FileDatastore.prepare_write` and ``transfer(mode="copy")``.
_TEMP_FILE = re.compile(r"\..+\.[0-9a-f]{12}\.tmp(\.[A-Za-z0-9.]+)?\Z")


#: How `render` finds a field alternative's value (`_alternatives`).
_RUN, _DATASET_TYPE, _RECORD, _DIMENSION = range(4)
#: A parsed field alternative: (name, kind, record element, record field).
_Alternative = tuple[str, int, str, str]


def _alternatives(name: str) -> tuple[_Alternative, ...]:
    """Split a field name (``a|b.c``) into ``(alternative, kind, record element, record field)``."""
    out: list[_Alternative] = []
    for alternative in name.split("|"):
        if alternative == "run":
            out.append((alternative, _RUN, "", ""))
        elif alternative == "datasetType":
            out.append((alternative, _DATASET_TYPE, "", ""))
        elif "." in alternative:
            head, _, field = alternative.partition(".")
            out.append((alternative, _RECORD, head, field))
        else:
            out.append((alternative, _DIMENSION, "", ""))
    return tuple(out)


class PathTemplate:
    """An LSST-style file template: ``{run}/{datasetType}/{day_obs}/{exposure.obs_id}/...``.

    Fields are ``run``, ``datasetType``, a dimension name (its data ID value) or
    ``element.field`` (a record attribute of the expanded data ID). ``{a|b|c}`` lists
    alternatives, as in daf_butler: the first one with a value is used
    (``{exposure.obs_id|visit}``). ``{x:?}`` (or ``{a|b:?}``) is optional: when the data ID has no
    value for it, it is dropped together with one neighbouring ``_``. A field without ``:?`` must
    have a value. ``/`` in values is kept in directory parts for ``run`` and becomes ``_``
    elsewhere.

    Parameters
    ----------
    template : `str`
        The template text.

    Raises
    ------
    ValueError
        If the template is empty, has no ``{run}`` field, or has a ``{...}`` that is not a field
        of this syntax (e.g. a format spec ``{visit:08d}`` or an unbalanced brace): such text would
        otherwise be written literally into every path.
    """

    def __init__(self, template: str) -> None:
        if not template or not any("run" in m.group(1).split("|") for m in _FIELD.finditer(template)):
            raise ValueError(f"file template {template!r} must contain {{run}} so runs do not collide")
        for m in _BRACE.finditer(template):
            if not _FIELD.fullmatch(m.group()):
                raise ValueError(
                    f"file template {template!r}: {m.group()!r} is not a field; write {{name}}, "
                    "{element.field}, alternatives {a|b} (the first with a value) and :? for an "
                    "optional field, e.g. {physical_filter|band:?}"
                )
        self.template = template
        self.segments = template.strip("/").split("/")
        # Parsed once: per segment, its (literal, field name, alternatives, optional) pieces and
        # the tail; each alternative says how its value is found (`_alternatives`), so `render`
        # splits and compares no names per dataset.
        self._parsed: list[tuple[list[tuple[str, str, tuple[_Alternative, ...], bool]], str]] = []
        for seg in self.segments:
            pieces = []
            pos = 0
            for m in _FIELD.finditer(seg):
                pieces.append((seg[pos : m.start()], m.group(1), _alternatives(m.group(1)), bool(m.group(2))))
                pos = m.end()
            self._parsed.append((pieces, seg[pos:]))

    def fields(self) -> set[str]:
        """Heads (dimension names, ``run``, ``datasetType``) of every field."""
        return {name.split(".")[0] for m in _FIELD.finditer(self.template) for name in m.group(1).split("|")}

    def render(self, ref: Any) -> str:
        """Render the template for a dataset (without the file extension).

        Raises
        ------
        DatastoreError
            If a mandatory field has no value in the (expanded) data ID.
        """
        out_segments = []
        last = len(self._parsed) - 1
        data_id = ref.data_id
        records = None
        for i, (fields, tail) in enumerate(self._parsed):
            pieces: list[str] = []
            drop_next_sep = False
            for literal, name, alternatives, optional in fields:
                if drop_next_sep and literal.startswith("_"):
                    literal = literal[1:]
                drop_next_sep = False
                value = None
                for alternative, kind, head, field in alternatives:
                    if kind == _RUN:
                        value = ref.run
                    elif kind == _DATASET_TYPE:
                        value = ref.dataset_type.name
                    elif kind == _RECORD:
                        if records is None:
                            records = data_id.records
                        rec = records.get(head)
                        value = None if rec is None else rec.get(field)
                    else:
                        value = data_id.get(alternative)
                    if value is not None:
                        name = alternative
                        break
                if value is None:
                    if not optional:
                        raise DatastoreError(
                            f"file template {self.template!r} needs {name!r}, which the data ID "
                            f"{ref.data_id.to_simple()} of {ref.dataset_type.name} does not provide; "
                            f"make it optional ({{{name}:?}}) "
                            "or configure another template for this dataset type in butler.yaml"
                        )
                    if literal.endswith("_"):
                        literal = literal[:-1]
                    else:
                        drop_next_sep = True
                    pieces.append(literal)
                    continue
                text = str(value)
                if name == "run" and i != last:
                    text = "/".join(_UNSAFE.sub("_", p) for p in text.split("/") if p not in ("", ".", ".."))
                elif not _SAFE.match(text):
                    text = _UNSAFE.sub("_", text.replace("/", "_"))
                pieces.append(literal + text)
            if drop_next_sep and tail.startswith("_"):
                tail = tail[1:]
            rendered = ("".join(pieces) + tail).strip("_")
            if rendered:
                out_segments.append(rendered)
        return "/".join(out_segments)


def _config_from_root(root: Path) -> dict[str, Any]:
    path = root / "butler.yaml"
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        return {}
    return _read_datastore_config(str(path), mtime)


@lru_cache(maxsize=16)
def _read_datastore_config(path: str, mtime: int) -> dict[str, Any]:
    """Return the ``datastore`` section of a ``butler.yaml`` (cached per file version)."""
    return (load_yaml_file(path) or {}).get("datastore") or {}


def _normalized(rel: str) -> str:
    """``PurePosixPath(rel).as_posix()`` of a relative path, without building the path object.

    A rendered template rarely needs the normalisation (no empty or ``.`` parts, no trailing
    ``/``); when it does, `PurePosixPath` does it.
    """
    if "//" in rel or rel.startswith(("./", "/")) or rel.endswith(("/", "/.")) or "/./" in rel or rel == ".":
        return PurePosixPath(rel).as_posix()
    return rel


def _checksum(path: Path) -> str:
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FileDatastore:
    """Datasets as files under a root directory.

    Parameters
    ----------
    root : `str` or `pathlib.Path`
        The repository root.
    config : mapping, optional
        The ``datastore`` section of ``butler.yaml``: ``checksum`` (bool, default false) and
        ``templates`` (``default``, ``exposure_default`` and per dataset type or storage class name).
        Default: read from ``ROOT/butler.yaml`` when it exists (so a worker that only knows the
        root lays files out exactly like the butler).

    Attributes
    ----------
    bridge : callable or `None`
        Set by `Butler`: ``ids -> {id: StoredFileInfo}`` reading the registry's datastore records.
    """

    def __init__(self, root: str | os.PathLike, config: Mapping[str, Any] | None = None) -> None:
        self.root = Path(root).absolute()
        self._root_str = str(self.root)
        if config is None:
            config = _config_from_root(self.root)
        config = dict(config or {})
        self.bridge: Any = None
        self.checksum = bool(config.get("checksum", False))
        templates = dict(DEFAULT_TEMPLATES)
        templates.update(config.get("templates") or {})
        self.templates = {k: PathTemplate(v) for k, v in templates.items()}
        self._made_dirs: set[str] = set()

    # ------------------------------------------------------------------ paths
    def template_for(self, dataset_type: Any) -> PathTemplate:
        """Return the template of a dataset type (by name, then storage class, then the defaults)."""
        t = self.templates.get(dataset_type.name) or self.templates.get(dataset_type.storage_class)
        if t is not None:
            return t
        return self.templates["exposure_default" if "exposure" in dataset_type.dimensions else "default"]

    def path_for(self, ref: Any, formatter: str | None = None) -> Path:
        """Path, relative to the root, where a dataset is written (template + formatter extension).

        Parameters
        ----------
        ref : `DatasetRef`
            With an expanded data ID when the template uses record fields.
        formatter : `str`, optional
            Dotted formatter path (default: the storage class's).

        Raises
        ------
        DatastoreError
            If the template needs a value the data ID lacks.
        """
        fmt = get_formatter(formatter or get_storage_class(ref.dataset_type.storage_class).formatter)
        return Path(self.template_for(ref.dataset_type).render(ref) + fmt.extension)

    def abspath(self, path: str | os.PathLike) -> Path:
        """Absolute path of a stored path (relative to the root unless already absolute)."""
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def _mkdir(self, d: str | Path) -> None:
        key = str(d)
        if key not in self._made_dirs:
            os.makedirs(key, exist_ok=True)
            self._made_dirs.add(key)

    # ------------------------------------------------------------------ writing
    def prepare_write(self, obj: Any, ref: Any) -> tuple[Path, Path, StoredFileInfo]:
        """Write a dataset to a temporary file beside its final path.

        Returns
        -------
        tmp, final : `pathlib.Path`
            Absolute temporary and final paths (`commit_write` renames one to the other).
        info : `StoredFileInfo`

        Raises
        ------
        DatastoreError
            If the formatter fails (nothing is left behind).
        """
        sc = get_storage_class(ref.dataset_type.storage_class)
        fmt = get_formatter(sc.formatter)
        rel = _normalized(self.template_for(ref.dataset_type).render(ref) + fmt.extension)
        parent, _, name = rel.rpartition("/")
        # Strings, not Path arithmetic: the same paths (`_normalized` is PurePosixPath's form),
        # ~30 us less per dataset, three datasets per quantum.
        directory = f"{self._root_str}/{parent}" if parent else self._root_str
        self._mkdir(directory)
        dot = name.rfind(".")
        stem = name[:dot] if 0 < dot < len(name) - 1 else name  # Path(name).stem
        tmp = Path(f"{directory}/.{stem}.{os.urandom(6).hex()}.tmp{fmt.extension}")
        final = Path(f"{directory}/{name}")
        try:
            try:
                fmt.write(obj, tmp, ref)
            except FileNotFoundError:
                # The directory cache outlived the directory (removed by a prune elsewhere).
                if os.path.isdir(directory):
                    raise
                self._made_dirs.discard(directory)
                self._mkdir(directory)
                fmt.write(obj, tmp, ref)
            size = os.stat(tmp).st_size
            checksum = _checksum(tmp) if self.checksum else None
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, DatastoreError):
                raise
            raise DatastoreError(
                f"cannot write {ref.dataset_type.name} {ref.data_id.required} with {sc.formatter}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return tmp, final, StoredFileInfo(rel, sc.formatter, sc.name, checksum, size)

    @contextlib.contextmanager
    def staged_write(self, obj: Any, ref: Any) -> Iterator[tuple[StoredFileInfo, Callable[[], None]]]:
        """Write a dataset to a temporary file; the block registers it and moves it into place.

        Yields the record and a ``commit()`` that moves the file to its final path (call it last
        in the registering transaction). If the block raises, the temporary file -- or the moved
        file, when the transaction failed after ``commit()`` -- is removed: a failed put leaves
        no file behind. `butler.Butler.put` and the SQLite run writer's ``put`` use it.

        Raises
        ------
        DatastoreError
            If writing fails or the final path exists (from ``commit()``).
        """
        tmp, final, info = self.prepare_write(obj, ref)
        moved = False

        def commit() -> None:
            nonlocal moved
            self.commit_write(tmp, final)
            moved = True

        try:
            yield info, commit
            if not moved:
                raise RuntimeError("staged_write: the block ended without commit()")
        except BaseException:
            (final if moved else tmp).unlink(missing_ok=True)
            raise

    def commit_write(self, tmp: Path, final: Path, *, clobber: bool = False) -> None:
        """Move a prepared file into place (atomic rename).

        Raises
        ------
        DatastoreError
            If the final path exists and ``clobber`` is false (another dataset would be overwritten).
        """
        if not clobber and os.path.lexists(final):
            tmp.unlink(missing_ok=True)
            raise DatastoreError(
                f"refusing to overwrite the existing file {final}: it belongs to another dataset or "
                "is left over "
                "from an earlier failure; remove it, or make the file template of this dataset type unique"
            )
        os.replace(tmp, final)

    def write(self, obj: Any, ref: Any, *, clobber: bool = False) -> StoredFileInfo:
        """Write a dataset atomically (temporary file + rename) and return its record.

        Raises
        ------
        DatastoreError
            If writing fails or the file exists already (unless ``clobber``).
        """
        tmp, final, info = self.prepare_write(obj, ref)
        self.commit_write(tmp, final, clobber=clobber)
        return info

    # ------------------------------------------------------------------ reading
    def read(self, ref: Any, info: StoredFileInfo, parameters: Mapping[str, Any] | None = None) -> Any:
        """Read a dataset through the formatter recorded for it.

        Raises
        ------
        DatastoreError
            If the file is missing, has the wrong size or checksum, or the formatter fails;
            the message names the dataset and the path.
        """
        rel = info.path
        path_str = rel if os.path.isabs(rel) else os.path.join(self._root_str, rel)

        def what() -> str:
            return f"dataset {ref.dataset_type.name} {ref.data_id.required} (run {ref.run!r}, id {ref.id})"

        try:
            size = os.stat(path_str).st_size
        except FileNotFoundError:
            raise DatastoreError(
                f"{what()} has no file at {path_str}: it was deleted or moved behind the registry's back; "
                "restore the file or remove the dataset (butler prune-datasets)"
            ) from None
        if info.file_size >= 0 and size != info.file_size:
            raise DatastoreError(
                f"{what()}: file {path_str} is corrupted (size {size} bytes, {info.file_size} when written); "
                "restore it or remove the dataset"
            )
        path = Path(path_str)
        if info.checksum and _checksum(path) != info.checksum:
            raise DatastoreError(
                f"{what()}: file {path} is corrupted (checksum mismatch); restore it or remove the dataset"
            )
        fmt = get_formatter(info.formatter)
        try:
            return fmt.read(path, ref, parameters=parameters, repo_root=self.root)
        except DatastoreError:
            raise
        except ValueError as exc:
            if parameters and "parameter" in str(exc):
                raise
            raise DatastoreError(
                f"cannot read {what()} from {path} (corrupted?): {type(exc).__name__}: {exc}"
            ) from exc
        except Exception as exc:
            raise DatastoreError(
                f"cannot read {what()} from {path} (corrupted?): {type(exc).__name__}: {exc}"
            ) from exc

    def get_stored_infos(self, refs: list[Any]) -> dict[uuid.UUID, StoredFileInfo]:
        """Datastore records of registered datasets (needs the `bridge` a `Butler` sets).

        Raises
        ------
        DatastoreError
            If the datastore is not attached to a registry.
        """
        if self.bridge is None:
            raise DatastoreError("this datastore is not attached to a registry; use Butler(repo).datastore")
        return self.bridge([r.id for r in refs])

    def exists(self, info: StoredFileInfo) -> bool:
        """Whether the file of a record exists.

        Raises
        ------
        OSError
            If the file cannot be checked (e.g. no permission on its directory); a missing file
            or directory is `False`, as `pathlib.Path.exists` has it.
        """
        rel = info.path
        try:
            os.stat(rel if os.path.isabs(rel) else os.path.join(self._root_str, rel))
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            if exc.errno in (errno.EBADF, errno.ELOOP):  # what pathlib ignores besides those
                return False
            raise
        except ValueError:  # an embedded NUL byte
            return False
        return True

    # ------------------------------------------------------------------ ingest and removal
    def transfer(
        self, src: str | os.PathLike, ref: Any, transfer: str, formatter: str | None = None
    ) -> tuple[str, Path | None]:
        """Bring an external file into the datastore.

        Parameters
        ----------
        src : path
            The file to ingest.
        ref : `DatasetRef`
            A dataset in the file (its template gives the destination).
        transfer : {"auto", "copy", "symlink", "hardlink", "move", "direct"}
            ``auto`` keeps files already under the root in place and copies others;
            ``direct`` records the file where it is.
        formatter : `str`, optional
            Formatter dotted path (for the extension; default the storage class's).

        Returns
        -------
        path : `str`
            Stored path (relative to the root, or absolute for ``direct`` outside it).
        created : `pathlib.Path` or `None`
            The file created in the datastore (to undo on failure), or `None`.

        Raises
        ------
        DatastoreError
            If the source is missing, the mode unknown, or the destination exists.
        """
        if transfer not in TRANSFER_MODES:
            raise DatastoreError(
                f"unknown transfer mode {transfer!r}; use one of {', '.join(TRANSFER_MODES)}"
            )
        src_path = Path(src).absolute()
        if not src_path.is_file():
            raise DatastoreError(f"cannot ingest {src}: no such file")
        try:
            inside = src_path.resolve().relative_to(self.root.resolve())
        except ValueError:
            inside = None
        if transfer == "direct" or (transfer == "auto" and inside is not None):
            return (inside.as_posix() if inside is not None else str(src_path)), None
        if transfer == "auto":
            transfer = "copy"
        ext = (
            "".join(src_path.suffixes[-2:]) if src_path.suffix in (".gz", ".fz", ".bz2") else src_path.suffix
        )
        rel = Path(self.template_for(ref.dataset_type).render(ref) + ext)
        dest = self.root / rel
        self._mkdir(dest.parent)
        if os.path.lexists(dest):
            raise DatastoreError(f"cannot ingest {src}: the destination {dest} already exists")
        try:
            if transfer == "copy":
                tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp"
                shutil.copyfile(src_path, tmp)
                os.replace(tmp, dest)
            elif transfer == "symlink":
                os.symlink(src_path.resolve(), dest)
            elif transfer == "hardlink":
                os.link(src_path, dest)
            elif transfer == "move":
                shutil.move(src_path, dest)
        except OSError as exc:
            raise DatastoreError(f"cannot {transfer} {src} to {dest}: {exc}") from exc
        return rel.as_posix(), dest

    def file_info_for(self, path: str, dataset_type: Any, formatter: str | None = None) -> StoredFileInfo:
        """Return a record for an ingested file (size and, if enabled, checksum computed now)."""
        sc = get_storage_class(dataset_type.storage_class)
        p = self.abspath(path)
        return StoredFileInfo(
            path,
            formatter or sc.formatter,
            sc.name,
            _checksum(p) if self.checksum else None,
            p.stat().st_size,
        )

    def remove_stale_temporaries(self, run: str, *, other_runs: Iterable[str] = ()) -> list[Path]:
        """Delete the temporary files an interrupted writer left in a RUN's directory.

        Every write goes through a temporary file beside the final path (``.NAME.<12 hex>.tmp[.ext]``,
        `prepare_write`), renamed into place when complete; a writer killed in between (``kill -9``,
        a lost worker, a full disk) leaves it behind. Such a file is never registered.

        The caller must hold the writer lock of ``run`` (`butler.registry.database.Database.exclusive_lock`,
        taken by ``pipetask run``): a temporary file of a writer still running would be removed too.

        Parameters
        ----------
        run : `str`
            RUN collection; its directory ``ROOT/<run>`` is searched (the default file templates
            start with ``{run}``).
        other_runs : iterable of `str`
            Other RUN collections, whose directories may lie inside this one (``a`` and ``a/b``);
            they are not searched.

        Returns
        -------
        removed : `list` [`pathlib.Path`]
            Absolute paths of the files deleted.
        """
        top = self.root / run
        if not top.is_dir():
            return []
        skip = {os.path.normpath(self.root / r) for r in other_runs if r != run}
        removed: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(dirpath, d)) not in skip]
            for name in filenames:
                if _TEMP_FILE.match(name):
                    path = Path(dirpath) / name
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        continue
                    removed.append(path)
        return removed

    def remove_files(self, paths: list[str]) -> int:
        """Delete stored files inside the root (absolute paths outside it are left alone).

        Returns
        -------
        n : `int`
            Number of files deleted. Empty directories left behind are removed.
        """
        n = 0
        dirs: set[Path] = set()
        for p in paths:
            if Path(p).is_absolute():
                continue
            ap = self.root / p
            try:
                ap.unlink()
                n += 1
                dirs.add(ap.parent)
            except FileNotFoundError:
                pass
        self._made_dirs.clear()
        for d in sorted(dirs, key=lambda x: len(x.parts), reverse=True):
            while d != self.root and d.is_relative_to(self.root):
                try:
                    d.rmdir()
                except OSError:
                    break
                d = d.parent
        return n
