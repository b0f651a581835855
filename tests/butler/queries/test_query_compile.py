"""Compiled expressions run on real SQLite and PostgreSQL tables and return the right rows."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from butler.registry.queries import compile_expression, parse_expression, referenced_identifiers
from butler.registry.queries._glob import glob_to_like, glob_to_regex
from butler.timespan import Timespan

from .conftest import BASE_NS, HOSTILE_OBS_IDS, NS, ROWS, FakeResolver, expected, run_where


def at(seconds: float) -> str:
    """Time literal body for BASE + seconds (TAI)."""
    whole = int(seconds)
    return f"T'2022-01-26T00:{whole // 60:02d}:{whole % 60:02d}'"


def overlaps(row, begin, end):
    """Return whether a row's stored timespan overlaps ``[begin, end)`` (reference semantics)."""
    return row["ts_begin"] < end and begin < row["ts_end"]


CASES = [
    ("instrument = 'kast_blue'", lambda r: r["instrument"] == "kast_blue"),
    (
        "instrument = 'kast_blue' AND exposure IN (1..5)",
        lambda r: r["instrument"] == "kast_blue" and 1 <= r["exposure"] <= 5,
    ),
    ("exposure IN (1..12:3)", lambda r: r["exposure"] in (1, 4, 7, 10)),
    # ranges longer than 100 values stay BETWEEN (+ a modulo for strides) instead of a list
    ("exposure IN (0..100000:3)", lambda r: r["exposure"] % 3 == 0),
    ("exposure IN (2..5000) AND detector = 0", lambda r: 2 <= r["exposure"] <= 5000 and r["detector"] == 0),
    (
        "exposure NOT IN (4..400:5, 1)",
        lambda r: not ((4 <= r["exposure"] <= 400 and (r["exposure"] - 4) % 5 == 0) or r["exposure"] == 1),
    ),
    (
        "exposure IN (2..12:5, 11, 99) AND detector = 1",
        lambda r: r["exposure"] in (2, 7, 12, 11, 99) and r["detector"] == 1,
    ),
    ("exposure NOT IN (1..10)", lambda r: not 1 <= r["exposure"] <= 10),
    ("NOT (exposure < 3 OR exposure > 4)", lambda r: 3 <= r["exposure"] <= 4),
    (
        "exposure >= 11 or detector != 0 and exposure <= 2",
        lambda r: r["exposure"] >= 11 or (r["detector"] != 0 and r["exposure"] <= 2),
    ),
    (
        "exposure.observation_type = 'flat' AND exposure.exposure_time > 9.5",
        lambda r: r["observation_type"] == "flat" and r["exposure_time"] > 9.5,
    ),
    ("exposure.exposure_time * 2 + 1 >= 25", lambda r: r["exposure_time"] * 2 + 1 >= 25),
    ("exposure % 4 = 0", lambda r: r["exposure"] % 4 == 0),
    ("-exposure < -10", lambda r: -r["exposure"] < -10),
    ("exposure.exposure_time = 0", lambda r: r["exposure_time"] == 0),
    (
        "exposure.obs_id != 'KB0001' AND exposure <= 2",
        lambda r: r["obs_id"] != "KB0001" and r["exposure"] <= 2,
    ),
    ("exposure.obs_id IN ('KB0002', 'KB0012', 'nope')", lambda r: r["obs_id"] in ("KB0002", "KB0012")),
    ("GLOB(exposure.obs_id, 'KB000?')", lambda r: r["obs_id"].startswith("KB000") and len(r["obs_id"]) == 6),
    ("GLOB(exposure.obs_id, 'KB001*')", lambda r: r["obs_id"].startswith("KB001")),
    ("glob(exposure.obs_id, 'kb*')", lambda r: False),  # case-sensitive on every backend
    ("GLOB(exposure.obs_id, '50%_*')", lambda r: r["obs_id"].startswith("50%_")),
    ("GLOB(exposure.obs_id, '5?%_off\\x')", lambda r: r["obs_id"] == "50%_off\\x"),
    ("GLOB(exposure.obs_id, '*[!0-9]')", lambda r: not r["obs_id"][-1].isdigit()),
    ("GLOB(exposure.obs_id, 'KB000[1-3]')", lambda r: r["obs_id"] in ("KB0001", "KB0002")),
    (
        f"exposure.timespan OVERLAPS {at(500)}",
        lambda r: overlaps(r, BASE_NS + 500 * NS, BASE_NS + 500 * NS + 1),
    ),
    (
        f"exposure.timespan OVERLAPS {at(510)}",
        lambda r: overlaps(r, BASE_NS + 510 * NS, BASE_NS + 510 * NS + 1),
    ),
    (
        f"exposure.timespan OVERLAPS ({at(250)}, {at(610)})",
        lambda r: overlaps(r, BASE_NS + 250 * NS, BASE_NS + 610 * NS),
    ),
    (
        f"({at(250)}, {at(610)}) OVERLAPS exposure.timespan",
        lambda r: overlaps(r, BASE_NS + 250 * NS, BASE_NS + 610 * NS),
    ),
    (f"exposure.timespan < {at(400)}", lambda r: r["ts_end"] <= BASE_NS + 400 * NS),
    (f"exposure.timespan > {at(400)}", lambda r: r["ts_begin"] > BASE_NS + 400 * NS),
    (f"{at(400)} < exposure.timespan", lambda r: r["ts_begin"] > BASE_NS + 400 * NS),
    (f"exposure.timespan.begin >= {at(1100)}", lambda r: r["ts_begin"] >= BASE_NS + 1100 * NS),
    (f"exposure.timespan.end < {at(200)}", lambda r: r["ts_end"] < BASE_NS + 200 * NS),
    # a bare number compared with a timespan is an MJD in TAI; 2022-01-26 = MJD 59605
    (
        "exposure.timespan OVERLAPS 59605.0057870370",
        lambda r: overlaps(r, BASE_NS + 499_999_999_680, BASE_NS + 499_999_999_681),
    ),
    (
        "exposure.timespan OVERLAPS (59605, 59605.003)",
        lambda r: overlaps(r, BASE_NS, BASE_NS + 259_200 * NS // 1000),
    ),
    ("exposure.timespan OVERLAPS T'1900-01-01'", lambda r: r["exposure"] == 99),
    (f"{at(1)} OVERLAPS ({at(0)}, {at(2)}) AND exposure = 1", lambda r: r["exposure"] == 1),
    (f"{at(5)} OVERLAPS ({at(0)}, {at(2)})", lambda r: False),
    ("1 = 1 AND detector = 0", lambda r: r["detector"] == 0),
    ("2 IN (1..3) AND 5 NOT IN (4, 6) AND exposure = 2", lambda r: r["exposure"] == 2),
    ("exposure = 3 - 1", lambda r: r["exposure"] == 2),
    # constants fold with SQL semantics: '%' truncates towards zero, '/' is true division
    ("-7 % 3 = -1 AND exposure = 1", lambda r: r["exposure"] == 1),
    ("-exposure % 4 = -1", lambda r: r["exposure"] % 4 == 1),
    ("exposure / 2 = 2.5", lambda r: r["exposure"] == 5),
    ("7 / 2 = 3.5 AND exposure = 2", lambda r: r["exposure"] == 2),
]


INTENDED_EMPTY = {"glob(exposure.obs_id, 'kb*')", f"{at(5)} OVERLAPS ({at(0)}, {at(2)})"}


@pytest.mark.parametrize("where, predicate", CASES, ids=[c[0] for c in CASES])
def test_where_returns_expected_rows(db, where, predicate):
    """Each expression returns exactly the rows its Python predicate selects."""
    truth = expected(predicate)
    assert run_where(db, where) == truth
    # every case selects something except the two written to select nothing
    assert bool(truth) != (where in INTENDED_EMPTY)


def test_bind_values(db):
    """Bind values (UUIDs, lists expanded in IN, empty lists, floats) select the right rows."""
    ids = [uuid.uuid5(uuid.NAMESPACE_DNS, "raw-4-1"), uuid.uuid5(uuid.NAMESPACE_DNS, "raw-5-0")]
    assert run_where(db, "raw.dataset_id IN (:ids)", {"ids": ids}) == [(4, 1), (5, 0)]
    assert run_where(db, "raw.dataset_id = :one", {"one": ids[0]}) == [(4, 1)]
    assert run_where(db, f"raw.dataset_id = UUID('{ids[1]}')") == [(5, 0)]
    assert run_where(db, f"raw.dataset_id = '{ids[1]}'") == [(5, 0)]
    assert run_where(db, "exposure IN (:exps, 12) AND detector = :det", {"exps": (1, 2), "det": 0}) == [
        (1, 0),
        (2, 0),
        (12, 0),
    ]
    assert run_where(db, "exposure IN (:none)", {"none": []}) == []
    assert run_where(db, "exposure NOT IN (:none) AND exposure = 1", {"none": []}) == [(1, 0), (1, 1)]
    assert run_where(db, "exposure.exposure_time > :t", {"t": 16.0}) == expected(
        lambda r: r["exposure_time"] > 16
    )


def test_bind_times_and_timespans(db):
    """Astropy Time and Timespan binds (bounded and unbounded) work with OVERLAPS."""
    from astropy.time import Time

    t = Time("2022-01-26T00:05:00", scale="tai")
    want = expected(lambda r: overlaps(r, BASE_NS + 300 * NS, BASE_NS + 300 * NS + 1))
    assert want
    assert run_where(db, "exposure.timespan OVERLAPS :t", {"t": t}) == want
    span = Timespan(Time("2022-01-26T00:04:00", scale="tai"), Time("2022-01-26T00:07:00", scale="tai"))
    want = expected(lambda r: overlaps(r, BASE_NS + 240 * NS, BASE_NS + 420 * NS))
    assert run_where(db, "exposure.timespan OVERLAPS :span", {"span": span}) == want
    assert run_where(db, "exposure.timespan OVERLAPS (:a, :b)", {"a": span.begin, "b": span.end}) == want
    # unbounded begin: everything that started before 00:04:00 plus the unbounded row
    half = Timespan(None, Time("2022-01-26T00:04:00", scale="tai"))
    assert run_where(db, "exposure.timespan OVERLAPS :h", {"h": half}) == expected(
        lambda r: r["ts_begin"] < BASE_NS + 240 * NS
    )


HOSTILE = [
    "O'Brien'); DROP TABLE raw_rows; --",
    "' OR '1'='1",
    "x' OR 1=1 --",
    '"; DELETE FROM raw_rows; --',
    "\\'; SELECT 1; --",
    "%",
    "_",
    "*",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_cannot_change_the_query(db, value):
    """SQL-looking strings are compared as data, via bind or literal, and the table survives."""
    engine, table = db
    # as a bind value
    rows = run_where(db, "exposure.obs_id = :v", {"v": value})
    assert rows == expected(lambda r: r["obs_id"] == value)
    # as a literal in the expression text (quotes doubled, as the grammar requires)
    quoted = "'" + value.replace("'", "''") + "'"
    assert run_where(db, f"exposure.obs_id = {quoted}") == expected(lambda r: r["obs_id"] == value)
    if value == "*":
        assert run_where(db, f"GLOB(exposure.obs_id, {quoted})") == expected(lambda r: True)
    else:  # '%' and '_' are not wildcards in a glob
        assert run_where(db, f"GLOB(exposure.obs_id, {quoted})") == expected(lambda r: r["obs_id"] == value)
    # the table is intact
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == len(ROWS)


def test_hostile_row_found_exactly(db):
    """A stored obs_id full of quotes and SQL is found by equality, not interpreted."""
    value = HOSTILE_OBS_IDS[3]
    assert run_where(db, "exposure.obs_id = :v", {"v": value}) == [(3, 0), (3, 1)]
    quoted = "'" + value.replace("'", "''") + "'"
    assert run_where(db, f"exposure.obs_id = {quoted}") == [(3, 0), (3, 1)]


def test_user_values_are_bound_parameters_only():
    """No user value appears in the SQL text on either dialect; all are parameters."""
    from sqlalchemy.dialects import postgresql, sqlite

    from .conftest import make_table

    table = make_table("p")
    where = (
        "instrument = 'kast''blue' AND exposure IN (1..9:2, 42) AND GLOB(exposure.obs_id, 'zz*') "
        "AND exposure.timespan OVERLAPS T'2022-01-26' AND exposure.exposure_time > 3.25"
    )
    clause = compile_expression(where, FakeResolver(table))
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        compiled = clause.compile(dialect=dialect)
        sql = str(compiled)
        for fragment in ("kast", "42", "zz", "3.25", str(BASE_NS)):
            assert fragment not in sql, (fragment, sql)
        values = list(compiled.params.values())
        assert "kast'blue" in values and 3.25 in values and BASE_NS in values


def test_glob_translations():
    """Globs translate to LIKE (escaped) and anchored POSIX regexes correctly."""
    assert glob_to_like("a*b?c%d_e\\f") == "a%b_c\\%d\\_e\\\\f"
    assert glob_to_regex("r_*.fits") == "^r\\_.*\\.fits$"
    assert glob_to_regex("x[!ab]?") == "^x[^ab].$"


def test_resolver_called_once_per_identifier_in_order():
    """The resolver sees each distinct identifier once, in order of appearance."""
    from .conftest import make_table

    resolver = FakeResolver(make_table("q"))
    compile_expression(
        "detector = 1 AND exposure > 2 AND detector < 5 OR exposure.timespan OVERLAPS 59605", resolver
    )
    assert resolver.calls == ["detector", "exposure", "exposure.timespan"]
    tree = parse_expression("detector = 1 AND exposure > 2 AND detector < 5")
    assert referenced_identifiers(tree) == ["detector", "exposure"]


def test_blank_expression_is_true(db):
    """A blank expression constrains nothing."""
    assert run_where(db, "") == expected(lambda r: True)
    assert len(run_where(db, " \n ")) == len(ROWS)


def test_nul_characters_are_rejected_before_reaching_the_database(db):
    """NUL characters give an ExpressionError rather than a driver error."""
    from butler.registry.queries import ExpressionError

    with pytest.raises(ExpressionError, match="NUL character"):
        run_where(db, "exposure.obs_id = :v", {"v": "a\x00b"})
    with pytest.raises(ExpressionError, match="NUL character"):
        run_where(db, "exposure.obs_id = 'a\x00b'")


def test_machine_generated_long_expressions(db):
    """Thousands of OR terms and big IN lists compile (no recursion limit) and select correctly."""
    chain = " OR ".join(f"exposure = {i}" for i in range(1500)) + " OR exposure = 12"
    assert run_where(db, f"detector = 0 AND ({chain})") == expected(
        lambda r: r["detector"] == 0 and r["exposure"] in set(range(1500)) | {12}
    )
    listed = "exposure IN (" + ", ".join(str(i) for i in range(3, 3000, 2)) + ")"
    assert run_where(db, listed) == expected(lambda r: r["exposure"] % 2 == 1 and 3 <= r["exposure"] < 3000)
    ids = list(range(5, 5000))
    assert run_where(db, "exposure IN (:ids)", {"ids": ids}) == expected(lambda r: r["exposure"] >= 5)


def test_pathologically_deep_nesting_is_a_clear_error():
    """Nesting beyond Python's recursion limit is an ExpressionError, not a RecursionError."""
    from butler.registry.queries import ExpressionError

    from .conftest import make_table

    resolver = FakeResolver(make_table("deep"))
    with pytest.raises(ExpressionError, match="nested too deeply"):
        compile_expression("NOT " * 3000 + "exposure = 1", resolver)


def test_glob_and_grouping_elements_carry_their_from_clause(db):
    """A SELECT whose only reference to the table is inside GLOB still gets its FROM clause."""
    engine, table = db
    clause = compile_expression("GLOB(exposure.obs_id, 'KB001?')", FakeResolver(table))
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).where(clause)).scalar()
    assert count == len(expected(lambda r: r["obs_id"] in ("KB0010", "KB0011", "KB0012")))
    assert count == 6
