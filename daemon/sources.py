"""What an item of a watched folder is, and reading it one ``(Y, X)`` plane at a time.

An *item* is the unit the daemon archives: one TIFF file, a multi-file OME-TIFF set, a
Micro-Manager 2 / pycro-manager NDTiff folder, a folder configured as an image sequence, a
``.npy`` file, or any other file (which the daemon quarantines as "not an image").

* :func:`classify` maps a changed path (one filesystem event) to its item, cheaply: a few
  ``stat`` calls, at most three small reads of a TIFF header, never a full TIFF parse.
* :func:`scan` walks a whole watched root (the reconciliation scan).
* :func:`item_files` lists the files making up an item (checksums, releasing raw data).
* :func:`open_stack` opens an item as a :class:`~rawgate.codecs.planes.PlaneStack`: lazy, one
  plane per :meth:`plane` call, with a :class:`SourceError` naming the reason when the item
  cannot be read (empty, truncated, not an image, gone, unreadable, unsupported pixels).

Symlinks are never followed out of the watched root: :func:`classify` and :func:`scan` report a
symlinked file as an item (so the daemon can quarantine it with a reason) and
:func:`open_stack` refuses it through :func:`resolve_inside` (:class:`UnsafePathError`);
symlinked directories are never descended.
"""

from __future__ import annotations

import contextlib
import fnmatch
import html
import io
import logging
import math
import os
import re
import stat
import struct
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

__all__ = [
    "ItemRef",
    "KINDS",
    "DEFAULT_IGNORE",
    "SourceError",
    "UnsafePathError",
    "classify",
    "scan",
    "item_files",
    "open_stack",
    "resolve_inside",
    "is_ignored",
    "ome_referenced_files",
    "first_tiff_description",
    "TiffStack",
    "NDTiffDatasetStack",
    "SequenceStack",
    "NpyStack",
]

KINDS: tuple[str, ...] = ("tiff", "ome-tiff-set", "ndtiff", "sequence", "npy", "other")
#: Names never taken for items (always applied, in addition to a caller's ``ignore_globs``):
#: hidden files and folders, and the temporaries of rawgate and of copy tools.
DEFAULT_IGNORE: tuple[str, ...] = (".*", "*.partial", "*.tmp", "*~")

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
NDTIFF_INDEX = "NDTiff.index"
NDTIFF_FULLRES = "Full resolution"
_FOLDER_KINDS = ("ndtiff", "sequence")
_NDTIFF_STACK_RE = re.compile(r"NDTiffStack(_\d+)?\.tif$", re.IGNORECASE)
_OME_NAME_RE = re.compile(r"\.ome\.tiff?$", re.IGNORECASE)
_FILENAME_ATTR_RE = re.compile(r"""FileName\s*=\s*(["'])(.*?)\1""", re.DOTALL)
_METADATA_FILE_RE = re.compile(r"""MetadataFile\s*=\s*(["'])(.*?)\1""", re.DOTALL)
_SNIFF_BYTES = 65536  # description bytes classify() looks at [bytes]

_LENGTH_UM = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "micron": 1.0, "\u03bcm": 1.0,
              "nm": 1e-3, "pm": 1e-6, "Å": 1e-4}
_TIME_S = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}


# ------------------------------------------------------------------------------------ errors
class SourceError(ValueError):
    """An item that cannot be read as camera data; the message says why (and names the file)."""

    def __init__(self, message: str, *, relpath: str | None = None) -> None:
        super().__init__(message)
        self.relpath = relpath


class UnsafePathError(ValueError):
    """A path that resolves outside the watched root (a symlink out, or ``..``)."""


# ------------------------------------------------------------------------------------ items
@dataclass(frozen=True)
class ItemRef:
    """One item of a watched root.

    Attributes
    ----------
    relpath
        POSIX path relative to the watched root: the file, the dataset folder, or (for
        ``"ome-tiff-set"``) the file holding the full OME-XML.
    kind
        One of :data:`KINDS`.
    """

    relpath: str
    kind: str

    def path(self, root: str | os.PathLike) -> Path:
        """``root / relpath`` (not resolved)."""
        return Path(root) / self.relpath


def _globs(ignore_globs: Sequence[str]) -> tuple[str, ...]:
    return tuple(DEFAULT_IGNORE) + tuple(g for g in ignore_globs if g not in DEFAULT_IGNORE)


def is_ignored(name: str, relpath: str | None = None, ignore_globs: Sequence[str] = ()) -> bool:
    """Whether a name (or its root-relative POSIX path) matches :data:`DEFAULT_IGNORE` or
    ``ignore_globs`` (shell globs matched against the name and against the relative path)."""
    for g in _globs(ignore_globs):
        if fnmatch.fnmatchcase(name, g) or (relpath is not None and "/" in g and fnmatch.fnmatchcase(relpath, g)):
            return True
    return False


def _matches_sequence(reldir: str, sequence_globs: Sequence[str]) -> bool:
    """A folder is an image sequence when a glob matches its root-relative path, or (for globs
    without '/') its name."""
    name = reldir.rsplit("/", 1)[-1]
    for g in sequence_globs:
        g = g.strip("/")
        if fnmatch.fnmatchcase(reldir, g) or ("/" not in g and fnmatch.fnmatchcase(name, g)):
            return True
    return False


def _is_ndtiff_dir(d: Path) -> bool:
    return (d / NDTIFF_INDEX).exists() or (d / NDTIFF_FULLRES / NDTIFF_INDEX).exists()


def _kind_of_name(name: str) -> str:
    low = name.lower()
    if low.endswith(TIFF_SUFFIXES):
        return "tiff"
    if low.endswith(".npy"):
        return "npy"
    return "other"


def _relpath(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` (lexically; no symlink is resolved), or None outside."""
    for r in (root, Path(os.path.abspath(root))):
        for p in (path, Path(os.path.abspath(path))):
            try:
                rel = p.relative_to(r)
            except ValueError:
                continue
            return rel.as_posix()
    try:
        rel = Path(os.path.abspath(path)).relative_to(Path(os.path.realpath(root)))
    except ValueError:
        return None
    return rel.as_posix()


def resolve_inside(root: str | os.PathLike, relpath: str) -> Path:
    """The real path of ``root / relpath``, refusing anything that leaves ``root``.

    Raises
    ------
    UnsafePathError
        ``relpath`` is absolute or climbs with ``..``, or a symlink on the way resolves outside
        ``root.resolve()`` (message e.g. "symlink points outside the watched root:
        a/b.tif → /etc/passwd").
    """
    rel = PurePosixPath(str(relpath).replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        raise UnsafePathError(f"path leaves the watched root: {relpath}")
    root_real = Path(os.path.realpath(root))
    real = Path(os.path.realpath(Path(root) / rel))
    if real != root_real and not real.is_relative_to(root_real):
        raise UnsafePathError(f"symlink points outside the watched root: {rel.as_posix()} → {real}")
    return real


def first_tiff_description(path: str | os.PathLike, limit: int | None = _SNIFF_BYTES) -> str | None:
    """The ImageDescription of a TIFF's first IFD (the OME-XML of an OME-TIFF), at most
    ``limit`` bytes of it, read with a handful of small reads (no TIFF parse); None when the
    file is not a (classic or Big) TIFF or has no description."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            if len(head) < 8 or head[:2] not in (b"II", b"MM"):
                return None
            e = "<" if head[:2] == b"II" else ">"
            version = struct.unpack(e + "H", head[2:4])[0]
            if version == 42:
                offset = struct.unpack(e + "I", head[4:8])[0]
                nfmt, nsize, esize, cfmt, vsize = "H", 2, 12, "I", 4
            elif version == 43 and len(head) >= 16:
                offset = struct.unpack(e + "Q", head[8:16])[0]
                nfmt, nsize, esize, cfmt, vsize = "Q", 8, 20, "Q", 8
            else:
                return None
            fh.seek(offset)
            raw = fh.read(nsize)
            if len(raw) < nsize:
                return None
            n = struct.unpack(e + nfmt, raw)[0]
            if not 0 < n <= 4096:
                return None
            entries = fh.read(n * esize)
            for i in range(len(entries) // esize):
                ent = entries[i * esize:(i + 1) * esize]
                tag, typ = struct.unpack(e + "HH", ent[:4])
                if tag != 270 or typ not in (2, 7):
                    continue
                count = struct.unpack(e + cfmt, ent[4:4 + vsize])[0]
                want = count if limit is None else min(count, limit)
                if count <= vsize:
                    data = ent[4 + vsize:4 + vsize + count]
                else:
                    fh.seek(struct.unpack(e + cfmt, ent[4 + vsize:4 + 2 * vsize])[0])
                    data = fh.read(want)
                return data[:want].rstrip(b"\0").decode("utf-8", errors="replace")
    except (OSError, struct.error):
        return None
    return None


def ome_referenced_files(master: str | os.PathLike, description: str | None = None) -> list[Path]:
    """Files (other than ``master``) that the OME-XML of ``master`` names in ``UUID FileName``
    attributes, as paths next to ``master`` (whether or not they exist). Names that climb out
    of the folder (``..``, absolute) are left out."""
    master = Path(master)
    key = None
    if description is None:
        try:
            st = os.stat(master)
        except OSError:
            return []
        key = (os.fspath(master), st.st_ino, st.st_size, st.st_mtime_ns)
        with _REF_LOCK:
            hit = _REF_CACHE.get(key)
        if hit is not None:
            return list(hit)
        desc = first_tiff_description(master)
        if desc and "<OME" in desc and "</OME>" not in desc:
            desc = first_tiff_description(master, limit=None)  # a long OME-XML: all of it
    else:
        desc = description
    if not desc or "<OME" not in desc:
        if key is not None:
            _remember_refs(key, [])
        return []
    out: list[Path] = []
    for m in _FILENAME_ATTR_RE.finditer(desc):
        name = html.unescape(m.group(2)).replace("\\", "/").strip()
        rel = PurePosixPath(name)
        if not name or rel.is_absolute() or ".." in rel.parts:
            continue
        p = master.parent / rel
        if p.name != master.name or p.parent != master.parent:
            if p not in out:
                out.append(p)
    if key is not None:
        _remember_refs(key, out)
    return out


_REF_CACHE: dict[tuple, tuple[Path, ...]] = {}
_REF_LOCK = threading.Lock()


def _remember_refs(key: tuple, refs: list[Path]) -> None:
    with _REF_LOCK:
        if len(_REF_CACHE) > 4096:
            _REF_CACHE.clear()
        _REF_CACHE[key] = tuple(refs)


def _ome_set_of(root: Path, path: Path, relpath: str) -> ItemRef | None:
    """The multi-file OME-TIFF set ``path`` belongs to, judged from its first IFD's description:
    a companion (``BinaryOnly MetadataFile=…``) → the set keyed by that file; a master naming
    other files → the set keyed by itself; else None."""
    desc = first_tiff_description(path)
    if not desc or "<OME" not in desc:
        return None
    if "<BinaryOnly" in desc:
        m = _METADATA_FILE_RE.search(desc)
        if not m:
            return None
        name = html.unescape(m.group(2)).replace("\\", "/").strip()
        rel = PurePosixPath(name)
        if not name or rel.is_absolute() or ".." in rel.parts:
            return None
        master = path.parent / rel
        master_rel = _relpath(root, master)
        if master_rel is None or master == path or not master.is_file():
            return None
        return ItemRef(master_rel, "ome-tiff-set")
    if ome_referenced_files(path, desc):
        return ItemRef(relpath, "ome-tiff-set")
    return None


def _file_ref(root: Path, path: Path, relpath: str, *, is_link: bool) -> ItemRef:
    kind = _kind_of_name(path.name)
    if kind == "tiff" and not is_link and _OME_NAME_RE.search(path.name):
        ref = _ome_set_of(root, path, relpath)
        if ref is not None:
            return ref
    return ItemRef(relpath, kind)


def classify(
    root: str | os.PathLike,
    path: str | os.PathLike,
    *,
    sequence_globs: Sequence[str] = (),
    ignore_globs: Sequence[str] = DEFAULT_IGNORE,
) -> ItemRef | None:
    """The item a changed ``path`` belongs to, or None for paths to ignore.

    * a file (or folder) inside an NDTiff dataset folder (one holding ``NDTiff.index``, or
      ``Full resolution/NDTiff.index``; an ``*NDTiffStack*.tif`` also marks its folder before
      the index exists) → the dataset folder, kind ``"ndtiff"``;
    * anything inside a folder matching one of ``sequence_globs`` (globs on the root-relative
      path, or on the name for globs without '/') → that folder, kind ``"sequence"``;
    * a companion file of a multi-file OME-TIFF set → the set (keyed by the file holding the
      full OME-XML) when its OME-XML says so, else its own ``"tiff"`` item;
    * other files → ``"tiff"``, ``"npy"`` or ``"other"`` by name (a symlink too, even one
      pointing outside the root: :func:`open_stack` refuses it with the reason).

    None for: hidden names and temporaries (:data:`DEFAULT_IGNORE`, always applied) and names
    matching ``ignore_globs`` (at or above the item), folders that are not datasets, symlinks
    to folders, anything below a symlinked folder, paths that no longer exist (deletion
    events; a file inside a dataset still maps to the dataset), and paths outside ``root``.
    Cheap: ``stat`` calls and, for ``*.ome.tif``, a few small reads of the first IFD. Never
    follows symlinks.
    """
    root = Path(root)
    path = Path(path)
    if not path.is_absolute():
        path = root / path
    rel = _relpath(root, path)
    if rel is None or rel in ("", "."):
        return None
    parts = PurePosixPath(rel).parts
    if ".." in parts:
        return None
    try:
        for k in range(1, len(parts)):  # ancestors, top down: the outermost dataset wins
            reld = "/".join(parts[:k])
            if is_ignored(parts[k - 1], reld, ignore_globs):
                return None
            d = root.joinpath(*parts[:k])
            try:
                if stat.S_ISLNK(os.lstat(d).st_mode):
                    return None  # below a symlinked folder: never followed
            except FileNotFoundError:
                pass
            if _matches_sequence(reld, sequence_globs):
                return ItemRef(reld, "sequence")
            if _is_ndtiff_dir(d):
                return ItemRef(reld, "ndtiff")
        name = parts[-1]
        # an NDTiff stack or index written before the dataset is recognisable
        if len(parts) >= 2 and (name == NDTIFF_INDEX or _NDTIFF_STACK_RE.search(name)):
            up = 2 if parts[-2] == NDTIFF_FULLRES and len(parts) >= 3 else 1
            if root.joinpath(*parts[:-up]).is_dir():
                return ItemRef("/".join(parts[:-up]), "ndtiff")
        if is_ignored(name, rel, ignore_globs):
            return None
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None  # gone (a deletion event): the daemon notices known items vanishing
        if stat.S_ISDIR(st.st_mode):
            if _matches_sequence(rel, sequence_globs):
                return ItemRef(rel, "sequence")
            if _is_ndtiff_dir(path):
                return ItemRef(rel, "ndtiff")
            return None
        if stat.S_ISLNK(st.st_mode):
            if os.path.isdir(path):
                return None  # symlinked folder: never followed
            return ItemRef(rel, _kind_of_name(name))
        return _file_ref(root, path, rel, is_link=False)
    except PermissionError:
        return ItemRef(rel, _kind_of_name(parts[-1]))


def scan(
    root: str | os.PathLike,
    *,
    sequence_globs: Sequence[str] = (),
    ignore_globs: Sequence[str] = DEFAULT_IGNORE,
) -> Iterator[ItemRef]:
    """Every item under ``root`` (the reconciliation walk), each once, in name order.

    ``os.scandir`` based; never follows symlinked folders and does not descend into dataset
    folders (NDTiff, image sequences). Unreadable folders are skipped.
    """
    root = Path(root)
    seen: set[ItemRef] = set()
    todo: list[tuple[Path, str]] = [(root, "")]
    while todo:
        d, reld = todo.pop()
        if reld and _matches_sequence(reld, sequence_globs):
            ref = ItemRef(reld, "sequence")
            if ref not in seen:
                seen.add(ref)
                yield ref
            continue
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        if reld:
            names = {e.name for e in entries}
            if (NDTIFF_INDEX in names or any(_NDTIFF_STACK_RE.search(n) for n in names)
                    or (NDTIFF_FULLRES in names and (d / NDTIFF_FULLRES / NDTIFF_INDEX).exists())):
                ref = ItemRef(reld, "ndtiff")
                if ref not in seen:
                    seen.add(ref)
                    yield ref
                continue
        subdirs: list[tuple[Path, str]] = []
        for e in entries:
            rel = f"{reld}/{e.name}" if reld else e.name
            if is_ignored(e.name, rel, ignore_globs):
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    subdirs.append((Path(e.path), rel))
                    continue
                link = e.is_symlink()
                if link and os.path.isdir(e.path):
                    continue  # symlinked folder: never descended
            except OSError:
                continue
            ref = _file_ref(root, Path(e.path), rel, is_link=link)
            if ref not in seen:
                seen.add(ref)
                yield ref
        todo.extend(reversed(subdirs))


def _walk_files(folder: Path) -> list[Path]:
    """Every non-folder entry under ``folder`` (recursively, symlinked folders not followed),
    except :data:`DEFAULT_IGNORE` names."""
    out: list[Path] = []
    todo = [folder]
    while todo:
        d = todo.pop()
        with os.scandir(d) as it:
            for e in it:
                if is_ignored(e.name):
                    continue
                if e.is_dir(follow_symlinks=False):
                    todo.append(Path(e.path))
                else:
                    out.append(Path(e.path))
    return out


def item_files(root: str | os.PathLike, ref: ItemRef) -> list[Path]:
    """Every file making up the item, sorted, as ``root / …`` paths (not resolved).

    Folder items: every file under the folder (recursively, hidden names and temporaries
    left out). A TIFF or OME-TIFF set: the file and the existing files its OME-XML names
    (tifffile reads them as one series). Others: the file itself (whether or not it exists).

    Raises
    ------
    FileNotFoundError
        A folder item's folder is gone.
    """
    root = Path(root)
    p = root / ref.relpath
    if ref.kind in _FOLDER_KINDS:
        return sorted(_walk_files(p))
    if ref.kind in ("ome-tiff-set", "tiff") and not os.path.islink(p):
        files = {p}
        for f in ome_referenced_files(p):
            if os.path.lexists(f) and _relpath(root, f) is not None:
                files.add(f)
        return sorted(files)
    return [p]


# ------------------------------------------------------------------------------ error mapping
def _json_safe(obj: Any, depth: int = 0) -> Any:
    """Plain JSON types (NaN/inf → None, numpy → Python, bytes → text, unknown → str)."""
    if depth > 32:
        return None
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_json_safe(v, depth + 1) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist(), depth + 1) if obj.size <= 4096 else f"<array {obj.shape}>"
    return str(obj)


_TIFF_PROBLEM_WORDS = ("offset", "missing", "failed to read", "incomplete", "corrupt", "truncat", "zeroed")


class _TifffileProblems(logging.Handler):
    """Collects what tifffile logs about damaged files (truncated IFD chains, missing files,
    "missing data are zeroed") while this thread opens a file."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001
            return
        if any(w in msg.lower() for w in _TIFF_PROBLEM_WORDS):
            self.messages.append(msg)


@contextlib.contextmanager
def _tifffile_problems() -> Iterator[_TifffileProblems]:
    logger = logging.getLogger("tifffile")
    h = _TifffileProblems()
    logger.addHandler(h)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield h
    finally:
        logger.removeHandler(h)


def _rel_of(root: Path | None, filename: Any, default: str) -> str:
    if not filename or root is None:
        return default
    r = _relpath(root, Path(os.fsdecode(filename)))
    return r if r else default


@contextlib.contextmanager
def _reading(relpath: str, what: str, root: Path | None = None) -> Iterator[None]:
    """Turns reader exceptions into :class:`SourceError` with a reason a person can act on."""
    try:
        yield
    except (SourceError, UnsafePathError, MemoryError, KeyboardInterrupt):
        raise
    except FileNotFoundError as e:
        raise SourceError(f"file disappeared: {_rel_of(root, e.filename, relpath)}", relpath=relpath) from e
    except PermissionError as e:
        raise SourceError(f"permission denied: {_rel_of(root, e.filename, relpath)}", relpath=relpath) from e
    except IsADirectoryError as e:
        raise SourceError(f"not an image file rawgate can read: {relpath} (a folder)", relpath=relpath) from e
    except Exception as e:  # noqa: BLE001 - readers raise anything on damaged input
        msg = str(e) or type(e).__name__
        if what == "TIFF" and type(e).__name__ == "TiffFileError" and "not a TIFF" in msg:
            raise SourceError(f"not an image file rawgate can read: {relpath} ({msg})", relpath=relpath) from e
        raise SourceError(f"truncated or corrupt {what}: {msg} ({relpath})", relpath=relpath) from e


def _check_nonempty(path: Path, relpath: str) -> None:
    with _reading(relpath, "file"):
        st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise SourceError(f"not an image file rawgate can read: {relpath} (a folder)", relpath=relpath)
    if st.st_size == 0:
        raise SourceError(f"empty file (0 bytes): {relpath}", relpath=relpath)


def _check_dtype(dtype: np.dtype, relpath: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind not in "ui" or dt.fields is not None:
        raise SourceError(
            f"unsupported pixel type {dt}: rawgate archives integer camera data (ADU), "
            f"not {'floating-point' if dt.kind == 'f' else dt.name} images ({relpath})", relpath=relpath)
    return dt.newbyteorder("=")


def _lead_axes(letters: str, relpath: str) -> str:
    """Leading axes of a reader mapped onto distinct OME 'T', 'C', 'Z': T/C/Z kept; one generic
    or position-like axis (tifffile's I, Q, R, P, …) becomes 'T' when there is no time axis."""
    used = {a for a in letters if a in "TCZ"}
    out = []
    for a in letters:
        if a in "TCZ" and a not in out:
            out.append(a)
        elif a in "S":
            raise SourceError(f"RGB/multi-sample images are not supported (axes {letters}YX) ({relpath})",
                              relpath=relpath)
        elif "T" not in used:
            used.add("T")
            out.append("T")
        else:
            raise SourceError(
                f"cannot map axes {letters!r} onto time, channel and z: rawgate archives at most "
                f"T, C and Z leading axes ({relpath})", relpath=relpath)
    return "".join(out)


def _positive(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _keep_sizes(sizes: dict[str, float], axes: str) -> dict[str, float]:
    return {k: v for k, v in sizes.items() if k in axes and _positive(v) is not None}


def _mm_summary_sizes(summary: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    if not isinstance(summary, dict):
        return out
    px = _positive(summary.get("PixelSize_um"))
    if px:
        out["X"] = out["Y"] = px
    dz = _positive(summary.get("z-step_um"))
    if dz:
        out["Z"] = dz
    dt = _positive(summary.get("Interval_ms"))
    if dt:
        out["T"] = dt / 1000.0
    return out


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_info(xml: str) -> tuple[dict[str, Any], dict[str, float]]:
    """A small JSON-able summary of the first OME Image, and its physical sizes (µm, s)."""
    try:
        tree = ET.fromstring(xml.encode("utf-8") if isinstance(xml, str) else xml)
    except ET.ParseError:
        return {}, {}
    image = next((el for el in tree.iter() if _local(el.tag) == "Image"), None)
    if image is None:
        return {}, {}
    pixels = next((el for el in image if _local(el.tag) == "Pixels"), None)
    info: dict[str, Any] = {"image": image.get("Name")}
    sizes: dict[str, float] = {}
    if pixels is not None:
        a = pixels.attrib
        info.update({k: a.get(k) for k in ("DimensionOrder", "Type", "SizeX", "SizeY", "SizeZ", "SizeC", "SizeT")
                     if a.get(k) is not None})
        info["channels"] = [c.get("Name") for c in pixels if _local(c.tag) == "Channel"]
        for k in ("X", "Y", "Z"):
            v = _positive(a.get(f"PhysicalSize{k}"))
            if v:
                sizes[k] = v * _LENGTH_UM.get(a.get(f"PhysicalSize{k}Unit", "µm"), 1.0)
        v = _positive(a.get("TimeIncrement"))
        if v:
            sizes["T"] = v * _TIME_S.get(a.get("TimeIncrementUnit", "s"), 1.0)
    date = next((el.text for el in image if _local(el.tag) == "AcquisitionDate"), None)
    if date:
        info["acquisition_date"] = date
    return info, sizes


def _imagej_sizes(tif: Any) -> dict[str, float]:
    ij = tif.imagej_metadata or {}
    unit = str(ij.get("unit", "")).replace("\\u00B5", "µ")
    scale = _LENGTH_UM.get(unit)
    out: dict[str, float] = {}
    if scale:
        try:
            page = tif.pages.first
            for k, tag in (("X", "XResolution"), ("Y", "YResolution")):
                t = page.tags.get(tag)
                if t is not None:
                    num, den = t.value
                    if num and den:
                        out[k] = scale * den / num
        except Exception:  # noqa: BLE001 - resolution is optional
            pass
        dz = _positive(ij.get("spacing"))
        if dz:
            out["Z"] = dz * scale
    dt = _positive(ij.get("finterval"))
    if dt:
        out["T"] = dt
    return out


# ------------------------------------------------------------------------------------ stacks
class _StackBase:
    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    metadata: dict[str, Any]
    physical_sizes: dict[str, float]
    relpath: str

    @property
    def n_planes(self) -> int:
        return int(np.prod(self.shape[:-2], dtype=np.int64))

    def _index(self, index: int) -> int:
        i = int(index)
        if not 0 <= i < self.n_planes:
            raise IndexError(f"plane {index} of {self.n_planes}")
        return i

    def _checked(self, a: np.ndarray, i: int, where: str) -> np.ndarray:
        a = np.asarray(a)
        if a.shape != tuple(self.shape[-2:]):
            raise SourceError(
                f"plane {i} ({where}) is {a.shape[-1] if a.ndim else '?'}×{a.shape[0] if a.ndim else '?'} px "
                f"{a.dtype}; the item's planes are {self.shape[-1]}×{self.shape[-2]} px {self.dtype} "
                f"({self.relpath})", relpath=self.relpath)
        if a.dtype != self.dtype:
            if a.dtype.kind == self.dtype.kind and a.dtype.itemsize == self.dtype.itemsize:
                return a.astype(self.dtype)  # byte order only
            raise SourceError(f"plane {i} ({where}) is {a.dtype}, the item's planes are {self.dtype} "
                              f"({self.relpath})", relpath=self.relpath)
        return a

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.relpath!r} {self.axes} {self.shape} {self.dtype}>"


class TiffStack(_StackBase):
    """A TIFF, OME-TIFF (single file or multi-file set), ImageJ hyperstack or Micro-Manager
    file, read with ``tifffile`` (series 0, one page per plane; contiguous uncompressed data
    is read straight from the file)."""

    def __init__(self, path: Path, relpath: str, *, kind: str = "tiff", root: Path | None = None) -> None:
        import tifffile

        self.relpath = relpath
        self._tif = None
        self._lock = threading.RLock()
        self._opened: list[Any] = []
        _check_nonempty(path, relpath)
        with _tifffile_problems() as problems, _reading(relpath, "TIFF", root):
            tif = tifffile.TiffFile(path)
            self._tif = tif
            try:
                self._setup(tif, path, relpath, kind, root, problems)
            except BaseException:
                self.close()
                raise

    def _setup(self, tif: Any, path: Path, relpath: str, kind: str, root: Path | None,
               problems: _TifffileProblems) -> None:
        import tifffile

        series_list = tif.series
        if not series_list:
            raise SourceError(f"not an image file rawgate can read: {relpath} (no image data)", relpath=relpath)
        series = series_list[0]
        if len(series_list) > 1:
            others = [s for s in series_list[1:] if s.kind not in ("reduced", "thumbnail")]
            if others:
                raise SourceError(
                    f"{len(series_list)} image series in one file (e.g. positions or images of "
                    f"different sizes); rawgate archives files holding one series ({relpath})", relpath=relpath)
        axes_in = str(series.axes).upper()
        page0 = series.keyframe
        spp = int(getattr(page0, "samplesperpixel", 1) or 1)
        if "S" in axes_in or spp > 1:
            raise SourceError(f"RGB/multi-sample images are not supported (SamplesPerPixel={spp}, axes "
                              f"{axes_in}) ({relpath})", relpath=relpath)
        if not axes_in.endswith("YX") or len(series.shape) < 2:
            raise SourceError(f"unsupported TIFF layout: axes {axes_in}, shape {series.shape} ({relpath})",
                              relpath=relpath)
        self.dtype = _check_dtype(series.dtype, relpath)
        lead = _lead_axes(axes_in[:-2], relpath)
        self.shape = tuple(int(s) for s in series.shape)
        self.axes = lead + "YX"
        self._plane_nbytes = int(self.shape[-2] * self.shape[-1] * self.dtype.itemsize)
        self._file_dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
        n = self.n_planes
        fsize = tif.filehandle.size
        self._dataoffset = series.dataoffset
        self._pages: list[Any] | None = None
        if problems.messages:
            raise SourceError(f"truncated or corrupt TIFF: {problems.messages[0]} ({relpath})", relpath=relpath)
        if self._dataoffset is not None and tif.filehandle.is_file:
            end = int(self._dataoffset) + n * self._plane_nbytes
            if end > fsize:
                raise SourceError(
                    f"truncated or corrupt TIFF: image data end at byte {end}, the file has {fsize} bytes "
                    f"({relpath})", relpath=relpath)
        else:
            self._dataoffset = None
            pages = list(series.pages)
            if len(pages) != n:
                raise SourceError(f"unsupported TIFF layout: {len(pages)} pages hold {n} planes ({relpath})",
                                  relpath=relpath)
            for i, p in enumerate(pages):
                if p is None:
                    raise SourceError(f"truncated or corrupt TIFF: plane {i} is missing ({relpath})",
                                      relpath=relpath)
                size = p.parent.filehandle.size
                for off, cnt in zip(p.dataoffsets, p.databytecounts):
                    if off + cnt > size:
                        who = _rel_of(root, p.parent.filehandle.path, relpath)
                        raise SourceError(
                            f"truncated or corrupt TIFF: plane {i} ends at byte {off + cnt}, {who} has "
                            f"{size} bytes ({relpath})", relpath=relpath)
            self._pages = pages
            if problems.messages:
                raise SourceError(f"truncated or corrupt TIFF: {problems.messages[0]} ({relpath})",
                                  relpath=relpath)
        # metadata and physical sizes
        meta: dict[str, Any] = {
            "source": {"kind": kind, "reader": f"tifffile {tifffile.__version__}",
                       "series_kind": series.kind, "series_axes": axes_in,
                       "series_shape": list(self.shape)},
        }
        files = sorted({p.parent.filehandle.path for p in (self._pages or [])} | {tif.filehandle.path})
        meta["source"]["files"] = [_rel_of(root, f, Path(f).name) for f in files]
        sizes: dict[str, float] = {}
        try:
            mm = tif.micromanager_metadata
        except Exception:  # noqa: BLE001 - optional metadata
            mm = None
        if isinstance(mm, dict) and isinstance(mm.get("Summary"), dict):
            meta["Summary"] = _json_safe(mm["Summary"])
            sizes.update(_mm_summary_sizes(mm["Summary"]))
        if tif.is_imagej:
            ij = tif.imagej_metadata or {}
            meta["imagej"] = _json_safe({k: v for k, v in ij.items() if isinstance(v, (int, float, str, bool))})
            sizes.update(_imagej_sizes(tif))
        if tif.is_ome and tif.ome_metadata:
            info, ome_sizes = _ome_info(tif.ome_metadata)
            meta["ome"] = _json_safe(info)
            sizes.update(ome_sizes)
        self.metadata = meta
        self.physical_sizes = _keep_sizes(sizes, self.axes)

    def plane(self, index: int) -> np.ndarray:
        i = self._index(index)
        if self._tif is None:
            raise SourceError(f"stack is closed ({self.relpath})", relpath=self.relpath)
        with _tifffile_problems() as problems, _reading(self.relpath, "TIFF"):
            if self._dataoffset is not None:
                fh = self._tif.filehandle
                with self._lock, fh.lock:
                    fh.seek(int(self._dataoffset) + i * self._plane_nbytes)
                    buf = fh.read(self._plane_nbytes)
                if len(buf) != self._plane_nbytes:
                    raise SourceError(
                        f"truncated or corrupt TIFF: plane {i} has {len(buf)} of {self._plane_nbytes} bytes "
                        f"({self.relpath})", relpath=self.relpath)
                a = np.frombuffer(buf, dtype=self._file_dtype).reshape(self.shape[-2:]).astype(self.dtype)
            else:
                page = self._pages[i]
                fh = page.parent.filehandle
                with self._lock:
                    if page.parent is not self._tif and fh.closed:
                        fh.open()
                        self._opened.append(fh)
                    a = page.asarray()
            if problems.messages:
                raise SourceError(f"truncated or corrupt TIFF: {problems.messages[0]} ({self.relpath})",
                                  relpath=self.relpath)
        return self._checked(a, i, f"page {i}")

    def close(self) -> None:
        for fh in self._opened:
            with contextlib.suppress(Exception):
                fh.close()
        self._opened = []
        if self._tif is not None:
            with contextlib.suppress(Exception):
                self._tif.close()
            self._tif = None


_NDTIFF_OME = {"time": "T", "channel": "C", "z": "Z"}


class NDTiffDatasetStack(_StackBase):
    """A Micro-Manager 2 / pycro-manager NDTiff dataset folder, read with ``ndstorage``.

    Axes: ``time`` → T, ``channel`` → C, ``z`` → Z, ``position`` → T when there is no time axis;
    axes with one value are dropped from the shape (kept in the coordinates). Row/column
    (tiled) and other axes with several values, and incomplete datasets, are refused.
    """

    def __init__(self, path: Path, relpath: str, root: Path | None = None) -> None:
        self.relpath = relpath
        self._ds = None
        with _reading(relpath, "NDTiff dataset", root):
            import ndstorage

            if not _is_ndtiff_dir(path):
                raise SourceError(f"not an NDTiff dataset: {relpath} has no {NDTIFF_INDEX}", relpath=relpath)
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                # ndstorage prints progress to stdout and warns on a zero-padded index
                warnings.simplefilter("ignore")
                ds = ndstorage.Dataset(str(path))
            self._ds = ds
            try:
                self._setup(ds, path, relpath, root, ndstorage.__version__)
            except BaseException:
                self.close()
                raise

    def _setup(self, ds: Any, path: Path, relpath: str, root: Path | None, version: str) -> None:
        if type(ds).__name__ != "NDTiffDataset":
            raise SourceError(f"unsupported NDTiff dataset type {type(ds).__name__} (multi-resolution or "
                              f"NDTiff v1/v2): {relpath}", relpath=relpath)
        if not ds.index:
            raise SourceError(f"NDTiff dataset holds no images: {relpath}", relpath=relpath)
        axes = {str(k): list(v) for k, v in ds.axes.items()}
        fixed: dict[str, Any] = {}
        lead: dict[str, tuple[str, list[Any]]] = {}
        multi = {k: v for k, v in axes.items() if len(v) > 1}
        for name, values in axes.items():
            if len(values) <= 1:
                if values:
                    fixed[name] = values[0]
                continue
            if name in _NDTIFF_OME:
                lead[_NDTIFF_OME[name]] = (name, values)
            elif name == "position" and "time" not in multi:
                lead["T"] = (name, values)
            elif name == "position":
                raise SourceError(
                    f"NDTiff dataset with positions and time points: rawgate archives at most T, C and Z "
                    f"leading axes (axes {sorted(multi)}) ({relpath})", relpath=relpath)
            else:
                raise SourceError(f"NDTiff axis {name!r} ({len(values)} values) has no OME equivalent "
                                  f"(T, C, Z) ({relpath})", relpath=relpath)
        order = [a for a in "TCZ" if a in lead]
        expected = int(np.prod([max(len(v), 1) for v in axes.values()], dtype=np.int64))
        if len(ds.index) != expected:
            raise SourceError(
                f"NDTiff dataset is incomplete: {len(ds.index)} of {expected} images present "
                f"(axes { {k: len(v) for k, v in axes.items()} }; acquisition aborted?) ({relpath})", relpath=relpath)
        if getattr(ds, "bytes_per_pixel", None) == 3:
            raise SourceError(f"RGB/multi-sample images are not supported ({relpath})", relpath=relpath)
        self.dtype = _check_dtype(np.dtype(ds.dtype), relpath)
        self._fixed = fixed
        self._lead = [lead[a] for a in order]
        self.shape = tuple(len(lead[a][1]) for a in order) + (int(ds.image_height), int(ds.image_width))
        self.axes = "".join(order) + "YX"
        summary = _json_safe(ds.summary_metadata or {})
        self.metadata = {
            "Summary": summary,
            "source": {"kind": "ndtiff", "reader": f"ndstorage {version}",
                       "ndtiff_axes": {a: {"name": lead[a][0], "values": _json_safe(lead[a][1])} for a in order},
                       "fixed": _json_safe(fixed)},
        }
        self.physical_sizes = _keep_sizes(_mm_summary_sizes(summary), self.axes)

    def plane(self, index: int) -> np.ndarray:
        i = self._index(index)
        if self._ds is None:
            raise SourceError(f"stack is closed ({self.relpath})", relpath=self.relpath)
        idx = np.unravel_index(i, self.shape[:-2]) if self._lead else ()
        coords = dict(self._fixed)
        for (name, values), k in zip(self._lead, idx):
            coords[name] = values[int(k)]
        with _reading(self.relpath, "NDTiff dataset"):
            a = self._ds.read_image(**coords)
        return self._checked(a, i, f"image {coords}")

    def close(self) -> None:
        if self._ds is not None:
            with contextlib.suppress(Exception):
                self._ds.close()
            self._ds = None


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _read_single_plane(path: Path, relpath: str, root: Path | None) -> tuple[np.ndarray, Any]:
    """The one plane of a sequence file (and its TiffFile's metadata for the first file)."""
    import tifffile

    rel = _rel_of(root, path, relpath)
    _check_nonempty(path, rel)
    with _tifffile_problems() as problems, _reading(rel, "TIFF", root):
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise SourceError(f"not an image file rawgate can read: {rel} (no image data)", relpath=relpath)
            s = tif.series[0]
            shape = tuple(int(x) for x in s.shape)
            if "S" in s.axes.upper() or int(getattr(s.keyframe, "samplesperpixel", 1) or 1) > 1:
                raise SourceError(f"RGB/multi-sample images are not supported ({rel})", relpath=relpath)
            if len(shape) != 2:
                raise SourceError(
                    f"{rel} holds {int(np.prod(shape[:-2]))} planes ({s.axes} {shape}); an image sequence has "
                    f"one plane per file ({relpath})", relpath=relpath)
            _check_dtype(s.dtype, rel)
            a = s.asarray()
            sizes = {}
            if tif.is_ome and tif.ome_metadata:
                sizes = _ome_info(tif.ome_metadata)[1]
            elif tif.is_imagej:
                sizes = _imagej_sizes(tif)
        if problems.messages:
            raise SourceError(f"truncated or corrupt TIFF: {problems.messages[0]} ({rel})", relpath=relpath)
    return a, sizes


class SequenceStack(_StackBase):
    """A folder of numbered single-plane TIFF files (naturally sorted) as a ``TYX`` stack.
    Every file is checked against the first (shape, dtype) when its plane is read."""

    def __init__(self, folder: Path, relpath: str, root: Path | None = None) -> None:
        self.relpath = relpath
        self._root = root
        with _reading(relpath, "image sequence", root):
            with os.scandir(folder) as it:
                names = [e.name for e in it if not is_ignored(e.name) and e.name.lower().endswith(TIFF_SUFFIXES)
                         and e.is_file()]
        if not names:
            raise SourceError(f"image sequence folder holds no TIFF files: {relpath}", relpath=relpath)
        names.sort(key=_natural_key)
        self._files = [folder / n for n in names]
        a, sizes = _read_single_plane(self._files[0], relpath, root)
        self.dtype = _check_dtype(a.dtype, relpath)
        self.shape = (len(self._files),) + tuple(int(x) for x in a.shape)
        self.axes = "TYX"
        self._first = a
        self.metadata = {"source": {"kind": "sequence", "n_files": len(names), "first": names[0],
                                    "last": names[-1]}}
        self.physical_sizes = _keep_sizes({k: v for k, v in sizes.items() if k in "XY"}, self.axes)

    def plane(self, index: int) -> np.ndarray:
        i = self._index(index)
        if i == 0 and self._first is not None:
            return self._first
        a, _ = _read_single_plane(self._files[i], self.relpath, self._root)
        return self._checked(a, i, self._files[i].name)

    def close(self) -> None:
        self._first = None


class NpyStack(_StackBase):
    """A ``.npy`` file, memory-mapped (``np.load(mmap_mode="r")``)."""

    _AXES = {2: "YX", 3: "TYX", 4: "TZYX", 5: "TCZYX"}

    def __init__(self, path: Path, relpath: str) -> None:
        self.relpath = relpath
        _check_nonempty(path, relpath)
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as e:
            raise SourceError(f"file disappeared: {relpath}", relpath=relpath) from e
        except PermissionError as e:
            raise SourceError(f"permission denied: {relpath}", relpath=relpath) from e
        except ValueError as e:
            msg = str(e)
            if "mmap length" in msg or "cannot reshape" in msg:
                raise SourceError(f"truncated or corrupt .npy: {msg} ({relpath})", relpath=relpath) from e
            raise SourceError(f"not an image file rawgate can read: {relpath} ({msg})", relpath=relpath) from e
        except Exception as e:  # noqa: BLE001 - EOFError, OSError, UnpicklingError …
            raise SourceError(f"not an image file rawgate can read: {relpath} ({e or type(e).__name__})",
                              relpath=relpath) from e
        if not isinstance(a, np.ndarray):
            raise SourceError(f"not an image file rawgate can read: {relpath} (not a single array)",
                              relpath=relpath)
        self._a = a
        if a.ndim not in self._AXES:
            raise SourceError(f"unsupported array shape {a.shape}: 2 to 5 dimensions (…YX) ({relpath})",
                              relpath=relpath)
        if a.size == 0:
            raise SourceError(f"empty image (shape {a.shape}) ({relpath})", relpath=relpath)
        self.dtype = _check_dtype(a.dtype, relpath)
        self.shape = tuple(int(s) for s in a.shape)
        self.axes = self._AXES[a.ndim]
        self.metadata = {"source": {"kind": "npy", "fortran_order": bool(a.flags.f_contiguous and a.ndim > 1
                                                                          and not a.flags.c_contiguous)}}
        self.physical_sizes = {}

    def plane(self, index: int) -> np.ndarray:
        i = self._index(index)
        if self._a is None:
            raise SourceError(f"stack is closed ({self.relpath})", relpath=self.relpath)
        idx = tuple(int(k) for k in np.unravel_index(i, self.shape[:-2])) if len(self.shape) > 2 else ()
        with _reading(self.relpath, ".npy"):
            a = np.array(self._a[idx], dtype=self.dtype)
        return self._checked(a, i, f"plane {i}")

    def close(self) -> None:
        a, self._a = getattr(self, "_a", None), None
        mm = getattr(a, "_mmap", None)
        if mm is not None:
            with contextlib.suppress(Exception):
                mm.close()


def open_stack(root: str | os.PathLike, ref: ItemRef) -> TiffStack | NDTiffDatasetStack | SequenceStack | NpyStack:
    """Open an item for reading plane by plane (a :class:`~rawgate.codecs.planes.PlaneStack`,
    also a context manager). Nothing but headers and indexes is read here.

    Raises
    ------
    UnsafePathError
        The item (or a file of a folder item / OME-TIFF set) resolves outside ``root``.
    SourceError
        With the reason: "empty file (0 bytes)", "truncated or corrupt TIFF: …", "not an image
        file rawgate can read", "file disappeared: …", "permission denied: …", "unsupported pixel
        type …" (floating point), "RGB/multi-sample images are not supported", an NDTiff dataset
        that is incomplete, …
    """
    root = Path(root)
    if ref.kind not in KINDS:
        raise SourceError(f"unknown item kind {ref.kind!r} ({ref.relpath})", relpath=ref.relpath)
    path = resolve_inside(root, ref.relpath)
    rel = ref.relpath
    if not os.path.lexists(path):
        raise SourceError(f"file disappeared: {rel}", relpath=rel)
    if ref.kind in _FOLDER_KINDS:
        if not path.is_dir():
            raise SourceError(f"not a dataset folder: {rel}", relpath=rel)
        with _reading(rel, "dataset", root):
            files = item_files(root, ref)
        for f in files:
            resolve_inside(root, f.relative_to(root).as_posix())
        if ref.kind == "ndtiff":
            return NDTiffDatasetStack(path, rel, root)
        return SequenceStack(path, rel, root)
    if ref.kind in ("ome-tiff-set", "tiff"):
        for f in ome_referenced_files(path):
            frel = _relpath(Path(os.path.realpath(root)), f)
            if frel is None:
                raise UnsafePathError(f"OME-TIFF set file outside the watched root: {f}")
            resolve_inside(root, frel)
            if not os.path.lexists(f):
                raise SourceError(f"file disappeared: {frel} (named by the OME-XML of {rel})", relpath=rel)
        return TiffStack(path, rel, kind=ref.kind, root=Path(os.path.realpath(root)))
    if ref.kind == "npy":
        return NpyStack(path, rel)
    _check_nonempty(path, rel)
    raise SourceError(f"not an image file rawgate can read: {rel}", relpath=rel)
