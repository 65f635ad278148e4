"""Filesystem watching: one watchdog observer per watched folder, whose handlers only enqueue.

inotify (``Observer``) on local disks; ``PollingObserver`` where the config says the folder is a
network mount (no events arrive from other hosts there). Handlers never do work: an exception in
a handler kills the observer thread, so they put ``(folder index, path)`` on a queue and return.
Events can be lost (inotify queue overflow, a polling emitter whose mount went away): the service
therefore also scans every folder at start-up (after scheduling the observer) and periodically,
and checks :meth:`Watcher.alive` before telling systemd it is healthy.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Sequence
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

__all__ = ["Watcher", "FolderEvent"]

log = logging.getLogger("rawgate.watch")

#: ``(index of the watched folder, absolute path that changed)``
FolderEvent = tuple[int, str]


class _Enqueue(FileSystemEventHandler):
    """Puts every changed path on the queue; nothing else (see the module docstring)."""

    def __init__(self, index: int, q: "queue.SimpleQueue[FolderEvent]") -> None:
        self.index = index
        self.q = q

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        self.q.put((self.index, str(event.src_path)))
        dest = getattr(event, "dest_path", "")
        if dest:
            self.q.put((self.index, str(dest)))


class Watcher:
    """Observers for ``folders``; events arrive on :attr:`events`.

    Parameters
    ----------
    folders
        ``(path, use_polling, poll_interval_s)`` per watched folder.
    """

    def __init__(self, folders: Sequence[tuple[Path, bool, float]]) -> None:
        self.folders = [(Path(p), bool(poll), float(dt)) for p, poll, dt in folders]
        self.events: "queue.SimpleQueue[FolderEvent]" = queue.SimpleQueue()
        self._observers: list[BaseObserver | None] = [None] * len(self.folders)

    def _start_one(self, i: int) -> None:
        path, poll, dt = self.folders[i]
        obs: BaseObserver = PollingObserver(timeout=dt) if poll else Observer()
        obs.schedule(_Enqueue(i, self.events), str(path), recursive=True)
        obs.daemon = True
        obs.start()
        self._observers[i] = obs

    def start(self) -> None:
        """Schedule and start the observer of every folder that exists (before the first
        reconciliation scan); :meth:`restart_dead` starts the others once they appear."""
        for i, (path, _, _) in enumerate(self.folders):
            if path.is_dir():
                self._start_one(i)

    def alive(self) -> list[bool]:
        """Whether each folder's observer thread is running and its folder still exists."""
        return [o is not None and o.is_alive() and self.folders[i][0].is_dir()
                for i, o in enumerate(self._observers)]

    def restart_dead(self) -> list[int]:
        """Restart observers whose thread died (or whose folder came back); returns their indices."""
        restarted = []
        for i, ok in enumerate(self.alive()):
            if ok or not self.folders[i][0].is_dir():
                continue
            old = self._observers[i]
            if old is not None:
                try:
                    old.stop()
                except Exception:  # noqa: BLE001 - a dead observer may fail to stop; replace it anyway
                    log.exception("stopping the dead observer of %s", self.folders[i][0])
            try:
                self._start_one(i)
                restarted.append(i)
            except OSError as e:  # e.g. inotify watch limit reached
                log.error("cannot watch %s: %s", self.folders[i][0], e)
        return restarted

    def stop(self) -> None:
        # an inotify emitter that wakes while stopping logs a harmless ERROR ("queue_events()
        # called when the thread is inactive"); it would read as a fault in the journal
        logging.getLogger("watchdog.observers.inotify").setLevel(logging.CRITICAL)
        for o in self._observers:
            if o is not None:
                o.stop()
        for o in self._observers:
            if o is not None and o.is_alive():
                o.join(timeout=5)
