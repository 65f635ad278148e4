"""The archive: streaming durable copies, verification from disk, BagIt manifests, promotion,
release of raw data, and a full disk — on real files, with real faults injected."""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest
from rawgate.calibration.simulation import make_sensor_truth, render_frames, truth_noise_model
from rawgate.daemon.archive import (
    ArchiveCopy,
    ArchiveError,
    DiskFullError,
    archive_relpath,
    check_bag,
    free_bytes,
    promote,
    read_bag_manifest,
    release_raw,
    sha256_file,
    sha256_files,
    verify_copy,
    write_bag_manifest,
    write_copy,
)
from rawgate.codecs.containers import (
    read_ome_tiff,
    read_ome_tiff_planes,
    write_ome_tiff,
)
from rawgate.codecs.lossless import n_workers
from rawgate.codecs.planes import ArrayStack, PlaneStack

H, W = 40, 56  # not square: catches transposed planes


class GeneratedStack:
    """A PlaneStack that makes each plane on request, refuses to be turned into an array, and
    counts how many of its planes are alive at once."""

    def __init__(self, n: int, shape=(H, W), dtype=np.uint16, seed: int = 0) -> None:
        self.shape = (n, *shape)
        self.dtype = np.dtype(dtype)
        self.axes = "TYX"
        self.metadata = {"Summary": {"Prefix": "gen"}}
        self.physical_sizes = {"X": 0.65, "Y": 0.65, "Z": 2.0}  # Z: axis absent, dropped
        self.seed = seed
        self._ramp = np.linspace(100, 3000, shape[0] * shape[1]).reshape(shape).astype(dtype)
        self.calls: list[int] = []
        self.alive = 0
        self.max_alive = 0

    @property
    def n_planes(self) -> int:
        return self.shape[0]

    def expected(self, i: int) -> np.ndarray:
        """Plane ``i``: a ramp plus noise, made without temporaries larger than a plane."""
        rng = np.random.default_rng(self.seed + i)
        p = rng.integers(0, 200, self.shape[1:], dtype=self.dtype)
        p += self._ramp
        return p

    def _gone(self) -> None:
        self.alive -= 1

    def plane(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_planes:
            raise IndexError(i)
        self.calls.append(i)
        p = self.expected(i)
        self.alive += 1
        self.max_alive = max(self.max_alive, self.alive)
        weakref.finalize(p, self._gone)
        return p

    def close(self) -> None:
        pass

    def __array__(self, *a, **k):
        raise AssertionError("the stack was materialised with np.asarray")


@pytest.fixture(scope="module")
def sensor():
    t = make_sensor_truth((H, W), seed=5)
    model = truth_noise_model(t)
    frames = render_frames(t, 40.0, 10.0, 4, np.random.default_rng(1))
    return model, frames


def _flip(path: Path, offset: int, n: int = 16) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(n)
        fh.seek(offset)
        fh.write(bytes(x ^ 0x5A for x in b))


# ---------------------------------------------------------------------- paths
@pytest.mark.parametrize(("rel", "kind", "want"), [
    ("a/b/x.tif", "tiff", "a/b/x.ome.tif"),
    ("a/b/x.ome.tiff", "ome-tiff", "a/b/x.ome.tif"),
    ("a/b/x.OME.TIF", "ome-tiff", "a/b/x.ome.tif"),
    ("a/acq_1", "ndtiff", "a/acq_1.ome.tif"),
    ("a/run.2", "sequence", "a/run.2.ome.tif"),
    ("x.npy", "npy", "x.ome.tif"),
    ("./a/x.tif", "tiff", "a/x.ome.tif"),
])
def test_archive_relpath(rel, kind, want):
    assert archive_relpath(rel, kind) == want


@pytest.mark.parametrize("rel", ["/abs/x.tif", "a/../../x.tif", "..", "", "."])
def test_archive_relpath_refuses_escapes(rel):
    with pytest.raises(ValueError):
        archive_relpath(rel, "tiff")


# ---------------------------------------------------------------------- write + verify
@pytest.mark.parametrize("spec", ["zstd", "jpegxl:effort=1"])
def test_lossless_copy_verifies_bit_exact(tmp_path, spec):
    stack = GeneratedStack(6)
    copy = write_copy(stack, tmp_path / "arch" / "a" / "x.ome.tif", spec)
    assert isinstance(copy, ArchiveCopy)
    assert copy.path.exists() and copy.nbytes == copy.path.stat().st_size
    assert copy.sha256 == hashlib.sha256(copy.path.read_bytes()).hexdigest()
    assert copy.raw_nbytes == 6 * H * W * 2 and copy.n_planes == 6
    assert copy.codec.split(":")[0] == spec.split(":")[0]
    assert not list(copy.path.parent.glob("*.partial"))
    r = verify_copy(copy.path, stack, lossless=True, keep_planes=[0, 5])
    assert r.ok, r.reason
    assert (r.n_planes, r.max_abs_error, r.mean_error) == (6, 0.0, 0.0)
    assert sorted(r.decoded) == [0, 5]
    np.testing.assert_array_equal(r.decoded[5], stack.expected(5))
    # the file carries the stack's axes, metadata and physical sizes
    a, meta = read_ome_tiff(copy.path)
    assert meta["axes"] == "TYX" and meta["micromanager"] == stack.metadata
    assert meta["physical_sizes"] == pytest.approx({"X": 0.65, "Y": 0.65})
    np.testing.assert_array_equal(a, np.stack([stack.expected(i) for i in range(6)]))


def test_lossy_copy_verifies_and_reads_back_plane_by_plane(tmp_path, sensor):
    model, frames = sensor
    stack = ArrayStack(frames, "TYX")
    copy = write_copy(stack, tmp_path / "x.ome.tif", "noisecal:step=2,seed=7",
                      noise_model=model)
    assert copy.codec.startswith("noisecal")
    r = verify_copy(copy.path, stack, lossless=False, max_abs_bias_adu=1.0, keep_planes=[2])
    assert r.ok, r.reason
    assert r.n_planes == len(frames) and r.max_abs_error > 0 and abs(r.mean_error) < 1.0
    exact = verify_copy(copy.path, stack, lossless=True)  # lossy: not bit-exact
    assert not exact.ok and "differ" in exact.reason and exact.n_planes == 1
    with read_ome_tiff_planes(copy.path) as rd:
        assert isinstance(rd, PlaneStack)
        assert rd.shape == frames.shape and rd.dtype == frames.dtype and rd.axes == "TYX"
        assert rd.info["model_sha256"] == model.sha256
        full, _ = read_ome_tiff(copy.path)
        for i in range(rd.n_planes):
            np.testing.assert_array_equal(rd.plane(i), full[i])
        np.testing.assert_array_equal(rd.plane(2), r.decoded[2])
        with pytest.raises(IndexError):
            rd.plane(rd.n_planes)
    # a bias bound it cannot meet fails with a reason
    bad = verify_copy(copy.path, stack, lossless=False, max_abs_bias_adu=1e-9)
    assert not bad.ok and "mean error" in bad.reason


def test_streaming_never_materialises_the_stack(tmp_path):
    stack = GeneratedStack(40)
    with pytest.raises(AssertionError, match="materialised"):
        np.asarray(stack)  # the guard works
    copy = write_copy(stack, tmp_path / "s.ome.tif", "zstd")
    assert stack.calls == list(range(40))  # each plane pulled once, in order
    assert stack.max_alive <= 2 * n_workers() + 2  # a bounded window, not the stack
    stack.calls.clear()
    assert verify_copy(copy.path, stack, lossless=True).ok
    assert stack.calls == list(range(40))
    assert stack.max_alive <= 2 * n_workers() + 2


def test_write_peak_memory_is_bounded(tmp_path):
    n, side = 96, 512
    plane_bytes = side * side * 2
    stack = GeneratedStack(n, (side, side))
    gc.collect()
    tracemalloc.start()
    try:
        copy = write_copy(stack, tmp_path / "big.ome.tif", "zstd")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert verify_copy(copy.path, stack, lossless=True).ok
        _, verify_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the writer codes a window of 2 × n_workers() planes in threads: those raw planes, their
    # streams and the codec's buffers (measured ≈ 5.5, 9.5, 17, 28 planes for 1, 2, 4, 8
    # workers); materialising the stack would take ≥ 96 planes
    window = 2 * n_workers()
    assert peak < (2 * window + 8) * plane_bytes < n * plane_bytes / 2, (peak / plane_bytes)
    assert verify_peak < 8 * plane_bytes, verify_peak / plane_bytes  # one plane at a time
    assert copy.raw_nbytes == n * plane_bytes
    # the array path writes the same file content
    arr = np.stack([stack.expected(i) for i in range(4)])
    p = write_ome_tiff(tmp_path / "arr.ome.tif", arr, "zstd")
    np.testing.assert_array_equal(read_ome_tiff(p)[0], arr)


def test_corrupted_copy_fails_verification(tmp_path):
    stack = GeneratedStack(4)
    copy = write_copy(stack, tmp_path / "c.ome.tif", "zstd")
    _flip(copy.path, copy.nbytes // 2)
    r = verify_copy(copy.path, stack, lossless=True)
    assert not r.ok and r.reason
    assert "plane" in r.reason
    assert sha256_file(copy.path) != copy.sha256
    # a truncated file, a missing one, and the wrong raw data fail too
    with open(copy.path, "r+b") as fh:
        fh.truncate(copy.nbytes // 3)
    assert not verify_copy(copy.path, stack, lossless=True).ok
    assert not verify_copy(tmp_path / "none.ome.tif", stack, lossless=True).ok
    good = write_copy(stack, tmp_path / "g.ome.tif", "zstd")
    other = GeneratedStack(4, seed=99)
    r2 = verify_copy(good.path, other, lossless=True)
    assert not r2.ok and "plane 0" in r2.reason
    r3 = verify_copy(good.path, GeneratedStack(5), lossless=True)
    assert not r3.ok and "raw data" in r3.reason


# ---------------------------------------------------------------------- faults
def test_enospc_raises_disk_full_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RAWGATE_INJECT_FAULTS", "enospc:write")
    dest = tmp_path / "arch" / "d" / "x.ome.tif"
    with pytest.raises(DiskFullError) as ei:
        write_copy(GeneratedStack(8), dest, "zstd")
    e = ei.value
    assert isinstance(e, ArchiveError) and isinstance(e, OSError) and e.errno == errno.ENOSPC
    assert str(e).startswith(f"archive disk full (ENOSPC) while writing {dest}: ")
    assert str(e).endswith(" bytes free") and e.free > 0
    assert isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.ENOSPC
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no .partial
    monkeypatch.setenv("RAWGATE_INJECT_FAULTS", "edquot:write")
    with pytest.raises(DiskFullError, match=r"\(EDQUOT\)"):
        write_copy(GeneratedStack(8), dest, "zstd")
    # an existing copy survives a failed rewrite
    monkeypatch.delenv("RAWGATE_INJECT_FAULTS")
    first = write_copy(GeneratedStack(8), dest, "zstd")
    monkeypatch.setenv("RAWGATE_INJECT_FAULTS", "enospc:write")
    with pytest.raises(DiskFullError):
        write_copy(GeneratedStack(8, seed=3), dest, "zstd")
    assert sha256_file(dest) == first.sha256
    assert sorted(p.name for p in dest.parent.iterdir()) == ["x.ome.tif"]


def test_free_bytes(tmp_path):
    assert 0 < free_bytes(tmp_path) == free_bytes(tmp_path / "not" / "yet")


# ---------------------------------------------------------------------- hashes, promote
def test_sha256_of_items(tmp_path):
    a = tmp_path / "ds" / "a.tif"
    b = tmp_path / "ds" / "sub" / "b.tif"
    b.parent.mkdir(parents=True)
    a.write_bytes(os.urandom(3 << 20 | 5))  # more than one block
    b.write_bytes(b"bee")
    assert sha256_file(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    assert sha256_files(tmp_path, [a]) == hashlib.sha256(a.read_bytes()).hexdigest()
    assert sha256_files(tmp_path, [Path("ds/a.tif")]) == sha256_file(a)
    lines = sorted([f"{sha256_file(a)}  ds/a.tif\n", f"{sha256_file(b)}  ds/sub/b.tif\n"])
    want = hashlib.sha256("".join(lines).encode()).hexdigest()
    assert sha256_files(tmp_path, [b, a]) == sha256_files(tmp_path, [a, b]) == want
    assert sha256_files(tmp_path, [Path("ds/sub/b.tif"), a]) == want
    b.write_bytes(b"bea")
    assert sha256_files(tmp_path, [a, b]) != want


def test_promote_is_atomic_and_idempotent(tmp_path):
    staged = tmp_path / "bag" / ".rawgate-staging" / "x.ome.tif"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"copy")
    final = tmp_path / "bag" / "data" / "a" / "b" / "x.ome.tif"
    assert promote(staged, final) is True
    assert final.read_bytes() == b"copy" and not staged.exists()
    assert promote(staged, final) is False  # redone after a crash past the rename
    assert final.read_bytes() == b"copy"
    assert promote(tmp_path / "nope", tmp_path / "nope2") is False  # the caller checks final
    assert not (tmp_path / "nope2").exists()
    # a new staged copy replaces the final one
    staged.write_bytes(b"copy 2")
    assert promote(staged, final) is True and final.read_bytes() == b"copy 2"


# ---------------------------------------------------------------------- BagIt
def _payload(bag: Path, rel: str, data: bytes) -> tuple[str, str, int]:
    f = bag / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(data)
    return (hashlib.sha256(data).hexdigest(), rel, len(data))


def test_bag_manifest_round_trip_and_check(tmp_path):
    bag = tmp_path / "bag"
    entries = [_payload(bag, "data/b/y.ome.tif", b"yy" * 100),
               _payload(bag, "data/a/x.ome.tif", b"x" * 7),
               _payload(bag, "data/with space.ome.tif", b"s")]
    write_bag_manifest(bag, entries)
    assert (bag / "bagit.txt").read_text() == (
        "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    lines = (bag / "manifest-sha256.txt").read_text().splitlines()
    assert [ln.split("  ", 1)[1] for ln in lines] == [
        "data/a/x.ome.tif", "data/b/y.ome.tif", "data/with space.ome.tif"]
    info = (bag / "bag-info.txt").read_text()
    assert "Payload-Oxum: 208.3\n" in info and "Bag-Software-Agent: rawgate\n" in info
    assert "Bagging-Date: " in info
    tm = dict(ln.split("  ")[::-1] for ln in (bag / "tagmanifest-sha256.txt").read_text().splitlines())
    assert set(tm) == {"bagit.txt", "bag-info.txt", "manifest-sha256.txt"}
    assert tm["manifest-sha256.txt"] == sha256_file(bag / "manifest-sha256.txt")
    assert read_bag_manifest(bag) == {rel: sha for sha, rel, _ in entries}
    assert check_bag(bag) == []
    # staging and partial files are not payload
    (bag / ".rawgate-staging").mkdir()
    (bag / ".rawgate-staging" / "z.ome.tif").write_bytes(b"z")
    (bag / "data" / "a" / ".x2.ome.tif.123.partial").write_bytes(b"p")
    assert check_bag(bag) == []
    # a tampered file, an extra file, a missing file
    _flip(bag / "data" / "b" / "y.ome.tif", 10, 1)
    (bag / "data" / "a" / "extra.tif").write_bytes(b"e")
    (bag / "data" / "with space.ome.tif").unlink()
    problems = check_bag(bag)
    assert any(p.startswith("checksum mismatch: data/b/y.ome.tif") for p in problems)
    assert "not in manifest: data/a/extra.tif" in problems
    assert "missing: data/with space.ome.tif" in problems
    assert len(problems) == 3, problems
    # a tampered tag file
    (bag / "bag-info.txt").write_text("Payload-Oxum: 1.1\n")
    assert "tag checksum mismatch: bag-info.txt" in check_bag(bag)
    assert read_bag_manifest(tmp_path / "empty") == {}


def test_bag_manifest_refuses_bad_entries(tmp_path):
    sha = "0" * 64
    for rel in ("x.tif", "/data/x.tif", "data/../x.tif", "data"):
        with pytest.raises(ValueError):
            write_bag_manifest(tmp_path, [(sha, rel, 1)])
    with pytest.raises(ValueError):
        write_bag_manifest(tmp_path, [("abc", "data/x", 1)])
    with pytest.raises(ValueError):
        write_bag_manifest(tmp_path, [(sha, "data/x", 1), (sha, "data/x", 1)])


# ---------------------------------------------------------------------- release
def _raw_tree(root: Path) -> list[Path]:
    files = [root / "day1" / "acq_1" / "img_000.tif", root / "day1" / "acq_1" / "img_001.tif",
             root / "day1" / "acq_1" / "meta" / "display.json"]
    for i, f in enumerate(files):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(bytes([i]) * (1000 + i))
    (root / "day1" / "other.tif").write_bytes(b"keep")
    return files


def test_release_delete_is_idempotent_and_stays_inside_root(tmp_path):
    root = tmp_path / "watched"
    files = _raw_tree(root)
    released = release_raw(root, files, action="delete")
    assert sorted(released) == sorted(f.resolve() for f in files)
    assert not (root / "day1" / "acq_1").exists()  # emptied dataset folders removed
    assert (root / "day1" / "other.tif").read_bytes() == b"keep"  # the rest untouched
    assert release_raw(root, files, action="delete") == []  # redone after a crash
    # the watched root itself is never removed
    only = root / "solo.tif"
    (root / "day1" / "other.tif").unlink()
    (root / "day1").rmdir()
    only.write_bytes(b"s")
    assert release_raw(root, [Path("solo.tif")], action="delete") == [only.resolve()]
    assert root.is_dir() and list(root.iterdir()) == []


def test_release_refuses_paths_outside_root(tmp_path):
    root = tmp_path / "watched"
    root.mkdir()
    outside = tmp_path / "precious.tif"
    outside.write_bytes(b"p")
    inside = root / "x.tif"
    inside.write_bytes(b"x")
    for bad in ([outside], [root / ".." / "precious.tif"], [Path("../precious.tif")], [root]):
        with pytest.raises(ValueError):
            release_raw(root, [inside, *bad], action="delete")
    assert inside.exists() and outside.exists()  # checked before touching anything
    # a link inside the root is released itself, never what it points to
    link = root / "link.tif"
    link.symlink_to(outside)
    assert release_raw(root, [link], action="delete") == [link]
    assert outside.read_bytes() == b"p" and not link.is_symlink()
    with pytest.raises(ValueError):
        release_raw(root, [inside], action="move", holding_dir=root / "hold")
    with pytest.raises(ValueError):
        release_raw(root, [inside], action="move", holding_dir=None)
    with pytest.raises(ValueError):
        release_raw(root, [inside], action="shred")  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", ["", "exdev:rename"])
def test_release_move_mirrors_relpaths(tmp_path, monkeypatch, fault):
    if fault:  # the copy–fsync–verify–delete path of a holding folder on another filesystem
        monkeypatch.setenv("RAWGATE_INJECT_FAULTS", fault)
    root, hold = tmp_path / "watched", tmp_path / "holding"
    files = _raw_tree(root)
    content = {f: f.read_bytes() for f in files}
    released = release_raw(root, files[:2], action="move", holding_dir=hold)
    assert released == [f.resolve() for f in files[:2]]
    for f in files[:2]:
        assert not f.exists()
        assert (hold / f.relative_to(root)).read_bytes() == content[f]
    assert files[2].exists()
    # a crash after copying into holding but before deleting the source is redone
    (hold / files[2].relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
    (hold / files[2].relative_to(root)).write_bytes(content[files[2]])
    assert release_raw(root, files, action="move", holding_dir=hold) == [files[2].resolve()]
    assert not files[2].exists()
    assert release_raw(root, files, action="move", holding_dir=hold) == []
    assert not list(hold.rglob("*.partial"))
    # a different file already in holding is never overwritten
    again = root / "day1" / "acq_1" / "img_000.tif"
    again.write_bytes(b"new data")
    with pytest.raises(ArchiveError):
        release_raw(root, [again], action="move", holding_dir=hold)
    assert again.exists()
    assert (hold / again.relative_to(root)).read_bytes() == content[files[0]]
