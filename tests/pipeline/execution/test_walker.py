"""Tests of the generic graph walker (no butler involved)."""

from __future__ import annotations

import pytest

from pipeline.execution.walker import GraphCycleError, GraphWalker


def _diamond() -> dict[str, list[str]]:
    # a -> b, a -> c, b -> d, c -> d, e independent, d -> f
    return {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": ["f"], "e": [], "f": []}


def test_order_respects_dependencies() -> None:
    w = GraphWalker(_diamond())
    order: list[str] = []
    while not w.finished:
        ready = w.take_ready()
        assert ready, "walker stalled"
        for node in ready:
            order.append(node)
            w.mark_done(node)
    assert sorted(order) == ["a", "b", "c", "d", "e", "f"]
    for parent, kids in _diamond().items():
        for kid in kids:
            assert order.index(parent) < order.index(kid)


def test_bounded_window() -> None:
    w = GraphWalker({i: [] for i in range(10)})
    first = w.take_ready(3)
    assert first == [0, 1, 2]
    assert w.n_ready == 7 and w.running == {0, 1, 2}


def test_failure_blocks_only_descendants() -> None:
    w = GraphWalker(_diamond())
    assert set(w.take_ready()) == {"a", "e"}
    w.mark_done("a")
    w.mark_done("e")
    assert set(w.take_ready()) == {"b", "c"}
    blocked = w.mark_failed("b")
    assert sorted(blocked) == ["d", "f"]
    newly = w.mark_done("c")
    assert newly == []  # d is blocked even though c finished
    assert w.finished
    assert w.done == {"a", "e", "c"} and w.failed == {"b"} and w.blocked == {"d", "f"}


def test_requeue_after_lost_worker() -> None:
    w = GraphWalker({"x": ["y"], "y": []})
    assert w.take_ready() == ["x"]
    w.requeue("x")
    assert w.take_ready() == ["x"]
    assert w.mark_done("x") == ["y"]


def test_cycle_is_an_error() -> None:
    with pytest.raises(GraphCycleError, match="cycle"):
        GraphWalker({"a": ["b"], "b": ["a"], "c": []})


def test_mark_unknown_node_raises() -> None:
    w = GraphWalker({"a": []})
    with pytest.raises(KeyError):
        w.mark_done("a")  # never taken
