"""``butler`` commands that move data: export, import, transfer-datasets, retrieve-artifacts, get.

Names and options follow daf_butler's CLI (``-t/--dataset-type``, ``--collections``,
``--where``, ``--find-first``, ``--transfer``, ``--register-dataset-types``,
``--transfer-dimensions``, ``--preserve-path``, ``--clobber``, ``--export-file``,
``--skip-dimensions``). ``butler export`` and ``butler get`` have no daf_butler command of that
name: ``export`` is ``Butler.export`` on the command line, ``get`` is ``Butler.get`` for small
datasets (JSON / YAML / FITS). Errors are raised as butler errors; the group prints one line
and exits 1.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

import click

__all__ = ["COMMANDS", "export", "get", "import_", "retrieve_artifacts", "transfer_datasets"]


def _split(values: Iterable[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or ():
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


_dataset_type_option = click.option(
    "-t",
    "--dataset-type",
    "dataset_types",
    multiple=True,
    help="Dataset types (names or glob patterns; repeat or comma-separate). Default: all.",
)
_collections_option = click.option(
    "--collections",
    multiple=True,
    help="Collections to search (names or glob patterns; repeat or comma-separate). Default: all.",
)
_where_option = click.option(
    "--where", default="", help="Data query expression, e.g. \"instrument = 'kast_blue' AND detector = 0\"."
)
_find_first_option = click.option(
    "--find-first", is_flag=True, help="Only the first dataset per data ID along --collections."
)


def _selection_options(command: Any) -> Any:
    """Add ``-t/--dataset-type``, ``--collections``, ``--where`` and ``--find-first`` to a command."""
    for option in (_find_first_option, _where_option, _collections_option, _dataset_type_option):
        command = option(command)
    return command


def _transfer_option(choices: list[str], help: str) -> Any:
    """Return the ``--transfer`` option (default ``auto``) with these modes."""
    return click.option(
        "--transfer", type=click.Choice(choices), default="auto", show_default=True, help=help
    )


def _selection(dataset_types: tuple[str, ...], collections: tuple[str, ...], find_first: bool) -> dict:
    cols = _split(collections) or None
    if find_first and cols is None:
        raise click.UsageError("--find-first needs --collections (the search order)")
    return {"dataset_types": _split(dataset_types) or "*", "collections": cols, "find_first": find_first}


def _collect(b: Any, sel: dict, where: str) -> Any:
    """Collect the datasets of butler ``b`` that ``sel`` and ``where`` choose, for export."""
    from butler.transfers import collect

    return collect(b, sel["dataset_types"], collections=sel["collections"], where=where,
                   find_first=sel["find_first"])


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# ---------------------------------------------------------------------- export / import
@click.command("export")
@click.argument("repo")
@click.argument("directory")
@_selection_options
@_transfer_option(
    ["auto", "copy", "hardlink", "symlink", "relsymlink"],
    "How the files reach DIRECTORY (auto: hard link when possible, else copy).",
)
def export(
    repo: str,
    directory: str,
    dataset_types: tuple[str, ...],
    collections: tuple[str, ...],
    where: str,
    find_first: bool,
    transfer: str,
) -> None:
    """Export datasets of REPO, with their files, into the new directory DIRECTORY.

    DIRECTORY/export.yaml (daf_butler's layout) lists the dimension records the datasets' data
    IDs use, the dataset types, the RUNs and the collections searched (CHAINED with their
    children, TAGGED with their datasets, CALIBRATION with validity ranges); the files keep
    their paths. Read it back with 'butler import'.
    """
    from butler import Butler
    from butler.transfers import write_export

    sel = _selection(dataset_types, collections, find_first)
    t0 = time.perf_counter()
    b = Butler(repo, writeable=False)
    contents = _collect(b, sel, where)
    if not contents.n_datasets:
        raise click.ClickException("no datasets match; nothing was exported")
    r = write_export(b, directory, contents, transfer=transfer)
    click.echo(
        f"Exported {r.n_datasets} dataset(s) in {r.n_files} file(s) ({_mb(r.n_bytes)}), "
        f"{r.n_validity_ranges} validity range(s) and {len(contents.collections)} collection(s) to "
        f"{r.directory} in {time.perf_counter() - t0:.1f} s"
    )


@click.command("import")
@click.argument("repo")
@click.argument("directory")
@_transfer_option(
    ["auto", "copy", "hardlink", "symlink", "move", "direct"],
    "How files enter REPO (auto: in place if already under REPO, else copy).",
)
@click.option("--export-file", default=None, help="Export file (default: DIRECTORY/export.yaml).")
@click.option(
    "-s",
    "--skip-dimensions",
    multiple=True,
    help="Dimension elements whose records are not imported (they must exist in REPO).",
)
def import_(repo: str, directory: str, transfer: str, export_file: str | None,
            skip_dimensions: tuple[str, ...]) -> None:
    """Import an export DIRECTORY into REPO: all or nothing, and a no-op when run again."""
    from butler import Butler

    t0 = time.perf_counter()
    b = Butler(repo)
    r = b.import_(directory, filename=export_file, transfer=transfer, skip_dimensions=_split(skip_dimensions))
    click.echo(_import_summary(r, "Imported", time.perf_counter() - t0))


def _import_summary(r: Any, verb: str, seconds: float) -> str:
    text = (
        f"{verb} {r.n_datasets} dataset(s) in {r.n_files} file(s) ({_mb(r.n_bytes)}), "
        f"{r.n_records} dimension record(s), {r.n_validity_ranges} validity range(s); "
        f"{r.n_skipped} dataset(s) already present; in {seconds:.1f} s"
    )
    if r.collections:
        text += f"\nCollections created: {', '.join(r.collections)}"
    if r.dataset_types:
        text += f"\nDataset types registered: {', '.join(r.dataset_types)}"
    return text


@click.command("transfer-datasets")
@click.argument("source")
@click.argument("dest")
@_selection_options
@_transfer_option(["auto", "copy", "hardlink", "symlink", "direct"], "How files enter DEST (auto: copy).")
@click.option("--register-dataset-types", is_flag=True, help="Register dataset types DEST lacks.")
@click.option(
    "--transfer-dimensions/--no-transfer-dimensions",
    default=True,
    show_default=True,
    help="Insert the dimension records DEST lacks.",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be transferred.")
def transfer_datasets(
    source: str,
    dest: str,
    dataset_types: tuple[str, ...],
    collections: tuple[str, ...],
    where: str,
    find_first: bool,
    transfer: str,
    register_dataset_types: bool,
    transfer_dimensions: bool,
    dry_run: bool,
) -> None:
    """Copy datasets (and what they need) from repository SOURCE to repository DEST.

    Works across backends (SQLite -> PostgreSQL). The RUNs of the datasets come along, and the
    CHAINED, TAGGED and CALIBRATION collections searched (all when --collections is not given)
    with their children, tags and validity ranges. One transaction in DEST; every copied
    file is checked against its size and checksum; running it again is a no-op.
    """
    from butler import Butler
    from butler.transfers import import_contents

    sel = _selection(dataset_types, collections, find_first)
    t0 = time.perf_counter()
    src = Butler(source, writeable=False)
    contents = _collect(src, sel, where)
    if dry_run:
        click.echo(
            f"Would transfer {contents.n_datasets} dataset(s) in {contents.n_files} file(s), "
            f"{contents.n_validity_ranges} validity range(s), {len(contents.collections)} collection(s)"
        )
        return
    dst = Butler(dest)
    r = import_contents(
        dst,
        contents,
        src.root,
        transfer=transfer,
        skip_dimensions=() if transfer_dimensions else tuple(contents.records),
        register_dataset_types=register_dataset_types,
    )
    click.echo(f"Number of datasets transferred: {r.n_datasets}")
    click.echo(_import_summary(r, "Transferred", time.perf_counter() - t0))


@click.command("retrieve-artifacts")
@click.argument("repo")
@click.argument("destination")
@_selection_options
@_transfer_option(
    ["auto", "copy", "hardlink", "symlink", "relsymlink"], "How files reach DESTINATION (auto: copy)."
)
@click.option(
    "--preserve-path/--no-preserve-path",
    default=True,
    show_default=True,
    help="Keep each file's path inside the repository (else: file names only, directly in DESTINATION).",
)
@click.option("--clobber/--no-clobber", default=False, show_default=True, help="Overwrite existing files.")
def retrieve_artifacts(
    repo: str,
    destination: str,
    dataset_types: tuple[str, ...],
    collections: tuple[str, ...],
    where: str,
    find_first: bool,
    transfer: str,
    preserve_path: bool,
    clobber: bool,
) -> None:
    """Copy the files of the chosen datasets of REPO into DESTINATION."""
    from butler import Butler

    sel = _selection(dataset_types, collections, find_first)
    b = Butler(repo, writeable=False)
    refs = b.registry.query_datasets(
        sel["dataset_types"], collections=sel["collections"], where=where,
        find_first=sel["find_first"] and sel["collections"] is not None,
    )
    if not refs:
        raise click.ClickException("no datasets match; nothing was retrieved")
    paths = b.retrieve_artifacts(refs, destination, transfer=transfer, preserve_path=preserve_path,
                                 overwrite=clobber)
    click.echo(f"Number of artifacts retrieved into destination {destination}: {len(paths)}")


# ---------------------------------------------------------------------- get
def _parse_data_id(values: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in _split(values):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter(
                f"{item!r} is not KEY=VALUE (e.g. -d instrument=kast_blue -d detector=0)"
            )
        v: Any = value.strip()
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                continue
        out[key.strip()] = v
    return out


def to_plain(obj: Any, _budget: list[int] | None = None) -> Any:
    """Convert a dataset to JSON/YAML-able values (NaN and infinities become ``None``).

    Mappings, sequences, numpy arrays and scalars, astropy tables (``meta`` and ``rows``),
    objects with ``to_dict`` and other objects' public attributes are converted.

    Raises
    ------
    ValueError
        For bytes (a PNG plot: use retrieve-artifacts) or more than 10 million values (an
        image: use ``--format fits``).
    """
    budget = _budget if _budget is not None else [10_000_000]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (bytes, bytearray)):
        raise ValueError(
            "this dataset is binary (e.g. a PNG plot); fetch its file with butler retrieve-artifacts"
        )
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v, budget) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v, budget) for v in obj]
    if type(obj).__module__.startswith("numpy"):
        size = getattr(obj, "size", 1)
        budget[0] -= int(size)
        if budget[0] < 0:
            raise ValueError("this dataset is too large for JSON/YAML (an image?); use --format fits")
        return to_plain(obj.tolist(), budget)
    if type(obj).__name__ in ("Table", "QTable") and hasattr(obj, "colnames"):
        return {
            "meta": to_plain(dict(obj.meta), budget),
            "rows": [{c: to_plain(row[c], budget) for c in obj.colnames} for row in obj],
        }
    if hasattr(obj, "to_dict"):
        return to_plain(obj.to_dict(), budget)
    if hasattr(obj, "__dict__"):
        return {k: to_plain(v, budget) for k, v in vars(obj).items() if not k.startswith("_")}
    return str(obj)


@click.command("get")
@click.argument("repo")
@click.argument("dataset_type")
@click.option(
    "-d",
    "--data-id",
    "data_id",
    multiple=True,
    help="KEY=VALUE of the data ID (repeat or comma-separate), e.g. -d instrument=kast_blue,detector=0.",
)
@_collections_option
@click.option("--id", "dataset_id", default=None, help="Dataset UUID (instead of a data ID and collections).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "yaml", "fits"]),
    default="json",
    show_default=True,
    help="json / yaml: the dataset's values; fits: its FITS file (needs -o).",
)
@click.option("-o", "--output", default=None, help="Write to this file instead of standard output.")
def get(
    repo: str,
    dataset_type: str,
    data_id: tuple[str, ...],
    collections: tuple[str, ...],
    dataset_id: str | None,
    fmt: str,
    output: str | None,
) -> None:
    """Read one DATASET_TYPE dataset of REPO and print it as JSON or YAML (or save its FITS file).

    For small datasets: ptc, cpFlatStatistics, task metadata (<label>_metadata), configs.
    A calibration found through a CALIBRATION collection needs a time: give the exposure in
    the data ID (-d exposure=...).
    """
    from butler import Butler, DatasetNotFoundError

    b = Butler(repo, writeable=False)
    if dataset_id is not None:
        ref = b.registry.get_dataset(dataset_id)
        if ref is None or ref.dataset_type.name != dataset_type:
            raise DatasetNotFoundError(f"no {dataset_type} dataset with id {dataset_id} in {b.root}")
    else:
        cols = _split(collections)
        if not cols:
            raise click.UsageError("give --collections (or --id)")
        dims = _parse_data_id(data_id)
        found = b.registry.find_dataset_with_info(dataset_type, dims, collections=cols)
        if found is None:
            raise DatasetNotFoundError(
                f"no {dataset_type} dataset with data ID {dims} in {cols}; check them with butler "
                "query-datasets"
            )
        ref = found[0]
    if fmt == "fits":
        _get_fits(b, ref, output)
        return
    try:
        value = to_plain(b.get(ref))
    except ValueError as exc:
        raise click.ClickException(f"{dataset_type} {ref.data_id.required}: {exc}") from None
    if fmt == "json":
        import json

        text = json.dumps(value, indent=1) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(value, sort_keys=False)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def _get_fits(b: Any, ref: Any, output: str | None) -> None:
    import shutil

    if not output:
        raise click.UsageError("--format fits writes a file: give -o FILE.fits")
    info = b.registry.get_file_records([ref.id])[ref.id]
    path = b.datastore.abspath(info.path)
    if path.suffix.lower() in (".fits", ".fz", ".gz") and ".fits" in path.name.lower():
        shutil.copyfile(path, output)
        return
    obj = b.get(ref)
    if hasattr(obj, "colnames"):
        obj.write(output, format="fits", overwrite=True)
        return
    if type(obj).__module__.startswith("numpy"):
        from astropy.io import fits

        fits.PrimaryHDU(obj).writeto(output, overwrite=True)
        return
    raise click.ClickException(
        f"{ref.dataset_type.name} (storage class {ref.dataset_type.storage_class}) is stored as "
        f"{path.suffix} and has no FITS form; use --format json or yaml"
    )


COMMANDS = (export, import_, transfer_datasets, retrieve_artifacts, get)
"""The commands of this module, for the ``butler`` group."""
