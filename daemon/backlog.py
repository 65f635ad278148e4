"""Is the daemon keeping up with the camera? The backlog of complete items and the two rates.

The service samples, once a second, how many complete items wait to be archived and how many raw
bytes have become complete (arrived) and been archived since it started. The daemon is *falling
behind* when, over the last window, the backlog only grew and exceeds a floor (by default twice
the items handed to the workers at once): the camera writes faster than the codec, the check and
the disk archive. It has *caught up* when the backlog is back under the floor. Nothing is dropped
either way: items wait on disk, in the ledger, until a worker is free. Pure bookkeeping, no I/O;
the service sends the alerts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["BacklogEvent", "BacklogMonitor"]


@dataclass(frozen=True)
class BacklogEvent:
    """A change of state: ``"behind"`` or ``"caught up"``, with the backlog [items] and the
    arrival and archiving rates over the window [MB/s, 1 MB = 10⁶ B]."""

    kind: str
    waiting: int
    arriving_MBps: float
    archiving_MBps: float
    window_s: float

    def text(self) -> str:
        if self.kind == "behind":
            return (f"{self.waiting} complete item(s) wait to be archived and the number grew for "
                    f"{self.window_s:.0f} s: data arrive at {self.arriving_MBps:.1f} MB/s, the daemon archives "
                    f"{self.archiving_MBps:.1f} MB/s. Nothing is dropped (items wait on disk); add workers, "
                    "choose a faster codec preset, or expect a delay.")
        return (f"the backlog is down to {self.waiting} item(s); archiving {self.archiving_MBps:.1f} MB/s, "
                f"arriving {self.arriving_MBps:.1f} MB/s")


class BacklogMonitor:
    """Decide from periodic samples whether the daemon falls behind.

    Parameters
    ----------
    window_s
        How long the backlog must have grown without a dip before "behind" [s].
    floor_items
        "Behind" needs more items than this waiting; "caught up" at or below it.
    """

    def __init__(self, window_s: float = 30.0, floor_items: int = 8) -> None:
        if window_s <= 0 or floor_items < 0:
            raise ValueError("window_s must be > 0 and floor_items ≥ 0")
        self.window_s = float(window_s)
        self.floor_items = int(floor_items)
        self.behind = False
        self._samples: deque[tuple[float, int, int, int]] = deque()

    def rates(self) -> tuple[float, float]:
        """Arrival and archiving rates over the samples held [MB/s]."""
        if len(self._samples) < 2:
            return 0.0, 0.0
        (t0, _, in0, out0), (t1, _, in1, out1) = self._samples[0], self._samples[-1]
        dt = max(t1 - t0, 1e-9)
        return (in1 - in0) / dt / 1e6, (out1 - out0) / dt / 1e6

    def observe(self, t_s: float, waiting: int, bytes_in: int, bytes_out: int) -> BacklogEvent | None:
        """Add a sample (monotonic time [s], items waiting, raw bytes complete and archived so
        far); return an event when the state changes."""
        self._samples.append((float(t_s), int(waiting), int(bytes_in), int(bytes_out)))
        while len(self._samples) > 2 and self._samples[1][0] <= t_s - self.window_s:
            self._samples.popleft()
        span = self._samples[-1][0] - self._samples[0][0]
        waits = [s[1] for s in self._samples]
        grew = all(b >= a for a, b in zip(waits, waits[1:])) and waits[-1] > waits[0]
        if not self.behind and span >= self.window_s and grew and waiting > self.floor_items:
            self.behind = True
            return BacklogEvent("behind", waiting, *self.rates(), span)
        if self.behind and waiting <= self.floor_items:
            self.behind = False
            return BacklogEvent("caught up", waiting, *self.rates(), span)
        return None
