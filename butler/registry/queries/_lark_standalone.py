"""The query parser's runtime: lark's standalone LALR parser, generated from the grammar and cached.

``import lark`` alone costs ~20 ms (its grammar compiler, Earley parser, ``tempfile``, ``pickle``
...), a fifth of a ``butler query-data-ids`` command and most of the first query of a process.
lark's own generator ``lark.tools.standalone`` writes a module holding lark's LALR runtime
(`Lark`, `Transformer`, `Lexer`, `Token`, the exceptions) and the parse tables of one grammar,
which does not import lark. `runtime` generates that module on first use from the installed lark,
keeps its compiled code in the per-user cache directory (``$XDG_CACHE_HOME/ccdflow/`` or
``~/.cache/ccdflow/``, mode 0700, not world-writable /tmp, so nobody else can plant code for us to
run), and afterwards loads it in a few milliseconds without importing lark. A new grammar, cache
tag or Python version makes a new file; without a usable cache directory the module is generated
in memory each time. The parse tables are lark's own (the same LALR analysis as
``Lark(grammar, parser="lalr")``), so every parse is the one lark gives.
"""

from __future__ import annotations

import marshal
import os
import sys
import types
import zlib

from ..._user_cache import user_cache_dir

__all__ = ["runtime"]

_MODULES: dict[str, types.ModuleType] = {}


def _cache_file(grammar: str, tag: str) -> str | None:
    """Return the cache file of the compiled parser module, or `None` if no cache directory is usable."""
    directory = user_cache_dir()
    if directory is None:
        return None
    raw = f"{tag}\n{grammar}".encode()
    digest = f"{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}"  # no hashlib: the key is checked on load
    return os.path.join(directory, f"query-parser-{digest}.{sys.implementation.cache_tag}.marshal")


def _generate(grammar: str) -> str:
    """Return the source of lark's standalone parser module for ``grammar`` (imports lark)."""
    import io

    from lark import Lark
    from lark.tools.standalone import gen_standalone

    out = io.StringIO()
    gen_standalone(Lark(grammar, parser="lalr", lexer="basic", maybe_placeholders=False), out=out)
    return out.getvalue()


def runtime(grammar: str, tag: str) -> types.ModuleType:
    """Return lark's standalone parser module of a grammar (generated once, then loaded from the cache).

    Parameters
    ----------
    grammar : `str`
        The lark grammar (LALR, basic lexer terminals).
    tag : `str`
        Changes the cache file name when anything else about the parser changes.

    Returns
    -------
    module : `types.ModuleType`
        Holds ``Lark``, ``Lark_StandAlone``, ``DATA``, ``MEMO``, ``Transformer``, ``Lexer``,
        ``Token`` and lark's exception classes (``UnexpectedInput`` ...).
    """
    key = f"{tag}\n{grammar}"
    module = _MODULES.get(key)
    if module is not None:
        return module
    path = _cache_file(grammar, tag)
    code = None
    if path is not None:
        try:
            with open(path, "rb") as f:
                stored = marshal.loads(f.read())  # marshal.load(f) reads in small pieces: 5x slower
            if isinstance(stored, tuple) and len(stored) == 2 and stored[0] == key:
                code = stored[1]
        except (OSError, EOFError, ValueError, TypeError):
            code = None
    if not isinstance(code, types.CodeType):
        code = compile(_generate(grammar), "<lark standalone query parser>", "exec")
        if path is not None:
            tmp = f"{path}.{os.getpid()}.tmp"
            try:
                with open(tmp, "wb") as f:
                    marshal.dump((key, code), f)
                os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
            except OSError:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    name = "butler.registry.queries._lark_standalone_parser"
    module = types.ModuleType(name)
    sys.modules[name] = module  # as an import does: its dataclasses look their module up there
    try:
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    _MODULES[key] = module
    return module
