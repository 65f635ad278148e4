"""Alerts that survive an outage: undelivered alerts on disk, retried with backoff.

Before an alert goes to a sink (a webhook, the mail server) it is written to a small SQLite file
in the state folder, one row per (alert, sink); the row goes when the sink took it. A sink that
fails (the chat service answers 500, the mail server is down) gets the alert again after 5 s,
10 s, 20 s … up to 5 min; the daemon stopped or killed meanwhile retries on its next start. The
log sink needs none of this (it cannot fail), so it is never written here.

Used from the alerter's one delivery thread only (an SQLite connection belongs to one thread).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

__all__ = ["AlertOutbox", "OUTBOX_NAME"]

OUTBOX_NAME = "alerts-outbox.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY,
    sink TEXT NOT NULL,
    alert TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    last_error TEXT,
    created REAL NOT NULL
)
"""


class AlertOutbox:
    """Alerts not yet delivered, per sink, in the SQLite file ``path``.

    Parameters
    ----------
    path
        The database file (created with its table; its folder must exist).
    retry_base_s, retry_max_s
        The wait before the first retry [s], doubled after each failure up to ``retry_max_s``.
    """

    def __init__(self, path: str | Path, *, retry_base_s: float = 5.0, retry_max_s: float = 300.0) -> None:
        self.path = Path(path)
        self.retry_base_s = float(retry_base_s)
        self.retry_max_s = float(retry_max_s)
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    def add(self, alert: dict[str, Any], sink: str) -> int:
        """Record ``alert`` (its :meth:`Alert.to_dict`) as due for ``sink``; returns the row id."""
        cur = self._conn().execute("INSERT INTO pending (sink, alert, next_try, created) VALUES (?, ?, ?, ?)",
                                   (sink, json.dumps(alert), time.time(), time.time()))
        return int(cur.lastrowid)

    def delivered(self, row: int) -> None:
        """The sink took the alert of ``row``: forget it."""
        self._conn().execute("DELETE FROM pending WHERE id = ?", (row,))

    def failed(self, row: int, error: str) -> float:
        """The sink refused ``row``: try again later; returns the wait [s]."""
        db = self._conn()
        got = db.execute("SELECT attempts FROM pending WHERE id = ?", (row,)).fetchone()
        attempts = (got[0] if got else 0) + 1
        wait = min(self.retry_max_s, self.retry_base_s * 2 ** (attempts - 1))
        db.execute("UPDATE pending SET attempts = ?, next_try = ?, last_error = ? WHERE id = ?",
                   (attempts, time.time() + wait, error[:500], row))
        return wait

    def due(self, now: float | None = None) -> list[tuple[int, str, dict[str, Any], int]]:
        """``(row, sink, alert, attempts)`` of every alert whose retry time has come, oldest first."""
        now = time.time() if now is None else now
        rows = self._conn().execute("SELECT id, sink, alert, attempts FROM pending WHERE next_try <= ? ORDER BY id",
                                    (now,)).fetchall()
        return [(int(r[0]), str(r[1]), json.loads(r[2]), int(r[3])) for r in rows]

    def waiting(self) -> int:
        """How many (alert, sink) deliveries are pending."""
        return int(self._conn().execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def drop_sinks_other_than(self, names: set[str]) -> int:
        """Forget alerts for sinks no longer configured; returns how many."""
        db = self._conn()
        rows = [r[0] for r in db.execute("SELECT id, sink FROM pending").fetchall() if r[1] not in names]
        for r in rows:
            db.execute("DELETE FROM pending WHERE id = ?", (r,))
        return len(rows)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
