"""Compile ``registry_schema/tables.yaml`` and the dimension universe to SQLAlchemy Core `MetaData`.

No DDL strings live in code: the YAML files describe every table, column, key and index, and
this module only translates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .._yaml import load_yaml
from ..dimensions import DimensionUniverse, default_universe

__all__ = ["RegistrySchema", "build_schema", "schema_summary", "schema_version"]


def _sa_type(spec: dict[str, Any]) -> sa.types.TypeEngine:
    t = spec["type"]
    if t == "string":
        return sa.String(spec.get("length", 256))
    if t == "text":
        return sa.Text()
    if t == "int":
        return sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    if t == "smallint":
        return sa.SmallInteger()
    if t == "float":
        return sa.Float()
    if t == "bool":
        return sa.Boolean()
    if t == "uuid":
        return sa.Uuid()
    if t == "datetime":
        return sa.DateTime()
    raise ValueError(f"unknown column type {t!r} in registry schema")


from ._schema_version import _tables_config, schema_version  # noqa: E402  (SQLAlchemy-free)


@dataclass
class RegistrySchema:
    """The registry's tables: ``metadata``, static ``tables`` and ``dimensions`` (element -> table)."""

    metadata: sa.MetaData
    tables: dict[str, sa.Table]
    dimensions: dict[str, sa.Table]
    universe: DimensionUniverse
    version: int


def _dimension_key_type(universe: DimensionUniverse, dim: str) -> dict[str, Any]:
    pk = universe[dim].primary_key
    return {"type": pk.type, "length": pk.length}


def build_schema(universe: DimensionUniverse | None = None, *, schema: str | None = None) -> RegistrySchema:
    """Build (or reuse) the registry `MetaData` for a universe and database schema.

    See `_build_schema`; the result is cached per (universe, schema) because table objects are
    immutable and can be shared by every connection of a process.
    """
    return _build_schema(universe or default_universe(), schema)


@lru_cache(maxsize=32)
def _build_schema(universe: DimensionUniverse, schema: str | None) -> RegistrySchema:
    """Build the registry `MetaData` from the YAML definitions.

    Parameters
    ----------
    universe : `DimensionUniverse`, optional
        Dimension universe (default: ``registry_schema/dimensions.yaml``).
    schema : `str`, optional
        Database schema (PostgreSQL namespace) to put the tables in.

    Returns
    -------
    schema : `RegistrySchema`
    """
    universe = universe or default_universe()
    md = sa.MetaData(schema=schema)
    prefix = f"{schema}." if schema else ""
    dims: dict[str, sa.Table] = {}
    for el in universe.elements.values():
        cols: list[sa.Column] = []
        pk_cols: list[str] = []
        constraints: list[Any] = []
        for dep in el.requires:
            cols.append(sa.Column(dep, _sa_type(_dimension_key_type(universe, dep)), nullable=False))
            pk_cols.append(dep)
        for k in el.keys:
            cols.append(
                sa.Column(k.name, _sa_type({"type": k.type, "length": k.length}), nullable=False, doc=k.doc)
            )
            pk_cols.append(k.name)
        for dep in el.implies:
            cols.append(sa.Column(dep, _sa_type(_dimension_key_type(universe, dep)), nullable=True))
        for f in el.metadata:
            cols.append(
                sa.Column(
                    f.name, _sa_type({"type": f.type, "length": f.length}), nullable=f.nullable, doc=f.doc
                )
            )
        if el.temporal:
            cols.append(sa.Column("timespan_begin", sa.BigInteger, nullable=True))
            cols.append(sa.Column("timespan_end", sa.BigInteger, nullable=True))
        constraints.append(sa.PrimaryKeyConstraint(*pk_cols))
        # Foreign keys to the tables of required and implied dimensions.
        for dep in el.requires + el.implies:
            dep_el = universe[dep]
            local = [d for d in dep_el.requires] + [dep]
            remote = [f"{prefix}{dep}.{d}" for d in dep_el.requires] + [
                f"{prefix}{dep}.{dep_el.primary_key.name}"
            ]
            constraints.append(sa.ForeignKeyConstraint(local, remote))
        dims[el.name] = sa.Table(el.name, md, *cols, *constraints, comment=el.doc)

    tables: dict[str, sa.Table] = {}
    cfg = _tables_config()
    for tname, tspec in cfg["tables"].items():
        cols = []
        constraints = []
        for c in tspec["columns"]:
            if c.get("dimensions"):
                for dim in universe.names:
                    cols.append(sa.Column(dim, _sa_type(_dimension_key_type(universe, dim)), nullable=True))
                for dim in universe.names:
                    el = universe[dim]
                    local = list(el.requires) + [dim]
                    remote = [f"{prefix}{dim}.{d}" for d in el.requires] + [
                        f"{prefix}{dim}.{el.primary_key.name}"
                    ]
                    constraints.append(sa.ForeignKeyConstraint(local, remote))
                continue
            args: list[Any] = [c["name"], _sa_type(c)]
            fk = c.get("foreign_key")
            if fk:
                args.append(
                    sa.ForeignKey(f"{prefix}{fk['table']}.{fk['column']}", ondelete=fk.get("ondelete"))
                )
            cols.append(
                sa.Column(
                    *args,
                    primary_key=bool(c.get("primary_key", False)),
                    nullable=c.get("nullable", not c.get("primary_key", False)),
                    autoincrement=c.get("autoincrement", False) if c.get("primary_key") else "auto",
                    doc=c.get("doc", ""),
                    comment=c.get("doc", None),
                )
            )
        for i, u in enumerate(tspec.get("unique", []) or []):
            constraints.append(sa.UniqueConstraint(*u, name=f"{tname}_unq_{i}"))
        for i, ix in enumerate(tspec.get("indexes", []) or []):
            constraints.append(sa.Index(f"{tname}_idx_{i}", *ix))
        tables[tname] = sa.Table(tname, md, *cols, *constraints, comment=tspec.get("doc"))
    return RegistrySchema(md, tables, dims, universe, int(cfg["version"]))


def schema_summary() -> dict[str, Any]:
    """Versions, table names and undocumented entries of the schema YAML files (for checks and docs).

    Returns
    -------
    summary : `dict`
        ``dimensions_version``, ``tables_version``, ``tables`` (static table names),
        ``elements`` (dimension names) and ``undocumented`` (``"file: path"`` of every element,
        field, table or column without a ``doc``).
    """
    import registry_schema

    with open(Path(registry_schema.__file__).parent / "dimensions.yaml") as f:
        dims = load_yaml(f)
    tables = _tables_config()
    missing = []
    if not dims.get("doc"):
        missing.append("dimensions.yaml: (top)")
    for name, el in dims["elements"].items():
        if not el.get("doc"):
            missing.append(f"dimensions.yaml: {name}")
        for fld in list(el.get("keys", [])) + list(el.get("fields", []) or []):
            if not fld.get("doc"):
                missing.append(f"dimensions.yaml: {name}.{fld['name']}")
    if not tables.get("doc"):
        missing.append("tables.yaml: (top)")
    for tname, t in tables["tables"].items():
        if not t.get("doc"):
            missing.append(f"tables.yaml: {tname}")
        for c in t["columns"]:
            if not c.get("dimensions") and not c.get("doc"):
                missing.append(f"tables.yaml: {tname}.{c['name']}")
    return {
        "dimensions_version": int(dims["version"]),
        "tables_version": int(tables["version"]),
        "tables": list(tables["tables"]),
        "elements": list(dims["elements"]),
        "undocumented": missing,
    }
