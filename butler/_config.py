"""``REPO/butler.yaml``: where the registry database is and how the datastore lays out files."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._errors import RepositoryError
from ._yaml import load_yaml_file

__all__ = [
    "CONFIG_NAME",
    "ROOT_TOKEN",
    "default_config",
    "load_config",
    "repo_root",
    "split_db_url",
    "write_config",
]

CONFIG_NAME = "butler.yaml"
ROOT_TOKEN = "<butlerRoot>"
DEFAULT_BUSY_TIMEOUT = 60.0


def repo_root(repo: str | os.PathLike) -> Path:
    """Return the repository root for a path to the root or to its ``butler.yaml``."""
    p = Path(repo).expanduser()
    if p.name == CONFIG_NAME:
        p = p.parent
    return p.absolute()


def split_db_url(url: str) -> tuple[str, str | None]:
    """Remove our own ``schema=`` query parameter from a database URL.

    Returns
    -------
    url, schema : `str`, `str` or `None`
    """
    parts = urlsplit(url)
    q = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in q if k == "schema"), None)
    q = [(k, v) for k, v in q if k != "schema"]
    return urlunsplit(parts._replace(query=urlencode(q))), schema


def default_schema_name(root: Path) -> str:
    """Return a PostgreSQL schema name unique to a repository path (``ccdflow_<dir>_<hash>``)."""
    import hashlib  # here: importing it (OpenSSL) costs the read-only commands ~5 ms

    stem = re.sub(r"[^a-z0-9_]", "_", root.name.lower())[:30] or "repo"
    return f"ccdflow_{stem}_{hashlib.blake2b(str(root).encode(), digest_size=4).hexdigest()}"


def default_config(root: Path, db: str | None) -> dict[str, Any]:
    """Return the configuration a new repository gets."""
    schema = None
    if db is None:
        url = f"sqlite:///{ROOT_TOKEN}/registry.sqlite3"
    else:
        url, schema = split_db_url(db)
        if url.startswith("postgresql") and schema is None:
            schema = default_schema_name(root)
    return {
        "ccdflow_butler": 1,
        "registry": {"db": url, "schema": schema, "busy_timeout": DEFAULT_BUSY_TIMEOUT},
        "datastore": {"checksum": False, "templates": {}},
    }


def write_config(root: Path, config: dict[str, Any]) -> None:
    """Write ``butler.yaml`` atomically."""
    import yaml

    tmp = root / f".{CONFIG_NAME}.tmp"
    with open(tmp, "w") as f:
        f.write("# ccdflow repository configuration.\n")
        f.write(
            "# registry.db: SQLAlchemy URL (<butlerRoot> = this directory); registry.busy_timeout: seconds\n"
        )
        f.write(
            "# a writer waits for the SQLite lock; datastore.templates: file templates per dataset type\n"
        )
        f.write("# or storage class name ('default', 'exposure_default' override the built-in ones).\n")
        yaml.safe_dump(config, f, sort_keys=False)
    os.replace(tmp, root / CONFIG_NAME)


def load_config(root: Path) -> dict[str, Any]:
    """Read ``butler.yaml``.

    Raises
    ------
    RepositoryError
        If the directory does not exist or is not a repository.
    """
    if not root.exists():
        raise RepositoryError(f"repository {root} does not exist; create it with `butler create {root}`")
    path = root / CONFIG_NAME
    if not path.is_file():
        raise RepositoryError(
            f"{root} is not a butler repository (no {CONFIG_NAME}); create one with `butler create`"
        )
    try:
        cfg = load_yaml_file(path) or {}
    except Exception as exc:
        import yaml  # imported when the file was parsed

        if isinstance(exc, yaml.YAMLError):
            raise RepositoryError(f"{path} is not valid YAML: {exc}") from None
        raise
    if "registry" not in cfg:
        raise RepositoryError(
            f"{path} has no 'registry' section; it is not a ccdflow repository configuration"
        )
    cfg.setdefault("datastore", {})
    return cfg


def resolve_db_url(root: Path, config: dict[str, Any]) -> str:
    """Return the registry URL with ``<butlerRoot>`` replaced by the repository root."""
    return str(config["registry"]["db"]).replace(ROOT_TOKEN, str(root))
