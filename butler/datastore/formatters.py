"""Generic formatters: how datasets of the pure-Python storage classes are written and read.

Every formatter subclasses `Formatter` (``extension``, ``read(path, ref, parameters=None,
repo_root=None)``, ``write(obj, path, ref)``). ``write`` gets a temporary path that already
carries the final extension; the datastore renames it into place. Heavy libraries (numpy,
astropy, matplotlib) are imported inside the methods. `NumpyFormatter` reads plain ``.npy``
files with its own header parser: ``bench/npy_read_bench.py`` shows it reads a 0.5 MB array
in about half the time of `numpy.load` (which parses the header with `ast.literal_eval`).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..formatter import Formatter

if TYPE_CHECKING:
    from ..datasets import DatasetRef

__all__ = [
    "AstropyFitsTableFormatter",
    "AstropyTableFormatter",
    "Formatter",
    "JsonFormatter",
    "NumpyFormatter",
    "PngFormatter",
    "YamlFormatter",
    "to_builtin",
    "write_file",
]


def to_builtin(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples, paths, UUIDs and mappings to plain Python for YAML/JSON.

    Plain values, `dict` (its keys kept when ``str``, ``int``, ``float`` or ``bool``, else made
    ``str``), `list` and `tuple` (made lists) are converted recursively; numpy values through
    ``tolist()``, objects with ``to_dict()`` through it, anything else through ``str``. The exact
    built-in types are tested first (the per-quantum metadata is nested dicts of plain values);
    the result is the same as through the general `isinstance` tests below them.
    """
    t = type(obj)
    if t is str or t is float or t is int or t is bool or obj is None:
        return obj
    if t is dict:
        return {
            k if type(k) is str else str(k) if not isinstance(k, (int, float, bool)) else k: to_builtin(v)
            for k, v in obj.items()
        }
    if t is list or t is tuple:
        return [to_builtin(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k) if not isinstance(k, (int, float, bool)) else k: to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_builtin(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return to_builtin(obj.tolist())
    if hasattr(obj, "to_dict"):
        return to_builtin(obj.to_dict())
    return str(obj)


_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=]?[a-zA-Z]\d*)', 'fortran_order': (True|False), 'shape': \(([\d, ]*)\), \}"
)
_NPY_MAGIC_1_0 = b"\x93NUMPY\x01\x00"
#: Bytes read first: the magic and the header of every array numpy writes with up to ~10
#: dimensions (magic + header length + header padded to a multiple of 64 bytes).
_NPY_FIRST_READ = 128


@functools.lru_cache(maxsize=64)
def _npy_dtype(descr: bytes) -> Any:
    """Return the `numpy.dtype` of a header's ``descr`` (``b"<f8"``), cached."""
    import numpy as np

    return np.dtype(descr.decode())


def _fast_npy_read(path: Path) -> Any:
    """Read a version 1.0 ``.npy`` of a plain dtype without ``ast.literal_eval`` (else `None`).

    The header is read with one ``read`` and the data straight into the new array with one
    ``preadv`` at its offset: four system calls in all, where `numpy.fromfile` on a Python file
    object makes about a dozen (``bench/npy_read_bench.py``). The result equals
    ``numpy.load(path)`` (``tests/butler/test_core.py`` checks it for many dtypes and layouts).

    Raises
    ------
    ValueError
        If the file holds fewer values than its header declares.
    """
    import numpy as np

    if not hasattr(os, "preadv"):  # not Linux or BSD: numpy reads it
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.read(fd, _NPY_FIRST_READ)
        if len(head) < 10 or head[:8] != _NPY_MAGIC_1_0:
            return None
        start = 10 + int.from_bytes(head[8:10], "little")
        if start > len(head):
            head += os.read(fd, start - len(head))
        m = _NPY_HEADER.match(head, 10, start)
        if m is None:
            return None
        dtype = _npy_dtype(m.group(1))
        if dtype.hasobject or dtype.itemsize == 0:
            return None
        shape = tuple(int(x) for x in m.group(3).split(b",") if x.strip())
        count = 1
        for n in shape:
            count *= n
        data = np.empty(count, dtype=dtype)
        raw = memoryview(data.view(np.uint8).data)
        got = 0
        while got < len(raw):
            n = os.preadv(fd, [raw[got:]], start + got)
            if n == 0:
                break
            got += n
    finally:
        os.close(fd)
    if got != len(raw):
        raise ValueError(f"{path} is truncated: {got // dtype.itemsize} of {count} values")
    return data.reshape(shape, order="F" if m.group(2) == b"True" else "C")


class NumpyFormatter(Formatter):
    """numpy arrays as ``.npy``; read parameter ``slices`` (slice or tuple of slices) reads a cut-out."""

    extension = ".npy"
    supported_parameters = frozenset({"slices"})

    def read(
        self,
        path: Path,
        ref: DatasetRef | None,
        parameters: Mapping[str, Any] | None = None,
        repo_root: Path | None = None,
    ) -> Any:
        """Read the dataset at ``path`` (see `Formatter.read`)."""
        import numpy as np

        self.check_parameters(parameters)
        if parameters and parameters.get("slices") is not None:
            return np.array(np.load(path, mmap_mode="r", allow_pickle=False)[parameters["slices"]])
        arr = _fast_npy_read(path)
        return arr if arr is not None else np.load(path, allow_pickle=False)

    def write(self, obj: Any, path: Path, ref: DatasetRef | None) -> None:
        """Write ``obj`` to ``path`` (see `Formatter.write`); the bytes are those of `numpy.save`."""
        import numpy as np

        arr = np.asarray(obj)
        header = None
        if arr.flags.c_contiguous and not arr.dtype.hasobject and arr.dtype.fields is None:
            header = _npy_header(arr.dtype, arr.shape)
        with open(path, "wb") as f:
            if header is not None:
                # Same bytes as np.save, with the header built once per (dtype, shape).
                f.write(header)
                f.write(arr.data.cast("B") if arr.ndim and arr.size else arr.tobytes())
            else:
                np.save(f, arr, allow_pickle=False)


@functools.lru_cache(maxsize=256)
def _npy_header(dtype: Any, shape: tuple[int, ...]) -> bytes | None:
    """Return the ``.npy`` header `numpy.save` writes for a C-ordered array (`None`: let numpy do it)."""
    import io

    import numpy as np

    header = np.lib.format.header_data_from_array_1_0(np.empty((0,), dtype=dtype))
    header["shape"] = tuple(shape)
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except ValueError:  # header too long for format 1.0
        return None
    return buf.getvalue()


class YamlFormatter(Formatter):
    """Dicts/lists of plain values as YAML."""

    extension = ".yaml"

    def read(
        self,
        path: Path,
        ref: DatasetRef | None,
        parameters: Mapping[str, Any] | None = None,
        repo_root: Path | None = None,
    ) -> Any:
        """Read the dataset at ``path`` (see `Formatter.read`)."""
        import yaml

        self.check_parameters(parameters)
        with open(path) as f:
            return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))

    def write(self, obj: Any, path: Path, ref: DatasetRef | None) -> None:
        """Write ``obj`` to ``path`` (see `Formatter.write`)."""
        import yaml

        with open(path, "w") as f:
            yaml.dump(
                to_builtin(obj), f, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False
            )


class JsonFormatter(Formatter):
    """Dicts/lists of plain values as JSON."""

    extension = ".json"

    def read(
        self,
        path: Path,
        ref: DatasetRef | None,
        parameters: Mapping[str, Any] | None = None,
        repo_root: Path | None = None,
    ) -> Any:
        """Read the dataset at ``path`` (see `Formatter.read`)."""
        self.check_parameters(parameters)
        with open(path) as f:
            return json.load(f)

    def write(self, obj: Any, path: Path, ref: DatasetRef | None) -> None:
        """Write ``obj`` to ``path`` (see `Formatter.write`)."""
        # json.dumps, not json.dump: only the one-shot form uses the C encoder (~5x faster). The
        # text is ASCII (ensure_ascii) and goes out in one os.write, without a text-file object
        # (the per-quantum metadata and log are written so, twice per quantum).
        write_file(path, json.dumps(to_builtin(obj)).encode("ascii"))


def write_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Create (or truncate) ``path`` and write ``data`` to it with one ``write`` call.

    Parameters
    ----------
    path : path-like
        The file (a formatter's temporary path).
    data : `bytes`
        Its whole content.

    Raises
    ------
    OSError
        If the file cannot be created or written (e.g. ``ENOSPC``); a short write is retried
        until everything is written.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


class AstropyTableFormatter(Formatter):
    """astropy Tables as ECSV; read parameter ``columns`` selects columns."""

    extension = ".ecsv"
    supported_parameters = frozenset({"columns"})

    def read(
        self,
        path: Path,
        ref: DatasetRef | None,
        parameters: Mapping[str, Any] | None = None,
        repo_root: Path | None = None,
    ) -> Any:
        """Read the dataset at ``path`` (see `Formatter.read`)."""
        from astropy.table import Table

        self.check_parameters(parameters)
        t = Table.read(path, format="ascii.ecsv")
        if parameters and parameters.get("columns") is not None:
            t = t[list(parameters["columns"])]
        return t

    def write(self, obj: Any, path: Path, ref: DatasetRef | None) -> None:
        """Write ``obj`` to ``path`` (see `Formatter.write`)."""
        obj.write(path, format="ascii.ecsv", overwrite=True)


class AstropyFitsTableFormatter(Formatter):
    """astropy Tables as a FITS binary table; read parameter ``columns`` selects columns."""

    extension = ".fits"
    supported_parameters = frozenset({"columns"})

    def read(
        self,
        path: Path,
        ref: DatasetRef | None,
        parameters: Mapping[str, Any] | None = None,
        repo_root: Path | None = None,
    ) -> Any:
        """Read the dataset at ``path`` (see `Formatter.read`)."""
        from astropy.table import Table

        self.check_parameters(parameters)
        t = Table.read(path, format="fits")
        if parameters and parameters.get("columns") is not None:
            t = t[list(parameters["columns"])]
        return t

    def write(self, obj: Any, path: Path, ref: DatasetRef | None) -> None:
        """Write ``obj`` to ``path`` (see `Formatter.write`)."""
        obj.write(path, format="fits", overwrite=True)


class PngFormatter(Formatter):
    """matplotlib Figures (or PNG bytes) written as PNG; read back as the PNG bytes."""

    extension = ".png"

    def read(
        self,
        path: Path,
        ref: DatasetRef | None,
        parameters: Mapping[str, Any] | None = None,
        repo_root: Path | None = None,
    ) -> Any:
        """Read the dataset at ``path`` (see `Formatter.read`)."""
        self.check_parameters(parameters)
        data = Path(path).read_bytes()
        if not data.startswith(b"\x89PNG"):
            raise ValueError(f"{path} is not a PNG file")
        return data

    def write(self, obj: Any, path: Path, ref: DatasetRef | None) -> None:
        """Write ``obj`` to ``path`` (see `Formatter.write`)."""
        if isinstance(obj, (bytes, bytearray)):
            Path(path).write_bytes(obj)
        else:
            obj.savefig(path, format="png")
