"""The archive side of rawgate: write a verified compressed copy, fix it in a BagIt bag, and
only then release the raw data.

Every step is durable and can be redone after a crash:

* :func:`write_copy` writes an item's planes (a :class:`~rawgate.codecs.planes.PlaneStack`,
  pulled one at a time) as a rawgate OME-TIFF through the streaming
  :func:`~rawgate.codecs.containers.write_ome_tiff`: temporary file
  ``.{name}.{pid}.partial`` beside the destination, fsync, atomic rename, fsync of the
  directory; folders it creates are fsynced too. The copy's SHA-256 is taken by reading the
  finished file back from disk. A full disk (``ENOSPC``/``EDQUOT``) raises
  :class:`DiskFullError` and leaves neither a partial nor a final file.
* :func:`verify_copy` re-reads the archived file from disk and decodes it one page at a time
  (:func:`~rawgate.codecs.containers.read_ome_tiff_planes`), comparing every plane with
  the raw one: bit-exact for lossless codecs; finite, in range and (optionally) unbiased for
  lossy ones. It can hand back chosen decoded planes for the ε check, so nothing is decoded twice.
* :func:`promote` moves a verified copy from the staging area to its final place (atomic
  rename on the archive filesystem); :func:`write_bag_manifest`, :func:`read_bag_manifest` and
  :func:`check_bag` keep the archive a BagIt 1.0 bag (payload under ``data/``,
  ``manifest-sha256.txt``, ``tagmanifest-sha256.txt``).
* :func:`release_raw` deletes (or moves to a holding folder) the raw files of an item — only
  call it after the copy is verified, promoted and in the manifest. Already released files are
  skipped, so a release interrupted by a crash is simply done again.

Paths in the archive mirror the watched tree (:func:`archive_relpath`).

Test hook: fault injection
--------------------------
``RAWGATE_INJECT_FAULTS`` (read at every call, comma-separated ``<errno>:<stage>`` entries, e.g.
``enospc:write``) makes the real code path fail with that ``errno`` (any name of the
:mod:`errno` module, lower case):

* ``<err>:write`` — in :func:`write_copy`, the temporary file takes
  :data:`FAULT_AFTER_BYTES` (4 KiB: TIFF header, first IFD, OME-XML) and then every
  ``write()`` raises ``OSError(<err>)``, so the cleanup of a half-written file runs;
* ``<err>:rename`` — in :func:`release_raw` (``action="move"``), the rename into the holding
  folder raises ``OSError(<err>)`` (``exdev:rename``: the copy–fsync–verify–delete path of a
  holding folder on another filesystem).

It is meant for tests; unset in production.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import shutil
from collections.abc import Mapping, Collection, Iterable, Sequence
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import tifffile
from rawgate.calibration._files import _fsync_dir, atomic_write, fsync_replace
from rawgate.calibration.model import NoiseModel
from rawgate.codecs import Codec, get_codec
from rawgate.codecs.containers import (
    TIFF_TAG_INFO,
    read_ome_tiff_planes,
    write_model_file,
    write_ome_tiff,
)
from rawgate.codecs.planes import PlaneStack
from .names import utf8_safe

__all__ = [
    "FOLDER_KINDS",
    "ArchiveCopy",
    "ArchiveError",
    "DiskFullError",
    "VerifyResult",
    "archive_relpath",
    "check_bag",
    "free_bytes",
    "promote",
    "read_bag_manifest",
    "release_raw",
    "sha256_file",
    "sha256_files",
    "verify_copy",
    "write_bag_manifest",
    "write_copy",
]

#: item kinds that are a dataset folder (their archive copy is one file named after the folder)
FOLDER_KINDS = frozenset({"ndtiff", "sequence"})
#: the archive file suffix
ARCHIVE_SUFFIX = ".ome.tif"
#: where copies are written before :func:`promote` (inside the bag root; not payload)
STAGING_DIR = ".rawgate-staging"
#: block size of the streamed SHA-256 and of cross-filesystem copies [bytes]
BLOCK = 1 << 20

_BAGIT_TXT = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
_MANIFEST = "manifest-sha256.txt"
_TAGMANIFEST = "tagmanifest-sha256.txt"
_BAG_INFO = "bag-info.txt"
_BAGIT = "bagit.txt"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class ArchiveError(OSError):
    """The archive could not be written, moved or released as asked."""


class DiskFullError(ArchiveError):
    """The archive filesystem is full (``ENOSPC``) or over quota (``EDQUOT``).

    Attributes
    ----------
    path
        The file being written.
    free
        Free bytes on its filesystem when the error was raised [bytes].
    """

    def __init__(self, path: Path, free: int, err: int = errno.ENOSPC) -> None:
        name = errno.errorcode.get(err, str(err))
        super().__init__(f"archive disk full ({name}) while writing {path}: {free} bytes free")
        self.errno = err
        self.path = Path(path)
        self.free = int(free)


@dataclasses.dataclass(frozen=True)
class ArchiveCopy:
    """One archived copy, as written by :func:`write_copy`.

    Attributes
    ----------
    path
        The archive file.
    nbytes
        Its size on disk [bytes].
    sha256
        SHA-256 of the file as read back from disk (hex).
    raw_nbytes
        Size of the raw planes it holds (sum of the plane bytes) [bytes].
    n_planes
        Number of ``(Y, X)`` planes.
    codec
        The codec spec stored in the file (``"noisecal:step=2"``).
    model_file
        The noise-model maps the copy refers to instead of embedding them
        (``<models dir>/<sha256>.rgmaps``), or ``None``.
    model_file_sha256
        SHA-256 of ``model_file`` as read back from disk (hex), or ``None``.
    """

    path: Path
    nbytes: int
    sha256: str
    raw_nbytes: int
    n_planes: int
    codec: str
    model_file: Path | None = None
    model_file_sha256: str | None = None

    @property
    def ratio(self) -> float:
        """Compression ratio, raw bytes / archive bytes."""
        return self.raw_nbytes / self.nbytes if self.nbytes else float("nan")


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify_copy` found.

    Attributes
    ----------
    ok
        Every plane decoded and passed.
    reason
        Why not (empty when ``ok``), naming the first plane that failed.
    n_planes
        Planes compared (up to and including a failing one).
    max_abs_error
        Largest ``|decoded − raw|`` over the compared planes [ADU].
    mean_error
        Mean of ``decoded − raw`` over the compared pixels (the bias) [ADU].
    decoded
        The decoded planes asked for with ``keep_planes``, by plane index.
    """

    ok: bool
    reason: str
    n_planes: int
    max_abs_error: float
    mean_error: float
    decoded: dict[int, np.ndarray] = dataclasses.field(
        default_factory=dict, compare=False, repr=False)


# ====================================================================== fault injection
def _injected(stage: str) -> int | None:
    """The errno ``RAWGATE_INJECT_FAULTS`` injects at ``stage`` (``None``: no fault)."""
    for entry in os.environ.get("RAWGATE_INJECT_FAULTS", "").split(","):
        name, _, where = entry.strip().partition(":")
        if where.strip().lower() == stage and name.strip():
            code = getattr(errno, name.strip().upper(), None)
            if not isinstance(code, int):
                raise ValueError(f"RAWGATE_INJECT_FAULTS: unknown errno name {name!r}")
            return code
    return None


#: bytes an injected ``<err>:write`` fault lets through before failing [bytes]
FAULT_AFTER_BYTES = 4096


class _FaultyFile(io.FileIO):
    """A file that takes :data:`FAULT_AFTER_BYTES` bytes, then fails every write with an
    injected errno (the write crossing the limit stores what fits first, as a full disk does)."""

    def __init__(self, path: Path, err: int) -> None:
        super().__init__(path, "wb")
        self._err = err
        self._left = FAULT_AFTER_BYTES

    def write(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        if len(mv) > self._left:
            if self._left:
                super().write(mv[:self._left])
                self._left = 0
            raise OSError(self._err, f"{os.strerror(self._err)} (injected)", self.name)
        self._left -= len(mv)
        return super().write(mv)


def _opener(err: int | None):
    if err is None:
        return None
    return lambda path: _FaultyFile(path, err)


# ====================================================================== paths and hashes
def archive_relpath(relpath: str, kind: str, generation: int = 1) -> str:
    """Where an item's archive copy goes, relative to the archive payload root.

    Mirrors the watched tree: a file loses its image suffix and gains ``.ome.tif``
    (``a/b/x.tif`` → ``a/b/x.ome.tif``, ``a/x.ome.tiff`` → ``a/x.ome.tif``, ``x.npy`` →
    ``x.ome.tif``); a dataset folder (kinds in :data:`FOLDER_KINDS`: ``"ndtiff"``,
    ``"sequence"``) becomes one file named after it (``a/acq_1`` → ``a/acq_1.ome.tif``).
    Items whose names differ only in the suffix (``x.tif``, ``x.npy``) map to the same copy.
    A name that is not valid UTF-8 has each such byte written as ``~XX`` (:func:`.names.utf8_safe`).

    Parameters
    ----------
    relpath
        The item's path relative to the watched root (``/``-separated).
    kind
        The item's kind (``"tiff"``, ``"ome-tiff"``, ``"npy"``, ``"ndtiff"``, ``"sequence"``…).
    generation
        The item's generation: a file that came back under an archived name with new content is
        generation 2, 3, … and archived beside the first as ``x.v2.ome.tif``, ``x.v3.ome.tif``.

    Raises
    ------
    ValueError
        An absolute path, an empty one, or one with ``..`` components.
    """
    text = str(relpath).replace("\\", "/")
    p = PurePosixPath(text)
    if not text or p.is_absolute() or (len(text) > 1 and text[1] == ":"):
        raise ValueError(f"archive path must be relative to the watched root, got {relpath!r}")
    parts = [s for s in p.parts if s != "."]
    if not parts or ".." in parts:
        raise ValueError(f"archive path must stay inside the watched root, got {relpath!r}")
    name = parts[-1]
    if kind not in FOLDER_KINDS:
        stem, dot, _ = name.rpartition(".")
        if dot and stem:
            name = stem
        if name.lower().endswith(".ome") and len(name) > 4:
            name = name[:-4]
    # a name that is not UTF-8 is archived under its ~XX-escaped form (valid in the manifest)
    version = f".v{int(generation)}" if generation > 1 else ""
    return utf8_safe("/".join([*parts[:-1], name + version + ARCHIVE_SUFFIX]))


def sha256_file(path: Path | str) -> str:
    """SHA-256 (hex) of a file, read from disk in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _relposix(root: Path, f: Path) -> str:
    f = Path(f)
    rel = f.relative_to(root) if f.is_absolute() else f
    return rel.as_posix()


def sha256_files(root: Path, files: Sequence[Path]) -> str:
    """One SHA-256 for an item made of ``files`` (absolute, or relative to ``root``).

    One file: its plain SHA-256 (:func:`sha256_file`). Several: the SHA-256 of the sorted lines
    ``"<sha256>  <path relative to root>\\n"`` (the lines of a ``sha256sum`` listing), so a
    renamed, added or changed file changes the digest.
    """
    root = Path(root)
    if not files:
        raise ValueError("no files to hash")
    per = {}
    for f in files:
        f = Path(f)
        per[_relposix(root, f)] = sha256_file(f if f.is_absolute() else root / f)
    return combine_digests(per)


def combine_digests(per_file: Mapping[str, str]) -> str:
    """The item digest of :func:`sha256_files` from per-file digests ``{relpath: sha256}``."""
    if not per_file:
        raise ValueError("no files to hash")
    if len(per_file) == 1:
        return next(iter(per_file.values()))
    lines = sorted(f"{sha}  {rel}\n" for rel, sha in per_file.items())
    return hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def free_bytes(path: Path | str) -> int:
    """Free bytes on the filesystem holding ``path`` (its nearest existing ancestor) [bytes]."""
    p = Path(path).absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    return int(shutil.disk_usage(p).free)


def _makedirs(d: Path) -> None:
    """``mkdir -p d``, fsyncing every folder created and the folder holding it."""
    d = Path(d).absolute()
    missing = []
    p = d
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for m in reversed(missing):
        try:
            m.mkdir()
        except FileExistsError:
            pass
        _fsync_dir(m)
        _fsync_dir(m.parent)
    if not d.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(d))


# ====================================================================== write and verify
def _disk_full_errno(exc: BaseException) -> int | None:
    """The ENOSPC/EDQUOT errno anywhere in ``exc``'s chain (tifffile may raise on close)."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return e.errno
        e = e.__cause__ or e.__context__
    return None


def _stored_codec(path: Path) -> str:
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags.get(TIFF_TAG_INFO)
        return str(json.loads(tag.value)["codec"]) if tag is not None else ""


def write_copy(stack: PlaneStack, dest: Path, codec: Codec | str | dict, *,
               noise_model: NoiseModel | None = None, models_dir: Path | None = None) -> ArchiveCopy:
    """Write ``stack`` as a rawgate OME-TIFF at ``dest``, durably, one plane at a time.

    Parameters
    ----------
    stack
        The raw item; its planes are pulled one at a time (never the whole stack), its axes,
        metadata and physical sizes carried into the file.
    dest
        The archive file (``….ome.tif``); its folder is created (parents too, each fsynced).
        Written as ``.{name}.{pid}.partial`` beside it, fsynced, renamed over ``dest``, folder
        fsynced; an existing ``dest`` is replaced only by a complete file.
    codec
        Codec (spec string, config dict or object).
    noise_model
        The camera's noise model, for codecs that need one (``noisecal``).
    models_dir
        Store the model's codec maps once in this folder (``<sha256>.rgmaps``, written first
        and durably; kept if already there and intact) and let the copy refer to them by
        SHA-256 instead of embedding them. It must be a ``models/`` (or ``data/models/``)
        folder beside or above ``dest`` so that readers find it. ``None``: the copy embeds them.

    Returns
    -------
    ArchiveCopy
        Path, size, SHA-256 (read back from disk), raw size, planes and codec spec.

    Raises
    ------
    DiskFullError
        The filesystem filled up (or the quota was reached) while writing; nothing is left
        behind.
    """
    dest = Path(dest)
    model_file = None
    external = models_dir is not None and noise_model is not None and get_codec(codec).needs_noise_model
    try:
        _makedirs(dest.parent)
        if external:
            _makedirs(Path(models_dir))
            model_file = write_model_file(noise_model, models_dir)
        write_ome_tiff(dest, stack, codec, noise_model=noise_model, embed_model=not external,
                       opener=_opener(_injected("write")))
    except BaseException as e:
        Path(dest.with_name(f".{dest.name}.{os.getpid()}.partial")).unlink(missing_ok=True)
        err = _disk_full_errno(e)
        if err is not None:
            raise DiskFullError(dest, free_bytes(dest.parent), err) from e
        raise
    n_planes = int(stack.n_planes)
    H, W = (int(s) for s in stack.shape[-2:])
    return ArchiveCopy(
        path=dest,
        nbytes=dest.stat().st_size,
        sha256=sha256_file(dest),
        raw_nbytes=n_planes * H * W * np.dtype(stack.dtype).itemsize,
        n_planes=n_planes,
        codec=_stored_codec(dest),
        model_file=model_file,
        model_file_sha256=None if model_file is None else sha256_file(model_file),
    )


def _bit_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit (floats compared as their bit patterns: NaN and −0.0 included)."""
    if a.dtype.kind in "fc":
        u = np.dtype(f"u{a.dtype.itemsize // (2 if a.dtype.kind == 'c' else 1)}")
        return np.array_equal(np.ascontiguousarray(a).view(u), np.ascontiguousarray(b).view(u))
    return np.array_equal(a, b)


def verify_copy(path: Path, stack: PlaneStack, *, lossless: bool,
                max_abs_bias_adu: float | None = None,
                keep_planes: Collection[int] = ()) -> VerifyResult:
    """Re-read the archived file from disk and compare every plane with the raw one.

    Planes are decoded one at a time (one archived and one raw plane in memory). Checks: the
    file's shape and dtype are the stack's; every page decodes (stream CRCs); for ``lossless``
    the plane is bit-exact; otherwise it is finite, within the dtype's range and, with
    ``max_abs_bias_adu``, ``|mean(decoded − raw)| ≤ max_abs_bias_adu`` per plane.
    Stops at the first failure.

    Parameters
    ----------
    path
        The archive file.
    stack
        The raw item.
    lossless
        Demand bit-exact planes.
    max_abs_bias_adu
        Largest allowed per-plane mean error for lossy codecs [ADU] (``None``: not checked).
    keep_planes
        Plane indices whose decoded planes are returned in ``decoded`` (for the ε check).

    Returns
    -------
    VerifyResult
        ``ok`` and the ``reason`` it is not; error statistics [ADU]; the kept planes.
    """
    keep = {int(i) for i in keep_planes}
    decoded: dict[int, np.ndarray] = {}
    n_done = 0
    max_abs = 0.0
    err_sum = 0.0
    n_px = 0

    def result(ok: bool, reason: str = "") -> VerifyResult:
        return VerifyResult(ok, reason, n_done, max_abs, err_sum / n_px if n_px else 0.0,
                            decoded)

    try:
        reader = read_ome_tiff_planes(path)
    except Exception as e:  # noqa: BLE001  (any failure to read the copy fails verification)
        return result(False, f"cannot open the archive copy {path}: {type(e).__name__}: {e}")
    with reader:
        want_shape = tuple(int(s) for s in stack.shape)
        want_dtype = np.dtype(stack.dtype)
        if reader.shape != want_shape or reader.dtype != want_dtype:
            return result(False, f"the archive holds {reader.dtype}{reader.shape}, the raw data "
                                 f"is {want_dtype}{want_shape}")
        if reader.n_planes != int(stack.n_planes):
            return result(False, f"the archive holds {reader.n_planes} planes, the raw data "
                                 f"{stack.n_planes}")
        if np.issubdtype(want_dtype, np.integer):
            lo, hi = float(np.iinfo(want_dtype).min), float(np.iinfo(want_dtype).max)
        else:
            lo, hi = -np.inf, np.inf
        for i in range(reader.n_planes):
            try:
                d = reader.plane(i)
            except Exception as e:  # noqa: BLE001  (a damaged page fails verification)
                return result(False, f"plane {i} does not decode: {type(e).__name__}: {e}")
            raw = np.asarray(stack.plane(i))
            if d.shape != raw.shape or d.dtype != raw.dtype:
                return result(False, f"plane {i}: decoded {d.dtype}{d.shape}, raw "
                                     f"{raw.dtype}{raw.shape}")
            n_done = i + 1
            exact = _bit_equal(d, raw)
            if exact:
                n_px += d.size
                plane_sum = 0.0
            elif d.size:
                diff = np.subtract(d, raw, dtype=np.float64)
                max_abs = max(max_abs, float(np.max(np.abs(diff))))
                plane_sum = float(diff.sum())
                err_sum += plane_sum
                n_px += d.size
                del diff
            else:
                plane_sum = 0.0
            if lossless:
                if not exact:
                    nbad = int(np.count_nonzero(d != raw))
                    return result(False, f"plane {i}: {nbad} pixels differ from the raw data "
                                         f"(lossless codec; max |error| {max_abs:g} ADU)")
            else:
                if np.issubdtype(d.dtype, np.floating) and not np.all(np.isfinite(d)):
                    return result(False, f"plane {i}: decoded values are not finite")
                if d.size and (float(d.min()) < lo or float(d.max()) > hi):
                    return result(False, f"plane {i}: decoded values outside the {d.dtype} "
                                         "range")
                if max_abs_bias_adu is not None and d.size:
                    bias = plane_sum / d.size
                    if not abs(bias) <= max_abs_bias_adu:
                        return result(False, f"plane {i}: mean error {bias:+.3g} ADU exceeds "
                                             f"±{max_abs_bias_adu:g} ADU")
            if i in keep:
                decoded[i] = d
    return result(True)


# ====================================================================== promote
def promote(staged: Path, final: Path) -> bool:
    """Move a verified copy from staging to its final place (same filesystem), durably.

    Creates ``final``'s folders (each fsynced), renames atomically (replacing an existing
    ``final``), fsyncs both folders. Idempotent: when ``staged`` is gone (after a crash past the
    rename), nothing is done.

    Returns
    -------
    bool
        Whether the file was moved now. ``False`` also when neither file exists: the caller
        checks that ``final`` is there (and its SHA-256).
    """
    staged, final = Path(staged), Path(final)
    if not staged.exists():
        return False
    _makedirs(final.parent)
    os.replace(staged, final)
    _fsync_dir(final.parent)
    _fsync_dir(staged.parent)
    return True


# ====================================================================== BagIt
def _bag_escape(path: str) -> str:
    return path.replace("%", "%25").replace("\n", "%0A").replace("\r", "%0D")


def _bag_unescape(path: str) -> str:
    return path.replace("%0A", "\n").replace("%0a", "\n").replace("%0D", "\r") \
        .replace("%0d", "\r").replace("%25", "%")


def _check_payload_path(rel: str) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or p.parts[0] != "data" \
            or len(p.parts) < 2:
        raise ValueError(f"bag payload path must be relative and under data/, got {rel!r}")
    return p.as_posix()


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def write_bag_manifest(bag_root: Path, entries: Iterable[tuple[str, str, int]]) -> None:
    """(Re)write the tag files of the BagIt bag at ``bag_root``, each atomically.

    Writes ``bagit.txt``, ``manifest-sha256.txt`` (``"<sha256>  <path>"`` lines sorted by
    path), ``bag-info.txt`` (``Bagging-Date``, ``Payload-Oxum: <bytes>.<files>``,
    ``Bag-Software-Agent: rawgate``) and, last, ``tagmanifest-sha256.txt`` over those three.

    Parameters
    ----------
    bag_root
        The bag folder (created if missing).
    entries
        Every payload file: ``(sha256, path relative to bag_root under "data/", nbytes)``.

    Raises
    ------
    ValueError
        A path outside ``data/``, listed twice, or a malformed checksum.
    """
    bag_root = Path(bag_root)
    _makedirs(bag_root)
    rows: dict[str, tuple[str, int]] = {}
    for sha, rel, nbytes in entries:
        rel = _check_payload_path(rel)
        sha = str(sha).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"{rel}: not a SHA-256 hex digest: {sha!r}")
        if rel in rows:
            raise ValueError(f"{rel} is listed twice")
        rows[rel] = (sha, int(nbytes))
    manifest = "".join(f"{rows[r][0]}  {_bag_escape(r)}\n" for r in sorted(rows))
    total = sum(n for _, n in rows.values())
    info = (f"Bagging-Date: {date.today().isoformat()}\n"
            f"Payload-Oxum: {total}.{len(rows)}\n"
            "Bag-Software-Agent: rawgate\n")
    tags = {_BAGIT: _BAGIT_TXT, _MANIFEST: manifest, _BAG_INFO: info}
    for name, text in tags.items():
        _write_text(bag_root / name, text)
    tagmanifest = "".join(
        f"{hashlib.sha256(tags[n].encode('utf-8')).hexdigest()}  {n}\n" for n in sorted(tags))
    _write_text(bag_root / _TAGMANIFEST, tagmanifest)


def _read_manifest_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        sha, _, rel = line.partition(" ")
        out[_bag_unescape(rel.strip(" \t"))] = sha.lower()
    return out


def read_bag_manifest(bag_root: Path) -> dict[str, str]:
    """The payload manifest of a bag: ``{path relative to bag_root: sha256}`` (``{}`` when
    there is no manifest yet)."""
    path = Path(bag_root) / _MANIFEST
    if not path.exists():
        return {}
    return _read_manifest_file(path)


def _ignored(rel_parts: tuple[str, ...]) -> bool:
    return STAGING_DIR in rel_parts or rel_parts[-1].endswith(".partial")


def check_bag(bag_root: Path) -> list[str]:
    """Check a bag against its manifests; returns the problems found (empty: the bag is valid).

    Reports missing tag files, payload files listed but missing or with another SHA-256,
    payload files under ``data/`` not in the manifest (ignoring ``.rawgate-staging/`` and
    ``*.partial``), tag files whose SHA-256 differs from ``tagmanifest-sha256.txt``, and a
    ``Payload-Oxum`` that does not match the listed files. Reads every payload file.
    """
    root = Path(bag_root)
    problems: list[str] = []
    for name in (_BAGIT, _MANIFEST):
        if not (root / name).is_file():
            problems.append(f"missing tag file: {name}")
    manifest = read_bag_manifest(root)
    total = 0
    for rel, sha in sorted(manifest.items()):
        f = root / rel
        if not f.is_file():
            problems.append(f"missing: {rel}")
            continue
        total += f.stat().st_size
        got = sha256_file(f)
        if got != sha:
            problems.append(f"checksum mismatch: {rel} (manifest {sha}, file {got})")
    data = root / "data"
    if data.is_dir():
        for dirpath, dirnames, filenames in os.walk(data):
            dirnames[:] = [d for d in dirnames if d != STAGING_DIR]
            for fn in filenames:
                rel = (Path(dirpath) / fn).relative_to(root).as_posix()
                if _ignored(tuple(PurePosixPath(rel).parts)):
                    continue
                if rel not in manifest:
                    problems.append(f"not in manifest: {rel}")
    tm = root / _TAGMANIFEST
    if tm.is_file():
        for rel, sha in sorted(_read_manifest_file(tm).items()):
            f = root / rel
            if not f.is_file():
                problems.append(f"missing tag file: {rel}")
            elif sha256_file(f) != sha:
                problems.append(f"tag checksum mismatch: {rel}")
    info = root / _BAG_INFO
    if info.is_file():
        for line in info.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Payload-Oxum":
                want = f"{total}.{len(manifest)}"
                if not any(p.startswith("missing: ") for p in problems) \
                        and value.strip() != want:
                    problems.append(f"Payload-Oxum {value.strip()} does not match the "
                                    f"payload ({want})")
    return problems


# ====================================================================== retention
def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _move_file(src: Path, dest: Path) -> bool:
    """Move ``src`` to ``dest`` durably (rename, or copy–fsync–verify–delete across
    filesystems). Returns whether ``src`` was there to move."""
    if not src.exists():
        return False
    _makedirs(dest.parent)
    if dest.exists():
        if sha256_file(dest) != sha256_file(src):
            raise ArchiveError(errno.EEXIST, f"the holding folder already has a different "
                                             f"{dest}; not overwriting it", str(dest))
        src.unlink()  # a crash after the copy and before the delete: the copy is complete
        _fsync_dir(src.parent)
        return True
    try:
        err = _injected("rename")
        if err is not None:
            raise OSError(err, f"{os.strerror(err)} (injected)", str(src))
        os.replace(src, dest)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        try:
            with open(src, "rb") as fi, open(tmp, "wb") as fo:
                shutil.copyfileobj(fi, fo, BLOCK)
                fo.flush()
                os.fsync(fo.fileno())
            if sha256_file(tmp) != sha256_file(src):
                raise ArchiveError(errno.EIO, f"copy of {src} to {tmp} does not match it",
                                   str(tmp)) from None
            fsync_replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        src.unlink()
    _fsync_dir(dest.parent)
    _fsync_dir(src.parent)
    return True


def release_raw(root: Path, files: Sequence[Path], *, action: Literal["delete", "move"],
                holding_dir: Path | None = None) -> list[Path]:
    """Release an item's raw files: delete them, or move them into ``holding_dir``.

    Call only after the archive copy is verified and in the bag manifest. All paths are
    checked before anything is touched. Files already gone are skipped, so an interrupted
    release is simply called again.

    Parameters
    ----------
    root
        The watched root; every file must resolve inside it.
    files
        The item's raw files (absolute, or relative to ``root``).
    action
        ``"delete"``: unlink them, then remove folders left empty (up to, never including,
        ``root``). ``"move"``: move each to ``holding_dir / <path relative to root>`` (a rename
        on the same filesystem, else copy, fsync, SHA-256 check, delete).
    holding_dir
        Where ``"move"`` puts them; must be outside ``root``.

    Returns
    -------
    list[Path]
        The files released by this call (their original paths).

    Raises
    ------
    ValueError
        A file outside ``root`` (after resolving links), ``root`` itself, a bad ``action``, or
        a missing or misplaced ``holding_dir``.
    """
    if action not in ("delete", "move"):
        raise ValueError(f"action must be 'delete' or 'move', got {action!r}")
    root_r = Path(root).resolve()
    hold_r: Path | None = None
    if action == "move":
        if holding_dir is None:
            raise ValueError("action='move' needs holding_dir")
        hold_r = Path(holding_dir).resolve()
        if _inside(hold_r, root_r) or _inside(root_r, hold_r):
            raise ValueError(f"holding folder {holding_dir} must be outside the watched root "
                             f"{root} (and not contain it)")
    checked: list[tuple[Path, Path]] = []
    for f in files:
        f = Path(f)
        full = f if f.is_absolute() else Path(root) / f
        if full.name in ("", ".", ".."):
            raise ValueError(f"{f} is not a file path; refusing to release it")
        # resolve the folder, keep the name: a symbolic link is released itself (never the
        # file it points to), and an already released file still resolves
        real = full.parent.resolve() / full.name
        if real == root_r or not _inside(real, root_r):
            raise ValueError(f"{f} is not inside the watched root {root}; refusing to release it")
        checked.append((real, real.relative_to(root_r)))
    released: list[Path] = []
    parents: set[Path] = set()
    for real, rel in checked:
        if action == "delete":
            try:
                real.unlink()
            except FileNotFoundError:
                continue
            parents.add(real.parent)
            released.append(real)
        else:
            assert hold_r is not None
            if _move_file(real, hold_r / rel):
                parents.add(real.parent)
                released.append(real)
    for d in parents:
        _fsync_dir(d)
    if action == "delete":
        for d in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            while d != root_r and _inside(d, root_r):
                try:
                    d.rmdir()
                except OSError:  # not empty (or gone): stop climbing
                    break
                _fsync_dir(d.parent)
                d = d.parent
    return released
