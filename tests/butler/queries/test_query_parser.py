"""Parse trees of the data query language (middleware-reference §8)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from butler.registry.queries import (
    BinaryOp,
    BindName,
    FunctionCall,
    Identifier,
    IsIn,
    Literal,
    RangeLiteral,
    TupleNode,
    UnaryOp,
    parse_expression,
    referenced_identifiers,
)
from butler.registry.queries._time import mjd_tai_to_ns, parse_time_literal

NS = 1_000_000_000
DAY = 86_400 * NS


def lit(v, kind=None):
    """Build a Literal node with the kind inferred from the Python type."""
    if kind is None:
        kind = {int: "int", float: "float", str: "str"}[type(v)]
    return Literal(v, kind)


def ident(name):
    """Build an Identifier node."""
    return Identifier(name)


def test_blank_is_none():
    """Blank expressions parse to None."""
    assert parse_expression("") is None
    assert parse_expression("   \n ") is None
    assert referenced_identifiers(None) == []


def test_simple_comparison_and_positions():
    """A comparison parses with the right operand and operator positions."""
    tree = parse_expression("instrument = 'kast_blue'")
    assert tree == BinaryOp("=", ident("instrument"), lit("kast_blue"))
    assert tree.op_pos == 11
    assert tree.rhs.pos == 13


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_comparison_operators(op):
    """Every comparison operator parses."""
    assert parse_expression(f"exposure {op} 5") == BinaryOp(op, ident("exposure"), lit(5))


def test_sql_not_equal_spelling():
    """``<>`` is normalised to ``!=``."""
    assert parse_expression("detector <> 2") == BinaryOp("!=", ident("detector"), lit(2))


def test_precedence_or_and_not():
    """NOT binds tighter than AND, which binds tighter than OR."""
    tree = parse_expression("a = 1 OR b = 2 AND NOT c = 3")
    assert tree == BinaryOp(
        "OR",
        BinaryOp("=", ident("a"), lit(1)),
        BinaryOp("AND", BinaryOp("=", ident("b"), lit(2)), UnaryOp("NOT", BinaryOp("=", ident("c"), lit(3)))),
    )


def test_keywords_are_case_insensitive_identifiers_are_not():
    """Keywords are case-insensitive; names starting with keywords stay names."""
    upper = parse_expression("A = 1 AND b IN (1) OR NOT c OVERLAPS d")
    lower = parse_expression("A = 1 and b in (1) or not c overlaps d")
    assert upper == lower
    assert referenced_identifiers(upper) == ["A", "b", "c", "d"]
    # identifiers that merely start with a keyword stay identifiers
    assert parse_expression("android = order") == BinaryOp("=", ident("android"), ident("order"))


def test_parentheses_override_precedence():
    """Parentheses override operator precedence."""
    tree = parse_expression("(a = 1 OR b = 2) AND c = 3")
    assert tree.op == "AND"
    assert tree.lhs.op == "OR"


def test_arithmetic_precedence_and_unary_folding():
    """Arithmetic precedence; unary signs fold into numeric literals."""
    tree = parse_expression("x = -5 + 3 * 2 % 4 - -y")
    assert tree == BinaryOp(
        "=",
        ident("x"),
        BinaryOp(
            "-",
            BinaryOp("+", lit(-5), BinaryOp("%", BinaryOp("*", lit(3), lit(2)), lit(4))),
            UnaryOp("-", ident("y")),
        ),
    )
    assert parse_expression("x > +2.5") == BinaryOp(">", ident("x"), lit(2.5))


def test_numbers():
    """Integer and float literal forms."""
    assert parse_expression("x = 1.5e3").rhs == lit(1500.0)
    assert parse_expression("x = .25").rhs == lit(0.25)
    assert parse_expression("x = 7.").rhs == lit(7.0)
    assert parse_expression("x = 12").rhs == lit(12)


def test_strings_with_both_quotes_and_doubling():
    """Both quote styles, with doubled quotes as escapes."""
    assert parse_expression("x = 'it''s'").rhs == lit("it's")
    assert parse_expression('x = "say ""hi"""').rhs == lit('say "hi"')
    assert parse_expression("x = 'a \"b\" -- ; OR 1=1'").rhs == lit('a "b" -- ; OR 1=1')


def test_in_with_ranges_and_strides():
    """IN lists hold literals, inclusive ranges, strides and binds."""
    tree = parse_expression("exposure IN (1..5, 7, 10..20:2, :extra)")
    assert tree == IsIn(
        ident("exposure"),
        (RangeLiteral(1, 5, 1), lit(7), RangeLiteral(10, 20, 2), BindName("extra")),
        False,
    )
    assert 14 in tree.values[2] and 15 not in tree.values[2] and 20 in tree.values[2]
    neg = parse_expression("detector NOT IN (0..2)")
    assert neg == IsIn(ident("detector"), (RangeLiteral(0, 2, 1),), True)


def test_element_field_identifiers_and_binds():
    """Dotted identifiers and bind names parse and are listed in order."""
    tree = parse_expression("exposure.obs_id = :obs AND raw.dataset_id = :id")
    assert referenced_identifiers(tree) == ["exposure.obs_id", "raw.dataset_id"]
    assert tree.lhs.rhs == BindName("obs")


def test_glob_and_uuid_functions():
    """GLOB stays a call; UUID('...') folds into a UUID literal."""
    u = "12345678-1234-5678-1234-567812345678"
    tree = parse_expression(f"glob(exposure.obs_id, 'KB*') AND raw.dataset_id = uuid('{u}')")
    assert tree.lhs == FunctionCall("GLOB", (ident("exposure.obs_id"), lit("KB*")))
    assert tree.rhs.rhs == Literal(uuid.UUID(u), "uuid")


def test_time_literals_default_to_tai():
    """Time literals are TAI by default and exact to the nanosecond."""
    tree = parse_expression("exposure.timespan OVERLAPS T'2022-01-26T19:00:00'")
    # 2022-01-26 is day 19018 after 1970-01-01
    assert tree == BinaryOp(
        "OVERLAPS", ident("exposure.timespan"), Literal(19018 * DAY + 19 * 3600 * NS, "time")
    )
    assert parse_time_literal("2022-01-26T19:00:00") == parse_time_literal("isot/2022-01-26T19:00:00/tai")
    assert parse_time_literal("2022-01-26 19:00:00") == parse_time_literal("2022-01-26T19:00:00")
    assert parse_time_literal("2022-01-26") == 19018 * DAY
    assert parse_time_literal("2022-01-26T19:00:00.123456789") == 19018 * DAY + 19 * 3600 * NS + 123456789


def test_time_literal_utc_is_37_seconds_earlier_than_tai():
    """The same reading in UTC is 37 s later in TAI (2022)."""
    # TAI - UTC = 37 s since 2017; the same wall-clock reading in UTC is 37 s later in TAI.
    tai = parse_time_literal("2022-01-26T19:00:00")
    utc = parse_time_literal("2022-01-26T19:00:00/utc")
    assert utc - tai == 37 * NS


def test_time_literal_z_suffix_means_utc():
    """An ISO 'Z' suffix means UTC."""
    assert parse_time_literal("2022-01-26T19:00:00Z") == parse_time_literal("2022-01-26T19:00:00/utc")
    assert parse_time_literal("2022-01-26T19:00:00Z") - parse_time_literal("2022-01-26T19:00:00") == 37 * NS


def test_time_literal_unix_counts_utc_seconds():
    """``unix`` is POSIX time (UTC); ``unix_tai`` counts TAI seconds from 1970 TAI."""
    assert parse_time_literal("unix/1643223600") == parse_time_literal("2022-01-26T19:00:00/utc")
    assert parse_time_literal("unix_tai/1643223600") == parse_time_literal("2022-01-26T19:00:00")


def test_time_literal_mjd_and_jd():
    """MJD and JD literals (explicit and bare) convert exactly."""
    # MJD 59605 = 2022-01-26
    assert parse_time_literal("mjd/59605.5") == 19018 * DAY + DAY // 2
    assert parse_time_literal("59605.5") == 19018 * DAY + DAY // 2  # bare number = MJD
    assert parse_time_literal("jd/2459606.0") == 19018 * DAY + DAY // 2
    assert mjd_tai_to_ns(40587) == 0


def test_time_literal_matches_butler_timespan_conversion():
    """Literal conversion agrees with butler.timespan.time_to_ns via astropy."""
    from astropy.time import Time

    from butler.timespan import time_to_ns

    for text in ("2022-01-26T19:00:00.5", "2019-12-31T23:59:59"):
        assert parse_time_literal(text) == time_to_ns(Time(text, scale="tai"))
        assert parse_time_literal(text + "/utc") == time_to_ns(Time(text, scale="utc"))


def test_interval_tuple_and_overlaps():
    """A 2-tuple of times is an interval operand of OVERLAPS."""
    tree = parse_expression("exposure.timespan OVERLAPS (T'2022-01-26', T'2022-01-27')")
    assert tree.rhs == TupleNode((Literal(19018 * DAY, "time"), Literal(19019 * DAY, "time")))
    assert referenced_identifiers(tree) == ["exposure.timespan"]


def test_multiline_expression():
    """Positions are offsets into multi-line text."""
    tree = parse_expression("instrument = 'x'\n  AND detector = 1")
    assert tree.rhs.lhs.pos == len("instrument = 'x'\n  AND ")


def test_parse_is_cached_and_trees_are_frozen():
    """Parsing the same text returns the same immutable tree."""
    a = parse_expression("exposure = 1")
    assert parse_expression("exposure = 1") is a
    with pytest.raises(AttributeError):
        a.op = "!="  # type: ignore[misc]


def test_lark_is_not_imported_by_the_package():
    """Importing the package does not import lark (keeps ``butler --help`` fast)."""
    import subprocess
    import sys

    code = "import sys, butler.registry.queries; print('lark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


SAMPLES = [
    "instrument = 'kast_blue' AND exposure IN (1..20:2, 30) and detector <> 3",
    "exposure.timespan OVERLAPS (T'2022-01-26', t'mjd/59605.5/utc') OR NOT x >= -1.5e3",
    'GLOB(exposure.obs_id, "a""b*") AND raw.dataset_id = UUID(\'12345678-1234-5678-1234-567812345678\')',
    "a IN (:ids) AND b % 2 != 0 AND c / .5 <= 7. AND android = orchid AND notable = inline",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_custom_lexer_agrees_with_the_grammar_terminals(text):
    """The one-regex lexer produces the same tokens as lark's lexer built from the grammar."""
    from lark import Lark
    from lark.lexer import Lexer, Token

    from butler.registry.queries._parser import _GRAMMAR
    from butler.registry.queries._tokens import make_query_lexer

    QueryLexer = make_query_lexer(Lexer, Token)  # noqa: N806

    reference = Lark(_GRAMMAR, parser="lalr", lexer="basic")
    want = [(t.type, str(t), t.start_pos) for t in reference.lex(text)]
    got = [(t.type, str(t), t.start_pos) for t in QueryLexer(None).lex(text)]
    assert got == want


_TABLES_PROBE = (
    "import sys; from butler.registry.queries import parse_expression; "
    "print(repr(parse_expression(sys.argv[1]))); print('lark' in sys.modules)"
)


def _lark_reference() -> tuple[Any, Any]:
    """Return lark's own LALR parser of the grammar, with the query lexer and the AST transformer."""
    from lark import Lark, Transformer
    from lark.lexer import Lexer, Token

    from butler.registry.queries._parser import _GRAMMAR, _make_transformer_class
    from butler.registry.queries._tokens import make_query_lexer

    transformer = _make_transformer_class(Transformer)()
    reference = Lark(_GRAMMAR, parser="lalr", lexer=make_query_lexer(Lexer, Token), transformer=transformer,
                     maybe_placeholders=False)
    return reference, transformer


def test_tables_are_built_once_then_loaded_without_lark(tmp_path):
    """First use builds lark's parse tables into the cache; later processes parse without lark.

    The trees equal those of a parser built by lark itself from the grammar (the same LALR tables).
    """
    import os
    import subprocess
    import sys

    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    reference, transformer = _lark_reference()
    for text in SAMPLES:
        transformer.text = text
        want = repr(reference.parse(text))
        runs = [subprocess.run([sys.executable, "-c", _TABLES_PROBE, text], env=env, capture_output=True,
                               text=True, check=True).stdout.splitlines() for _ in range(2)]
        assert [r[0] for r in runs] == [want, want]
        assert runs[1][1] == "False"  # the second process loaded the cached tables
    assert len(list((tmp_path / "ccdflow").glob("query-tables-*.marshal"))) == 1


def _random_texts(n: int, seed: int) -> list[str]:
    """Random token soups and mutated samples: valid and invalid expressions alike."""
    import random

    r = random.Random(seed)
    words = ["a", "exposure.obs_id", "3", "-2", "1.5e3", "'x'", "T'2022-01-26'", ":b", "1..4", "1..9:2",
             "AND", "or", "NOT", "IN", "OVERLAPS", "=", "!=", "<>", "<=", "+", "-", "*", "/", "%", "(", ")",
             ",", "GLOB", "UUID", "glob(a, 'x*')", "x IN (1, 2)", "(1, 2)"]
    out = []
    for _ in range(n):
        out.append(" ".join(r.choice(words) for _ in range(r.randint(0, 9))))
    for text in SAMPLES:
        for _ in range(n // 20):
            cut = sorted(r.randrange(len(text) + 1) for _ in range(2))
            out.append(text[: cut[0]] + text[cut[1]:])
    return out


def test_parse_loop_equals_lark_on_valid_and_invalid_texts():
    """Trees, and for a syntax error the offending token and the expected terminals, equal lark's.

    ~1,300 texts: random token soups (most are syntax errors at every kind of place), cut-down
    samples and the samples themselves; transformer errors (bad literals) must match too.
    """
    from lark.exceptions import UnexpectedToken as LarkUnexpectedToken

    from butler.registry.queries import _lalr
    from butler.registry.queries._parser import _parser

    reference, ref_transformer = _lark_reference()
    ours, transformer = _parser()

    def outcome(parser: Any, t: Any, text: str, error: type) -> tuple:
        t.text = text
        try:
            return ("tree", repr(parser.parse(text)))
        except error as exc:
            return ("syntax", exc.token.type, str(exc.token), exc.token.start_pos, sorted(exc.expected))
        except Exception as exc:
            inner = getattr(exc, "orig_exc", exc)
            return ("other", type(inner).__name__, str(inner))

    texts = SAMPLES + _random_texts(1000, 7)
    kinds = set()
    for text in texts:
        want = outcome(reference, ref_transformer, text, LarkUnexpectedToken)
        got = outcome(ours, transformer, text, _lalr.UnexpectedToken)
        assert got == want, text
        kinds.add(want[0])
    assert kinds == {"tree", "syntax", "other"}  # every path was exercised


def test_parser_without_a_cache_directory(tmp_path):
    """With no usable cache directory the tables are built in memory: same trees, same errors."""
    import os
    import subprocess
    import sys

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = dict(os.environ, XDG_CACHE_HOME=str(blocker))
    text = SAMPLES[0]
    out = subprocess.run([sys.executable, "-c", _TABLES_PROBE, text], env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0] == repr(parse_expression(text))
    code = ("from butler.registry.queries import parse_expression\n"
            "try:\n    parse_expression('a = = 1')\nexcept Exception as exc:\n    print(str(exc))")
    err = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    with pytest.raises(Exception) as expected:
        parse_expression("a = = 1")
    assert err.strip() == str(expected.value).strip()
