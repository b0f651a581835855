"""The ``butler`` click group: one-line errors, and commands of other packages loaded on use.

Packages add commands to ``butler`` through the entry-point group ``butler.cli`` (as
daf_butler's CLI loads obs_base's commands), declared in their ``pyproject.toml``::

    [project.entry-points."butler.cli"]
    my-command = "mypackage.butler_commands:my_command"

The entry point's name is the command's name and its object a `click.Command`. ``butler
--help`` lists these commands without importing them; a command's module is imported when
it is invoked (or its own ``--help`` is asked for).

The installed entry points are read from the ``entry_points.txt`` files of the distributions on
``sys.path`` (`find_entry_points`), the files `importlib.metadata` reads: importing
`importlib.metadata` (email, zipfile, csv ...) would double the start-up time of ``butler --help``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from butler.cli_args import Utf8ArgumentsMixin

if TYPE_CHECKING:
    import logging

__all__ = ["PLUGIN_GROUP", "ButlerGroup", "find_entry_points", "load_entry_point", "plugin_help_text"]

PLUGIN_GROUP = "butler.cli"
"""The entry-point group of commands that other packages add to ``butler``."""


def _log() -> logging.Logger:
    """Return the ``butler`` logger; `logging` is imported on first use (``butler --help`` needs none)."""
    import logging

    return logging.getLogger("butler")


def find_entry_points(group: str, path: list[str] | None = None) -> dict[str, str]:
    """Return ``name -> "module:attribute"`` of the entry points of ``group`` installed on ``path``.

    Parameters
    ----------
    group : `str`
        Entry-point group (``butler.cli``).
    path : `list` [`str`], optional
        Directories to search for ``*.dist-info`` / ``*.egg-info`` (default: `sys.path`); the
        first definition of a name wins, as for imports.
    """
    found: dict[str, str] = {}
    header = f"[{group}]"
    for entry in sys.path if path is None else path:
        try:
            infos = sorted(
                d.path for d in os.scandir(entry or ".") if d.name.endswith((".dist-info", ".egg-info"))
            )
        except OSError:
            continue
        for info in infos:
            try:
                with open(os.path.join(info, "entry_points.txt"), encoding="utf-8") as f:
                    lines = f.read().splitlines()
            except OSError:
                continue
            inside = False
            for line in lines:
                line = line.strip()
                if line.startswith("["):
                    inside = line == header
                elif inside and "=" in line and not line.startswith(("#", ";")):
                    name, value = (x.strip() for x in line.split("=", 1))
                    found.setdefault(name, value.split("[", 1)[0].strip())
    return found


def load_entry_point(value: str) -> Any:
    """Import the object an entry point names (``"package.module:attribute"``)."""
    module, _, attribute = value.partition(":")
    obj: Any = importlib.import_module(module.strip())
    for part in filter(None, attribute.strip().split(".")):
        obj = getattr(obj, part)
    return obj



def plugin_help_text(value: str) -> str | None:
    """Return the help text of the plugin command ``"module:function"`` without importing it.

    ``butler --help`` lists the plugin commands without importing their modules (each costs
    ~20 ms of imports, half of the whole ``--help``): the text is read from the module's source
    with `ast`, as click would take it when the command is imported: the ``help=`` (or
    ``short_help=``) argument of the ``@click.command`` decorator, else the function's docstring.

    Parameters
    ----------
    value : `str`
        The entry point's value, ``"package.module:function"``.

    Returns
    -------
    text : `str` or `None`
        The help text; `None` when the module's source cannot be found or read, or the function
        is not a plain ``def`` at the module's top level (the caller then names the module).
    """
    import ast
    import importlib.util

    module, _, attribute = value.partition(":")
    top, *parts = module.split(".")
    try:
        # find_spec of the top-level package imports nothing (of a submodule it would import
        # the parent packages): the submodule's file is looked up below the package's folders
        spec = importlib.util.find_spec(top)
        if spec is None:
            return None
        if not parts:
            candidates = [spec.origin or ""]
        else:
            candidates = [
                os.path.join(folder, *parts[:-1], parts[-1] + ".py")
                for folder in spec.submodule_search_locations or ()
            ]
        origin = next((c for c in candidates if c.endswith(".py") and os.path.isfile(c)), None)
        if origin is None:
            return None
        with open(origin, encoding="utf-8") as stream:
            tree = ast.parse(stream.read(), origin)
    except (ImportError, OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == attribute:
            for decorator in node.decorator_list:
                func = getattr(decorator, "func", None)
                if getattr(func, "attr", getattr(func, "id", None)) != "command":
                    continue  # @click.option(help=...) and the like
                for keyword in getattr(decorator, "keywords", ()):
                    if keyword.arg in ("short_help", "help") and isinstance(keyword.value, ast.Constant):
                        return str(keyword.value.value)
            return ast.get_docstring(node)
    return None

class ButlerGroup(Utf8ArgumentsMixin, click.Group):
    """A group that turns butler errors into one line on stderr and exit status 1.

    It also offers the commands of the ``butler.cli`` entry-point group (see the module
    docstring), importing each only when it is used. Arguments that are not valid UTF-8 are
    refused first (`butler.cli_args`).
    """

    _plugins: dict[str, str] | None = None

    def plugins(self) -> dict[str, str]:
        """Return the plugin commands' entry points (``"module:attribute"``) by command name."""
        if self._plugins is None:
            self._plugins = find_entry_points(PLUGIN_GROUP)
        return self._plugins

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Return the butler's own commands and the plugin commands, sorted."""
        return sorted(set(super().list_commands(ctx)) | set(self.plugins()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return a command, importing a plugin command on first use."""
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        value = self.plugins().get(cmd_name)
        if value is None:
            if not self.plugins():
                _log().debug("no %r entry points: is the package installed (pip install -e .)?", PLUGIN_GROUP)
            return None
        command = load_entry_point(value)
        if not isinstance(command, click.Command):
            raise click.ClickException(f"entry point {value!r} of {PLUGIN_GROUP!r} is not a click command")
        self.add_command(command, cmd_name)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Find the command; all but the short read-only ``query-*`` ones run with the GC on.

        `main` pauses the cyclic garbage collector for start-up (`butler.cli_startup`); a
        command that may run long (ingest, transfers, pruning) resumes it here, before it starts.
        """
        name, command, rest = super().resolve_command(ctx, args)
        if not (name or "").startswith("query-"):
            from butler.cli_startup import resume_gc

            resume_gc()
        return name, command, rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands; the help of plugin commands not imported yet is read from their source."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is None:
                value = self.plugins()[name]
                doc = plugin_help_text(value)
                text = click.Command(name, help=doc).get_short_help_str(limit) if doc else ""
                rows.append((name, text or f"Command of {value.partition(':')[0]} (imported when run)."))
            elif not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; report any error in one line (traceback with ``--log-level DEBUG``)."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except BrokenPipeError:
            # The reader went away (``butler query-datasets ... | head``): stop quietly, like
            # other Unix tools; stdout is pointed at /dev/null so the interpreter's final
            # flush does not fail again.
            import os

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a killed writer
        except Exception as exc:  # noqa: BLE001 - report every failure the same way
            import logging

            if _log().isEnabledFor(logging.DEBUG):
                raise
            from butler._errors import ButlerError, storage_error

            # A full disk or a read-only path: one line naming it, whatever layer noticed.
            exc = storage_error(exc) or exc
            notes = getattr(exc, "__notes__", [])
            msg = "\n".join([str(exc), *notes])
            kind = "" if isinstance(exc, (ButlerError, ValueError)) else f"{type(exc).__name__}: "
            click.echo(f"Error: {kind}{msg}", err=True)
            if not isinstance(exc, ButlerError):
                click.echo("(run with --log-level DEBUG for the traceback)", err=True)
            sys.exit(1)
