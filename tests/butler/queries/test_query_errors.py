"""Every bad-expression case gives one ExpressionError with the caret at the right column."""

from __future__ import annotations

import pickle

import pytest

from butler.registry.queries import ExpressionError, compile_expression, parse_expression

from .conftest import FakeResolver, UnknownIdentifierError, make_table


def caret_column(message: str) -> int:
    """1-based column of the caret drawn in the message (lines are indented by two spaces)."""
    caret_line = message.rstrip("\n").splitlines()[-1]
    assert caret_line.strip() == "^"
    return caret_line.index("^") - 2 + 1


def check(exc: ExpressionError, expression: str, column: int, *words: str) -> None:
    """Assert the error's column, caret line, echoed source line and message words."""
    message = str(exc)
    assert exc.expression == expression
    assert exc.column == column, message
    assert caret_column(message) == column, message
    assert message.splitlines()[-2] == "  " + expression.splitlines()[exc.line - 1]
    for word in words:
        assert word in message, message


SYNTAX_ERRORS = [
    # (expression, 1-based caret column, words in the message)
    ("(exposure = 1", 14, ["unbalanced parentheses", "expected ')'"]),
    ("exposure IN (1, 2", 18, ["unbalanced parentheses", "expected ')'"]),
    ("exposure = 1)", 13, ["unbalanced parentheses", "without a matching '('"]),
    ("((a = 1) AND (b = 2)))", 22, ["unbalanced parentheses"]),
    ("exposure == 1", 10, ["unknown operator '=='", "use '='"]),
    ("a = 1 && b = 2", 7, ["unknown operator '&&'", "use AND"]),
    ("a = 1 || b = 2", 7, ["unknown operator '||'", "use OR"]),
    ("exposure ~ 3", 10, ["unknown operator '~'"]),
    ("exposure >< 3", 10, ["unknown operator '><'"]),
    ("exposure =< 3", 10, ["unknown operator '=<'", "use '<='"]),
    ("exposure.obs_id = 'KB0001", 19, ["unterminated string", "'"]),
    ('exposure.obs_id = "KB0001', 19, ["unterminated string", '"']),
    ("t OVERLAPS T'2022-01-26", 12, ["unterminated time literal"]),
    ("t OVERLAPS T'2022-13-26'", 12, ["bad time literal", "month"]),
    ("t OVERLAPS T'yesterday'", 12, ["bad time literal", "ISO 8601"]),
    ("t OVERLAPS T'2022-01-26T25:00:00'", 12, ["bad time literal", "out of range"]),
    ("t OVERLAPS T'2022-01-26/martian'", 12, ["bad time literal", "unknown time scale 'martian'"]),
    ("t OVERLAPS T'vulcan/2022-01-26/tai'", 12, ["bad time literal", "unknown time format 'vulcan'"]),
    ("t > T'3000-01-01'", 5, ["bad time literal", "storable time range"]),
    ("t > T'2022-01-01T00:00:00Z/tai'", 5, ["bad time literal", "ends in Z (UTC)"]),
    ("t > T'2022-01-01T00:00:00+01:00'", 5, ["bad time literal", "UTC offset"]),
    ("a = 1 b = 2", 7, ["unexpected name 'b'", "expected an operator", "AND"]),
    ("a = ", 5, ["unexpected end of expression", "expected", "a number"]),
    ("a < b < c", 7, ["comparisons cannot be chained"]),
    ("exposure = 1..5", 12, ["range", "only allowed inside IN"]),
    ("exposure IN (5..1)", 14, ["empty range"]),
    ("exposure IN (1..9:0)", 14, ["stride must be a positive integer"]),
    ("exposure IN ()", 14, ["unexpected ')'", "expected"]),
    ("POINT(1, 2) OVERLAPS x", 1, ["unknown function 'POINT'", "GLOB"]),
    ("GLOB(a)", 1, ["GLOB takes two arguments"]),
    ("id = UUID('not-a-uuid')", 11, ["bad UUID"]),
    ("id = UUID(3)", 6, ["UUID(...) takes one string"]),
    ("a = :", 5, ["bind name needs a name"]),
    ("detector IN [1, 2]", 13, ["lists are written in parentheses"]),
    ("detector = 1;", 13, ["one expression", "AND"]),
    ("a = 1 AND\n  b $ 2", 5, ["unknown operator '$'"]),
]


@pytest.mark.parametrize("expression, column, words", SYNTAX_ERRORS)
def test_syntax_errors(expression, column, words):
    """Each syntax error names the problem and puts the caret at the right column."""
    with pytest.raises(ExpressionError) as info:
        parse_expression(expression)
    check(info.value, expression, column, *words)


def test_multiline_error_names_line_and_column():
    """Errors in multi-line expressions report line and column."""
    with pytest.raises(ExpressionError) as info:
        parse_expression("a = 1 AND\n  b $ 2")
    err = info.value
    assert (err.line, err.column) == (2, 5)
    assert "(line 2, column 5)" in str(err)


def test_expression_error_is_a_value_error_and_picklable():
    """ExpressionError is a ValueError and survives pickling (process pools)."""
    with pytest.raises(ValueError):
        parse_expression("(")
    try:
        parse_expression("a = 'x")
    except ExpressionError as err:
        copy = pickle.loads(pickle.dumps(err))
        assert str(copy) == str(err) and copy.column == err.column == 5


@pytest.fixture(scope="module")
def resolver():
    """Return a fake resolver over an (uncreated) test table."""
    return FakeResolver(make_table("errors_table"))


TYPE_ERRORS = [
    (
        "exposure = 'five'",
        12,
        ["type mismatch", "exposure (an int column)", "'five' (a str value)", "quote strings"],
    ),
    ("exposure.obs_id = 5", 19, ["type mismatch", "exposure.obs_id (a str column)", "5 (an int value)"]),
    ("exposure.obs_id IN ('a', 3)", 26, ["type mismatch", "3 (an int value)"]),
    (
        "exposure.obs_id OVERLAPS T'2022-01-01'",
        1,
        ["OVERLAPS needs a timespan", "exposure.obs_id (a str column)"],
    ),
    ("exposure.timespan OVERLAPS 'tomorrow'", 28, ["OVERLAPS needs a timespan", "'tomorrow'"]),
    (
        "exposure.timespan OVERLAPS '2022-01-26'",
        28,
        ["OVERLAPS needs a timespan", "write times as T'2022-01-26'"],
    ),
    ("exposure.timespan > '2022-01-26'", 21, ["type mismatch", "write times as T'2022-01-26'"]),
    ("exposure.timespan = 'x'", 21, ["type mismatch", "timespan"]),
    ("exposure.timespan <= T'2022-01-01'", 19, ["not defined for timespans", "OVERLAPS"]),
    ("exposure.timespan OVERLAPS ('a', 'b')", 29, ["interval (begin, end) needs two times"]),
    ("raw.dataset_id = 'not-a-uuid'", 18, ["not a valid UUID"]),
    ("raw.dataset_id = 5", 18, ["type mismatch"]),
    ("exposure.obs_id IN (1..3)", 21, ["range needs an integer"]),
    ("exposure.exposure_time IN (1..3)", 28, ["range needs an integer"]),
    ("GLOB(exposure, 'x*')", 6, ["GLOB needs a string column"]),
    ("GLOB(exposure.obs_id, 3)", 23, ["GLOB needs a string pattern"]),
    ("exposure", 1, ["expected a condition", "exposure (an int column)"]),
    ("exposure + 1 AND detector = 0", 1, ["expected a condition"]),
    ("NOT exposure", 5, ["expected a condition"]),
    ("exposure.obs_id + 1 = 2", 1, ["operator '+' needs numbers"]),
    ("-exposure.obs_id = 2", 1, ["unary '-' needs a number"]),
    ("exposure = 1 / 0", 16, ["division by zero"]),
    ("exposure.exposure_time % 2 = 0", 1, ["'%' needs integers"]),
    ("exposure = :missing", 12, ["unknown bind name ':missing'", "bind={'missing': ...}", ":present"]),
    ("exposure = (detector = 1)", 13, ["cannot use", "comparison"]),
]


@pytest.mark.parametrize("expression, column, words", TYPE_ERRORS)
def test_type_errors(resolver, expression, column, words):
    """Each type error names both operands' kinds and puts the caret on the culprit."""
    with pytest.raises(ExpressionError) as info:
        compile_expression(expression, resolver, bind={"present": 1})
    check(info.value, expression, column, *words)


def test_unsupported_bind_type(resolver):
    """A bind value of an unsupported type is rejected at its placeholder."""
    with pytest.raises(ExpressionError) as info:
        compile_expression("exposure = :x", resolver, bind={"x": object()})
    check(info.value, "exposure = :x", 12, "unsupported type object")


def test_unknown_identifier_error_propagates_with_caret_note(resolver):
    """The resolver's own error propagates, with a caret note added."""
    expression = "instrument = 'kast_blue' AND exposure.nonsense > 3"
    with pytest.raises(UnknownIdentifierError) as info:
        compile_expression(expression, resolver)
    assert "exposure.nonsense" in str(info.value)
    note = info.value.__notes__[0]
    assert "  " + expression in note
    assert note.splitlines()[-1].index("^") - 2 == expression.index("exposure.nonsense")


def test_unquoted_value_gets_a_quoting_hint(resolver):
    """A bare word that is not a dimension suggests quoting it."""
    with pytest.raises(UnknownIdentifierError) as info:
        compile_expression("instrument = kast_blue", resolver)
    assert "quote it: 'kast_blue'" in "\n".join(info.value.__notes__)


def test_compile_given_a_tree_uses_text_for_carets(resolver):
    """Compiling a pre-parsed tree uses the given text for carets."""
    text = "detector = 'a'"
    tree = parse_expression(text)
    with pytest.raises(ExpressionError) as info:
        compile_expression(tree, resolver, text=text)
    check(info.value, text, 12, "type mismatch")


def test_reversed_interval_is_an_error(resolver):
    """An interval whose end precedes its begin is rejected at the tuple."""
    text = "exposure.timespan OVERLAPS (T'2022-01-02', T'2022-01-01')"
    with pytest.raises(ExpressionError) as info:
        compile_expression(text, resolver)
    check(info.value, text, 28, "ends before it begins")


def test_numpy_bind_values(resolver):
    """Numpy scalars and arrays are accepted as bind values."""
    import numpy as np

    clause = compile_expression(
        "exposure = :a AND detector IN (:b)", resolver, bind={"a": np.int64(3), "b": np.arange(2)}
    )
    params = clause.compile().params
    assert 3 in params.values() and [0, 1] in params.values()
