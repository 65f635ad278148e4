"""The ledger: one SQLite row per item (a file or a dataset) and its state.

It is the only thing the daemon trusts after a restart. Every state change is one transaction
that moves the row from an expected state to the next (compare-and-set) and appends an event,
committed with ``synchronous=FULL`` in WAL mode before the next step starts; a crash at any point
leaves each item in the last state it durably reached, from which the step is simply redone
(every step is idempotent). WAL needs a local disk (shared-memory index): opening a ledger where
WAL cannot be enabled is an error, not a silent fallback.

States (``DESIGN.md``)::

    discovered → complete → encoded → verified → checked → approved | rejected → archived → raw_released
    any non-final state → quarantined → discovered (retry)

``raw_released`` is reachable only from ``archived``, and only for an item whose verdict is
``approved`` and whose archive path and checksums are recorded (checked inside the same
transaction): raw data is never released before a verified archive copy exists, and a rejected
item (archived with the fallback codec) keeps its raw data.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .names import db_path, from_db_path, shown

__all__ = ["Item", "ItemState", "Ledger", "LedgerError", "StaleTransitionError", "TRANSITIONS"]


class ItemState(StrEnum):
    DISCOVERED = "discovered"
    COMPLETE = "complete"
    ENCODED = "encoded"
    VERIFIED = "verified"
    CHECKED = "checked"
    APPROVED = "approved"
    REJECTED = "rejected"
    ARCHIVED = "archived"
    RAW_RELEASED = "raw_released"
    QUARANTINED = "quarantined"


S = ItemState
#: Allowed moves. ``encoded → complete``: the archive copy failed verification and is redone.
#: ``archived → quarantined`` and ``raw_released → quarantined``: the archive copy was found damaged
#: or missing when raw data was about to go (raw is kept; a retry archives the item again).
TRANSITIONS: dict[ItemState, frozenset[ItemState]] = {
    S.DISCOVERED: frozenset({S.COMPLETE, S.QUARANTINED}),
    S.COMPLETE: frozenset({S.ENCODED, S.QUARANTINED}),
    S.ENCODED: frozenset({S.VERIFIED, S.COMPLETE, S.QUARANTINED}),
    S.VERIFIED: frozenset({S.CHECKED, S.QUARANTINED}),
    S.CHECKED: frozenset({S.APPROVED, S.REJECTED, S.QUARANTINED}),
    S.APPROVED: frozenset({S.ARCHIVED, S.QUARANTINED}),
    S.REJECTED: frozenset({S.ARCHIVED, S.QUARANTINED}),
    S.ARCHIVED: frozenset({S.RAW_RELEASED, S.QUARANTINED}),
    S.RAW_RELEASED: frozenset({S.QUARANTINED}),
    S.QUARANTINED: frozenset({S.DISCOVERED}),
}

#: Columns a transition may set besides the state.
FIELDS = ("kind", "size", "mtime_ns", "inode", "codec", "archive_path", "sha256_raw", "sha256_archive", "verdict", "reason",
          "note", "report_path", "raw_bytes", "archive_bytes", "complete_at", "archived_at", "manifest_sha256")

#: Columns holding file-system paths: stored losslessly by :func:`.names.db_path` (a name that is
#: not UTF-8 as its bytes); every other text a transition sets goes through :func:`.names.shown`.
_PATH_FIELDS = ("root", "relpath", "archive_path", "report_path")

#: 2: ``items.manifest_sha256`` and the ``model_files`` table;
#: 3: ``items.generation`` and ``items.inode``: a path that comes back with new content after its
#: item was archived is a new item (generation + 1), so ``UNIQUE (root, relpath, generation)``
_SCHEMA_VERSION = 3
_ITEMS = """
CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY,
    root TEXT NOT NULL,
    relpath TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 1,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    inode INTEGER,
    codec TEXT,
    archive_path TEXT,
    sha256_raw TEXT,
    sha256_archive TEXT,
    verdict TEXT,
    reason TEXT,
    note TEXT,
    report_path TEXT,
    raw_bytes INTEGER,
    archive_bytes INTEGER,
    complete_at REAL,
    archived_at REAL,
    manifest_sha256 TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (root, relpath, generation)
)"""
_V2_COLUMNS = ("id, root, relpath, kind, state, size, mtime_ns, codec, archive_path, sha256_raw, sha256_archive, "
               "verdict, reason, note, report_path, raw_bytes, archive_bytes, complete_at, archived_at, "
               "manifest_sha256, attempts, created_at, updated_at")
#: in-place upgrades from each older schema version (a ledger written by an earlier rawgate); run
#: with foreign keys off, since SQLite changes a UNIQUE constraint only by rebuilding the table
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE items ADD COLUMN manifest_sha256 TEXT",),
    2: (_ITEMS.format(name="items_v3"),
        f"INSERT INTO items_v3 ({_V2_COLUMNS}) SELECT {_V2_COLUMNS} FROM items",
        "DROP TABLE items",
        "ALTER TABLE items_v3 RENAME TO items"),
}
_SCHEMA = _ITEMS.format(name="items") + """;
CREATE INDEX IF NOT EXISTS items_state ON items (state);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items (id),
    at REAL NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_item ON events (item_id);
CREATE TABLE IF NOT EXISTS model_files (
    relpath TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_settings (
    watch TEXT NOT NULL,
    rule INTEGER NOT NULL,
    camera TEXT NOT NULL,
    auto_spec TEXT NOT NULL,
    value REAL,
    passing TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL,
    history TEXT NOT NULL DEFAULT '[]',
    updated_at REAL NOT NULL,
    PRIMARY KEY (watch, rule, camera, auto_spec)
);
"""


@dataclass(frozen=True)
class RateKey:
    """What an ε-budgeted setting is stored for: a watch rule (the watched folder's archive name
    and the rule's index), the camera (its calibration's serial) and the ``auto`` spec."""

    watch: str
    rule: int
    camera: str
    auto_spec: str

    def as_row(self) -> tuple[str, int, str, str]:
        return (self.watch, int(self.rule), self.camera, self.auto_spec)


@dataclass(frozen=True)
class RateSetting:
    """A stored ε-budgeted setting: ``value`` of the searched option (None: none passed, so the
    rule codes losslessly), the settings that passed when searched, where it came from, and every
    change as ``{at, value, why}``."""

    key: RateKey
    value: float | None
    passing: tuple[float, ...]
    source: str
    history: tuple[dict[str, Any], ...]
    updated_at: float

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> RateSetting:
        return cls(RateKey(row["watch"], int(row["rule"]), row["camera"], row["auto_spec"]),
                   None if row["value"] is None else float(row["value"]), tuple(json.loads(row["passing"])),
                   row["source"], tuple(json.loads(row["history"])), float(row["updated_at"]))


class LedgerError(RuntimeError):
    """The ledger cannot be opened or used safely."""


class StaleTransitionError(LedgerError):
    """The item is not in the state the caller expected (moved on, or the move is not allowed)."""


@dataclass(frozen=True)
class Item:
    """One row of the ledger (times are Unix seconds; sizes bytes; mtime nanoseconds).

    ``reason`` says why an item is quarantined; ``note`` why it went to the lossless fallback or
    what its verdict rests on; ``report_path`` is its ε report (JSON), if checked;
    ``manifest_sha256`` the archive copy's SHA-256 as listed in the last durable BagIt manifest
    (raw data is released only when it equals ``sha256_archive``).
    """

    id: int
    root: str
    relpath: str
    generation: int
    kind: str
    state: ItemState
    size: int | None
    mtime_ns: int | None
    inode: int | None
    codec: str | None
    archive_path: str | None
    sha256_raw: str | None
    sha256_archive: str | None
    verdict: str | None
    reason: str | None
    note: str | None
    report_path: str | None
    raw_bytes: int | None
    archive_bytes: int | None
    complete_at: float | None
    archived_at: float | None
    manifest_sha256: str | None
    attempts: int
    created_at: float
    updated_at: float

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> Item:
        d = dict(row)
        d["state"] = ItemState(d["state"])
        for k in _PATH_FIELDS:
            d[k] = from_db_path(d[k])
        return cls(**d)


class Ledger:
    """The SQLite ledger at ``path`` (created if missing; its folder must exist on a local disk).

    One instance per thread or process (SQLite connections are not shared between threads).
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise LedgerError(f"ledger folder {self.path.parent} does not exist")
        try:
            self._db = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
        except sqlite3.Error as e:
            raise LedgerError(f"cannot open ledger {self.path}: {e}") from e
        self._db.row_factory = sqlite3.Row
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            self._db.close()
            raise LedgerError(
                f"ledger {self.path}: WAL journal not available (got {mode!r}); keep the ledger on a local disk"
            )
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=OFF")  # (on after the upgrade, which rebuilds a table)
        with self._transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise LedgerError(f"ledger {self.path} has schema {version}, newer than this rawgate ({_SCHEMA_VERSION})")
            has_items = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'items'").fetchone() is not None
            if has_items:
                for v in range(max(version, 1), _SCHEMA_VERSION):
                    for stmt in _MIGRATIONS.get(v, ()):
                        self._db.execute(stmt)
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            if self._db.execute("PRAGMA foreign_key_check").fetchone() is not None:
                raise LedgerError(f"ledger {self.path}: an event refers to no item (foreign key check)")
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        self._db.execute("PRAGMA foreign_keys=ON")

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on any exception): one writer at a time."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def pragma(self, name: str) -> Any:
        """The value of a PRAGMA (``journal_mode``, ``synchronous``) for diagnostics and tests."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        return self._db.execute(f"PRAGMA {name}").fetchone()[0]

    # ------------------------------------------------------------------ writes
    def discover(self, root: str, relpath: str, kind: str = "file", *, size: int | None = None,
                 mtime_ns: int | None = None, inode: int | None = None) -> tuple[Item, bool]:
        """Record an item as discovered; idempotent (a second call returns the existing row, the
        latest generation when the path came back, see :meth:`new_generation`).

        Returns the item and whether this call created it.
        """
        now = time.time()
        key = (db_path(root), db_path(relpath))
        with self._transaction() as db:
            row = db.execute("SELECT * FROM items WHERE root = ? AND relpath = ? ORDER BY generation DESC LIMIT 1",
                             key).fetchone()
            if row is not None:
                return Item._from_row(row), False
            cur = db.execute(
                "INSERT INTO items (root, relpath, generation, kind, state, size, mtime_ns, inode, created_at, "
                "updated_at) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
                (*key, kind, S.DISCOVERED.value, size, mtime_ns, inode, now, now),
            )
            row = db.execute("SELECT * FROM items WHERE id = ?", (cur.lastrowid,)).fetchone()
            db.execute("INSERT INTO events (item_id, at, from_state, to_state, detail) VALUES (?, ?, NULL, ?, ?)",
                       (row["id"], now, S.DISCOVERED.value, None))
        return Item._from_row(row), True

    def new_generation(self, item_id: int, *, size: int | None, mtime_ns: int | None, inode: int | None,
                       why: str) -> Item:
        """A file came back under the path of item ``item_id`` with other content: record it as
        a new item (same path, generation + 1, ``discovered``) and return it. Idempotent: when a
        later generation exists already, that one is returned."""
        now = time.time()
        with self._transaction() as db:
            old = db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
            if old is None:
                raise KeyError(f"no item {item_id} in the ledger")
            latest = db.execute("SELECT * FROM items WHERE root = ? AND relpath = ? ORDER BY generation DESC "
                                "LIMIT 1", (old["root"], old["relpath"])).fetchone()
            if latest["id"] != item_id:
                return Item._from_row(latest)
            cur = db.execute(
                "INSERT INTO items (root, relpath, generation, kind, state, size, mtime_ns, inode, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (old["root"], old["relpath"], old["generation"] + 1, old["kind"], S.DISCOVERED.value, size,
                 mtime_ns, inode, now, now))
            db.execute("INSERT INTO events (item_id, at, from_state, to_state, detail) VALUES (?, ?, NULL, ?, ?)",
                       (cur.lastrowid, now, S.DISCOVERED.value,
                        json.dumps({"previous_generation": item_id, "why": why})))
            row = db.execute("SELECT * FROM items WHERE id = ?", (cur.lastrowid,)).fetchone()
        return Item._from_row(row)

    def update_identity(self, item_id: int, *, size: int | None, mtime_ns: int | None, inode: int | None) -> None:
        """Record the file identity (size, mtime, inode) under which an item's unchanged raw file
        was seen (no state move): the next scan recognises it by ``stat`` alone."""
        with self._transaction() as db:
            db.execute("UPDATE items SET size = ?, mtime_ns = ?, inode = ? WHERE id = ?",
                       (size, mtime_ns, inode, item_id))

    def transition(self, item_id: int, expected: ItemState, new: ItemState, *, detail: dict | None = None,
                   **fields: Any) -> Item:
        """Move ``item_id`` from ``expected`` to ``new`` and set ``fields``, atomically and durably.

        Raises
        ------
        StaleTransitionError
            The move is not allowed, or the item is no longer in ``expected`` (another worker or
            an earlier run already moved it): the caller must not repeat the step's side effects.
        """
        expected, new = ItemState(expected), ItemState(new)
        if new not in TRANSITIONS[expected]:
            raise StaleTransitionError(f"item {item_id}: {expected} → {new} is not an allowed move")
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown ledger fields: {sorted(unknown)}")
        now = time.time()
        sets = ", ".join(f"{k} = ?" for k in fields)
        extra = ", attempts = attempts + 1" if expected is S.QUARANTINED else ""
        guard = ""
        if new is S.RAW_RELEASED:  # the one irreversible step: re-checked inside the transaction
            guard = (" AND verdict = 'approved' AND archive_path IS NOT NULL"
                     " AND sha256_raw IS NOT NULL AND sha256_archive IS NOT NULL"
                     " AND manifest_sha256 = sha256_archive")
        with self._transaction() as db:
            cur = db.execute(
                f"UPDATE items SET state = ?, updated_at = ?{', ' + sets if sets else ''}{extra} "
                f"WHERE id = ? AND state = ?{guard}",
                (new.value, now, *(db_path(v) if k in _PATH_FIELDS else shown(v) for k, v in fields.items()),
                 item_id, expected.value),
            )
            if cur.rowcount != 1:
                row = db.execute("SELECT state, verdict FROM items WHERE id = ?", (item_id,)).fetchone()
                if row is None:
                    why = "no such item"
                elif row["state"] == expected.value:
                    why = (f"its verdict is {row['verdict']!r}, or its archive copy is not recorded or not yet "
                           "in the durable manifest")
                else:
                    why = f"it is {row['state']}"
                raise StaleTransitionError(f"item {item_id}: {expected} → {new} refused: {why}")
            db.execute(
                "INSERT INTO events (item_id, at, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?)",
                (item_id, now, expected.value, new.value, json.dumps(detail) if detail else None),
            )
            row = db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return Item._from_row(row)

    def quarantine(self, item_id: int, reason: str, *, detail: dict | None = None) -> Item:
        """Move an item from whatever non-final state it is in to ``quarantined`` with a reason."""
        item = self.get(item_id)
        if S.QUARANTINED not in TRANSITIONS[item.state]:
            raise StaleTransitionError(f"item {item_id} is {item.state}: it cannot be quarantined")
        return self.transition(item_id, item.state, S.QUARANTINED, reason=reason, detail=detail, manifest_sha256=None)

    def retry(self, item_id: int) -> Item:
        """Send a quarantined item back to ``discovered`` (``attempts`` counts the retries)."""
        return self.transition(item_id, S.QUARANTINED, S.DISCOVERED, reason=None)

    # ------------------------------------------------------------------ reads
    def get(self, item_id: int) -> Item:
        row = self._db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise KeyError(f"no item {item_id} in the ledger")
        return Item._from_row(row)

    def find(self, root: str, relpath: str) -> Item | None:
        """The item at ``relpath`` under ``root`` (its latest generation), or None."""
        row = self._db.execute("SELECT * FROM items WHERE root = ? AND relpath = ? ORDER BY generation DESC LIMIT 1",
                               (db_path(root), db_path(relpath))).fetchone()
        return None if row is None else Item._from_row(row)

    def items(self, *states: ItemState) -> list[Item]:
        """Items in any of ``states`` (all items when none is given), oldest first."""
        if states:
            marks = ",".join("?" * len(states))
            rows = self._db.execute(f"SELECT * FROM items WHERE state IN ({marks}) ORDER BY id",
                                    [ItemState(s).value for s in states])
        else:
            rows = self._db.execute("SELECT * FROM items ORDER BY id")
        return [Item._from_row(r) for r in rows]

    def counts(self) -> dict[ItemState, int]:
        """Number of items per state (every state listed, zeros included)."""
        out = {s: 0 for s in ItemState}
        for row in self._db.execute("SELECT state, COUNT(*) AS n FROM items GROUP BY state"):
            out[ItemState(row["state"])] = row["n"]
        return out

    def last_detail(self, item_id: int, to_state: ItemState) -> dict[str, Any]:
        """The detail recorded with the item's latest move into ``to_state`` (empty if none)."""
        row = self._db.execute(
            "SELECT detail FROM events WHERE item_id = ? AND to_state = ? ORDER BY id DESC LIMIT 1",
            (item_id, ItemState(to_state).value)).fetchone()
        return json.loads(row["detail"]) if row and row["detail"] else {}

    def mark_in_manifest(self, listed: list[tuple[int, str]]) -> int:
        """Record that a durable (fsynced) manifest lists these ``(item id, archive SHA-256)``
        pairs; an item whose copy changed since (another SHA-256) is left unmarked. Returns how
        many items were marked."""
        n = 0
        with self._transaction() as db:
            for item_id, sha in listed:
                n += db.execute("UPDATE items SET manifest_sha256 = ? WHERE id = ? AND sha256_archive = ? "
                                "AND state IN ('archived', 'raw_released')", (sha, item_id, sha)).rowcount
        return n

    def record_model_file(self, relpath: str, sha256: str, nbytes: int) -> None:
        """Record a noise-model file of the archive (``data/models/<sha>.rgmaps``, relative to
        the archive) with the SHA-256 and size it was written with; the manifest lists it and
        the release guard checks it against this record."""
        with self._transaction() as db:
            db.execute("INSERT INTO model_files (relpath, sha256, bytes, recorded_at) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (relpath) DO UPDATE SET sha256 = excluded.sha256, bytes = excluded.bytes, "
                       "recorded_at = excluded.recorded_at", (relpath, sha256, int(nbytes), time.time()))

    def model_files(self) -> dict[str, tuple[str, int]]:
        """Every recorded noise-model file: ``{relpath: (sha256, bytes)}``."""
        rows = self._db.execute("SELECT relpath, sha256, bytes FROM model_files ORDER BY relpath")
        return {r["relpath"]: (r["sha256"], int(r["bytes"])) for r in rows}

    def rate_setting(self, key: RateKey) -> RateSetting | None:
        """The stored ε-budgeted setting of ``key`` (None: never searched)."""
        row = self._db.execute("SELECT * FROM rate_settings WHERE watch = ? AND rule = ? AND camera = ? "
                               "AND auto_spec = ?", key.as_row()).fetchone()
        return None if row is None else RateSetting._from_row(row)

    def rate_settings(self) -> list[RateSetting]:
        """Every stored ε-budgeted setting."""
        rows = self._db.execute("SELECT * FROM rate_settings ORDER BY watch, rule, camera, auto_spec")
        return [RateSetting._from_row(r) for r in rows]

    def store_rate_setting(self, key: RateKey, value: float | None, passing: list[float], source: str, *,
                           replace: bool = False) -> RateSetting:
        """Store a searched setting (``value`` None: no setting passed) and return what is stored:
        without ``replace`` a setting stored first by another worker wins."""
        now = time.time()
        hist = json.dumps([{"at": now, "value": value, "why": source}])
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._transaction() as db:
            db.execute(f"{verb} INTO rate_settings (watch, rule, camera, auto_spec, value, passing, source, history, "
                       "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (*key.as_row(), value, json.dumps(sorted(passing)), shown(source), hist, now))
        stored = self.rate_setting(key)
        assert stored is not None
        return stored

    def step_back_rate(self, key: RateKey, failed: float, new: float | None, why: str) -> bool:
        """Lower the stored setting from ``failed`` to ``new`` (None: lossless from now on); False
        when it no longer is ``failed`` (another rejection already stepped it back)."""
        with self._transaction() as db:
            row = db.execute("SELECT value, history FROM rate_settings WHERE watch = ? AND rule = ? AND camera = ? "
                             "AND auto_spec = ?", key.as_row()).fetchone()
            if row is None or row["value"] is None or float(row["value"]) != float(failed):
                return False
            hist = json.loads(row["history"]) + [{"at": time.time(), "value": new, "why": why}]
            db.execute("UPDATE rate_settings SET value = ?, history = ?, updated_at = ? WHERE watch = ? AND rule = ? "
                       "AND camera = ? AND auto_spec = ?", (new, json.dumps(hist), time.time(), *key.as_row()))
        return True

    def holder_of(self, archive_path: str) -> int | None:
        """Id of the item whose archive copy is at ``archive_path`` (relative to the archive)."""
        row = self._db.execute("SELECT id FROM items WHERE archive_path = ?", (db_path(archive_path),)).fetchone()
        return None if row is None else int(row["id"])

    def history(self, item_id: int) -> list[tuple[str | None, str, float]]:
        """(from, to, time) of every recorded move of an item, in order."""
        rows = self._db.execute("SELECT from_state, to_state, at FROM events WHERE item_id = ? ORDER BY id", (item_id,))
        return [(r["from_state"], r["to_state"], r["at"]) for r in rows]

    def problems(self) -> list[str]:
        """Invariant violations (empty for a consistent ledger); the crash tests assert on it.

        * every event chain follows :data:`TRANSITIONS` and ends in the row's state;
        * an archived or released item has an archive path and both checksums;
        * a released item went ``approved`` → ``archived`` → ``raw_released`` with verdict approved.
        """
        out = []
        for item in self.items():
            chain = self.history(item.id)
            if not chain or chain[0][0] is not None or chain[0][1] != S.DISCOVERED:
                out.append(f"item {item.id}: history does not start at discovered")
                continue
            for (a, b, _), (c, d, _) in zip(chain, chain[1:]):
                if c != b or ItemState(d) not in TRANSITIONS[ItemState(c)]:
                    out.append(f"item {item.id}: bad move {c} → {d} after {a} → {b}")
            if chain[-1][1] != item.state:
                out.append(f"item {item.id}: state {item.state} but last event → {chain[-1][1]}")
            if item.state in (S.ARCHIVED, S.RAW_RELEASED) and not (
                item.archive_path and item.sha256_raw and item.sha256_archive
            ):
                out.append(f"item {item.id}: {item.state} without archive path and checksums")
            if item.state is S.RAW_RELEASED and (
                [b for _, b, _ in chain[-3:]] != [S.APPROVED.value, S.ARCHIVED.value, S.RAW_RELEASED.value]
                or item.verdict != "approved"
            ):
                out.append(f"item {item.id}: raw released without approved → archived just before")
        return out
