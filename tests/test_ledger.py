"""The SQLite ledger: durable settings, allowed moves only, idempotent discovery, and a real
process killed with SIGKILL in the middle of a transaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rawgate.daemon.ledger import ItemState as S
from rawgate.daemon.ledger import Ledger, LedgerError, StaleTransitionError


@pytest.fixture()
def ledger(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as led:
        yield led


def _walk_to_archived(led: Ledger, item_id: int, verdict: str = "approved") -> None:
    led.transition(item_id, S.DISCOVERED, S.COMPLETE, size=10)
    led.transition(item_id, S.COMPLETE, S.ENCODED, codec="noisecal:step=2", archive_path="a/x.ome.tif")
    led.transition(item_id, S.ENCODED, S.VERIFIED, sha256_raw="r" * 64, sha256_archive="a" * 64)
    led.transition(item_id, S.VERIFIED, S.CHECKED)
    after = S.APPROVED if verdict == "approved" else S.REJECTED
    led.transition(item_id, S.CHECKED, after, verdict=verdict)
    led.transition(item_id, after, S.ARCHIVED)


def test_durable_settings(ledger):
    assert ledger.pragma("journal_mode") == "wal"
    assert ledger.pragma("synchronous") == 2  # FULL
    assert ledger.pragma("foreign_keys") == 1


def test_discover_is_idempotent(ledger):
    item, created = ledger.discover("/acq", "a/f1.tif", size=5, mtime_ns=7)
    again, created2 = ledger.discover("/acq", "a/f1.tif", size=99)
    assert created and not created2 and again.id == item.id and again.size == 5
    assert ledger.counts()[S.DISCOVERED] == 1 and len(ledger.history(item.id)) == 1
    assert ledger.find("/acq", "a/f1.tif").id == item.id and ledger.find("/acq", "nope") is None


def test_full_path_and_release_needs_approval(ledger):
    a, _ = ledger.discover("/acq", "ok.tif")
    b, _ = ledger.discover("/acq", "bad.tif")
    _walk_to_archived(ledger, a.id)
    _walk_to_archived(ledger, b.id, verdict="rejected")
    # raw data goes only once a durable manifest lists the copy (with the SHA-256 it has now)
    with pytest.raises(StaleTransitionError, match="not yet in the durable manifest"):
        ledger.transition(a.id, S.ARCHIVED, S.RAW_RELEASED)
    assert ledger.mark_in_manifest([(a.id, "b" * 64)]) == 0  # another copy than the one recorded
    assert ledger.mark_in_manifest([(a.id, "a" * 64), (b.id, "a" * 64)]) == 2
    released = ledger.transition(a.id, S.ARCHIVED, S.RAW_RELEASED)
    assert released.state is S.RAW_RELEASED and released.manifest_sha256 == "a" * 64
    # a rejected item keeps its raw data, even though archived → raw_released is a listed move
    with pytest.raises(StaleTransitionError, match="verdict is 'rejected'"):
        ledger.transition(b.id, S.ARCHIVED, S.RAW_RELEASED)
    assert ledger.get(b.id).state is S.ARCHIVED
    assert ledger.problems() == []
    assert [to for _, to, _ in ledger.history(a.id)] == [
        "discovered", "complete", "encoded", "verified", "checked", "approved", "archived", "raw_released"]


def test_moves_are_checked(ledger):
    a, _ = ledger.discover("/acq", "f.tif")
    with pytest.raises(StaleTransitionError, match="not an allowed move"):
        ledger.transition(a.id, S.DISCOVERED, S.ARCHIVED)
    with pytest.raises(StaleTransitionError, match="it is discovered"):
        ledger.transition(a.id, S.COMPLETE, S.ENCODED)  # somebody else's view of the item
    ledger.transition(a.id, S.DISCOVERED, S.COMPLETE)
    with pytest.raises(StaleTransitionError):  # the same step twice: the second is refused
        ledger.transition(a.id, S.DISCOVERED, S.COMPLETE)
    with pytest.raises(ValueError, match="unknown ledger fields"):
        ledger.transition(a.id, S.COMPLETE, S.ENCODED, colour="red")
    assert ledger.get(a.id).state is S.COMPLETE  # the refused moves changed nothing


def test_quarantine_and_retry(ledger):
    a, _ = ledger.discover("/acq", "trunc.tif")
    ledger.transition(a.id, S.DISCOVERED, S.COMPLETE)
    q = ledger.quarantine(a.id, "truncated TIFF: 1200 of 8400 bytes")
    assert q.state is S.QUARANTINED and "truncated" in q.reason
    assert [i.id for i in ledger.items(S.QUARANTINED)] == [a.id]
    r = ledger.retry(a.id)
    assert r.state is S.DISCOVERED and r.attempts == 1 and r.reason is None
    _walk_to_archived(ledger, a.id)
    # an archived item is quarantined when its copy is found damaged before raw data goes
    ledger.mark_in_manifest([(a.id, "a" * 64)])
    q = ledger.quarantine(a.id, "the archived copy is missing; raw data kept")
    assert q.state is S.QUARANTINED and q.manifest_sha256 is None  # not in the next manifest
    with pytest.raises(StaleTransitionError, match="cannot be quarantined"):
        ledger.quarantine(a.id, "twice")
    assert ledger.retry(a.id).attempts == 2
    assert ledger.problems() == []


def test_refuses_a_missing_folder_and_a_newer_schema(tmp_path):
    with pytest.raises(LedgerError, match="does not exist"):
        Ledger(tmp_path / "nope" / "ledger.sqlite")
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="newer than this rawgate"):
        Ledger(path)


def test_sigkill_inside_a_transaction_loses_nothing_committed(tmp_path):
    """A real process commits one move, starts another and is killed -9 before its COMMIT."""
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as led:
        item, _ = led.discover("/acq", "f.tif")
    script = textwrap.dedent(f"""
        import sys, time
        from rawgate.daemon.ledger import Ledger, ItemState as S
        led = Ledger({str(path)!r})
        led.transition({item.id}, S.DISCOVERED, S.COMPLETE)            # committed
        led._db.execute("BEGIN IMMEDIATE")                             # the next move, never committed
        led._db.execute("UPDATE items SET state = 'encoded' WHERE id = ?", ({item.id},))
        print("inside", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "inside"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with Ledger(path) as led:
        got = led.get(item.id)
        assert got.state is S.COMPLETE  # the committed move survived, the open one is gone
        assert led.problems() == []
        led.transition(item.id, S.COMPLETE, S.ENCODED)  # and the ledger is writable again


def test_a_ledger_of_schema_1_is_upgraded_in_place(tmp_path):
    """A ledger written by rawgate before the manifest mark (schema 1) opens, gains the column,
    keeps its rows and events, and its archived items wait for the next manifest."""
    import sqlite3

    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as led:
        a, _ = led.discover("/acq", "old.tif")
        _walk_to_archived(led, a.id)
    db = sqlite3.connect(path)
    db.executescript("ALTER TABLE items DROP COLUMN manifest_sha256; DROP TABLE model_files; PRAGMA user_version=1;")
    db.close()
    with Ledger(path) as led:
        assert led.pragma("user_version") == 3
        old = led.get(a.id)
        assert old.state is S.ARCHIVED and old.sha256_archive == "a" * 64 and old.manifest_sha256 is None
        assert led.model_files() == {} and led.problems() == []
        assert led.mark_in_manifest([(a.id, "a" * 64)]) == 1
        assert led.transition(a.id, S.ARCHIVED, S.RAW_RELEASED).state is S.RAW_RELEASED


def test_a_name_that_is_not_utf8_round_trips(ledger):
    """``bad\\xffname.tif`` (from an SMB share with another code page) is stored as its bytes,
    found again by the same ``str``, and kept apart from its printable look-alike."""
    name = os.fsdecode(b"day1/bad\xffname.tif")
    it, created = ledger.discover("/acq", name, "tiff")
    assert created and it.relpath == name
    assert os.fsencode(ledger.get(it.id).relpath) == b"day1/bad\xffname.tif"
    assert ledger.find("/acq", name).id == it.id
    look_alike, created = ledger.discover("/acq", "day1/bad\\xffname.tif", "tiff")
    assert created and look_alike.id != it.id
    # text fields that quote the name are stored printable; the archive path losslessly
    q = ledger.quarantine(it.id, f"cannot read {name}")
    assert q.reason == "cannot read day1/bad\\xffname.tif"
    ledger.retry(it.id)
    for st in (S.COMPLETE, S.ENCODED, S.VERIFIED, S.CHECKED, S.APPROVED):
        ledger.transition(it.id, ledger.get(it.id).state, st, verdict="approved" if st is S.APPROVED else None)
    done = ledger.transition(it.id, S.APPROVED, S.ARCHIVED, archive_path=name, sha256_raw="a", sha256_archive="b")
    assert done.archive_path == name and ledger.holder_of(name) == it.id
    assert ledger.problems() == []


def test_a_ledger_written_by_schema_2_is_upgraded_in_place(tmp_path):
    """``tests/data/ledger_schema2.sqlite`` was written by rawgate's schema-2 code (items keyed by
    path alone): opened now, it is rebuilt in place with generations, keeps every row, event,
    model file and rate setting, and lets a path that comes back become generation 2."""
    import shutil
    import sqlite3

    path = tmp_path / "ledger.sqlite"
    shutil.copy(Path(__file__).parent / "data" / "ledger_schema2.sqlite", path)
    db = sqlite3.connect(path)
    before = db.execute("SELECT id, relpath, state, sha256_archive FROM items ORDER BY id").fetchall()
    events = db.execute("SELECT * FROM events ORDER BY id").fetchall()
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()
    with Ledger(path) as led:
        assert led.pragma("user_version") == 3 and led.pragma("foreign_keys") == 1
        assert [(i.id, i.relpath, i.state.value, i.sha256_archive) for i in led.items()] == before
        assert all(i.generation == 1 and i.inode is None for i in led.items())
        assert led.problems() == [] and led.model_files() and led.rate_settings()
        released = led.find("/acq", "day1/a.tif")
        assert released.state is S.RAW_RELEASED
        again = led.new_generation(released.id, size=1, mtime_ns=2, inode=3, why="new content")
        assert (again.generation, again.state, again.relpath) == (2, S.DISCOVERED, "day1/a.tif")
        assert led.find("/acq", "day1/a.tif").id == again.id
        assert led.discover("/acq", "day1/a.tif") == (again, False)
        # idempotent: asking again for the old generation returns the new one
        assert led.new_generation(released.id, size=1, mtime_ns=2, inode=3, why="x").id == again.id
        assert led.problems() == []
    db = sqlite3.connect(path)
    assert db.execute("SELECT * FROM events WHERE id <= ? ORDER BY id", (events[-1][0],)).fetchall() == events
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'items_state'").fetchone()
    db.close()


def test_the_upgrade_is_atomic(tmp_path):
    """A schema-2 ledger whose upgrade fails half way (here: a foreign-key check that fails)
    is left as it was, schema 2, every row in place."""
    import shutil
    import sqlite3

    path = tmp_path / "ledger.sqlite"
    shutil.copy(Path(__file__).parent / "data" / "ledger_schema2.sqlite", path)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO events (item_id, at, from_state, to_state) VALUES (99, 0, NULL, 'discovered')")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="foreign key"):
        Ledger(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 3
    assert "generation" not in [r[1] for r in db.execute("PRAGMA table_info(items)")]
    db.close()
