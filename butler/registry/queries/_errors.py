"""The one error raised for a bad query expression."""

from __future__ import annotations

__all__ = ["ExpressionError", "caret_display"]


def caret_display(expression: str, position: int) -> str:
    """Show the line of ``expression`` holding ``position`` with a caret under it.

    Parameters
    ----------
    expression : `str`
        The expression text (may span lines).
    position : `int`
        0-based character offset into ``expression``; clipped to ``[0, len(expression)]``.

    Returns
    -------
    text : `str`
        Two lines, each indented by two spaces: the source line and a caret line.
    """
    position = max(0, min(position, len(expression)))
    line_start = expression.rfind("\n", 0, position) + 1
    line_end = expression.find("\n", position)
    if line_end < 0:
        line_end = len(expression)
    line = expression[line_start:line_end].replace("\t", " ")
    return f"  {line}\n  {' ' * (position - line_start)}^"


class ExpressionError(ValueError):
    """A query expression (``--where`` / ``-d``) could not be parsed or type-checked.

    The message names the problem, says what was expected, and shows the expression with a
    caret under the offending position.

    Parameters
    ----------
    reason : `str`
        What is wrong and what was expected, e.g. ``"unbalanced parentheses: expected ')'"``.
    expression : `str`
        The full expression text.
    position : `int`
        0-based character offset of the problem in ``expression``.

    Attributes
    ----------
    reason : `str`
        As given.
    expression : `str`
        As given.
    position : `int`
        0-based offset (clipped to the expression length).
    line : `int`
        1-based line number of ``position``.
    column : `int`
        1-based column of ``position`` within its line (where the caret is drawn).
    """

    def __init__(self, reason: str, expression: str, position: int) -> None:
        self.reason = reason
        self.expression = expression
        self.position = max(0, min(position, len(expression)))
        self.line = expression.count("\n", 0, self.position) + 1
        self.column = self.position - (expression.rfind("\n", 0, self.position) + 1) + 1
        where = f" (line {self.line}, column {self.column})" if "\n" in expression else ""
        super().__init__(
            f"Invalid query expression{where}: {reason}\n{caret_display(expression, self.position)}"
        )

    def __reduce__(self):  # keep picklable across process pools
        return (type(self), (self.reason, self.expression, self.position))
