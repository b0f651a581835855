"""The `Formatter` base class: how one storage class is written to and read from a file.

The butler's own formatters are in `butler.datastore.formatters`; other packages subclass
`Formatter` next to their types (``pipeline.image.fits.ExposureFormatter``) and name them in
``registry_schema/storage_classes.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .datasets import DatasetRef

__all__ = ["Formatter"]


class Formatter:
    """Base class of the butler's formatters: how one storage class is written to and read from a file.

    Subclasses set `extension` (and `supported_parameters`) and implement `read` and `write`;
    a read-only formatter (raws) implements `read` only. Formatters are found through the
    dotted paths of ``registry_schema/storage_classes.yaml`` (`butler.storage_classes.get_formatter`),
    instantiated without arguments and shared, so they keep no per-dataset state.
    """

    extension: str = ""
    """File name extension with the dot (``".npy"``)."""

    supported_parameters: frozenset[str] = frozenset()
    """Names of the read parameters `read` accepts (``slices``, ``columns``, ``bbox`` ...)."""

    def check_parameters(self, parameters: Mapping[str, Any] | None) -> None:
        """Raise `ValueError` naming unsupported read parameters."""
        if parameters:
            bad = set(parameters) - self.supported_parameters
            if bad:
                raise ValueError(
                    f"{type(self).__name__} does not support read parameter(s) {sorted(bad)}; "
                    f"supported: {sorted(self.supported_parameters) or 'none'}"
                )

    def read(
        self,
        path: Path,
        ref: DatasetRef | None,
        parameters: Mapping[str, Any] | None = None,
        repo_root: Path | None = None,
    ) -> Any:
        """Read the dataset stored at ``path``.

        Parameters
        ----------
        path : `pathlib.Path`
            The file.
        ref : `DatasetRef` or `None`
            The dataset (its data ID and dataset type), when known.
        parameters : mapping, optional
            Read parameters (a subset of `supported_parameters`).
        repo_root : `pathlib.Path`, optional
            The repository root (formatters of files that refer to other files).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot read")

    def write(self, obj: Any, path: Path, ref: DatasetRef | None) -> None:
        """Write ``obj`` to ``path`` (a temporary path with the final extension; the datastore renames it)."""
        raise NotImplementedError(f"{type(self).__name__} cannot write")
