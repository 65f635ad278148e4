"""Falling behind: the backlog monitor's decisions from samples (pure; the daemon test feeds it
real arrivals)."""

from __future__ import annotations

import pytest

from rawgate.daemon.backlog import BacklogMonitor


def test_a_growing_backlog_is_behind_once_then_caught_up():
    m = BacklogMonitor(window_s=10, floor_items=4)
    events = []
    # 20 MB/s arrive, 5 MB/s archived, one 10 MB item every 0.5 s: the backlog grows
    for i in range(40):
        t = i * 1.0
        e = m.observe(t, waiting=2 + i // 2, bytes_in=int(20e6 * t), bytes_out=int(5e6 * t))
        if e:
            events.append((t, e))
    assert [e.kind for _, e in events] == ["behind"]
    t, e = events[0]
    assert t >= 10 and e.waiting > 4
    assert e.arriving_MBps == pytest.approx(20, rel=1e-6) and e.archiving_MBps == pytest.approx(5, rel=1e-6)
    assert "20.0 MB/s" in e.text() and "5.0 MB/s" in e.text()
    # the workers catch up
    e = None
    for i in range(40, 80):
        e = m.observe(i * 1.0, waiting=max(0, 21 - (i - 40)), bytes_in=int(20e6 * 40), bytes_out=int(5e6 * i)) or e
    assert e is not None and e.kind == "caught up" and not m.behind


def test_a_backlog_that_dips_or_stays_small_is_not_behind():
    m = BacklogMonitor(window_s=10, floor_items=4)
    for i in range(60):  # a saw-tooth: a burst is handed out before it piles up for 10 s
        assert m.observe(float(i), waiting=3 + (i % 7) * 2, bytes_in=i, bytes_out=i) is None
    m = BacklogMonitor(window_s=10, floor_items=40)
    for i in range(60):  # growing, but under the floor
        assert m.observe(float(i), waiting=i // 2, bytes_in=i, bytes_out=0) is None


def test_bad_parameters():
    with pytest.raises(ValueError):
        BacklogMonitor(window_s=0)
