r"""Command-line arguments must be text: refuse bytes that are not UTF-8 before any command runs.

Python decodes a command line that is not valid UTF-8 with ``surrogateescape`` (a byte ``0xff``
becomes the lone surrogate ``'\udcff'``); such a string cannot be written to a database, a
YAML file or the terminal, and used to end in a bare ``UnicodeEncodeError`` deep inside a
command. Both command lines (``butler`` and ``pipetask``) check their arguments first, in their
click group (`Utf8ArgumentsMixin`), and give one usage error naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

__all__ = ["Utf8ArgumentsMixin", "check_utf8_arguments", "describe_argument"]


def _is_surrogate(ch: str) -> bool:
    return "\ud800" <= ch <= "\udfff"


def describe_argument(arg: str) -> str:
    r"""Return a printable form of an argument: its bytes, with those not valid UTF-8 as ``\xNN``."""
    try:
        raw = arg.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return arg.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def check_utf8_arguments(args: Sequence[str]) -> None:
    """Raise a usage error if an argument is not valid UTF-8 text.

    Parameters
    ----------
    args : sequence of str
        The command-line arguments (without the program name).

    Raises
    ------
    click.UsageError
        Naming the first bad argument (its position, the option before it, its bytes) and the
        fix; the command exits with status 2 and runs nothing.
    """
    for i, arg in enumerate(args):
        if not any(_is_surrogate(ch) for ch in arg):
            continue
        where = f"argument {i + 1}"
        if arg.startswith("--") and "=" in arg:
            where += f" (the value of {arg.split('=', 1)[0]})"
        elif i > 0 and args[i - 1].startswith("-") and not any(_is_surrogate(c) for c in args[i - 1]):
            where += f" (after {args[i - 1]})"
        bad = next(j for j, ch in enumerate(arg) if _is_surrogate(ch))
        raise click.UsageError(
            f"{where} is not valid UTF-8 text: '{describe_argument(arg)}' (invalid at character "
            f"{bad + 1}); pass names, paths and expressions in UTF-8 (e.g. rename the file, or set a "
            "UTF-8 locale such as LANG=C.UTF-8)"
        )


class Utf8ArgumentsMixin:
    """Mixin for a `click.Group`: check every argument (`check_utf8_arguments`) before parsing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Check the arguments, then parse them as the group does."""
        check_utf8_arguments(args)
        parent: Any = super()
        parsed: list[str] = parent.parse_args(ctx, args)
        return parsed
