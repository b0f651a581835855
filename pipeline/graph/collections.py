"""Output collections as ``pipetask`` makes them: ``-o``, ``--output-run``, ``--extend-run`` ...

`resolve_output_collections` decides (without writing anything) which RUN gets the outputs,
what the CHAINED output collection will contain, where inputs are searched and where existing
outputs are looked for (skip-existing). `pipeline.execution.runner.pre_exec_init` applies it.
Semantics follow ``pipetask`` (middleware-reference sections 6 and 8b):

- ``-o NAME`` (new): RUN ``NAME/<UTC timestamp>``, CHAINED ``NAME = [run, inputs...]``.
- ``-o NAME`` (existing chain): a new timestamped RUN is prepended; ``-i`` may be omitted (the
  chain's members are the inputs). Given ``-i`` inputs must appear in the chain as a contiguous
  run of members (compared flattened, as LSST does); other inputs are refused unless ``--rebase``,
  which reorders the chain: its output runs (names starting with ``NAME/``) first, then the new
  inputs, then the remaining old members.
- ``--extend-run``: the outputs go to the chain's first RUN (or ``--output-run``); implies
  skip-existing in that run.
- ``--replace-run``: the chain's first RUN is replaced by a new one (``--prune-replaced``
  removes the old one after the run).
- ``--skip-existing-in COLL...``; ``--skip-existing`` = skip-existing in the output chain.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from butler import CollectionType
    from butler.registry import Registry

__all__ = ["OutputCollections", "OutputCollectionError", "resolve_output_collections", "utc_timestamp"]


class OutputCollectionError(ValueError):
    """The requested combination of input/output collection options cannot be honoured."""


def utc_timestamp() -> str:
    """Return the current UTC time as ``YYYYMMDDTHHMMSSZ`` (the ``-o`` run suffix).

    Returns
    -------
    stamp : `str`
    """
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class OutputCollections:
    """Where a graph reads and writes.

    Attributes
    ----------
    inputs : `list` [`str`]
        Collections searched for inputs and prerequisites, in order.
    run : `str`
        The RUN that receives the outputs.
    output : `str` or `None`
        The CHAINED output collection (``-o``).
    chain : `list` [`str`] or `None`
        The definition the output chain gets when the graph runs.
    extend_run : `bool`
        The run exists and is being extended.
    skip_existing_in : `list` [`str`]
        Collections where an existing ``<label>_metadata`` makes a quantum skipped.
    replaced_run : `str` or `None`
        The run that ``--replace-run`` takes out of the chain.
    """

    inputs: list[str]
    run: str
    output: str | None = None
    chain: list[str] | None = None
    extend_run: bool = False
    skip_existing_in: list[str] = field(default_factory=list)
    replaced_run: str | None = None

    def to_metadata(self) -> dict[str, Any]:
        """Return the fields stored in the graph metadata.

        Returns
        -------
        metadata : `dict`
        """
        return {"inputs": list(self.inputs), "output_run": self.run, "output": self.output,
                "output_chain": self.chain, "extend_run": self.extend_run,
                "skip_existing_in": list(self.skip_existing_in), "replaced_run": self.replaced_run}


def _collection_type(registry: Registry, name: str) -> CollectionType | None:
    try:
        return registry.get_collection_type(name)
    except Exception:  # noqa: BLE001 - MissingCollectionError
        return None


def _flatten(registry: Registry, names: Sequence[str]) -> list[str]:
    """Names of the collections searched for ``names``, chains expanded, in search order."""
    out: list[str] = []
    for name in names:
        try:
            recs = registry.resolve_collections([name], flatten=True)
        except Exception:  # noqa: BLE001 - missing collection: compare by name
            recs = None
        for n in ([r.name for r in recs] if recs else [name]):
            if n not in out:
                out.append(n)
    return out


def _consistent_chain(registry: Registry, output: str, chain: list[str], inputs: list[str],
                      rebase: bool) -> list[str]:
    """Check ``-i`` against an existing ``-o`` chain (LSST's rule); return the chain to build on.

    The inputs are consistent when, flattened, they appear in the flattened chain as a contiguous
    subsequence. Otherwise ``rebase`` gives the chain's output runs first, then the inputs, then
    the chain's other members; without it `OutputCollectionError` is raised.
    """
    flat_inputs = _flatten(registry, inputs)
    flat_chain = _flatten(registry, chain)
    k = len(flat_inputs)
    if any(flat_chain[i:i + k] == flat_inputs for i in range(len(flat_chain) - k + 1)):
        return chain
    if not rebase:
        raise OutputCollectionError(
            f"the inputs differ: output CHAINED collection {output!r} exists and does not include the "
            f"input collections {flat_inputs} as a contiguous sequence (it is {flat_chain}). Give the "
            f"same -i as before (or none: {output} is then both input and output), another -o, or "
            "--rebase to redefine the chain (which hides which inputs earlier outputs came from)")
    outputs = [c for c in chain if c.startswith(output + "/")]
    new = outputs + [c for c in inputs if c not in outputs]
    return new + [c for c in chain if c not in new]


def resolve_output_collections(
    registry: Registry,
    *,
    inputs: Sequence[str] = (),
    output: str | None = None,
    output_run: str | None = None,
    extend_run: bool = False,
    replace_run: bool = False,
    skip_existing_in: Sequence[str] = (),
    skip_existing: bool = False,
    timestamp: str | None = None,
    rebase: bool = False,
) -> OutputCollections:
    """Work out the output RUN and chain from ``pipetask`` options.

    Parameters
    ----------
    registry : `butler.registry.Registry`
        Used to look up existing collections (nothing is written).
    inputs : `list` [`str`]
        ``-i`` collections.
    output : `str`, optional
        ``-o`` CHAINED collection.
    output_run : `str`, optional
        ``--output-run``.
    extend_run, replace_run, skip_existing : `bool`
        The options of the same names.
    skip_existing_in : `list` [`str`]
        ``--skip-existing-in``.
    timestamp : `str`, optional
        Run suffix (default: `utc_timestamp`).
    rebase : `bool`
        ``--rebase``: when ``inputs`` differ from those of the existing output chain, redefine the
        chain (its output runs, then ``inputs``, then its other members) instead of refusing.

    Returns
    -------
    collections : `OutputCollections`

    Raises
    ------
    OutputCollectionError
        If no output is given, options conflict, an input collection does not exist, the output
        exists but is not CHAINED, the inputs differ from those of the existing output chain
        (without ``rebase``), ``--extend-run`` names nothing to extend, or a new run already
        exists. Each message says which option to change.
    """
    from butler import CollectionType

    if extend_run and replace_run:
        raise OutputCollectionError("--extend-run and --replace-run cannot be used together; choose one")
    if not output and not output_run:
        raise OutputCollectionError("no output collection: give -o/--output NAME (a CHAINED collection) "
                                    "or --output-run RUN")
    inputs = list(dict.fromkeys(inputs))
    missing = [c for c in inputs if _collection_type(registry, c) is None]
    if missing:
        raise OutputCollectionError(
            f"input collection(s) {', '.join(missing)} do not exist in the repository; check -i "
            "(butler query-collections REPO lists them)")
    existing_chain: list[str] | None = None
    chain: list[str] | None
    if output:
        ctype = _collection_type(registry, output)
        if ctype is not None:
            if ctype != CollectionType.CHAINED:
                raise OutputCollectionError(
                    f"-o {output}: the collection exists and is a {getattr(ctype, 'name', ctype)} "
                    "collection, not CHAINED; use --output-run for a RUN, or another -o name")
            existing_chain = list(registry.get_collection_chain(output))
    stamp = timestamp or utc_timestamp()
    replaced = None
    if rebase and output_run is not None and output and not output_run.startswith(output):
        raise OutputCollectionError(
            f"--rebase: the output run {output_run} does not start with the output collection name "
            f"{output}; drop --rebase or use --output-run {output}/...")
    if existing_chain is not None and inputs:
        assert output is not None
        existing_chain = _consistent_chain(registry, output, existing_chain, inputs, rebase)
    if existing_chain is not None:
        if not inputs:
            first_is_run = existing_chain and _collection_type(registry, existing_chain[0]) == CollectionType.RUN
            inputs = existing_chain[1:] if first_is_run else list(existing_chain)
        if extend_run:
            if output_run is None:
                if not existing_chain or _collection_type(registry, existing_chain[0]) != CollectionType.RUN:
                    raise OutputCollectionError(
                        f"--extend-run: the first member of {output} is not a RUN to extend")
                output_run = existing_chain[0]
            chain = existing_chain if output_run in existing_chain else [output_run, *existing_chain]
        elif replace_run:
            if not existing_chain or _collection_type(registry, existing_chain[0]) != CollectionType.RUN:
                raise OutputCollectionError(f"--replace-run: {output} has no RUN to replace")
            replaced = existing_chain[0]
            output_run = output_run or f"{output}/{stamp}"
            chain = [output_run, *[c for c in existing_chain[1:]]]
        else:
            output_run = output_run or f"{output}/{stamp}"
            # The inputs are in the chain already (`_consistent_chain`), or were put there by --rebase.
            chain = [output_run, *[c for c in existing_chain if c != output_run]]
    else:
        if output and extend_run and output_run is None:
            raise OutputCollectionError(f"--extend-run: output collection {output} does not exist yet; "
                                        "drop --extend-run for a first run")
        if replace_run:
            raise OutputCollectionError("--replace-run needs an existing -o collection")
        if output and not inputs:
            raise OutputCollectionError(f"-o {output} is a new collection: give the input collections with -i")
        output_run = output_run or f"{output}/{stamp}"
        chain = [output_run, *inputs] if output else None
    assert output_run is not None
    run_type = _collection_type(registry, output_run)
    if extend_run:
        if run_type is None:
            raise OutputCollectionError(f"--extend-run: run {output_run} does not exist; drop --extend-run")
        if run_type != CollectionType.RUN:
            raise OutputCollectionError(f"--extend-run: {output_run} is not a RUN collection")
    elif run_type is not None:
        raise OutputCollectionError(
            f"output run {output_run} already exists; use --extend-run to add to it, --replace-run "
            "with -o to start a new one, or another --output-run name")
    skip = list(skip_existing_in)
    if extend_run and output_run not in skip:
        skip.insert(0, output_run)
    if skip_existing:
        for c in (chain or [output_run]):
            if c not in skip and _collection_type(registry, c) is not None:
                skip.append(c)
    return OutputCollections(inputs=inputs, run=output_run, output=output, chain=chain,
                             extend_run=extend_run, skip_existing_in=skip, replaced_run=replaced)
