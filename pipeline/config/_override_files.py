"""Config override files: YAML mappings, or restricted Python parsed (never executed).

``config.<field path> = <literal>`` lines (or ``config.<dict field>["key"] = <literal>``) and
``config.<subtask>.retarget(ImportedTask)`` calls, as ``lsst.pex.config`` override files are
written; ``-C label:file`` on the command line, ``file:`` blocks of pipeline YAML and
`Config.load` read them.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..exceptions import PipelineDefinitionError

__all__ = ["parse_override_file", "parse_python_overrides"]


def parse_python_overrides(text: str, where: str) -> list[tuple[str, Any]]:
    """Parse ``config.a.b = literal`` statements into ``(path, value)`` overrides, without executing.

    Parameters
    ----------
    text : `str`
        Python source made only of assignments to ``config.<path>`` (or
        ``config.<dictField>["key"]``) of literal values (numbers, strings, booleans, None, lists,
        tuples, dicts), ``config.<subtask>.retarget(ImportedTask)`` calls, comments and imports
        (used only to resolve retarget names).
    where : `str`
        File name or label for error messages.

    Returns
    -------
    overrides : `list` [`tuple` [`str`, `object`]]
        Dotted field path and value, in file order.

    Raises
    ------
    PipelineDefinitionError
        For any other statement, with its line number and the accepted form.
    """
    try:
        tree = ast.parse(text, filename=where)
    except SyntaxError as exc:
        raise PipelineDefinitionError(f"{where}: invalid Python on line {exc.lineno}: {exc.msg}") from None
    out: list[tuple[str, Any]] = []
    imported: dict[str, str] = {}  # local name -> dotted path, for retarget(...) calls
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0:
            for alias in stmt.names:
                imported[alias.asname or alias.name] = f"{stmt.module}.{alias.name}"
            continue
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                imported[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
            continue
        retarget = _retarget_call(stmt, imported)
        if retarget is not None:
            out.append(retarget)
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # docstring
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            path = _target_path(stmt.targets[0])
            if path is not None:
                try:
                    value = _literal(stmt.value)
                except ValueError:
                    raise PipelineDefinitionError(
                        f"{where}, line {stmt.lineno}: the value assigned to config.{path} must be a literal "
                        "(number, string, True/False/None, list, tuple or dict); expressions are not run"
                    ) from None
                out.append((path, list(value) if isinstance(value, tuple) else value))
                continue
        raise PipelineDefinitionError(
            f"{where}, line {stmt.lineno}: only 'config.<field> = <literal>' statements are allowed "
            f"in config override files (got: {ast.unparse(stmt)[:80]!r})"
        )
    return out


def _literal(node: ast.expr) -> Any:
    """`ast.literal_eval` plus ``float('nan')``, ``float('inf')``, ``-float('inf')``, ``nan``, ``inf``."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass

    def conv(n: ast.AST) -> Any:
        if isinstance(n, ast.Name) and n.id in ("nan", "inf"):
            return float(n.id)
        if (
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name)
            and n.func.id == "float"
            and len(n.args) == 1
            and isinstance(n.args[0], ast.Constant)
            and str(n.args[0].value).strip().lower() in ("nan", "inf", "-inf", "+inf", "infinity")
        ):
            return float(str(n.args[0].value))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            v = conv(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, (ast.List, ast.Tuple)):
            return [conv(e) for e in n.elts]
        if isinstance(n, ast.Dict):
            return {conv(k): conv(v) for k, v in zip(n.keys, n.values) if k is not None}
        raise ValueError("not a literal")

    return conv(node)


def _retarget_call(stmt: ast.stmt, imported: Mapping[str, str]) -> tuple[str, str] | None:
    """``config.<path>.retarget(Name)`` → ``("<path>.__target__", "dotted.path.Name")``."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return None
    call = stmt.value
    func = call.func
    if not (
        isinstance(func, ast.Attribute)
        and func.attr == "retarget"
        and len(call.args) == 1
        and not call.keywords
    ):
        return None
    path = _target_path(func.value)
    if path is None:
        return None
    arg = call.args[0]
    parts: list[str] = []
    while isinstance(arg, ast.Attribute):
        parts.append(arg.attr)
        arg = arg.value
    if not isinstance(arg, ast.Name):
        return None
    root = imported.get(arg.id, arg.id)
    return (f"{path}.__target__", ".".join([root] + list(reversed(parts))))


def _target_path(node: ast.AST) -> str | None:
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, (str, int))
        ):
            parts.append(str(node.slice.value))
            node = node.value
        elif isinstance(node, ast.Name) and node.id == "config" and parts:
            return ".".join(reversed(parts))
        else:
            return None


def parse_override_file(path: str | os.PathLike[str], where: str | None = None) -> list[tuple[str, Any]]:
    """Read a config override file: YAML mapping or restricted Python (see `parse_python_overrides`).

    Parameters
    ----------
    path : `str` or `pathlib.Path`
        File path; ``.py`` files are parsed as Python, anything else as YAML.
    where : `str`, optional
        Context for error messages (e.g. the task label).

    Returns
    -------
    overrides : `list` [`tuple` [`str`, `object`]]
        Field path (dotted or top-level with a nested mapping value) and value.

    Raises
    ------
    PipelineDefinitionError
        If the file is missing, unreadable or not of the accepted form.
    """
    path = Path(path)
    ctx = f"{where}: " if where else ""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineDefinitionError(
            f"{ctx}cannot read config override file {str(path)!r}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError as exc:
        raise PipelineDefinitionError(
            f"{ctx}config override file {str(path)!r} is not UTF-8 text (byte "
            f"{exc.object[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"
        ) from None
    if path.suffix == ".py":
        return parse_python_overrides(text, str(path))
    import yaml  # only for -C files: not imported by commands without them

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PipelineDefinitionError(
            f"{ctx}config override file {str(path)!r} is not valid YAML: {exc}"
        ) from None
    if data is None:
        return []
    if not isinstance(data, Mapping):
        raise PipelineDefinitionError(
            f"{ctx}config override file {str(path)!r} must hold a mapping of field names to values, "
            f"got {type(data).__name__}"
        )
    if "config" in data and len(data) == 1 and isinstance(data["config"], Mapping):
        data = data["config"]
    return [(str(k), v) for k, v in data.items()]
