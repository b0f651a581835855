"""A generic walker over a directed acyclic graph of work items.

The walker knows nothing about quanta, butlers or executors: it hands out nodes whose
predecessors have all finished, records which finished and which failed, and blocks only the
descendants of a failure. Executors (serial, process pool, Parsl) drive it the same way::

    walker = GraphWalker(successors)
    while not walker.finished:
        for node in walker.take_ready(limit=window - in_flight):
            submit(node)
        ...
        walker.mark_done(node)   # or walker.mark_failed(node)

(The design follows ``lsst.pipe.base.graph_walker`` in spirit: a small helper independent of
any execution backend.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from typing import Generic, TypeVar

__all__ = ["GraphWalker", "GraphCycleError"]

K = TypeVar("K", bound=Hashable)


class GraphCycleError(ValueError):
    """Raised when the graph given to `GraphWalker` has a cycle."""


class GraphWalker(Generic[K]):
    """Hand out the nodes of a DAG in dependency order.

    Parameters
    ----------
    successors : `~collections.abc.Mapping` [node, `~collections.abc.Iterable` [node]]
        For every node, the nodes that depend on it. Every node must be a key (nodes with no
        successors map to an empty iterable); successors that are not keys are added.

    Raises
    ------
    GraphCycleError
        If the graph has a cycle (checked at construction, O(nodes + edges)).

    Notes
    -----
    States: *pending* (waiting on predecessors), *ready* (all predecessors done, not yet
    taken), *running* (taken), *done*, *failed*, *blocked* (a predecessor failed or was
    blocked). Every operation is O(1) amortised per node/edge.
    """

    def __init__(self, successors: Mapping[K, Iterable[K]]) -> None:
        succ: dict[K, tuple[K, ...]] = {}
        n_pred: dict[K, int] = {}
        for node, children in successors.items():
            kids = tuple(children)
            succ[node] = kids
            n_pred.setdefault(node, 0)
            for child in kids:
                n_pred[child] = n_pred.get(child, 0) + 1
        for node in n_pred:
            succ.setdefault(node, ())
        self._succ = succ
        self._remaining = dict(n_pred)
        self._ready: deque[K] = deque(node for node, n in n_pred.items() if n == 0)
        self.running: set[K] = set()
        self.done: set[K] = set()
        self.failed: set[K] = set()
        self.blocked: set[K] = set()
        self._check_acyclic(n_pred)

    def _check_acyclic(self, n_pred: dict[K, int]) -> None:
        remaining = dict(n_pred)
        queue = deque(node for node, n in remaining.items() if n == 0)
        seen = 0
        while queue:
            node = queue.popleft()
            seen += 1
            for child in self._succ[node]:
                remaining[child] -= 1
                if remaining[child] == 0:
                    queue.append(child)
        if seen != len(remaining):
            stuck = sorted((str(n) for n, c in remaining.items() if c > 0))[:5]
            raise GraphCycleError(f"the graph has a cycle through (some of) {stuck}")

    def __len__(self) -> int:
        return len(self._succ)

    @property
    def n_ready(self) -> int:
        """Number of nodes ready to be taken."""
        return len(self._ready)

    @property
    def finished(self) -> bool:
        """True when every node is done, failed or blocked."""
        return len(self.done) + len(self.failed) + len(self.blocked) == len(self._succ)

    def take_ready(self, limit: int | None = None) -> list[K]:
        """Take up to ``limit`` ready nodes (all when `None`) and mark them running.

        Parameters
        ----------
        limit : `int`, optional
            Maximum number of nodes to return (the caller's free window).

        Returns
        -------
        nodes : `list`
            Nodes whose predecessors are all done, in the order they became ready.
        """
        out: list[K] = []
        while self._ready and (limit is None or len(out) < limit):
            node = self._ready.popleft()
            out.append(node)
        self.running.update(out)
        return out

    def mark_done(self, node: K) -> list[K]:
        """Record that a node finished successfully.

        Parameters
        ----------
        node
            A node previously returned by `take_ready`.

        Returns
        -------
        newly_ready : `list`
            Successors that became ready.

        Raises
        ------
        KeyError
            If the node is not running.
        """
        self.running.remove(node)
        self.done.add(node)
        newly: list[K] = []
        for child in self._succ[node]:
            self._remaining[child] -= 1
            if self._remaining[child] == 0 and child not in self.blocked:
                newly.append(child)
        self._ready.extend(newly)
        return newly

    def mark_failed(self, node: K) -> list[K]:
        """Record that a node failed; block all its descendants.

        Parameters
        ----------
        node
            A node previously returned by `take_ready`.

        Returns
        -------
        blocked : `list`
            The descendants newly blocked by this failure.

        Raises
        ------
        KeyError
            If the node is not running.
        """
        self.running.remove(node)
        self.failed.add(node)
        newly: list[K] = []
        stack = list(self._succ[node])
        while stack:
            child = stack.pop()
            if child in self.blocked:
                continue
            self.blocked.add(child)
            newly.append(child)
            stack.extend(self._succ[child])
        return newly

    def requeue(self, node: K) -> None:
        """Put a running node back at the front of the ready queue (e.g. its worker was lost).

        Parameters
        ----------
        node
            A running node.

        Raises
        ------
        KeyError
            If the node is not running.
        """
        self.running.remove(node)
        self._ready.appendleft(node)
