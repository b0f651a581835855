"""The ``butler`` command line (click): the group and the butler's own commands.

Commands of other packages (``register-instrument``, ``ingest-raws``, ``transfer-from-graph``)
are plugins: `ButlerGroup` finds them in the ``butler.cli`` entry-point group and imports them
only when one is invoked.

Every command opens the repository, does one thing and prints either an aligned table (default)
or ``--format json|csv`` for scripts. Errors print one message and exit 1; the traceback appears
only with ``--log-level DEBUG``. Heavy modules (SQLAlchemy, numpy, astropy) are imported inside
the commands so ``butler --help`` starts fast.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import click

from ._group import ButlerGroup

if TYPE_CHECKING:
    import logging

__all__ = ["main", "cli"]


def _log() -> logging.Logger:
    """Return the ``butler`` logger; `logging` is imported on first use (``butler --help`` needs none)."""
    import logging

    return logging.getLogger("butler")


# ---------------------------------------------------------------------- output helpers
def _print_table(
    rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None, empty: str = ""
) -> None:
    """Print rows as an aligned table, JSON or CSV."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))  # first-seen order
    if fmt == "json":
        import json  # here: ``butler --help`` imports neither json nor csv

        click.echo(json.dumps([{c: r.get(c) for c in columns} for r in rows], indent=1, default=str))
        return
    if fmt == "csv":
        import csv

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
        click.echo(buf.getvalue(), nl=False)
        return
    if not rows:
        if empty:
            click.echo(empty)
        return
    # Column by column (a column is right-aligned when every cell reads as a number).
    padded = []
    widths = []
    for c in columns:
        values = [r.get(c) for r in rows]
        cells = ["" if v is None else str(v) for v in values]
        width = max(len(c), *map(len, cells))
        # int and float values (and None) always read as numbers: no need to parse their text
        numeric = all(v is None or type(v) in (int, float) for v in values) or all(map(_is_number, cells))
        pad = str.rjust if numeric else str.ljust
        padded.append([pad(c, width), *(pad(s, width) for s in cells)])
        widths.append(width)
    # Blocks of lines: a click.echo per row cost ~40 ms for 3,600 rows. Not one write of
    # everything: a reader that goes away (``| head -1``) must still raise BrokenPipeError.
    table = ["  ".join(t).rstrip() for t in zip(*padded)]
    lines = [table[0], "  ".join("-" * w for w in widths), *table[1:]]
    for i in range(0, len(lines), 256):
        click.echo("\n".join(lines[i : i + 256]))


def _is_number(s: str) -> bool:
    if not s:
        return True
    try:
        float(s)
    except ValueError:
        return False
    return True


def _sort_value(v: Any) -> tuple[int, Any]:
    """Sort key for a data ID value that may be missing (None), a number or a string."""
    if v is None:
        return (0, 0)
    return (1, v) if isinstance(v, (int, float)) else (2, str(v))


def _split(values: Iterable[str] | None) -> list[str]:
    """Flatten repeated and comma-separated option values."""
    out: list[str] = []
    for v in values or ():
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _open(repo: str, **kwargs: Any) -> Any:
    from butler import Butler

    return Butler(repo, **kwargs)


def _listing_registry(repo: str) -> Any:
    """Return the registry for the listing commands: the backend's read-only fast path, else the real one."""
    from butler.registry import backends

    if backends.fast_path_enabled():
        try:
            return backends.open_read_only_fast(repo)
        except backends.FastPathUnavailableError as exc:
            _log().debug("SQLAlchemy registry (%s)", exc)
    return _open(repo, writeable=False).registry


FORMAT_OPTION = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Output format: an aligned table for people, json or csv for scripts.",
)
WHERE_OPTION = click.option(
    "--where",
    "-d",
    "where",
    default="",
    help="Data query expression, e.g. \"exposure.observation_type = 'flat' AND detector IN (0..3)\".",
)
COLLECTIONS_OPTION = click.option(
    "--collections",
    multiple=True,
    help="Collections to search (names or glob patterns; repeat or comma-separate).",
)


@click.group(cls=ButlerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    multiple=True,
    metavar="[COMPONENT=]LEVEL",
    help="Logging level of the root logger (default WARNING) or of one logger "
    "(--log-level butler.registry=DEBUG); repeatable. Levels CRITICAL, ERROR, WARNING, INFO, VERBOSE, "
    "DEBUG, TRACE. DEBUG on the root or 'butler' also shows tracebacks of errors.",
)
@click.option(
    "--long-log", is_flag=True, help="Log records in the long format (time, logger, labels, source line)."
)
@click.option(
    "--log-file",
    multiple=True,
    help="Also write log records to this file (repeatable); JSON lines if it ends in .json, else text.",
)
@click.option("--log-tty/--no-log-tty", default=True, show_default=True, help="Log to the terminal.")
@click.option(
    "--log-label",
    multiple=True,
    metavar="KEY=VALUE",
    help="Label added to every log record (shown by --long-log, written to JSON log files); repeatable.",
)
def cli(
    log_level: tuple[str, ...],
    long_log: bool,
    log_file: tuple[str, ...],
    log_tty: bool,
    log_label: tuple[str, ...],
) -> None:
    """Manage a ccdflow data repository: create it, ingest raws, query and curate collections."""
    import logging

    from butler.cli_logging import setup_logging

    try:
        setup_logging(
            log_level,
            log_file,
            long_log=long_log,
            log_labels=log_label,
            log_tty=log_tty,
            default_level=logging.WARNING,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    except OSError as exc:
        raise click.BadParameter(f"cannot open the log file: {exc}", param_hint="--log-file") from None


def main() -> None:
    """Console-script entry point.

    The cyclic garbage collector is paused during start-up (`butler.cli_startup`); the
    read-only ``query-*`` commands run whole in that pause, the others resume the collector
    before they start (`ButlerGroup.resolve_command`).
    """
    from butler.cli_startup import pause_gc, resume_gc

    pause_gc()
    try:
        cli(prog_name="butler")
    finally:
        resume_gc()


# ---------------------------------------------------------------------- repository
@cli.command()
@click.argument("repo")
@click.option(
    "--db",
    default=None,
    help="Registry database URL (default: SQLite REPO/registry.sqlite3), e.g. postgresql+psycopg://user@host:5432/db[?schema=NAME].",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing repository (deletes its registry and files)."
)
@click.option("--checksum", is_flag=True, help="Record a checksum of every file and verify it on read.")
def create(repo: str, db: str | None, overwrite: bool, checksum: bool) -> None:
    """Create an empty repository at REPO."""
    from butler import Butler

    b = Butler.create(repo, db=db, overwrite=overwrite, checksum=checksum)
    click.echo(f"Created repository {b.root} (registry: {b.config['registry']['db']})")
    b.close()


@cli.command("register-dataset-type")
@click.argument("repo")
@click.argument("name")
@click.argument("storage_class")
@click.argument("dimensions", nargs=-1)
@click.option(
    "--is-calibration",
    is_flag=True,
    help="Datasets of this type can be certified into CALIBRATION collections.",
)
def register_dataset_type(
    repo: str, name: str, storage_class: str, dimensions: tuple[str, ...], is_calibration: bool
) -> None:
    """Register dataset type NAME with STORAGE_CLASS and DIMENSIONS."""
    from butler import DatasetType

    b = _open(repo)
    dt = DatasetType(name, _split(dimensions), storage_class, is_calibration)
    created = b.registry.register_dataset_type(dt)
    click.echo(("Registered " if created else "Already registered: ") + repr(dt))


# ---------------------------------------------------------------------- queries
@cli.command("query-collections")
@click.argument("repo")
@click.argument("patterns", nargs=-1)
@click.option(
    "--collection-type",
    "types",
    multiple=True,
    type=click.Choice(["RUN", "TAGGED", "CHAINED", "CALIBRATION"], case_sensitive=False),
    help="Only these types (repeatable).",
)
@click.option(
    "--chains",
    type=click.Choice(["table", "tree", "flatten", "no-children"]),
    default="table",
    show_default=True,
    help="How to show CHAINED collections.",
)
@FORMAT_OPTION
def query_collections(
    repo: str, patterns: tuple[str, ...], types: tuple[str, ...], chains: str, fmt: str
) -> None:
    """List collections matching glob PATTERNS (default: all)."""
    reg = _listing_registry(repo)
    names = reg.query_collections(
        list(patterns) or "*", types=list(types) or None, flatten_chains=chains == "flatten"
    )
    rows = []
    for n in names:
        ctype = reg.get_collection_type(n)
        row: dict[str, Any] = {"Name": n, "Type": ctype.name}
        if ctype.name == "CHAINED" and chains == "table":
            row["Children"] = ", ".join(reg.get_collection_chain(n))
        rows.append(row)
        if ctype.name == "CHAINED" and chains == "tree":
            for depth, child in _tree(reg, n, 1):
                rows.append({"Name": "  " * depth + child, "Type": reg.get_collection_type(child).name})
    _print_table(
        rows,
        fmt,
        ["Name", "Type"] + (["Children"] if chains == "table" else []),
        empty="No collections found.",
    )


def _tree(reg: Any, name: str, depth: int) -> Iterable[tuple[int, str]]:
    for c in reg.get_collection_chain(name):
        yield depth, c
        if reg.get_collection_type(c).name == "CHAINED":
            yield from _tree(reg, c, depth + 1)


@cli.command("query-dataset-types")
@click.argument("repo")
@click.argument("patterns", nargs=-1)
@FORMAT_OPTION
def query_dataset_types(repo: str, patterns: tuple[str, ...], fmt: str) -> None:
    """List dataset types matching glob PATTERNS (default: all)."""
    reg = _listing_registry(repo)
    rows = [
        {
            "Name": dt.name,
            "Dimensions": ", ".join(dt.dimensions),
            "Storage class": dt.storage_class,
            "Calibration": "yes" if dt.is_calibration else "",
        }
        for dt in reg.query_dataset_types(list(patterns) or "*")
    ]
    _print_table(
        rows, fmt, ["Name", "Dimensions", "Storage class", "Calibration"], empty="No dataset types found."
    )


def _ref_rows(
    refs: Sequence[Any], order: Sequence[str], uris: dict[Any, str] | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Table rows of datasets: type, run, id, data ID values in universe order (and URI)."""
    dims: list[str] = []
    for r in refs:
        for d in r.data_id:
            if d not in dims:
                dims.append(d)
    dims.sort(key=list(order).index)
    rows = []
    for r in refs:
        row: dict[str, Any] = {"type": r.dataset_type.name, "run": r.run, "id": str(r.id)}
        row.update({d: r.data_id.get(d) for d in dims})
        if uris is not None:
            row["URI"] = uris.get(r.id, "")
        rows.append(row)
    return rows, ["type", "run", "id", *dims] + (["URI"] if uris is not None else [])


def _query_datasets_fast(
    repo: str, types: list[str], cols: list[str] | None, where: str, find_first: bool, show_uri: bool
) -> tuple[list[Any], tuple[str, ...], dict[Any, str] | None] | None:
    """Run the backend's read-only fast path (no SQLAlchemy import); `None` when the registry must answer."""
    from butler.registry import backends

    if not backends.fast_path_enabled():
        return None
    try:
        fast = backends.open_read_only_fast(repo)
        try:
            refs, uris, order = fast.query_datasets(
                types, collections=cols, where=where, find_first=find_first, with_uris=show_uri
            )
        finally:
            fast.close()
    except backends.FastPathUnavailableError as exc:
        _log().debug("query-datasets: SQLAlchemy path (%s)", exc)
        return None
    return refs, order, (uris if show_uri else None)


def _fast_query(repo: str, command: str, query: Any) -> Any:
    """Return ``query(fast registry)`` on the read-only fast path; `None` when the registry must answer.

    Parameters
    ----------
    repo : `str`
        Repository.
    command : `str`
        Command name (for the debug log).
    query : callable
        Takes the `butler.registry._sqlite_fast.SqliteFastRegistry`; raises
        `butler.registry.backends.FastPathUnavailableError` for anything it does not handle.

    Returns
    -------
    result : `typing.Any` or `None`
        The query's result, or `None` (fast path disabled or unavailable).
    """
    from butler.registry import backends

    if not backends.fast_path_enabled():
        return None
    try:
        fast = backends.open_read_only_fast(repo)
        try:
            return query(fast)
        finally:
            fast.close()
    except backends.FastPathUnavailableError as exc:
        _log().debug("%s: SQLAlchemy path (%s)", command, exc)
        return None


@cli.command("query-datasets")
@click.argument("repo")
@click.argument("dataset_types", nargs=-1)
@COLLECTIONS_OPTION
@WHERE_OPTION
@click.option(
    "--find-first/--no-find-first",
    default=False,
    show_default=True,
    help="Only the first dataset per data ID along the collections (needs --collections).",
)
@click.option(
    "--limit", default=0, show_default=True, help="At most this many datasets per type (0 = no limit)."
)
@click.option(
    "--order-by", default="", help="Comma-separated dimensions or element.field, '-' for descending."
)
@click.option("--show-uri", is_flag=True, help="Also show each dataset's file.")
@FORMAT_OPTION
def query_datasets(
    repo: str,
    dataset_types: tuple[str, ...],
    collections: tuple[str, ...],
    where: str,
    find_first: bool,
    limit: int,
    order_by: str,
    show_uri: bool,
    fmt: str,
) -> None:
    """List datasets of DATASET_TYPES (glob patterns; default: all) in collections."""
    cols = _split(collections) or None
    if find_first and cols is None:
        raise click.UsageError("--find-first needs --collections (the search order)")
    types = list(dataset_types) or ["*"]
    # SQLite without --order-by/--limit: answered with the stdlib sqlite3 module (same query
    # compiler, same rows; ~0.3 s less start-up). Anything else, and every error, goes through
    # the registry (SQLAlchemy), which is the reference.
    fast = None
    if not (order_by or limit):
        fast = _query_datasets_fast(repo, types, cols, where, find_first, show_uri)
    if fast is not None:
        refs, order, uris = fast
    else:
        b = _open(repo, writeable=False)
        refs = b.registry.query_datasets(
            types,
            collections=cols,
            where=where,
            find_first=find_first,
            limit=limit or None,
            order_by=order_by or None,
        )
        order = b.registry.universe.names
        uris = None
        if show_uri:
            infos = b.registry.get_file_records([r.id for r in refs])
            uris = {i: str(b.datastore.abspath(info.path)) for i, info in infos.items()}
    if not order_by:
        refs.sort(key=lambda r: (r.dataset_type.name, r.run, [_sort_value(r.data_id.get(d)) for d in order]))
    rows, columns = _ref_rows(refs, order, uris)
    _print_table(rows, fmt, columns, empty="No datasets found.")


@cli.command("query-data-ids")
@click.argument("repo")
@click.argument("dimensions", nargs=-1, required=True)
@COLLECTIONS_OPTION
@click.option(
    "--datasets", multiple=True, help="Only data IDs with datasets of these types in --collections."
)
@WHERE_OPTION
@click.option(
    "--order-by", default="", help="Comma-separated dimensions or element.field, '-' for descending."
)
@click.option("--limit", default=0, show_default=True, help="At most this many (0 = no limit).")
@FORMAT_OPTION
def query_data_ids(
    repo: str,
    dimensions: tuple[str, ...],
    collections: tuple[str, ...],
    datasets: tuple[str, ...],
    where: str,
    order_by: str,
    limit: int,
    fmt: str,
) -> None:
    """List data IDs of DIMENSIONS that exist and match the query."""
    rows = None
    if not order_by:
        rows = _fast_query(
            repo,
            "query-data-ids",
            lambda fast: fast.query_data_ids(
                _split(dimensions),
                where=where,
                datasets=_split(datasets) or None,
                collections=_split(collections) or None,
                limit=limit,
            ),
        )
    if rows is None:
        b = _open(repo, writeable=False)
        ids = b.registry.query_data_ids(
            _split(dimensions),
            where=where,
            datasets=_split(datasets) or None,
            collections=_split(collections) or None,
            order_by=order_by or None,
            limit=limit or None,
        )
        rows = [dict(d) for d in ids]
    _print_table(rows, fmt, empty="No data IDs found.")


@cli.command("query-dimension-records")
@click.argument("repo")
@click.argument("element")
@WHERE_OPTION
@click.option("--order-by", default="", help="Comma-separated fields, '-' for descending.")
@click.option("--limit", default=0, show_default=True, help="At most this many (0 = no limit).")
@FORMAT_OPTION
def query_dimension_records(repo: str, element: str, where: str, order_by: str, limit: int, fmt: str) -> None:
    """List the records of dimension ELEMENT (instrument, detector, exposure ...)."""
    recs = None
    if not order_by:
        recs = _fast_query(
            repo,
            "query-dimension-records",
            lambda fast: fast.query_dimension_records(element, where=where, limit=limit),
        )
    if recs is None:
        b = _open(repo, writeable=False)
        recs = b.registry.query_dimension_records(
            element, where=where, order_by=order_by or None, limit=limit or None
        )
    rows = []
    for r in recs:
        d = {k: v for k, v in r.to_dict().items() if k != "camera_yaml"}
        ts = r.get("timespan")
        if "timespan" in d:
            d.pop("timespan")
            if fmt == "json":
                d["timespan"] = None if ts is None else ts.to_dict()
            else:
                td = ts.to_dict() if ts is not None else {"begin": None, "end": None}
                d["timespan (begin)"], d["timespan (end)"] = td["begin"], td["end"]
        rows.append(d)
    _print_table(rows, fmt, empty=f"No {element} records found.")


# ---------------------------------------------------------------------- curation
@cli.command("collection-chain")
@click.argument("repo")
@click.argument("parent")
@click.argument("children", nargs=-1)
@click.option(
    "--mode",
    type=click.Choice(["redefine", "extend", "remove", "prepend", "pop"]),
    default="redefine",
    show_default=True,
    help="How CHILDREN change the chain (pop: remove positions, default 0).",
)
@click.option("--flatten", is_flag=True, help="Replace CHAINED children by their flattened contents.")
@click.option("--doc", default="", help="Documentation string of a new chain.")
def collection_chain(
    repo: str, parent: str, children: tuple[str, ...], mode: str, flatten: bool, doc: str
) -> None:
    """Define or change the CHAINED collection PARENT."""
    from butler import CollectionType, MissingCollectionError

    b = _open(repo)
    reg = b.registry
    kids = _split(children)
    # one transaction: a new PARENT is not left behind when the chain is refused
    with reg.transaction():
        try:
            current = list(reg.get_collection_chain(parent))
        except MissingCollectionError:
            if mode in ("remove", "pop"):
                raise
            reg.register_collection(parent, CollectionType.CHAINED, doc)
            current = []
        if mode == "redefine":
            new = kids
        elif mode == "extend":
            new = current + [k for k in kids if k not in current]
        elif mode == "prepend":
            new = kids + [c for c in current if c not in kids]
        elif mode == "remove":
            missing = [k for k in kids if k not in current]
            if missing:
                raise click.UsageError(f"{', '.join(missing)} not in chain {parent} ({', '.join(current)})")
            new = [c for c in current if c not in kids]
        else:
            positions = [int(k) for k in kids] or [0]
            bad = [p for p in positions if not -len(current) <= p < len(current)]
            if bad:
                raise click.UsageError(
                    f"position(s) {bad} out of range for chain {parent} of length {len(current)}"
                )
            drop = {p % len(current) for p in positions}
            new = [c for i, c in enumerate(current) if i not in drop]
        reg.set_collection_chain(parent, new, flatten=flatten)
    click.echo(f"{parent}: [{', '.join(reg.get_collection_chain(parent))}]")


@cli.command()
@click.argument("repo")
@click.argument("tag")
@COLLECTIONS_OPTION
@click.option("--datasets", multiple=True, required=True, help="Dataset types (glob patterns) to associate.")
@WHERE_OPTION
@click.option("--find-first", is_flag=True, help="Only the first dataset per data ID along --collections.")
def associate(
    repo: str, tag: str, collections: tuple[str, ...], datasets: tuple[str, ...], where: str, find_first: bool
) -> None:
    """Add datasets found in --collections to the TAGGED collection TAG (created if missing)."""
    from butler import CollectionType

    b = _open(repo)
    cols = _split(collections)
    if not cols:
        raise click.UsageError("--collections is required")
    refs = b.registry.query_datasets(_split(datasets), collections=cols, where=where, find_first=find_first)
    b.registry.register_collection(tag, CollectionType.TAGGED)
    b.registry.associate(tag, refs)
    click.echo(f"Associated {len(refs)} dataset(s) with {tag}")


def _timespan(begin: str | None, end: str | None) -> Any:
    from butler import Timespan

    try:
        return Timespan.from_strings(begin, end)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command("certify-calibrations")
@click.argument("repo")
@click.argument("input_run")
@click.argument("calib_collection")
@click.argument("dataset_type")
@click.option("--begin-date", default=None, help="Start of validity, ISO TAI (default: unbounded).")
@click.option("--end-date", default=None, help="End of validity (exclusive), ISO TAI (default: unbounded).")
@click.option(
    "--search-all-inputs",
    is_flag=True,
    help="Search INPUT_RUN as a collection (chains allowed) instead of requiring a RUN.",
)
def certify_calibrations(
    repo: str,
    input_run: str,
    calib_collection: str,
    dataset_type: str,
    begin_date: str | None,
    end_date: str | None,
    search_all_inputs: bool,
) -> None:
    """Certify the DATASET_TYPE datasets of INPUT_RUN into CALIB_COLLECTION for a validity range."""
    from butler import CollectionType, CollectionTypeError

    ts = _timespan(begin_date, end_date)
    b = _open(repo)
    reg = b.registry
    if not search_all_inputs and reg.get_collection_type(input_run) is not CollectionType.RUN:
        raise CollectionTypeError(
            f"{input_run!r} is not a RUN; pass --search-all-inputs to search it as a collection"
        )
    refs = reg.query_datasets(dataset_type, collections=[input_run], find_first=True)
    if not refs:
        raise click.ClickException(f"no {dataset_type} datasets in {input_run}")
    if _already_certified(reg, calib_collection, dataset_type, refs, ts):
        # A rerun after a certification that committed (e.g. a repeated main-job step).
        click.echo(
            f"Nothing to do: the {len(refs)} {dataset_type} dataset(s) of {input_run} are already "
            f"certified in {calib_collection} for {ts}"
        )
        return
    with reg.transaction():
        reg.register_collection(calib_collection, CollectionType.CALIBRATION)
        reg.certify(calib_collection, refs, ts)
    click.echo(
        f"Certified {len(refs)} {dataset_type} dataset(s) from {input_run} into {calib_collection} for {ts}"
    )


def _already_certified(reg: Any, calib: str, dataset_type: str, refs: Sequence[Any], ts: Any) -> bool:
    """Whether every one of ``refs`` is certified in ``calib`` for exactly ``ts`` already."""
    from butler import CollectionType

    try:
        if reg.get_collection_type(calib) is not CollectionType.CALIBRATION:
            return False
        certs = reg.query_calibration_validity(calib, dataset_type)
    except Exception:  # noqa: BLE001 - missing collection/type: not certified
        return False
    have = {ref.id for ref, span in certs if span == ts}
    return all(r.id in have for r in refs)


@cli.command()
@click.argument("repo")
@click.argument("calib_collection")
@click.argument("dataset_type")
@click.option(
    "--begin-date", default=None, help="Start of the range to remove, ISO TAI (default: unbounded)."
)
@click.option("--end-date", default=None, help="End of the range to remove, ISO TAI (default: unbounded).")
def decertify(
    repo: str, calib_collection: str, dataset_type: str, begin_date: str | None, end_date: str | None
) -> None:
    """Remove a time range from the DATASET_TYPE certifications in CALIB_COLLECTION (trim/split)."""
    ts = _timespan(begin_date, end_date)
    if ts.end_ns <= ts.begin_ns:
        raise click.BadParameter(
            f"the range {begin_date} to {end_date} is empty (the end is the begin), so it would "
            "decertify nothing; give an --end-date after --begin-date",
            param_hint="--end-date",
        )
    b = _open(repo)
    n = b.registry.decertify(calib_collection, dataset_type, ts)
    click.echo(f"Changed {n} validity range(s) of {dataset_type} in {calib_collection}")


def _stdin_is_interactive() -> bool:
    """Return whether standard input is a terminal (a person can answer a confirmation)."""
    import sys

    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced stdin
        return False


def _confirm_removal(command: str) -> bool:
    """Ask "Continue?" before a removal; refuse when nobody can answer.

    Parameters
    ----------
    command : `str`
        The command asking (named in the refusal).

    Returns
    -------
    go : `bool`
        The answer (default no).

    Raises
    ------
    click.ClickException
        If standard input is not a terminal: the removal is not done, and the message says how
        to confirm in advance (``--no-confirm``) or only list (``--dry-run``).
    """
    if not _stdin_is_interactive():
        raise click.ClickException(
            f"{command}: standard input is not a terminal, so the removal listed above cannot be "
            "confirmed; nothing was removed. Rerun with --no-confirm to remove without asking "
            "(or --dry-run to only list)"
        )
    return click.confirm("Continue?", default=False)


def _type_counts(refs: Sequence[Any]) -> str:
    counts: dict[str, int] = {}
    for r in refs:
        counts[r.dataset_type.name] = counts.get(r.dataset_type.name, 0) + 1
    return ", ".join(f"{k}({v})" for k, v in sorted(counts.items()))


CONFIRM_OPTION = click.option(
    "--confirm/--no-confirm",
    default=True,
    show_default=True,
    help="List what will be removed and ask before removing it (--no-confirm: remove without asking).",
)


@cli.command("prune-datasets")
@click.argument("repo")
@click.argument("collections", nargs=-1)
@click.option(
    "--datasets", multiple=True, default=("*",), show_default=True, help="Dataset types (glob patterns)."
)
@click.option(
    "--find-all",
    is_flag=True,
    help="Act on every dataset found in COLLECTIONS, not only the first one per dataset type and "
    "data ID along the search path (the default, find-first).",
)
@WHERE_OPTION
@click.option(
    "--purge",
    "purge_run",
    metavar="RUN",
    default=None,
    help="Remove the datasets completely (registry and files); only datasets of this RUN are "
    "removed, whatever else COLLECTIONS reaches.",
)
@click.option(
    "--unstore", is_flag=True, help="Delete the datasets' files (their registry entries stay)."
)
@click.option(
    "--disassociate",
    "tags",
    multiple=True,
    metavar="TAGGED",
    help="Remove the datasets from these TAGGED collections (repeat or comma-separate).",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@CONFIRM_OPTION
@click.option("--quiet", is_flag=True, help="Print nothing on success; implies --no-confirm.")
def prune_datasets(
    repo: str,
    collections: tuple[str, ...],
    datasets: tuple[str, ...],
    find_all: bool,
    where: str,
    purge_run: str | None,
    unstore: bool,
    tags: tuple[str, ...],
    dry_run: bool,
    confirm: bool,
    quiet: bool,
) -> None:
    """Remove the datasets found in COLLECTIONS: purge them, unstore them or disassociate them.

    One of --purge RUN, --unstore or --disassociate TAGGED is required (--unstore may go with
    --disassociate; --purge may not). COLLECTIONS defaults to the RUN of --purge or the TAGGED
    collections of --disassociate. Only the first dataset per dataset type and data ID along
    COLLECTIONS is taken unless --find-all; --purge never touches a dataset outside its RUN, so
    pruning an output chain does not reach the inputs it searches.
    """
    from butler import CollectionType

    tag_list = _split(tags)
    if not purge_run and not unstore and not tag_list:
        raise click.ClickException(
            "no operation: give one of --purge RUN (remove datasets of RUN completely), --unstore "
            "(delete their files) or --disassociate TAGGED (take them out of a TAGGED collection)"
        )
    if purge_run and tag_list:
        raise click.ClickException(
            "--purge and --disassociate cannot be used together: --purge removes the datasets from "
            "every collection; use one or the other"
        )
    if quiet and dry_run:
        raise click.ClickException("--quiet and --dry-run cannot be used together; drop one")
    if quiet:
        confirm = False
    cols = list(collections) or ([purge_run] if purge_run else list(tag_list))
    if not find_all and any(ch in c for c in cols for ch in "*?["):
        raise click.ClickException(
            f"glob patterns in COLLECTIONS ({', '.join(cols)}) have no search order; name the "
            "collections, or add --find-all"
        )
    b = _open(repo)
    reg = b.registry
    if purge_run and reg.get_collection_type(purge_run) is not CollectionType.RUN:
        raise click.ClickException(
            f"--purge {purge_run}: {purge_run!r} is a {reg.get_collection_type(purge_run).name} "
            "collection, not a RUN; --purge takes the RUN whose datasets are removed"
        )
    for t in tag_list:
        if reg.get_collection_type(t) is not CollectionType.TAGGED:
            raise click.ClickException(
                f"--disassociate {t}: {t!r} is a {reg.get_collection_type(t).name} collection, not "
                "TAGGED (use --purge RUN or --unstore for datasets of a RUN)"
            )
    refs = reg.query_datasets(_split(datasets), collections=cols, where=where, find_first=not find_all)
    kept: list[Any] = []
    if purge_run:
        kept = [r for r in refs if r.run != purge_run]
        refs = [r for r in refs if r.run == purge_run]
    if purge_run:
        action = f"removed completely (registry entries and files) from RUN {purge_run}"
    elif unstore and tag_list:
        action = f"disassociated from {', '.join(tag_list)} and their files deleted"
    elif unstore:
        action = "unstored (their files deleted; the registry entries stay)"
    else:
        action = f"disassociated from {', '.join(tag_list)}"
    rows, columns = _ref_rows(refs, reg.universe.names, None)
    if kept and not quiet:
        click.echo(
            f"{len(kept)} dataset(s) found in {', '.join(cols)} belong to other runs and are kept: "
            f"{_type_counts(kept)}"
        )
    if not refs:
        if not quiet:
            click.echo("Did not find any datasets to remove.")
        return
    if dry_run or confirm:
        click.echo(f"The following {len(refs)} dataset(s) will be {action}:")
        _print_table(rows, "table", columns)
        if dry_run:
            return
        if not _confirm_removal("prune-datasets"):
            click.echo("Aborted; nothing was removed.")
            return
    n = b.prune_datasets(
        refs, purge=bool(purge_run), unstore=bool(unstore or purge_run), disassociate=tag_list
    )
    if not quiet:
        click.echo(f"{n} dataset(s) {action}: {_type_counts(refs)}")


@cli.command("remove-runs")
@click.argument("repo")
@click.argument("patterns", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@CONFIRM_OPTION
@click.option(
    "--force",
    is_flag=True,
    help="With --no-confirm: also remove runs that are in CHAINED collections (they are unlinked).",
)
def remove_runs(repo: str, patterns: tuple[str, ...], dry_run: bool, confirm: bool, force: bool) -> None:
    """Remove RUN collections matching PATTERNS with their datasets and files.

    The runs and the number of datasets of each type are listed and confirmed first
    (--no-confirm to skip). A run that is in CHAINED collections is unlinked from them; without
    confirmation that needs --force.
    """
    b = _open(repo)
    reg = b.registry
    runs = reg.query_collections(list(patterns), types=["RUN"])
    if not runs:
        raise click.ClickException(
            f"no RUN collections match {', '.join(patterns)} (butler query-collections REPO lists them)"
        )
    parents = {r: reg.get_collection_parent_chains(r) for r in runs}
    refs = reg.query_datasets("*", collections=runs, find_first=False)
    if not dry_run and not confirm and any(parents.values()) and not force:
        linked = "; ".join(f"{r} is in {', '.join(p)}" for r, p in parents.items() if p)
        raise click.ClickException(
            f"removing runs that are in CHAINED collections needs confirmation ({linked}); rerun "
            "without --no-confirm to confirm, or add --force to unlink and remove them without asking"
        )
    if dry_run or confirm:
        click.echo(f"The following {len(runs)} RUN collection(s) will be removed:")
        for r in runs:
            click.echo(f"  {r}" + (f" (will be unlinked from {', '.join(parents[r])})" if parents[r] else ""))
        click.echo(f"with their {len(refs)} dataset(s): {_type_counts(refs) or 'none'}")
        if dry_run:
            return
        if not _confirm_removal("remove-runs"):
            click.echo("Aborted; nothing was removed.")
            return
    n = b.remove_runs(runs, unlink=True)
    click.echo(f"Removed {len(runs)} run(s) and {n} dataset(s): {', '.join(runs)}")


@cli.command("remove-collections")
@click.argument("repo")
@click.argument("patterns", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@CONFIRM_OPTION
def remove_collections(repo: str, patterns: tuple[str, ...], dry_run: bool, confirm: bool) -> None:
    """Remove TAGGED, CHAINED and CALIBRATION collections matching PATTERNS (not RUNs: use remove-runs).

    No dataset is removed (they stay in their RUNs). The collections are listed and confirmed
    first (--no-confirm to skip).
    """
    b = _open(repo)
    reg = b.registry
    names = reg.query_collections(list(patterns), types=["TAGGED", "CHAINED", "CALIBRATION"])
    runs = reg.query_collections(list(patterns), types=["RUN"])
    if not names:
        hint = f" (RUN collections {', '.join(runs)} match: use remove-runs)" if runs else ""
        raise click.ClickException(f"no non-RUN collections match {', '.join(patterns)}{hint}")
    types = {n: reg.get_collection_type(n).name for n in names}
    if dry_run or confirm:
        click.echo(f"The following {len(names)} collection(s) will be removed:")
        _print_table([{"Collection": n, "Type": types[n]} for n in names], "table")
        if runs:
            click.echo(f"RUN collections matching too are NOT removed by this command: {', '.join(runs)}")
        if dry_run:
            return
        if not _confirm_removal("remove-collections"):
            click.echo("Aborted; nothing was removed.")
            return
    # Chains first so their children are free to go.
    names.sort(key=lambda n: types[n] != "CHAINED")
    with reg.transaction():
        for n in names:
            reg.remove_collection(n)
    click.echo(f"Removed {len(names)} collection(s): {', '.join(names)}")


def _add_transfer_commands() -> None:
    from butler.transfers.cli import COMMANDS  # export, import, transfer-datasets, retrieve-artifacts, get

    for command in COMMANDS:
        cli.add_command(command)


_add_transfer_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
