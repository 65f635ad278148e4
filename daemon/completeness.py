"""Is an item finished? Handshake first, then format-aware checks, then a quiet period.

Order of trust:

1. an explicit handshake the lab configures: a *sentinel* file next to (or inside) the item, or a
   *manifest* listing finished items (the aind-watchdog / SciCat convention). When present the
   item is complete, nothing else is looked at; with ``require_handshake`` nothing else counts.
2. format-aware checks for Micro-Manager output: an NDTiff dataset is finished when its
   ``NDTiff.index`` has been truncated (the writers pre-size it with zeros, and the stack files to
   4 GiB) and parses to its end; an OME-TIFF (single file or set) when its OME-XML is there, every
   file it names exists and the page count matches. Writers memory-map and pre-size files, so a
   passed format check still needs ``format_quiet_s`` without change.
3. a quiet period (``quiet_period_s``) with unchanged total size, newest mtime and file count.

Finally (Linux, best effort) an item a visible process still holds open for writing waits.

Times are seconds of an injectable monotonic clock; sizes bytes; mtimes nanoseconds.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .sources import (
    NDTIFF_FULLRES,
    NDTIFF_INDEX,
    ItemRef,
    UnsafePathError,
    first_tiff_description,
    item_files,
    ome_referenced_files,
    resolve_inside,
)

__all__ = [
    "CompletenessConfig",
    "Completeness",
    "QuietTracker",
    "Fingerprint",
    "check",
    "fingerprint",
    "sentinel_path",
    "manifest_lists",
    "ndtiff_state",
    "ome_tiff_state",
    "npy_state",
    "writers_of",
    "open_by_any_process",
]

_T = TypeVar("_T")

#: ``(total size [bytes], newest mtime [ns], number of files)`` of an item's files.
Fingerprint = tuple[int, int, int]

NDTIFF_PRESIZE_BYTES = 4 * 1024**3  # NDTiff writers pre-size each stack file to 4 GiB
_INDEX_TAIL_BYTES = 4096
# The last entry of a finished index ends with (width, height, pixel type, compression,
# metadata offset, length, compression): at most ~23 trailing zero bytes. More is padding.
_INDEX_ZERO_TAIL = 32
_OME_NAME_RE = re.compile(r"\.ome\.tiff?$", re.IGNORECASE)


# ------------------------------------------------------------------------------------ config
class CompletenessConfig(BaseModel):
    """How the daemon decides that an item of a watched folder is finished."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sentinel: str | None = Field(
        None,
        description="Handshake file: '{name}.done' next to the item ({name}: the item's file/folder "
        "name, {stem}: without suffixes), or a plain name like 'DONE' inside a dataset folder "
        "(for a file item: in its folder)",
    )
    manifest: str | None = Field(
        None,
        description="Handshake list: a file in the watched root (or the item's folder) naming finished "
        "items' relative paths, one per line ('#' starts a comment line)",
    )
    quiet_period_s: float = Field(30.0, ge=0, description="Fallback: unchanged size and mtime this long [s]")
    format_quiet_s: float = Field(
        2.0, ge=0, description="Still required after a format check passed (writers pre-size/memory-map) [s]"
    )
    require_handshake: bool = Field(False, description="Only a sentinel/manifest completes an item")
    check_open_files: bool = Field(
        True, description="Linux: keep waiting while a visible process holds a file open for writing"
    )

    @field_validator("sentinel")
    @classmethod
    def _sentinel(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            probe = v.format(name="x", stem="x")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"{v!r}: only {{name}} and {{stem}} may appear in braces ({e})") from None
        p = PurePosixPath(probe.replace("\\", "/"))
        if not probe.strip() or p.is_absolute() or ".." in p.parts:
            raise ValueError(f"{v!r}: a name next to / inside the item (not absolute, no '..')")
        return v

    @field_validator("manifest")
    @classmethod
    def _manifest(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "/" in v or "\\" in v or v in (".", "..")):
            raise ValueError(f"{v!r}: a plain file name (no '/')")
        return v

    @model_validator(mode="after")
    def _handshake(self) -> "CompletenessConfig":
        if self.require_handshake and not (self.sentinel or self.manifest):
            raise ValueError("require_handshake needs a `sentinel` or a `manifest`")
        return self


@dataclass(frozen=True)
class Completeness:
    """The verdict of :func:`check`.

    ``how`` is "sentinel", "manifest", "format", "quiet" (complete) or "waiting"; ``reason`` a
    sentence for people and logs.
    """

    complete: bool
    how: str
    reason: str


# ------------------------------------------------------------------------------ quiet tracker
class QuietTracker:
    """Remembers, per item, a :data:`Fingerprint` and since when it has not changed.

    Parameters
    ----------
    clock
        Monotonic seconds (default :func:`time.monotonic`); tests pass a plain function.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: dict[Hashable, tuple[Fingerprint, float]] = {}
        self._memo: dict[Hashable, dict[str, tuple[tuple[Fingerprint, Hashable], Any]]] = {}
        self._lock = threading.Lock()

    def stable_for(self, key: Hashable, fingerprint: Fingerprint, now: float | None = None) -> float:
        """Seconds ``key`` has had this fingerprint (0 when it just changed or is new)."""
        now = self.clock() if now is None else float(now)
        with self._lock:
            prev = self._seen.get(key)
            if prev is None or prev[0] != fingerprint:
                self._seen[key] = (fingerprint, now)
                return 0.0
            return max(0.0, now - prev[1])

    def forget(self, key: Hashable) -> None:
        """Drop what is known about ``key`` (complete, processed or deleted)."""
        with self._lock:
            self._seen.pop(key, None)
            self._memo.pop(key, None)

    def memo(self, key: Hashable, slot: str, fingerprint: Fingerprint, compute: Callable[[], _T],
             extra: Hashable = None) -> _T:
        """``compute()``, reused while ``key`` keeps this fingerprint (and ``extra``): format checks
        re-run only when a file changed, since the daemon polls pending items many times a second."""
        with self._lock:
            hit = self._memo.get(key, {}).get(slot)
        if hit is not None and hit[0] == (fingerprint, extra):
            return hit[1]
        value = compute()
        with self._lock:
            self._memo.setdefault(key, {})[slot] = ((fingerprint, extra), value)
        return value

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: object) -> bool:
        return key in self._seen


def _stat(root: Path, p: Path) -> os.stat_result:
    """``stat`` of an item file, following a symlink only while it stays inside ``root``."""
    st = os.lstat(p)
    if stat.S_ISLNK(st.st_mode):
        try:
            resolve_inside(root, p.relative_to(root).as_posix())
        except (UnsafePathError, ValueError):
            return st
        return os.stat(p)
    return st


def fingerprint(root: str | os.PathLike, files: Iterable[Path]) -> Fingerprint:
    """``(total size [bytes], newest mtime [ns], file count)``; raises FileNotFoundError."""
    root = Path(root)
    total = newest = n = 0
    for f in files:
        st = _stat(root, Path(f))
        total += st.st_size
        newest = max(newest, st.st_mtime_ns)
        n += 1
    return total, newest, n


# ---------------------------------------------------------------------------------- handshakes
def _stem(name: str) -> str:
    m = _OME_NAME_RE.search(name)
    if m:
        return name[: m.start()]
    return Path(name).stem if "." in name.lstrip(".") else name


def sentinel_path(root: str | os.PathLike, ref: ItemRef, pattern: str) -> Path:
    """Where the sentinel of ``ref`` would be: ``pattern`` with ``{name}``/``{stem}`` is relative
    to the item's folder (``"{name}.done"`` → ``a.tif.done`` next to ``a.tif``); a plain name is
    inside a dataset folder, or in a file item's folder."""
    item = Path(root) / ref.relpath
    if "{" in pattern:
        return item.parent / pattern.format(name=item.name, stem=_stem(item.name))
    if ref.kind in ("ndtiff", "sequence"):
        return item / pattern
    return item.parent / pattern


_manifest_cache: dict[Path, tuple[tuple[int, int], set[str]]] = {}
_manifest_lock = threading.Lock()


def _manifest_entries(path: Path) -> set[str] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (st.st_mtime_ns, st.st_size)
    with _manifest_lock:
        hit = _manifest_cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return None
    entries: set[str] = set()
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        s = s.replace("\\", "/")
        while s.startswith("./"):
            s = s[2:]
        entries.add(s.rstrip("/"))
    with _manifest_lock:
        if len(_manifest_cache) > 1024:
            _manifest_cache.clear()
        _manifest_cache[path] = (key, entries)
    return entries


def manifest_lists(root: str | os.PathLike, ref: ItemRef, name: str) -> Path | None:
    """The manifest (``root/name``, or ``name`` in the item's folder) that lists ``ref``, or None.

    Entries are paths relative to the manifest's folder (``./`` and a trailing ``/`` allowed),
    or absolute paths; lines starting with '#' are comments."""
    root = Path(root)
    item = root / ref.relpath
    candidates = [root / name]
    if item.parent != root:
        candidates.append(item.parent / name)
    for m in candidates:
        entries = _manifest_entries(m)
        if not entries:
            continue
        base = m.parent.relative_to(root).as_posix()
        for e in entries:
            if e.startswith("/"):
                if Path(e) == item or os.path.normpath(e) == os.path.normpath(item):
                    return m
                continue
            rel = e if base in ("", ".") else f"{base}/{e}"
            if rel == ref.relpath:
                return m
    return None


# ------------------------------------------------------------------------------- format checks
def _index_path(folder: Path) -> Path | None:
    for p in (folder / NDTIFF_INDEX, folder / NDTIFF_FULLRES / NDTIFF_INDEX):
        if p.exists():
            return p
    return None


def _parse_ndtiff_index(data: bytes) -> tuple[list[tuple[str, int, int, int, int, int, int]], bool]:
    """Entries ``(file, pixel offset, width, height, pixel type, md offset, md length)`` and
    whether zero padding followed them. Raises ValueError for an entry cut short."""
    out = []
    pos, n = 0, len(data)
    while pos < n:
        if pos + 4 > n:
            raise ValueError(f"index ends inside an entry at byte {pos}")
        (alen,) = struct.unpack_from("<I", data, pos)
        if alen == 0:
            return out, True
        pos += 4 + alen
        if pos + 4 > n:
            raise ValueError(f"index ends inside an entry at byte {pos}")
        (flen,) = struct.unpack_from("<I", data, pos)
        fname = data[pos + 4:pos + 4 + flen].decode("utf-8", errors="replace")
        pos += 4 + flen
        if pos + 32 > n:
            raise ValueError(f"index ends inside an entry at byte {pos}")
        pix, w, h, ptype, _pc, mdo, mdl, _mc = struct.unpack_from("<8I", data, pos)
        pos += 32
        out.append((fname, pix, w, h, ptype, mdo, mdl))
    return out, False


def ndtiff_state(folder: str | os.PathLike, *, deep: bool = True) -> tuple[str, str]:
    """``("running" | "passed" | "unknown", reason)`` for an NDTiff dataset folder.

    running: a stack file still pre-sized to 4 GiB, or an index ending in zero padding
    (Micro-Manager pre-sizes ``NDTiff.index`` to 25 MiB and truncates it when the acquisition
    ends). passed: the index is truncated and (``deep``) parses to its end, every image lying
    inside its file. unknown: no index yet, an empty or damaged index.
    """
    folder = Path(folder)
    idx = _index_path(folder)
    if idx is None:
        return "unknown", f"no {NDTIFF_INDEX} yet"
    sizes: dict[str, int] = {}
    with os.scandir(idx.parent) as it:
        for e in it:
            if e.name.lower().endswith(".tif") and e.is_file(follow_symlinks=False):
                sizes[e.name] = e.stat(follow_symlinks=False).st_size
    for name, size in sorted(sizes.items()):
        if size == NDTIFF_PRESIZE_BYTES:
            return "running", f"NDTiff stack {name} still pre-sized to 4 GiB (acquisition running)"
    isize = idx.stat().st_size
    if isize == 0:
        return "unknown", f"{NDTIFF_INDEX} is empty"
    try:
        with open(idx, "rb") as fh:
            fh.seek(max(0, isize - _INDEX_TAIL_BYTES))
            tail = fh.read()
    except PermissionError:
        return "unknown", f"{NDTIFF_INDEX} is not readable (permission denied)"
    if not any(tail[-_INDEX_ZERO_TAIL:]):
        return "running", ("NDTiff index still zero-padded (acquisition running, or it stopped without "
                           "closing the dataset)")
    if not deep:
        return "passed", "NDTiff index truncated"
    try:
        entries, padded = _parse_ndtiff_index(idx.read_bytes())
    except (ValueError, struct.error) as e:
        return "unknown", f"{NDTIFF_INDEX} does not parse: {e}"
    except PermissionError:
        return "unknown", f"{NDTIFF_INDEX} is not readable (permission denied)"
    if padded:
        return "running", "NDTiff index still zero-padded (acquisition running)"
    if not entries:
        return "unknown", f"{NDTIFF_INDEX} lists no images"
    for fname, pix, w, h, ptype, mdo, mdl in entries:
        if fname not in sizes:
            return "unknown", f"{NDTIFF_INDEX} names {fname}, which is missing"
        bpp = 1 if ptype == 0 else 2  # 8-bit; else 16-bit containers (RGB is not checked here)
        end = max(mdo + mdl, pix + (w * h * bpp if ptype != 2 else 0))
        if end > sizes[fname]:
            return "unknown", f"{fname} is shorter ({sizes[fname]} bytes) than its index says ({end})"
    return "passed", f"NDTiff index truncated, {len(entries)} images in {len({e[0] for e in entries})} file(s)"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def ome_tiff_state(root: str | os.PathLike, ref: ItemRef) -> tuple[str, str]:
    """``("passed" | "unknown" | "companion", reason)`` for an OME-TIFF file or set.

    passed: the file parses, carries OME-XML, every file the OME-XML names exists, and the
    files' page count equals the planes the OME-XML describes. companion: the file only points
    at another file's OME-XML (``BinaryOnly``); it is archived with that file's set.
    """
    import logging

    import tifffile

    root = Path(root)
    master = root / ref.relpath
    desc = first_tiff_description(master, limit=None)
    if desc is None or "<OME" not in desc:
        return "unknown", "no OME-XML in the file (yet)"
    if "<BinaryOnly" in desc:
        m = re.search(r"""MetadataFile\s*=\s*(["'])(.*?)\1""", desc)
        return "companion", (f"part of the multi-file OME-TIFF set {m.group(2) if m else '?'}: "
                             "archived with that file")
    try:
        tree = ET.fromstring(desc.encode("utf-8"))
    except ET.ParseError as e:
        return "unknown", f"OME-XML does not parse ({e})"
    expected = 0
    for px in (el for el in tree.iter() if _local(el.tag) == "Pixels"):
        try:
            z, c, t = (int(px.get(k, "1")) for k in ("SizeZ", "SizeC", "SizeT"))
        except ValueError:
            return "unknown", "OME-XML Pixels sizes are not integers"
        spp = 1
        ch = next((el for el in px if _local(el.tag) == "Channel"), None)
        if ch is not None:
            try:
                spp = max(1, int(ch.get("SamplesPerPixel", "1")))
            except ValueError:
                spp = 1
        expected += z * t * max(1, c // spp)
    files = [master] + ome_referenced_files(master, desc)
    missing = [f.name for f in files if not f.exists()]
    if missing:
        return "unknown", f"the OME-XML names missing file(s): {', '.join(missing[:3])}"
    pages = 0
    problems: list[str] = []

    class _H(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == threading.get_ident() and record.levelno >= logging.WARNING:
                problems.append(record.getMessage())

    h = _H()
    logger = logging.getLogger("tifffile")
    logger.addHandler(h)
    try:
        for f in files:
            with tifffile.TiffFile(f) as tif:
                size = tif.filehandle.size
                for p in tif.pages:
                    for off, cnt in zip(p.dataoffsets, p.databytecounts):
                        if off + cnt > size:
                            return "unknown", f"{f.name}: page data beyond the end of the file (truncated)"
                pages += len(tif.pages)
    except Exception as e:  # noqa: BLE001 - any parse failure means "not (yet) a valid OME-TIFF"
        return "unknown", f"does not parse as TIFF ({type(e).__name__}: {e})"
    finally:
        logger.removeHandler(h)
    bad = [m for m in problems if any(w in m.lower() for w in ("offset", "missing", "failed", "truncat", "corrupt"))]
    if bad:
        return "unknown", f"truncated or corrupt: {bad[0]}"
    if pages != expected:
        return "unknown", f"{pages} pages, the OME-XML describes {expected} planes"
    return "passed", f"OME-XML complete: {expected} planes in {len(files)} file(s)"


def npy_state(path: str | os.PathLike) -> tuple[str, str]:
    """``("passed" | "unknown", reason)``: a ``.npy`` whose size is header + data exactly."""
    import numpy as np

    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
        size = os.path.getsize(path)
    except (ValueError, OSError, EOFError) as e:
        return "unknown", f"not a complete .npy header ({e})"
    want = offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if size != want:
        return "unknown", f".npy holds {size} of {want} bytes"
    return "passed", ".npy header and data sizes agree"


# ------------------------------------------------------------------------------- open files
def writers_of(paths: Iterable[str | os.PathLike]) -> dict[str, list[tuple[int, str]]]:
    """Which visible processes hold ``paths`` open for writing: ``{path: [(pid, command)]}``.

    Linux only (``/proc/*/fd`` and ``fdinfo`` flags); empty elsewhere. Limits: processes of other
    users are invisible unless the daemon runs privileged; writers on other hosts (SMB/NFS)
    are never visible; memory-mapped writes (e.g. pymmcore-plus's OME-TIFF writer, tifffile
    memmaps) hold no descriptor and are not seen.
    """
    targets: dict[str, str] = {}
    for p in paths:
        targets[os.path.realpath(p)] = os.fspath(p)
    out: dict[str, list[tuple[int, str]]] = {}
    if not targets or not os.path.isdir("/proc/self/fd"):
        return out
    try:
        pids = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return out
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # exited, or another user's process
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target not in targets:
                continue
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                    flags = next((int(line.split()[1], 8) for line in fh if line.startswith("flags:")), 0)
            except (OSError, ValueError, IndexError):
                continue
            if flags & 0o3:  # O_WRONLY or O_RDWR
                try:
                    with open(f"/proc/{pid}/comm") as fh:
                        comm = fh.read().strip()
                except OSError:
                    comm = "?"
                out.setdefault(targets[target], []).append((int(pid), comm))
    return out


def open_by_any_process(paths: Iterable[str | os.PathLike]) -> bool:
    """Whether a visible process holds one of ``paths`` open for writing (see :func:`writers_of`)."""
    return bool(writers_of(paths))


# ------------------------------------------------------------------------------------ check
def check(
    root: str | os.PathLike,
    ref: ItemRef,
    cfg: CompletenessConfig,
    tracker: QuietTracker,
    *,
    now: float | None = None,
) -> Completeness:
    """Whether ``ref`` is finished (see the module docstring for the order of trust).

    ``now`` is the tracker's clock [s] (default ``tracker.clock()``). Never raises for a file
    that vanished or cannot be read: the answer is "waiting" with the reason.
    """
    root = Path(root)
    now = tracker.clock() if now is None else float(now)
    try:
        return _check(root, ref, cfg, tracker, now)
    except FileNotFoundError as e:
        tracker.forget(ref)
        gone = e.filename
        try:
            gone = Path(os.fsdecode(gone)).relative_to(root).as_posix() if gone else ref.relpath
        except ValueError:
            pass
        return Completeness(False, "waiting", f"file disappeared: {gone}")
    except OSError as e:
        return Completeness(False, "waiting", f"cannot check {ref.relpath}: {e.strerror or e}")


def _rel(root: Path, p: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _check(root: Path, ref: ItemRef, cfg: CompletenessConfig, tracker: QuietTracker, now: float) -> Completeness:
    item = root / ref.relpath
    if not os.path.lexists(item):
        raise FileNotFoundError(2, "No such file or directory", str(item))
    # 1. handshakes
    if cfg.sentinel:
        sp = sentinel_path(root, ref, cfg.sentinel)
        if os.path.lexists(sp):
            tracker.forget(ref)
            return Completeness(True, "sentinel", f"sentinel {_rel(root, sp)} present")
    if cfg.manifest:
        m = manifest_lists(root, ref, cfg.manifest)
        if m is not None:
            tracker.forget(ref)
            return Completeness(True, "manifest", f"listed in manifest {_rel(root, m)}")
    if cfg.require_handshake:
        wants = []
        if cfg.sentinel:
            wants.append(f"sentinel {_rel(root, sentinel_path(root, ref, cfg.sentinel))}")
        if cfg.manifest:
            wants.append(f"a manifest {cfg.manifest} listing {ref.relpath}")
        return Completeness(False, "waiting", f"waiting for {' or '.join(wants)}")
    # 2. stability of the files
    files = item_files(root, ref)
    if not files:
        tracker.forget(ref)
        return Completeness(False, "waiting", "waiting: the folder holds no files yet")
    fp = fingerprint(root, files)
    stable = tracker.stable_for(ref, fp, now)
    # 3. format-aware checks
    state, why = "unknown", "no format check for this kind"
    is_ome = ref.kind == "ome-tiff-set" or (ref.kind == "tiff" and bool(_OME_NAME_RE.search(item.name)))
    if ref.kind == "ndtiff":
        deep = stable >= cfg.format_quiet_s
        state, why = tracker.memo(ref, "format", fp, lambda: ndtiff_state(item, deep=deep), deep)
        if state == "running":
            return Completeness(False, "waiting", why)
    elif is_ome or ref.kind == "npy":
        if stable < cfg.format_quiet_s:
            why = "format not checked yet"
        elif is_ome:
            state, why = tracker.memo(ref, "format", fp, lambda: ome_tiff_state(root, ref))
            if state == "companion":
                return Completeness(False, "waiting", why)
        else:
            state, why = tracker.memo(ref, "format", fp, lambda: npy_state(item))
    need, how = (cfg.format_quiet_s, "format") if state == "passed" else (cfg.quiet_period_s, "quiet")
    if stable < need:
        return Completeness(
            False, "waiting",
            f"waiting: size/mtime changed {stable:.1f} s ago, need {need:g} s unchanged ({why})")
    # 4. a visible writer still holding a file open
    if cfg.check_open_files:  # a /proc scan at most once a second per item
        w = tracker.memo(ref, "writers", fp, lambda: writers_of(files), int(now))
        if w:
            path, procs = next(iter(w.items()))
            pid, comm = procs[0]
            return Completeness(False, "waiting", f"waiting: {_rel(root, Path(path))} is open for writing by "
                                                  f"process {pid} ({comm})")
    tracker.forget(ref)
    if how == "format":
        return Completeness(True, "format", f"{why}; unchanged for {stable:.1f} s")
    return Completeness(True, "quiet", f"unchanged for {stable:.1f} s (quiet period {need:g} s; {why})")
