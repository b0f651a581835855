"""Collections: the ``collection``, ``run`` and ``collection_chain`` tables and their cache."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from ..._errors import (
    CollectionTypeError,
    ConflictingDefinitionError,
    MissingCollectionError,
    missing_collection,
)
from ...collections import CollectionType, chain_members, flatten_chains, glob_filter, has_glob
from .._row_values import now_utc, time_to_ns_now
from ..database import Database

__all__ = ["CollectionManager", "CollectionRecord", "now_utc", "time_to_ns_now"]


@dataclass(frozen=True)
class CollectionRecord:
    """A collection's id, name and type."""

    id: int
    name: str
    type: CollectionType


class CollectionManager:
    """Owner of the collection tables.

    Parameters
    ----------
    db : `Database`
        The opened database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        tables = db.registry_schema.tables
        self._collection = tables["collection"]
        self._run = tables["run"]
        self._chain = tables["collection_chain"]
        self._by_name: dict[str, CollectionRecord] = {}
        self._by_id: dict[int, CollectionRecord] = {}

    @property
    def table(self) -> sa.Table:
        """The ``collection`` table (id, name, type), for queries that show collection names."""
        return self._collection

    def clear_caches(self) -> None:
        """Forget the cached records."""
        self._by_name.clear()
        self._by_id.clear()

    def _remember(self, rec: CollectionRecord) -> CollectionRecord:
        self._by_name[rec.name] = rec
        self._by_id[rec.id] = rec
        return rec

    def find(self, name: str) -> CollectionRecord:
        """Return the record of a collection.

        Raises
        ------
        MissingCollectionError
            If it does not exist (the message suggests a close name).
        """
        rec = self._by_name.get(name)
        if rec is None:
            t = self._collection
            rows = self.db.fetchall(sa.select(t).where(t.c.name == name))
            if not rows:
                names = self.db.fetchall(sa.select(t.c.name))
                raise missing_collection(name, [r.name for r in names])
            rec = self._remember(
                CollectionRecord(rows[0].collection_id, rows[0].name, CollectionType(rows[0].type))
            )
        return rec

    def by_id(self, collection_id: int) -> CollectionRecord:
        """Return the record of a collection id."""
        rec = self._by_id.get(collection_id)
        if rec is None:
            t = self._collection
            row = self.db.fetchall(sa.select(t).where(t.c.collection_id == collection_id))[0]
            rec = self._remember(CollectionRecord(row.collection_id, row.name, CollectionType(row.type)))
        return rec

    def run(self, name: str) -> CollectionRecord:
        """Return the record of a RUN collection.

        Raises
        ------
        MissingCollectionError, CollectionTypeError
        """
        rec = self.find(name)
        if rec.type is not CollectionType.RUN:
            raise CollectionTypeError(
                f"collection {name!r} is {rec.type.name}; datasets can only be put into a RUN collection"
            )
        return rec

    def find_typed(self, name: str, want: CollectionType, verb: str) -> CollectionRecord:
        """Return the record of a collection that must be of type ``want`` (``verb`` names the operation).

        Raises
        ------
        MissingCollectionError, CollectionTypeError
        """
        rec = self.find(name)
        if rec.type is not want:
            raise CollectionTypeError(
                f"collection {name!r} is {rec.type.name}; {verb} needs a {want.name} collection"
            )
        return rec

    def removable(self, name: str) -> CollectionRecord:
        """Return the record of a collection that no CHAINED collection contains.

        Raises
        ------
        ConflictingDefinitionError
            If a CHAINED collection contains it.
        """
        rec = self.find(name)
        parents = self.parent_chains(name)
        if parents:
            raise ConflictingDefinitionError(
                f"collection {name!r} is in chained collection(s) {', '.join(parents)}; remove it "
                "from them first"
            )
        return rec

    def register(self, name: str, type: CollectionType, doc: str) -> bool:
        """Insert a collection (inside the caller's transaction); see `Registry.register_collection`."""
        if not name or has_glob(name) or name != name.strip():
            raise ValueError(
                f"invalid collection name {name!r}: it must be non-empty, without *?[ or surrounding spaces"
            )
        try:
            existing = self.find(name)
        except MissingCollectionError:
            existing = None
        if existing is not None:
            if existing.type != type:
                raise ConflictingDefinitionError(
                    f"collection {name!r} already exists as {existing.type.name}, not {type.name}"
                )
            return False
        try:
            with self.db.transaction(savepoint=True):
                key = self.db.execute(
                    sa.insert(self._collection).values(name=name, type=int(type), doc=doc or None)
                ).inserted_primary_key
                assert key is not None, "an INSERT returns its primary key"
                cid = key[0]
                if type is CollectionType.RUN:
                    self.db.execute(
                        sa.insert(self._run).values(
                            collection_id=cid,
                            host=socket.gethostname()[:128],
                            timespan_begin=time_to_ns_now(),
                            timespan_end=None,
                        )
                    )
        except sa.exc.IntegrityError:
            # Another process registered the same name meanwhile (two ingests into one RUN).
            self.clear_caches()
            existing = self.find(name)
            if existing.type != type:
                raise ConflictingDefinitionError(
                    f"collection {name!r} was registered by another process at the same time as "
                    f"{existing.type.name}, not {type.name}"
                ) from None
            return False
        return True

    def doc(self, name: str) -> str:
        """Return a collection's documentation string."""
        t = self._collection
        rows = self.db.fetchall(sa.select(t.c.doc).where(t.c.collection_id == self.find(name).id))
        return rows[0].doc or ""

    def chain(self, parent: str) -> tuple[str, ...]:
        """Return the children of a CHAINED collection, in search order.

        Raises
        ------
        CollectionTypeError
            If ``parent`` is not CHAINED.
        """
        rec = self.find(parent)
        if rec.type is not CollectionType.CHAINED:
            raise CollectionTypeError(f"collection {parent!r} is {rec.type.name}, not CHAINED")
        t = self._chain
        rows = self.db.fetchall(sa.select(t.c.child).where(t.c.parent == rec.id).order_by(t.c.position))
        return tuple(self.by_id(r.child).name for r in rows)

    def set_chain(self, parent: str, children: Sequence[str], *, flatten: bool) -> None:
        """Define the children of an existing CHAINED collection (see `Registry.set_collection_chain`)."""
        rec = self.find(parent)
        if rec.type is not CollectionType.CHAINED:
            raise CollectionTypeError(f"collection {parent!r} is {rec.type.name}, not CHAINED")
        kids = chain_members(parent, children, self.find, self.flatten, flatten_children=flatten)
        t = self._chain
        with self.db.transaction():
            self.db.execute(sa.delete(t).where(t.c.parent == rec.id))
            if kids:
                self.db.execute(
                    sa.insert(t),
                    [{"parent": rec.id, "position": i, "child": k.id} for i, k in enumerate(kids)],
                )

    def flatten(self, names: Iterable[str], *, keep_chains: bool = False) -> list[str]:
        """Replace CHAINED collections by their children, recursively, in search order."""
        return flatten_chains(
            names,
            lambda n: self.find(n).type is CollectionType.CHAINED,
            self.chain,
            lambda n: ConflictingDefinitionError(f"collection chain through {n!r} is too deep (a cycle?)"),
            keep_chains=keep_chains,
        )

    def resolve(
        self, collections: str | Iterable[str] | None, *, flatten: bool = True
    ) -> list[CollectionRecord]:
        """Expand names and glob patterns into the flattened search path (`Registry.resolve_collections`)."""
        if collections is None:
            raise MissingCollectionError(
                "no collections to search; pass collections=... (or set Butler(collections=...))"
            )
        if isinstance(collections, str):
            collections = [collections]
        names: list[str] = []
        for c in collections:
            if has_glob(c):
                names.extend(self.query(c))
            else:
                self.find(c)
                names.append(c)
        if not flatten:
            return [self.find(n) for n in names]
        return [self.find(n) for n in self.flatten(names)]

    def search_path(self, collections: str | Iterable[str] | None) -> list[CollectionRecord]:
        """Return the flattened search path; `None` = every RUN, TAGGED and CALIBRATION collection."""
        if collections is None:
            kinds = [CollectionType.RUN, CollectionType.TAGGED, CollectionType.CALIBRATION]
            return [self.find(n) for n in self.query("*", types=kinds)]
        return self.resolve(collections)

    def query(
        self,
        pattern: str | Iterable[str] = "*",
        types: Iterable[CollectionType | str] | CollectionType | str | None = None,
        flatten_chains: bool = False,
    ) -> list[str]:
        """Return the names of collections matching glob pattern(s) and types, sorted."""
        t = self._collection
        rows = self.db.fetchall(sa.select(t.c.collection_id, t.c.name, t.c.type).order_by(t.c.name))
        for r in rows:
            self._remember(CollectionRecord(r.collection_id, r.name, CollectionType(r.type)))
        names = glob_filter(pattern, [r.name for r in rows])
        if types is not None:
            if isinstance(types, (str, CollectionType)):
                types = [types]
            want = {CollectionType.from_name(x) for x in types}
        else:
            want = set(CollectionType)
        if flatten_chains:
            names = self.flatten(names)
        return [n for n in names if self.find(n).type in want]

    def parent_chains(self, name: str) -> list[str]:
        """Return the CHAINED collections that directly contain ``name``, sorted."""
        t = self._chain
        rows = self.db.fetchall(sa.select(t.c.parent).where(t.c.child == self.find(name).id))
        return sorted(self.by_id(r.parent).name for r in rows)

    def remove(self, rec: CollectionRecord) -> None:
        """Delete a collection's row (inside the caller's transaction; its datasets go first)."""
        t = self._collection
        self.db.execute(sa.delete(t).where(t.c.collection_id == rec.id))
        self._by_name.pop(rec.name, None)
        self._by_id.pop(rec.id, None)
