"""What an export holds, and its ``export.yaml`` form (daf_butler's YAML export layout).

The file has daf_butler's top-level keys (``description``, ``version``, ``universe_version``,
``universe_namespace``, ``data``) and its ``data`` item types:

``dimension``
    ``element`` and its ``records`` (one mapping per record; temporal records carry
    ``timespan_begin`` / ``timespan_end`` as TAI nanoseconds, as in the registry).
``collection``
    ``collection_type`` (RUN, TAGGED, CALIBRATION, CHAINED), ``name``, ``doc``, and for a
    CHAINED collection its ``children`` in search order.
``dataset_type``
    ``name``, ``dimensions``, ``storage_class``, ``is_calibration``.
``dataset``
    ``dataset_type``, ``run`` and ``records``: one per file, with ``dataset_id`` and ``data_id``
    lists (several datasets may share a file), ``path`` (relative to the export directory),
    ``formatter``, and ccdflow's additions ``file_size`` (bytes) and ``checksum`` (blake2b,
    when the source repository records checksums).
``associations``
    TAGGED: ``collection``, ``dataset_ids``; CALIBRATION: ``collection`` and
    ``validity_ranges``, each a ``timespan`` (``begin`` / ``end`` ISO TAI for people,
    ``begin_ns`` / ``end_ns`` exact; ``null`` is unbounded) and its ``dataset_ids``.

Differences from daf_butler: UUIDs are plain strings (its ``!uuid`` tag is read too), times are
TAI nanoseconds instead of astropy YAML tags, and the dimension universe is ccdflow's.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .._errors import RepositoryError
from ..collections import CollectionType
from ..datasets import DatasetRef, DatasetType
from ..dimensions import DimensionRecord, DimensionUniverse
from ..timespan import TIMESPAN_MAX, TIMESPAN_MIN, Timespan

__all__ = [
    "EXPORT_FILENAME",
    "EXPORT_FORMAT_VERSION",
    "CollectionEntry",
    "ExportedFile",
    "RepoContents",
    "record_to_row",
]

EXPORT_FORMAT_VERSION = "1.0.2"
"""Version of the file layout (daf_butler's current one; same major version = readable)."""

EXPORT_FILENAME = "export.yaml"
"""Name of the export file inside an export directory."""

_DESCRIPTION = "Butler Data Repository Export"


@dataclass
class ExportedFile:
    """One file of an export and the datasets stored in it.

    Attributes
    ----------
    path : `str` or `None`
        Path relative to the base directory (export directory or source repository root),
        absolute for a file outside it, `None` for datasets registered without a file.
    formatter : `str`
        Dotted path of the formatter that reads the file.
    refs : `list` of `DatasetRef`
        Datasets in the file (same dataset type and RUN).
    file_size : `int`
        Size in bytes (``-1`` if unknown).
    checksum : `str` or `None`
        blake2b hex digest, when known.
    """

    path: str | None
    formatter: str
    refs: list[DatasetRef]
    file_size: int = -1
    checksum: str | None = None


@dataclass(frozen=True)
class CollectionEntry:
    """A collection of an export: name, type, doc and (CHAINED) children."""

    name: str
    type: CollectionType
    doc: str = ""
    children: tuple[str, ...] = ()


@dataclass
class RepoContents:
    """Everything an export or a transfer moves, independent of where the files are.

    Attributes
    ----------
    universe_namespace, universe_version
        The dimension universe the records follow.
    records : `dict` [`str`, `list` [`dict`]]
        Element name -> registry rows (see `record_to_row`), elements in universe order.
    dataset_types : `list` of `DatasetType`
    collections : `list` of `CollectionEntry`
        RUN, TAGGED and CALIBRATION collections, then CHAINED ones children first.
    files : `list` of `ExportedFile`
    tags : `dict` [`str`, `list` [`uuid.UUID`]]
        TAGGED collection -> dataset IDs.
    calibs : `dict` [`str`, `list` [`tuple` [`uuid.UUID`, `Timespan`]]]
        CALIBRATION collection -> (dataset ID, validity range).
    """

    universe_namespace: str
    universe_version: int
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dataset_types: list[DatasetType] = field(default_factory=list)
    collections: list[CollectionEntry] = field(default_factory=list)
    files: list[ExportedFile] = field(default_factory=list)
    tags: dict[str, list[uuid.UUID]] = field(default_factory=dict)
    calibs: dict[str, list[tuple[uuid.UUID, Timespan]]] = field(default_factory=dict)

    # ------------------------------------------------------------------ views
    def iter_refs(self) -> Iterator[DatasetRef]:
        """Every dataset of the export."""
        for f in self.files:
            yield from f.refs

    @property
    def n_datasets(self) -> int:
        """Number of datasets."""
        return sum(len(f.refs) for f in self.files)

    @property
    def n_files(self) -> int:
        """Number of files (datasets sharing a file count once; datasets without a file not at all)."""
        return sum(1 for f in self.files if f.path is not None)

    @property
    def n_validity_ranges(self) -> int:
        """Number of (dataset, validity range) certifications."""
        return sum(len(v) for v in self.calibs.values())

    def check(self) -> None:
        """Check the export is self-consistent (associations name exported datasets).

        Raises
        ------
        RepositoryError
            If an association names a dataset the export does not hold, or a RUN of a dataset
            or a chain's child is not among the collections.
        """
        ids = {r.id for r in self.iter_refs()}
        for kind, table in (("TAGGED", self.tags), ("CALIBRATION", self.calibs)):
            for coll, items in table.items():
                for item in items:
                    i = item if isinstance(item, uuid.UUID) else item[0]
                    if i not in ids:
                        raise RepositoryError(
                            f"the export associates dataset {i} with {kind} collection {coll!r} but "
                            "does not contain that dataset; re-export it with its datasets"
                        )
        names = {c.name for c in self.collections}
        for r in self.iter_refs():
            if r.run not in names:
                raise RepositoryError(f"the export has a dataset in RUN {r.run!r} but no such collection")
        for c in self.collections:
            for child in c.children:
                if child not in names:
                    raise RepositoryError(
                        f"the export's chain {c.name!r} names {child!r}, which the export does not define"
                    )

    # ------------------------------------------------------------------ YAML
    def to_yaml(self, stream: IO[str], path_of: Any = None) -> None:
        """Write the export file.

        Parameters
        ----------
        stream : text stream
        path_of : callable, optional
            ``ExportedFile -> str | None``: the path to write (default: ``file.path``).
        """
        import yaml

        data: list[dict[str, Any]] = []
        for element, rows in self.records.items():
            if rows:
                data.append({"type": "dimension", "element": element, "records": rows})
        for c in self.collections:
            item: dict[str, Any] = {"type": "collection", "collection_type": c.type.name, "name": c.name}
            if c.doc:
                item["doc"] = c.doc
            if c.type is CollectionType.CHAINED:
                item["children"] = list(c.children)
            data.append(item)
        for dt in self.dataset_types:
            data.append({"type": "dataset_type", **dt.to_dict()})
        blocks: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for f in self.files:
            r0 = f.refs[0]
            rec: dict[str, Any] = {
                "dataset_id": [str(r.id) for r in f.refs],
                "data_id": [r.data_id.to_simple() for r in f.refs],
                "path": path_of(f) if path_of is not None else f.path,
                "formatter": f.formatter,
                "file_size": f.file_size,
            }
            if f.checksum:
                rec["checksum"] = f.checksum
            blocks.setdefault((r0.dataset_type.name, r0.run), []).append(rec)
        for (dt_name, run), recs in blocks.items():
            data.append({"type": "dataset", "dataset_type": dt_name, "run": run, "records": recs})
        for coll, ids in self.tags.items():
            data.append(
                {
                    "type": "associations",
                    "collection": coll,
                    "collection_type": "TAGGED",
                    "dataset_ids": [str(i) for i in ids],
                }
            )
        for coll, items in self.calibs.items():
            by_span: dict[Timespan, list[str]] = {}
            for i, ts in items:
                by_span.setdefault(ts, []).append(str(i))
            data.append(
                {
                    "type": "associations",
                    "collection": coll,
                    "collection_type": "CALIBRATION",
                    "validity_ranges": [
                        {"timespan": _timespan_to_yaml(ts), "dataset_ids": ids}
                        for ts, ids in sorted(by_span.items())
                    ],
                }
            )
        doc = {
            "description": _DESCRIPTION,
            "version": EXPORT_FORMAT_VERSION,
            "universe_version": self.universe_version,
            "universe_namespace": self.universe_namespace,
            "data": data,
        }
        yaml.dump(doc, stream, Dumper=_yaml_classes()[0], sort_keys=False, allow_unicode=True, width=120)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], universe: DimensionUniverse) -> RepoContents:
        """Read an export file.

        Raises
        ------
        RepositoryError
            If the file is missing, not an export, of another major version or universe, or
            malformed (the message names the entry).
        """
        import yaml

        p = Path(path)
        if not p.is_file():
            raise RepositoryError(
                f"no export file {p}; give the directory `butler export` wrote (with {EXPORT_FILENAME})"
            )
        try:
            with open(p, encoding="utf-8") as f:
                doc = yaml.load(f, Loader=_yaml_classes()[1])  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise RepositoryError(f"{p} is not valid YAML: {exc}") from None
        if not isinstance(doc, dict) or "data" not in doc or "version" not in doc:
            raise RepositoryError(f"{p} is not a butler export file (no 'version'/'data')")
        major = str(doc["version"]).split(".")[0]
        if major != EXPORT_FORMAT_VERSION.split(".")[0]:
            raise RepositoryError(
                f"{p} has export format version {doc['version']}; this ccdflow reads "
                f"{EXPORT_FORMAT_VERSION.split('.')[0]}.x"
            )
        ns = doc.get("universe_namespace", "daf_butler")
        ver = int(doc.get("universe_version", 0))
        if ns != universe.namespace or ver != universe.version:
            raise RepositoryError(
                f"{p} was exported with dimension universe {ns} version {ver}; this repository "
                f"uses {universe.namespace} version {universe.version}"
            )
        out = cls(ns, ver)
        try:
            out._load_items(doc["data"] or [], universe)
        except (KeyError, TypeError, ValueError) as exc:
            raise RepositoryError(f"{p} is malformed: {type(exc).__name__}: {exc}") from None
        out.check()
        return out

    def _load_items(self, items: Iterable[dict[str, Any]], universe: DimensionUniverse) -> None:
        types: dict[str, DatasetType] = {}
        datasets: list[dict[str, Any]] = []
        for item in items:
            kind = item["type"]
            if kind == "dimension":
                universe[item["element"]]
                self.records.setdefault(item["element"], []).extend(item["records"] or [])
            elif kind == "collection":
                ctype = CollectionType.from_name(item["collection_type"])
                self.collections.append(
                    CollectionEntry(
                        item["name"], ctype, item.get("doc") or "", tuple(item.get("children") or ())
                    )
                )
            elif kind == "run":  # daf_butler's oldest form
                self.collections.append(CollectionEntry(item["name"], CollectionType.RUN))
            elif kind == "dataset_type":
                dt = DatasetType(
                    item["name"],
                    item["dimensions"],
                    item["storage_class"],
                    item.get("is_calibration", False),
                    universe=universe,
                )
                types[dt.name] = dt
            elif kind == "dataset":
                datasets.append(item)
            elif kind == "associations":
                ctype = CollectionType.from_name(item["collection_type"])
                if ctype is CollectionType.TAGGED:
                    self.tags.setdefault(item["collection"], []).extend(
                        uuid.UUID(str(i)) for i in item["dataset_ids"]
                    )
                else:
                    calibs = self.calibs.setdefault(item["collection"], [])
                    for vr in item["validity_ranges"]:
                        ts = _timespan_from_yaml(vr["timespan"])
                        calibs.extend((uuid.UUID(str(i)), ts) for i in vr["dataset_ids"])
            else:
                raise ValueError(f"unknown data item type {kind!r}")
        # Order the elements as the universe does (insertion needs parents first).
        self.records = {e: self.records[e] for e in universe.names if e in self.records}
        for item in datasets:
            name = item["dataset_type"]
            if name not in types:
                raise ValueError(f"dataset type {name!r} of run {item['run']!r} is not defined in the file")
            dt = types[name]
            for rec in item["records"]:
                ids = rec["dataset_id"]
                data_ids = rec["data_id"]
                if not isinstance(ids, list):
                    ids, data_ids = [ids], [data_ids]
                refs = [
                    DatasetRef(dt, dt.make_data_id(d), item["run"], uuid.UUID(str(i)))
                    for i, d in zip(ids, data_ids, strict=True)
                ]
                self.files.append(
                    ExportedFile(
                        rec.get("path"),
                        rec.get("formatter") or "",
                        refs,
                        int(rec.get("file_size", -1) if rec.get("file_size") is not None else -1),
                        rec.get("checksum"),
                    )
                )
        self.dataset_types = list(types.values())


def record_to_row(record: DimensionRecord) -> dict[str, Any]:
    """Return a dimension record as a registry row (``timespan_begin/_end`` in TAI ns).

    Parameters
    ----------
    record : `DimensionRecord`

    Returns
    -------
    row : `dict`
        Field -> value, accepted by `Registry.insert_dimension_data`.
    """
    row = record.to_dict()
    if record.element.temporal:
        ts = row.pop("timespan", None)
        row["timespan_begin"], row["timespan_end"] = (None, None) if ts is None else (ts[0], ts[1])
    return row


def _timespan_to_yaml(ts: Timespan) -> dict[str, Any]:
    d = ts.to_dict()
    return {
        "begin": d["begin"],
        "end": d["end"],
        "begin_ns": None if ts.begin_ns <= TIMESPAN_MIN else ts.begin_ns,
        "end_ns": None if ts.end_ns >= TIMESPAN_MAX else ts.end_ns,
    }


def _timespan_from_yaml(d: dict[str, Any]) -> Timespan:
    if "begin_ns" in d or "end_ns" in d:
        return Timespan.from_ns(d.get("begin_ns"), d.get("end_ns"))
    return Timespan.from_strings(d.get("begin"), d.get("end"))


# ---------------------------------------------------------------------- YAML dialect
def _str_presenter(dumper: Any, data: str) -> Any:
    """Multi-line strings (camera descriptions, docs) as literal blocks, readable in the file."""
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


@functools.lru_cache(maxsize=1)
def _yaml_classes() -> tuple[type, type]:
    """Return the dumper and loader of export files (built on first use, so imports stay cheap)."""
    import yaml

    base_dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    base_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Dumper(base_dumper):  # type: ignore[misc, valid-type]
        pass

    class Loader(base_loader):  # type: ignore[misc, valid-type]
        pass

    Dumper.add_representer(str, _str_presenter)
    # daf_butler writes UUIDs with a ``!uuid`` tag.
    Loader.add_constructor("!uuid", lambda loader, node: loader.construct_scalar(node))
    return Dumper, Loader
