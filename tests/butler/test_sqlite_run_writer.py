"""The SQLAlchemy-free run writer's pieces against the registry's: value encodings and the run lock.

`butler.registry._row_values.SQLITE_ENCODERS` must store every value as SQLAlchemy's SQLite
dialect does (the registry's bind processors), column by column of ``tables.yaml``; the
registry's raw-cursor statements (`butler.registry.sqlite.bind_encoders`) use the same
functions. The run lock of the writer and of `butler.registry.database.Database` is one lock.
The whole ``pipetask run`` comparison is in ``tests/pipeline/cli/test_run_writer.py``.
"""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from butler import Butler, LockHeldError
from butler.dimensions import default_universe
from butler.registry._row_values import SQLITE_ENCODERS
from butler.registry._sqlite_run_writer import column_encoders
from butler.registry.backends import open_run_writer
from butler.registry.schema import build_schema
from butler.registry.sqlite import bind_encoders

#: Values of each kind of column, including the edge cases of the text encodings.
SAMPLES: dict[type, list[Any]] = {
    sa.Uuid: [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.uuid4(), uuid.UUID(int=0x01A24FE1A6107B66)],
    sa.DateTime: [
        datetime.datetime(2026, 12, 7, 9, 45, 15, 862126),
        datetime.datetime(2026, 12, 7, 9, 45, 15),  # no microseconds: still six digits
        datetime.datetime(1, 1, 1),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
    ],
    sa.Boolean: [True, False],
    sa.Float: [0.0, 1.5, -2, 1e300],
}


def _sa_processor(column: sa.Column) -> Any:
    dialect = sqlite.dialect()
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def _samples(column: sa.Column) -> list[Any]:
    for cls, values in SAMPLES.items():
        if isinstance(column.type, cls):
            return values
    raise AssertionError(f"no samples for {column.table.name}.{column.name} ({column.type!r})")


def test_column_encoders_equal_sqlalchemy() -> None:
    """Every static table: the writer converts exactly the columns SQLAlchemy converts, the same way."""
    schema = build_schema()
    universe = default_universe()
    n_checked = 0
    for name, table in schema.tables.items():
        ours = column_encoders(name, universe)
        converted = {c.name for c in table.columns if _sa_processor(c) is not None}
        assert set(ours) == converted, name
        for c in table.columns:
            proc = _sa_processor(c)
            if proc is None:
                continue
            for v in _samples(c):
                mine, theirs = ours[c.name](v), proc(v)
                assert mine == theirs and type(mine) is type(theirs), (name, c.name, v)
                n_checked += 1
    assert n_checked >= 20  # dataset.id, ingest_date, the tag/calib/record ids, is_calibration


def test_bind_encoders_use_the_shared_functions() -> None:
    """The registry's raw-cursor INSERT of ``dataset`` converts with `SQLITE_ENCODERS`, as SQLAlchemy does."""
    table = build_schema().tables["dataset"]
    stmt = sa.insert(table).values({c.name: sa.bindparam(c.name) for c in table.columns})
    compiled = stmt.compile(dialect=sqlite.dialect())
    enc = bind_encoders(compiled)
    assert enc["id"] is SQLITE_ENCODERS["uuid"] and enc["ingest_date"] is SQLITE_ENCODERS["datetime"]
    assert set(enc) == set(compiled._bind_processors)
    for name, proc in compiled._bind_processors.items():
        for v in _samples(table.c[name]):
            assert enc[name](v) == proc(v)
    with pytest.raises(TypeError):
        SQLITE_ENCODERS["datetime"](datetime.date(2026, 1, 1))


def test_one_run_lock(tmp_path: Path) -> None:
    """The writer's run lock and the registry database's are the same flock."""
    Butler.create(tmp_path / "repo").close()
    root = tmp_path / "repo"
    with Butler(root) as butler, open_run_writer(root) as writer:
        with writer.exclusive_lock("u/run", root=root):
            with pytest.raises(LockHeldError):
                with butler.registry.db.exclusive_lock("u/run", root=root):
                    pass
            with butler.registry.db.exclusive_lock("u/other", root=root):
                pass
        with butler.registry.db.exclusive_lock("u/run", root=root):
            with pytest.raises(LockHeldError):
                with writer.exclusive_lock("u/run", root=root):
                    pass


def test_reads_answer_as_the_registry(tmp_path: Path) -> None:
    """The writer's reads (the clean-up's collection query, type and collection look-ups) and their errors."""
    from butler import CollectionType, DatasetType

    root = tmp_path / "repo"
    Butler.create(root).close()
    with Butler(root) as butler:
        reg = butler.registry
        for name in ("u/run", "u/run/nested", "u/run/nested/deeper", "u/runx", "v/run"):
            reg.register_run(name)
        reg.register_collection("u/run/tag", CollectionType.TAGGED)
        reg.set_collection_chain("u/run/chain", ["u/run/nested", "v/run"])
        reg.register_dataset_type(DatasetType("calexp", ("instrument", "detector"), "NumpyArray"))
        with open_run_writer(root) as writer:
            for pattern, types in [("u/run/*", ["RUN"]), ("u/run/*", None), ("*", ["CHAINED", "TAGGED"]),
                                   ("nothing*", ["RUN"])]:
                expected = reg.query_collections(pattern, types=types)
                assert writer.query_collections(pattern, types=types) == expected
            assert writer.get_collection_type("u/run/chain") is CollectionType.CHAINED
            assert writer.get_dataset_type("calexp") == reg.get_dataset_type("calexp")
            for call in (lambda r: r.get_collection_type("u/rnu"), lambda r: r.get_dataset_type("calexpp"),
                         lambda r: r.get_dataset_type(DatasetType("calexp", ("instrument",), "NumpyArray"))):
                with pytest.raises(Exception) as ours:
                    call(writer)
                with pytest.raises(Exception) as theirs:
                    call(reg)
                assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))
                assert "did you mean" in str(ours.value) or "does not match" in str(ours.value)
