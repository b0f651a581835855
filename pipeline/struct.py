"""A simple attribute container returned by task ``run`` methods."""

from __future__ import annotations

from typing import Any

__all__ = ["Struct"]


class Struct:
    """An attribute container, as ``lsst.pipe.base.Struct``.

    Parameters
    ----------
    **kwargs
        Attribute names and values.

    Notes
    -----
    Task ``run`` methods return a ``Struct`` whose field names equal the task's
    output connection names, so the default ``runQuantum`` can put each field.

    Examples
    --------
    >>> s = Struct(exposure=1, stats={"mean": 2.0})
    >>> s.exposure
    1
    >>> sorted(s.getDict())
    ['exposure', 'stats']
    """

    def __init__(self, **kwargs: Any) -> None:
        for name, value in kwargs.items():
            self.__safeAdd(name, value)

    def __safeAdd(self, name: str, value: Any) -> None:
        if name.startswith("__") or name in dir(Struct):
            raise RuntimeError(f"Struct field name {name!r} is reserved; choose another name")
        self.__dict__[name] = value

    def getDict(self) -> dict[str, Any]:
        """Return a shallow copy of the fields as a dict.

        Returns
        -------
        fields : `dict` [`str`, `object`]
            Field names and values.
        """
        return dict(self.__dict__)

    def mergeItems(self, struct: "Struct", *names: str) -> None:
        """Copy the named fields of another struct into this one.

        Parameters
        ----------
        struct : `Struct`
            Source of the fields.
        *names : `str`
            Names to copy.

        Raises
        ------
        RuntimeError
            If a name already exists here.
        """
        for name in names:
            self.__safeAdd(name, getattr(struct, name))

    def copy(self) -> "Struct":
        """Return a shallow copy.

        Returns
        -------
        struct : `Struct`
            A new struct with the same fields.
        """
        return Struct(**self.getDict())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Struct) and self.__dict__ == other.__dict__

    def __len__(self) -> int:
        return len(self.__dict__)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"Struct({items})"
