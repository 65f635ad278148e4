"""``rawgate run``: the service loop that ties watcher, ledger, workers, alerts and metrics.

One main process owns the watcher (handlers only enqueue), the completeness checks and the
hand-over of complete items to a bounded pool of worker processes (:mod:`.pipeline` does the
work and writes every state move to the ledger itself). The main process turns the workers'
outcomes into alerts and metrics, rewrites the archive's BagIt manifest from the ledger, releases
raw data when the retention time has passed, and tells systemd it is alive only while the
observers and the worker pool are.

Start-up order: take the state folder's lock (one daemon per
ledger), clean up temporaries a crash left, start the observers, *then* scan every folder (files
that arrived while the daemon was down), then resume every item the ledger says is unfinished.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any

from rawgate.calibration._files import atomic_write

from .alerts import Alert, build_alerter
from .archive import FOLDER_KINDS, sha256_file, write_bag_manifest
from .backlog import BacklogMonitor
from .completeness import QuietTracker, check as check_complete
from .config import RawgateConfig, WatchConfig
from .ledger import Item, ItemState, Ledger, StaleTransitionError
from .metrics import Metrics
from .names import shown
from .notify import Notifier
from .outbox import OUTBOX_NAME
from .pipeline import LEDGER_NAME, Outcome, init_worker, release_due, run_in_worker, staging_dir
from .sources import ItemRef, classify, scan
from .watch import Watcher

__all__ = ["Service", "ServiceError", "write_manifest", "ARCHIVE_LOCK_NAME", "LOCK_NAME", "STATUS_NAME", "lock_held"]

log = logging.getLogger("rawgate.service")
S = ItemState
LOCK_NAME = "rawgate.lock"
#: the archive's lock file, in the bag root beside the tag files (not payload)
ARCHIVE_LOCK_NAME = ".rawgate.lock"
STATUS_NAME = "status.json"
#: Work left in these states is resumed at start-up.
UNFINISHED = (S.COMPLETE, S.ENCODED, S.VERIFIED, S.CHECKED, S.APPROVED, S.REJECTED)
#: A worker process that dies this often on one item quarantines it (a poison item, e.g. OOM).
MAX_WORKER_DEATHS = 2


def write_manifest(archive_dir: Path, ledger: Ledger) -> int:
    """Rewrite the archive's BagIt manifest from the ledger, durably (each tag file fsynced and
    renamed, the folder fsynced), then mark the items it lists: only those may release raw data
    (:func:`rawgate.daemon.pipeline.release_due`). Returns how many items were newly marked."""
    rows = [r for r in ledger.items(S.ARCHIVED, S.RAW_RELEASED) if r.sha256_archive and r.archive_path]
    entries = [(r.sha256_archive, r.archive_path, int(r.archive_bytes or 0)) for r in rows]
    # the noise models the copies refer to, stored once each (data/models/<sha>.rgmaps)
    entries += [(sha, rel, n) for rel, (sha, n) in ledger.model_files().items()]
    write_bag_manifest(archive_dir, entries)
    return ledger.mark_in_manifest([(r.id, r.sha256_archive) for r in rows if r.manifest_sha256 != r.sha256_archive])


def _hold_lock(path: Path, what: str, where: Path, state_dir: Path) -> IO[str]:
    """Take an exclusive, non-blocking ``flock`` on ``path`` and write the holder into it;
    :class:`ServiceError` naming the holder when another process has it."""
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        text = fh.read().strip()
        fh.close()
        try:
            h = json.loads(text)
            holder = f"pid {h.get('pid', '?')} on {h.get('host', '?')}, state folder {h.get('state_dir', '?')}"
        except ValueError:
            holder = f"pid {text or '?'}"
        raise ServiceError(f"another `rawgate run` ({holder}) holds {what} {where}; one daemon per "
                           f"{'archive' if what == 'the archive' else 'state folder'}") from None
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "state_dir": str(state_dir)}))
    fh.flush()
    return fh


class ServiceError(RuntimeError):
    """The service cannot start (lock held, folders missing, bad secrets)."""


def lock_held(state_dir: Path) -> int | None:
    """PID of the ``rawgate run`` holding ``state_dir``'s lock, or None when none runs."""
    path = Path(state_dir) / LOCK_NAME
    if not path.exists():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            text = fh.read().strip()
            if text.isdigit():  # written by an earlier rawgate
                return int(text)
            try:
                return int(json.loads(text)["pid"])
            except (ValueError, KeyError, TypeError):
                return -1
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def _ignore_globs(w: WatchConfig) -> list[str]:
    """Names never taken for items: the lab's, plus the handshake files themselves."""
    out = list(w.ignore_globs)
    c = w.completeness
    if c.sentinel:
        out.append(c.sentinel.replace("{name}", "*").replace("{stem}", "*"))
    if c.manifest:
        out.append(c.manifest)
    return out


@dataclass
class _Folder:
    index: int
    cfg: WatchConfig
    root: Path
    ignore: list[str] = field(default_factory=list)


class Service:
    """The daemon. ``run(stop)`` blocks until ``stop`` is set (SIGTERM in ``rawgate run``).

    Parameters
    ----------
    cfg
        The validated configuration.
    environ
        Environment for secrets and systemd variables (default ``os.environ``).
    tick_s
        Main-loop period [s].
    """

    def __init__(self, cfg: RawgateConfig, *, environ: dict[str, str] | None = None, tick_s: float = 0.1) -> None:
        self.cfg = cfg
        self.d = cfg.daemon
        self.environ = dict(os.environ) if environ is None else environ
        self.tick_s = tick_s
        if not self.d.watch:
            raise ServiceError("no folders to watch: add daemon.watch entries to the configuration")
        self.folders = [_Folder(i, w, w.path.resolve(), _ignore_globs(w)) for i, w in enumerate(self.d.watch)]
        self._by_root = {str(f.root): f for f in self.folders}
        self.metrics = Metrics(self.d.metrics)
        self.notifier = Notifier(self.environ)
        self.tracker = QuietTracker()
        self.pending: dict[int, tuple[_Folder, ItemRef]] = {}
        self.ready: deque[int] = deque()
        w = cfg.daemon.workers
        self.backlog = BacklogMonitor(w.behind_window_s, 2 * w.queue_size if w.behind_floor_items is None
                                      else w.behind_floor_items)
        self.bytes_complete = 0  # raw bytes of the items that became complete, since start
        self.bytes_archived = 0  # raw bytes of the items archived, since start
        self.inflight: dict[Future, int] = {}
        self.deaths: dict[int, int] = {}
        self.hangs: dict[int, int] = {}  # of those deaths, how many were kills after step_timeout_s
        self._submitted: dict[Future, float] = {}  # monotonic time each in-flight job was handed out
        self._killed_for: set[int] = set()  # items whose hung worker this service killed just now
        self.low_space: str | None = None  # why intake is paused for lack of disk space (None: it is not)
        self.started_at = time.time()
        #: why the last manifest write failed (None: the manifest is current); releases wait
        self.manifest_error: str | None = None
        self.processed = 0
        self._manifest_dirty = True
        self._lock_fh: Any = None
        self._archive_lock_fh: Any = None
        self.metrics_port: int | None = None

    # ------------------------------------------------------------------ start-up
    def _take_lock(self) -> None:
        """One daemon per state folder and one per archive, for the daemon's life.

        Each lock is an exclusive ``flock`` on a file naming its holder (pid, host, state
        folder): two daemons writing one archive would each rewrite its manifest from their own
        ledger and drop the other's entries while raw data is already released. (``flock`` on
        NFS may be emulated or local to one client: keep the archive lock on a filesystem where
        it holds, as the README says.)
        """
        self.d.state_dir.mkdir(parents=True, exist_ok=True)
        self.d.archive_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fh = _hold_lock(self.d.state_dir / LOCK_NAME, "the state folder", self.d.state_dir,
                                   self.d.state_dir)
        try:
            self._archive_lock_fh = _hold_lock(self.d.archive_dir / ARCHIVE_LOCK_NAME, "the archive",
                                               self.d.archive_dir, self.d.state_dir)
        except ServiceError:
            self._lock_fh.close()
            self._lock_fh = None
            raise

    def _clean_temporaries(self, ledger: Ledger) -> None:
        """Remove half-written copies a crash left (``.*.partial``) and staged copies of items
        that are done; staged copies of unfinished items stay (their step is redone)."""
        removed = 0
        for dirpath, _dirs, files in os.walk(self.d.archive_dir):
            for name in files:
                if name.startswith(".") and name.endswith(".partial"):
                    Path(dirpath, name).unlink(missing_ok=True)
                    removed += 1
        stage = staging_dir(self.cfg)
        if stage.is_dir():
            for p in stage.iterdir():
                try:
                    item = ledger.get(int(p.name.split(".")[0]))
                except (ValueError, KeyError):
                    continue
                if item.state in (S.ARCHIVED, S.RAW_RELEASED, S.QUARANTINED, S.DISCOVERED):
                    p.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.info("removed %d temporary file(s) left by an earlier run", removed)

    def _make_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.d.workers.processes, mp_context=get_context("spawn"),
            initializer=init_worker, initargs=(self.cfg.model_dump_json(),),
        )

    # ------------------------------------------------------------------ discovery
    def _discover(self, ledger: Ledger, folder: _Folder, ref: ItemRef) -> None:
        path = folder.root / ref.relpath
        try:
            st = path.stat()
            size, mtime, inode = st.st_size, st.st_mtime_ns, st.st_ino
        except OSError:
            st, size, mtime, inode = None, None, None, None
        item, created = ledger.discover(str(folder.root), ref.relpath, ref.kind, size=size, mtime_ns=mtime,
                                        inode=inode)
        if not created and st is not None and self._came_back(ledger, item, path, st):
            item = ledger.new_generation(item.id, size=size, mtime_ns=mtime, inode=inode,
                                         why=f"new content under the name of item {item.id} ({item.state})")
            self._alert(Alert(key=f"came-back:{folder.root}/{ref.relpath}:{item.generation}", severity="info",
                              title=f"written again: {ref.relpath}",
                              text=f"{ref.relpath} came back with new content after it was archived; it is "
                                   f"archived again as version {item.generation} beside the first copy.",
                              item=str(path)))
        if item.state is S.QUARANTINED and (item.reason or "").startswith("vanished") and path.exists():
            item = ledger.retry(item.id)  # it was renamed away and is back
        if item.state is S.DISCOVERED and item.id not in self.pending:
            self.pending[item.id] = (folder, ref)

    @staticmethod
    def _came_back(ledger: Ledger, item: Item, path: Path, st: os.stat_result) -> bool:
        """Whether the file at an archived item's path holds other content than the item did.

        Only single files of archived or released items: the recorded identity (size, mtime,
        inode at completeness) matching means the same file; otherwise the file's SHA-256 decides
        against the one recorded at verification (a ledger written before identities were
        recorded, a copy back of the same bytes), and a match is remembered so that the next scan
        needs only ``stat``.
        """
        if item.state not in (S.ARCHIVED, S.RAW_RELEASED) or item.kind in FOLDER_KINDS or not path.is_file():
            return False
        if (item.size, item.mtime_ns, item.inode) == (st.st_size, st.st_mtime_ns, st.st_ino):
            return False
        if item.sha256_raw and sha256_file(path) == item.sha256_raw:
            ledger.update_identity(item.id, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino)
            return False
        return True

    def _scan(self, ledger: Ledger) -> int:
        n = 0
        for f in self.folders:
            if not f.root.is_dir():
                continue
            for ref in scan(f.root, sequence_globs=f.cfg.sequence_globs, ignore_globs=f.ignore):
                self._discover(ledger, f, ref)
                n += 1
        return n

    def _drain_events(self, ledger: Ledger, watcher: Watcher, limit: int = 5000) -> None:
        seen: set[tuple[int, str]] = set()
        for _ in range(limit):
            try:
                idx, path = watcher.events.get_nowait()
            except Exception:  # noqa: BLE001 - queue.Empty
                break
            if (idx, path) in seen:
                continue
            seen.add((idx, path))
            f = self.folders[idx]
            try:
                ref = classify(f.root, Path(path), sequence_globs=f.cfg.sequence_globs, ignore_globs=f.ignore)
            except (OSError, ValueError) as e:
                log.warning("cannot classify %s: %s", path, e)
                continue
            if ref is not None:
                self._discover(ledger, f, ref)

    def _check_pending(self, ledger: Ledger) -> None:
        now = time.monotonic()
        for item_id, (folder, ref) in list(self.pending.items()):
            path = folder.root / ref.relpath
            if not os.path.lexists(path):
                del self.pending[item_id]
                try:
                    ledger.quarantine(item_id, "vanished before it was complete (deleted or renamed)")
                except StaleTransitionError:
                    pass
                continue
            c = check_complete(folder.root, ref, folder.cfg.completeness, self.tracker, now=now)
            if not c.complete:
                continue
            del self.pending[item_id]
            try:
                st = path.stat()
                ident = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
            except OSError:
                ident = {"size": None}
            try:
                ledger.transition(item_id, S.DISCOVERED, S.COMPLETE, **ident, complete_at=time.time(),
                                  detail={"how": c.how, "reason": c.reason})
            except StaleTransitionError:
                continue
            self.bytes_complete += ident["size"] or 0
            self.ready.append(item_id)

    # ------------------------------------------------------------------ outcomes
    def _on_outcome(self, out: Outcome) -> None:
        self.processed += 1
        m = self.metrics
        outcome = out.state if out.state != S.ARCHIVED.value else (out.verdict or "archived")
        if out.state in (S.ARCHIVED.value, S.RAW_RELEASED.value, S.QUARANTINED.value):
            m.observe_item(out.verdict if out.state != S.QUARANTINED.value else "quarantined", out.latency_s)
        if out.raw_bytes or out.archive_bytes:
            m.add_bytes(out.raw_bytes, out.archive_bytes)
        if out.state == S.ARCHIVED.value:
            self.bytes_archived += out.raw_bytes
        for name, family, eps in out.epsilons:
            m.set_epsilon(name, family, eps)
        if out.calibration:
            m.set_calibration_age(*out.calibration)
        for a in out.alerts:
            self._alert(Alert(key=a["key"], severity=a["severity"], title=a["title"], text=a["text"],
                              item=f"{out.root}/{out.relpath}"))
        if out.state in (S.ARCHIVED.value, S.RAW_RELEASED.value):
            self._manifest_dirty = True
        log.info("item %d %s: %s%s", out.item_id, shown(out.relpath), outcome,
                 f" ({out.reason or out.note})" if (out.reason or out.note) else "")

    def _alert(self, alert: Alert) -> None:
        self.metrics.count_alert(alert.severity)
        self.alerter.alert(alert)

    def _write_manifest(self, ledger: Ledger) -> None:
        write_manifest(self.d.archive_dir, ledger)
        self._manifest_dirty = False

    def _manifest_step(self, ledger: Ledger) -> None:
        """Write the manifest; on success queue the releases it makes due at once (not at the next
        retention sweep); on failure alert once, show it in status and metrics, hold releases."""
        try:
            self._write_manifest(ledger)
        except OSError as e:
            if self.manifest_error is None:
                self._alert(Alert(key=f"manifest:{self.d.archive_dir}", severity="critical",
                                  title="archive manifest cannot be written",
                                  text=f"{self.d.archive_dir}/manifest-sha256.txt: {e}. Raw data is not released "
                                       "until the manifest lists its copy; rawgate retries every 5 s."))
            self.manifest_error = f"{type(e).__name__}: {e}"
            log.error("cannot write the archive manifest: %s (raw data releases held)", e)
            self.metrics.set_up("manifest", False)
            return
        if self.manifest_error is not None:
            log.info("archive manifest written again; held releases go ahead")
        self.manifest_error = None
        self.metrics.set_up("manifest", True)
        self._queue_due_releases(ledger)

    def _queue_due_releases(self, ledger: Ledger) -> None:
        queued = set(self.ready) | set(self.inflight.values())
        for item in ledger.items(S.ARCHIVED):
            if release_due(self.cfg, item) and item.id not in queued:
                self.ready.append(item.id)

    def _write_status(self, ledger: Ledger, alive: list[bool], text: str) -> None:
        status = {
            "pid": os.getpid(), "started_at": self.started_at, "updated_at": time.time(), "status": text,
            "manifest_error": self.manifest_error,
            "queue_depth": len(self.ready) + len(self.pending), "in_flight": len(self.inflight),
            "observers": {str(f.root): ok for f, ok in zip(self.folders, alive)},
            "metrics_port": self.metrics_port,
        }
        data = json.dumps(status).encode()
        atomic_write(self.d.state_dir / STATUS_NAME, lambda fh: fh.write(data))

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event | None = None) -> None:
        """Run until ``stop`` is set; raises :class:`ServiceError` when start-up fails."""
        stop = stop or threading.Event()
        self._take_lock()
        self.d.archive_dir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(self.d.state_dir / LEDGER_NAME)
        try:
            self.alerter = build_alerter(self.d.alerts, environ=self.environ,
                                         credentials_dir=self.environ.get("CREDENTIALS_DIRECTORY"),
                                         outbox_path=self.d.state_dir / OUTBOX_NAME)
        except ValueError as e:
            raise ServiceError(f"alerts: {e}") from None
        pool = None
        watcher = Watcher([(f.root, f.cfg.network_mount, f.cfg.poll_interval_s) for f in self.folders])
        try:
            self._clean_temporaries(ledger)
            missing = [str(f.root) for f in self.folders if not f.root.is_dir()]
            for m in missing:
                self._alert(Alert(key=f"missing:{m}", severity="critical", title="watched folder missing",
                                  text=f"{m} does not exist (not mounted?); watching it once it appears"))
            if self.d.metrics.enabled:
                self.metrics_port = self.metrics.serve()
                log.info("metrics on http://%s:%d/metrics", self.d.metrics.host, self.metrics_port)
                if not self.d.metrics.is_loopback:
                    log.warning("the metrics endpoint on %s is reachable from other machines, without "
                                "authentication (metrics.allow_remote: true)", self.d.metrics.host)
            watcher.start()
            n = self._scan(ledger)
            for item in ledger.items(*UNFINISHED):
                self.ready.append(item.id)
            for item in ledger.items(S.ARCHIVED):
                if release_due(self.cfg, item):
                    self.ready.append(item.id)
            # a crash between the ledger's release move and the deletion leaves raw files behind:
            # items released in the last day get their release finished (files re-checked first)
            for item in ledger.items(S.RAW_RELEASED):
                if item.updated_at > time.time() - 86400 and any(
                        (Path(item.root) / rel).exists() for rel in ledger.last_detail(item.id, S.VERIFIED).get("files", {})):
                    self.ready.append(item.id)
            pool = self._make_pool()
            self.notifier.ready(f"watching {len(self.folders)} folder(s); {n} item(s) found, "
                                f"{len(self.ready)} to resume")
            log.info("rawgate running: %d folder(s), %d item(s) found, %d resumed", len(self.folders), n, len(self.ready))
            pool = self._loop(ledger, watcher, pool, stop)
        finally:
            self.notifier.stopping()
            watcher.stop()
            if pool is not None:
                self._drain(pool)
            try:
                self._write_manifest(ledger)
            except OSError as e:
                log.error("cannot write the archive manifest: %s", e)
            self.alerter.flush(5.0)
            self.alerter.close()
            self.metrics.close()
            ledger.close()
            for fh in (self._archive_lock_fh, self._lock_fh):
                if fh is not None:
                    fh.close()

    def _drain(self, pool: ProcessPoolExecutor, timeout_s: float = 60.0) -> None:
        """Let running items finish (each step is short and idempotent), then stop the pool."""
        if self.inflight:
            log.info("waiting for %d item(s) in progress", len(self.inflight))
            done, _ = wait(list(self.inflight), timeout=timeout_s)
            for fut in done:
                self._collect(fut)
        pool.shutdown(wait=False, cancel_futures=True)

    def _collect(self, fut: Future) -> bool:
        """Handle a finished job; False when the pool broke (a worker died)."""
        item_id = self.inflight.pop(fut)
        self._submitted.pop(fut, None)
        try:
            self._on_outcome(fut.result())
            return True
        except BrokenProcessPool:
            # when this service killed the pool for a hung item, that item's death is counted
            # already and the other items in flight are innocent: back to the queue, no death
            if not self._killed_for:
                self.deaths[item_id] = self.deaths.get(item_id, 0) + 1
            self.ready.appendleft(item_id)
            return False
        except Exception as e:  # noqa: BLE001 - a bug in a worker must not stop the service
            log.exception("item %d: worker failed", item_id)
            self._alert(Alert(key=f"worker:{item_id}", severity="critical", title="worker error", text=str(e)))
            return True

    def _loop(self, ledger: Ledger, watcher: Watcher, pool: ProcessPoolExecutor,
              stop: threading.Event) -> ProcessPoolExecutor:
        d = self.d
        last = {"complete": 0.0, "rescan": time.monotonic(), "health": 0.0, "manifest": 0.0, "retention": 0.0,
                "ledger": 0.0}
        while not stop.is_set():
            now = time.monotonic()
            self._drain_events(ledger, watcher)
            if now - last["complete"] >= 0.25:
                self._check_pending(ledger)
                last["complete"] = now
            if now - last["ledger"] >= 2.0:  # items put back by `rawgate retry`
                for item in ledger.items(S.DISCOVERED):
                    if item.id not in self.pending:
                        f = self._by_root.get(item.root)
                        if f is not None:
                            self.pending[item.id] = (f, ItemRef(item.relpath, item.kind))
                last["ledger"] = now
            if now - last["rescan"] >= d.rescan_interval_s:
                self._scan(ledger)
                last["rescan"] = now
            if now - last["retention"] >= 60.0:
                self._queue_due_releases(ledger)
                last["retention"] = now
            if now - last.get("space", 0.0) >= 5.0:
                self._check_free_space()
                last["space"] = now
            # hand complete items to the workers, at most queue_size at once (backpressure)
            broken = False
            while self.ready and len(self.inflight) < d.workers.queue_size and self.low_space is None:
                item_id = self.ready.popleft()
                if item_id in self.inflight.values():
                    continue
                if self.deaths.get(item_id, 0) >= MAX_WORKER_DEATHS:
                    self._quarantine_poison(ledger, item_id)
                    continue
                try:
                    fut = pool.submit(run_in_worker, item_id)
                    self.inflight[fut] = item_id
                    self._submitted[fut] = time.monotonic()
                except BrokenProcessPool:
                    self.ready.appendleft(item_id)
                    broken = True
                    break
            if self.inflight:
                done, _ = wait(list(self.inflight), timeout=self.tick_s, return_when=FIRST_COMPLETED)
                for fut in done:
                    broken |= not self._collect(fut)
                broken |= self._kill_hung(pool)
            else:
                stop.wait(self.tick_s)
            if broken:
                log.error("a worker process died; restarting the pool")
                for fut in list(self.inflight):  # every job of a broken pool fails
                    if fut.done():
                        self._collect(fut)
                    else:
                        self._submitted.pop(fut, None)
                        self.ready.appendleft(self.inflight.pop(fut))
                pool.shutdown(wait=False, cancel_futures=True)
                self._killed_for.clear()
                pool = self._make_pool()
            now = time.monotonic()
            if now - last["manifest"] >= 5.0 and (self._manifest_dirty or self.manifest_error is not None):
                self._manifest_step(ledger)
                last["manifest"] = now
            if now - last["health"] >= 1.0:
                self._health(ledger, watcher, pool)
                last["health"] = now
        return pool

    def _check_free_space(self) -> None:
        """Pause intake while the archive's or the state folder's disk has less free space than
        ``free_space_reserve_gb`` (alert, ``rawgate_component_up{component="disk_space"}`` 0);
        resume on its own when space is back. Items already handed out finish; nothing waits
        in memory only: complete items stay in the ledger."""
        reserve = self.d.free_space_reserve_gb * 1e9
        low = []
        for name, folder in (("archive", self.d.archive_dir), ("state", self.d.state_dir)):
            try:
                free = shutil.disk_usage(folder).free
            except OSError:
                continue
            if free < reserve:
                low.append(f"{name} folder {folder}: {free / 1e9:.2f} GB free")
        text = "; ".join(low) or None
        if text and self.low_space is None:
            log.error("intake paused: %s, below the reserve of %g GB", text, self.d.free_space_reserve_gb)
            self._alert(Alert(key=f"disk-space:{time.time():.0f}", severity="critical", title="intake paused: disk space",
                              text=f"{text}, below the reserve of {self.d.free_space_reserve_gb:g} GB "
                                   "(free_space_reserve_gb). No new item is started; intake resumes on its own "
                                   "when space is back. Raw data stay where they are."))
        elif text is None and self.low_space is not None:
            log.info("intake resumed: disk space is back above the reserve")
            self._alert(Alert(key=f"disk-space-ok:{time.time():.0f}", severity="info", title="intake resumed",
                              text=f"free space is back above {self.d.free_space_reserve_gb:g} GB"))
        self.low_space = text
        self.metrics.set_up("disk_space", text is None)

    def _kill_hung(self, pool: ProcessPoolExecutor) -> bool:
        """Kill the pool when a job ran past ``workers.step_timeout_s`` (a worker stopped, stuck in
        I/O or in a native decoder); True when it did. Its item counts a death (retried, then
        quarantined); the other items in flight go back to the queue. (ProcessPoolExecutor can
        neither say which process runs a job nor cancel a running one, so the pool goes.)"""
        limit = self.d.workers.step_timeout_s
        now = time.monotonic()
        hung = [self.inflight[f] for f, t in self._submitted.items()
                if now - t > limit and not f.done() and f in self.inflight]
        if not hung:
            return False
        for item_id in hung:
            self.hangs[item_id] = self.hangs.get(item_id, 0) + 1
            self.deaths[item_id] = self.deaths.get(item_id, 0) + 1
            log.error("item %d: a step ran past %.0f s; killing the workers", item_id, limit)
        self._killed_for.update(hung)
        for proc in list(getattr(pool, "_processes", {}).values()):  # noqa: SLF001 - no public kill
            try:
                proc.kill()
            except (OSError, AttributeError):
                pass
        return True

    def _quarantine_poison(self, ledger: Ledger, item_id: int) -> None:
        if self.hangs.get(item_id):
            reason = (f"a step ran past workers.step_timeout_s ({self.d.workers.step_timeout_s:g} s) "
                      f"{self.hangs[item_id]} time(s); the worker was killed each time (hung I/O or decoder?)")
        else:
            reason = f"a worker process died {self.deaths[item_id]} times while processing it (out of memory?)"
        try:
            item = ledger.quarantine(item_id, reason)
            self._alert(Alert(key=f"quarantined:{item.root}/{item.relpath}", severity="critical",
                              title=f"quarantined: {item.relpath}", text=reason))
        except StaleTransitionError:
            pass

    def _health(self, ledger: Ledger, watcher: Watcher, pool: ProcessPoolExecutor) -> None:
        for i in watcher.restart_dead():
            f = self.folders[i]
            self._alert(Alert(key=f"observer:{f.root}", severity="warning", title="observer restarted",
                              text=f"the watcher of {f.root} had stopped; restarted and rescanning"))
            self._scan(ledger)
        alive = watcher.alive()
        workers_ok = not getattr(pool, "_broken", False)
        for f, ok in zip(self.folders, alive):
            self.metrics.set_up(f"observer:{f.root}", ok)
        self.metrics.set_up("workers", workers_ok)
        counts = ledger.counts()
        self.metrics.set_items_by_state({s.value: n for s, n in counts.items()})
        self.metrics.set_queue_depth(len(self.ready) + len(self.pending))
        waiting = sum(counts[st] for st in (S.COMPLETE, S.ENCODED, S.VERIFIED, S.CHECKED, S.APPROVED, S.REJECTED))
        self.metrics.set_backlog(waiting)
        event = self.backlog.observe(time.monotonic(), waiting, self.bytes_complete, self.bytes_archived)
        if event is not None:
            behind = event.kind == "behind"
            log.log(logging.WARNING if behind else logging.INFO, "%s: %s", event.kind, event.text())
            self._alert(Alert(key=f"backlog:{event.kind}:{time.time():.0f}", severity="warning" if behind else "info",
                              title="falling behind" if behind else "caught up", text=event.text(),
                              fields={"waiting": str(event.waiting), "arriving MB/s": f"{event.arriving_MBps:.1f}",
                                      "archiving MB/s": f"{event.archiving_MBps:.1f}"}))
        text = (f"{counts[S.ARCHIVED] + counts[S.RAW_RELEASED]} archived, {counts[S.QUARANTINED]} quarantined, "
                f"{len(self.inflight)} in progress, {len(self.ready) + len(self.pending)} waiting"
                + (f"; INTAKE PAUSED, low disk space ({self.low_space})" if self.low_space else ""))
        self.notifier.status(text)
        if all(alive) and workers_ok:
            self.notifier.watchdog()
        self._write_status(ledger, alive, text)
