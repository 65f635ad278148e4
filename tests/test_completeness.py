"""Is an item finished? Handshakes, format-aware checks (NDTiff written by ndstorage, OME-TIFF
written by pymmcore-plus from the real DemoCamera) and the quiet-period fallback, with an
injected clock (plain numbers for ``now``)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydantic
import pytest
import tifffile

from rawgate.daemon.completeness import (
    Completeness,
    CompletenessConfig,
    QuietTracker,
    check,
    fingerprint,
    ndtiff_state,
    open_by_any_process,
    writers_of,
)
from rawgate.daemon.sources import ItemRef, classify, item_files

RNG = np.random.default_rng(3)
QUIET = CompletenessConfig(quiet_period_s=30, format_quiet_s=2)


class Clock:
    """A hand-driven monotonic clock [s]."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _tracker() -> tuple[QuietTracker, Clock]:
    clock = Clock()
    return QuietTracker(clock), clock


def _write_ndtiff(parent: Path, n_t: int = 2, *, finish: bool = True):
    import ndstorage

    ds = ndstorage.NDTiffDataset(str(parent), name="acq", writable=True)
    ds.initialize({"PixelSize_um": 0.5})
    for t in range(n_t):
        for z in range(2):
            ds.put_image({"time": t, "z": z}, RNG.integers(0, 4096, (16, 16), dtype=np.uint16), {"t": t})
    if finish:
        ds.finish()
    return ds, Path(ds.path)


# ------------------------------------------------------------------------------- quiet period
def test_quiet_period_waits_while_a_file_grows(tmp_path):
    tr, clock = _tracker()
    p = tmp_path / "grow.tif"
    p.write_bytes(b"II*\0" + bytes(100))
    ref = classify(tmp_path, p)
    c = check(tmp_path, ref, QUIET, tr)
    assert c == Completeness(False, "waiting", c.reason) and "need 30 s unchanged" in c.reason
    clock.t += 20
    c = check(tmp_path, ref, QUIET, tr)
    assert not c.complete and "changed 20.0 s ago" in c.reason
    with p.open("ab") as fh:  # it grows: the quiet period starts again
        fh.write(bytes(100))
    clock.t += 20
    c = check(tmp_path, ref, QUIET, tr)
    assert not c.complete and "changed 0.0 s ago" in c.reason
    clock.t += 29.5
    assert not check(tmp_path, ref, QUIET, tr).complete
    # only the mtime changes (a writer rewriting in place): still a change
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    clock.t += 1
    assert "changed 0.0 s ago" in check(tmp_path, ref, QUIET, tr).reason
    clock.t += 30
    c = check(tmp_path, ref, QUIET, tr)
    assert c.complete and c.how == "quiet" and "unchanged for 30.0 s" in c.reason


def test_quiet_tracker_and_fingerprint(tmp_path):
    tr, clock = _tracker()
    (tmp_path / "a").write_bytes(bytes(10))
    (tmp_path / "b").write_bytes(bytes(5))
    fp = fingerprint(tmp_path, [tmp_path / "a", tmp_path / "b"])
    assert fp[0] == 15 and fp[2] == 2 and fp[1] == max((tmp_path / n).stat().st_mtime_ns for n in "ab")
    assert tr.stable_for("k", fp) == 0.0
    clock.t += 4.5
    assert tr.stable_for("k", fp) == 4.5
    assert tr.stable_for("k", fp, now=clock.t + 1) == 5.5
    assert tr.stable_for("k", (16, fp[1], 2)) == 0.0
    tr.forget("k")
    assert "k" not in tr


def test_empty_dataset_folder_waits(tmp_path):
    (tmp_path / "seq_1").mkdir()
    tr, clock = _tracker()
    ref = classify(tmp_path, tmp_path / "seq_1", sequence_globs=["seq_*"])
    clock.t += 3600
    c = check(tmp_path, ref, QUIET, tr)
    assert not c.complete and "no files yet" in c.reason


# ---------------------------------------------------------------------------------- handshakes
def test_sentinel_next_to_a_file(tmp_path):
    tr, clock = _tracker()
    (tmp_path / "a.ome.tif").write_bytes(bytes(64))
    ref = ItemRef("a.ome.tif", "tiff")
    cfg = CompletenessConfig(sentinel="{name}.done", quiet_period_s=30)
    assert not check(tmp_path, ref, cfg, tr).complete
    (tmp_path / "a.ome.tif.done").touch()
    c = check(tmp_path, ref, cfg, tr)  # no quiet period needed
    assert c == Completeness(True, "sentinel", "sentinel a.ome.tif.done present")
    stem = CompletenessConfig(sentinel="{stem}.ok")
    (tmp_path / "a.ok").touch()
    assert check(tmp_path, ref, stem, tr).how == "sentinel"


def test_required_sentinel_inside_a_dataset_folder(tmp_path):
    tr, clock = _tracker()
    _, ds = _write_ndtiff(tmp_path)
    ref = ItemRef("acq_1", "ndtiff")
    cfg = CompletenessConfig(sentinel="DONE", require_handshake=True)
    clock.t += 3600  # long quiet, format passed: neither counts
    check(tmp_path, ref, cfg, tr)
    clock.t += 3600
    c = check(tmp_path, ref, cfg, tr)
    assert c == Completeness(False, "waiting", "waiting for sentinel acq_1/DONE")
    (ds / "DONE").touch()
    assert check(tmp_path, ref, cfg, tr) == Completeness(True, "sentinel", "sentinel acq_1/DONE present")


def test_manifest_handshake(tmp_path):
    tr, clock = _tracker()
    (tmp_path / "day1").mkdir()
    for n in ("a.tif", "b.tif", "c.tif"):
        (tmp_path / "day1" / n).write_bytes(bytes(8))
    cfg = CompletenessConfig(manifest="FINISHED.txt", require_handshake=True)
    (tmp_path / "FINISHED.txt").write_text("# finished items, one per line\n./day1/a.tif\n\n")
    (tmp_path / "day1" / "FINISHED.txt").write_text("b.tif\n#c.tif\n")
    a, b, c_ = (ItemRef(f"day1/{n}", "tiff") for n in ("a.tif", "b.tif", "c.tif"))
    assert check(tmp_path, a, cfg, tr) == Completeness(True, "manifest", "listed in manifest FINISHED.txt")
    assert check(tmp_path, b, cfg, tr) == Completeness(True, "manifest", "listed in manifest day1/FINISHED.txt")
    c = check(tmp_path, c_, cfg, tr)  # a commented-out line does not count
    assert not c.complete and c.reason == "waiting for a manifest FINISHED.txt listing day1/c.tif"
    (tmp_path / "FINISHED.txt").write_text(f"{tmp_path / 'day1' / 'c.tif'}\n")  # absolute paths work too
    assert check(tmp_path, c_, cfg, tr).how == "manifest"


def test_config_is_strict():
    with pytest.raises(pydantic.ValidationError):
        CompletenessConfig(quiet_period=3)  # typo
    with pytest.raises(pydantic.ValidationError, match="require_handshake"):
        CompletenessConfig(require_handshake=True)
    with pytest.raises(pydantic.ValidationError, match="only"):
        CompletenessConfig(sentinel="{path}.done")
    with pytest.raises(pydantic.ValidationError, match="no '..'"):
        CompletenessConfig(sentinel="../{name}.done")
    with pytest.raises(pydantic.ValidationError, match="plain file name"):
        CompletenessConfig(manifest="a/b.txt")
    with pytest.raises(pydantic.ValidationError):
        CompletenessConfig(quiet_period_s=-1)
    cfg = CompletenessConfig()
    assert (cfg.quiet_period_s, cfg.format_quiet_s, cfg.require_handshake) == (30, 2, False)
    with pytest.raises(pydantic.ValidationError):
        cfg.quiet_period_s = 1  # frozen


# ------------------------------------------------------------------------------ NDTiff format
def test_ndtiff_while_written_and_after_finish(tmp_path):
    tr, clock = _tracker()
    ds, path = _write_ndtiff(tmp_path, finish=False)
    ref = classify(tmp_path, path / "NDTiff.index")
    assert ref == ItemRef("acq_1", "ndtiff")
    # ndstorage pre-sizes its stack file to 4 GiB (sparse) until finish(), as Micro-Manager does
    clock.t += 3600
    c = check(tmp_path, ref, QUIET, tr)
    assert c == Completeness(False, "waiting", "NDTiff stack acq_NDTiffStack.tif still pre-sized to 4 GiB "
                                               "(acquisition running)")
    # …and holds it open for writing (seen through /proc on Linux)
    if os.path.isdir("/proc/self/fd"):
        w = writers_of(item_files(tmp_path, ref))
        assert any(pid == os.getpid() for procs in w.values() for pid, _ in procs)
    ds.finish()
    c = check(tmp_path, ref, QUIET, tr)
    assert not c.complete and "need 2 s unchanged (NDTiff index truncated)" in c.reason
    clock.t += 2
    c = check(tmp_path, ref, QUIET, tr)
    assert c.complete and c.how == "format" and c.reason.startswith("NDTiff index truncated, 4 images in 1 file(s)")


def test_ndtiff_zero_padded_index(tmp_path):
    tr, clock = _tracker()
    _, path = _write_ndtiff(tmp_path)
    # Micro-Manager's Java writer pre-sizes NDTiff.index to 25 MiB of zeros and truncates it at
    # the end; ndstorage's Python writer does not, so make the running state explicitly: a copy
    # of the finished dataset whose index has zero padding appended.
    running = tmp_path / "running"
    shutil.copytree(path, running)
    with (running / "NDTiff.index").open("ab") as fh:
        fh.write(bytes(1 << 20))
    ref = classify(tmp_path, running)
    assert ref == ItemRef("running", "ndtiff")
    assert ndtiff_state(running)[0] == "running"
    check(tmp_path, ref, QUIET, tr)
    clock.t += 3600
    c = check(tmp_path, ref, QUIET, tr)
    assert c == Completeness(False, "waiting", "NDTiff index still zero-padded (acquisition running, or it "
                                               "stopped without closing the dataset)")
    # an index cut inside an entry (a copy in progress): no format pass, the quiet period decides
    cut = tmp_path / "cut"
    shutil.copytree(path, cut)
    data = (cut / "NDTiff.index").read_bytes()
    (cut / "NDTiff.index").write_bytes(data[:-10])
    state, why = ndtiff_state(cut)
    assert state == "unknown" and "does not parse" in why
    ref = ItemRef("cut", "ndtiff")
    check(tmp_path, ref, QUIET, tr)
    clock.t += 5
    c = check(tmp_path, ref, QUIET, tr)
    assert not c.complete and "need 30 s unchanged" in c.reason and "does not parse" in c.reason
    clock.t += 30
    assert check(tmp_path, ref, QUIET, tr).how == "quiet"


# ---------------------------------------------------------------------------- OME-TIFF format
@pytest.fixture(scope="module")
def mmcore():
    """The real DemoCamera (mm-test-adapters) through CMMCorePlus, as in test_democamera.py."""
    from pymmcore_plus import CMMCorePlus

    core = CMMCorePlus()
    core.loadSystemConfiguration()
    core.setROI(0, 0, 64, 48)
    yield core
    core.reset()


def test_ome_tiff_from_pymmcore_plus_passes_the_format_check(tmp_path, mmcore):
    import useq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from pymmcore_plus.mda.handlers import OMETiffWriter

    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 3}, z_plan={"range": 2, "step": 1},
                           channels=["DAPI"])
    writer = OMETiffWriter(tmp_path / "acq.ome.tif")
    mmcore.mda.run(seq, output=writer)
    del writer
    tr, clock = _tracker()
    ref = classify(tmp_path, tmp_path / "acq.ome.tif")
    c = check(tmp_path, ref, QUIET, tr)
    assert not c.complete and "format not checked yet" in c.reason
    clock.t += 2
    c = check(tmp_path, ref, QUIET, tr)
    assert c.complete and c.how == "format", c
    assert c.reason.startswith("OME-XML complete: 9 planes in 1 file(s)")


def test_truncated_ome_tiff_falls_back_to_quiet(tmp_path):
    tifffile.imwrite(tmp_path / "good.ome.tif", RNG.integers(0, 4096, (6, 32, 32), dtype=np.uint16),
                     ome=True, metadata={"axes": "TYX"})
    data = (tmp_path / "good.ome.tif").read_bytes()
    (tmp_path / "cut.ome.tif").write_bytes(data[: len(data) // 2])
    tr, clock = _tracker()
    ref = classify(tmp_path, tmp_path / "cut.ome.tif")
    check(tmp_path, ref, QUIET, tr)
    clock.t += 5
    c = check(tmp_path, ref, QUIET, tr)
    assert not c.complete and "need 30 s unchanged" in c.reason
    clock.t += 30
    c = check(tmp_path, ref, QUIET, tr)  # handed over; opening it will quarantine it
    assert c.complete and c.how == "quiet"
    # a plain OME-TIFF written by tifffile does pass
    good = ItemRef("good.ome.tif", "tiff")
    check(tmp_path, good, QUIET, tr)
    clock.t += 2
    assert check(tmp_path, good, QUIET, tr).how == "format"


def test_npy_format_check(tmp_path):
    tr, clock = _tracker()
    a = RNG.integers(0, 4096, (4, 16, 16), dtype=np.uint16)
    np.save(tmp_path / "full.npy", a)
    data = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "part.npy").write_bytes(data[:-100])
    for name in ("full.npy", "part.npy"):
        check(tmp_path, ItemRef(name, "npy"), QUIET, tr)
    clock.t += 2
    assert check(tmp_path, ItemRef("full.npy", "npy"), QUIET, tr).how == "format"
    c = check(tmp_path, ItemRef("part.npy", "npy"), QUIET, tr)
    assert not c.complete and f"holds {len(data) - 100} of {len(data)} bytes" in c.reason


# -------------------------------------------------------------------------- vanished and open
def test_vanished_items_wait_without_raising(tmp_path):
    tr, clock = _tracker()
    c = check(tmp_path, ItemRef("never.tif", "tiff"), QUIET, tr)
    assert c == Completeness(False, "waiting", "file disappeared: never.tif")
    p = tmp_path / "x.ome.tif"
    p.write_bytes(bytes(10))
    ref = ItemRef("x.ome.tif", "tiff")
    check(tmp_path, ref, QUIET, tr)
    p.unlink()
    clock.t += 60
    assert check(tmp_path, ref, QUIET, tr) == Completeness(False, "waiting", "file disappeared: x.ome.tif")
    assert ref not in tr
    assert check(tmp_path, ItemRef("gone_dir", "ndtiff"), QUIET, tr).reason == "file disappeared: gone_dir"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
def test_a_file_open_for_writing_waits(tmp_path):
    tr, clock = _tracker()
    p = tmp_path / "slow.tif"
    with p.open("ab") as fh:
        fh.write(bytes(64))
        fh.flush()
        ref = classify(tmp_path, p)
        check(tmp_path, ref, QUIET, tr)
        clock.t += 60
        c = check(tmp_path, ref, QUIET, tr)
        assert not c.complete and c.reason.startswith(f"waiting: slow.tif is open for writing by process {os.getpid()}")
        assert open_by_any_process([p])
    assert not open_by_any_process([p])
    clock.t += 1  # /proc is scanned at most once a second per item
    with p.open("rb"):  # readers do not count
        assert check(tmp_path, ref, QUIET, tr).how == "quiet"


def test_symlink_out_of_the_root_is_handed_over_for_quarantine(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "secret.tif"
    root.mkdir()
    outside.write_bytes(bytes(100))
    os.symlink(outside, root / "link.tif")
    tr, clock = _tracker()
    ref = classify(root, root / "link.tif")
    assert item_files(root, ref) == [root / "link.tif"]
    check(root, ref, QUIET, tr)
    clock.t += 30
    c = check(root, ref, QUIET, tr)  # the link itself is stable; open_stack refuses it
    assert c.complete and c.how == "quiet"
