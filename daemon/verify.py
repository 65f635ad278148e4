"""``rawgate archive verify``: is the archive still what was archived?

Three checks, each naming every file that fails:

1. **The bag** (:func:`rawgate.daemon.archive.check_bag`): every payload file's SHA-256 against
   ``manifest-sha256.txt`` (missing, changed), files under ``data/`` the manifest does not list
   (extra), the tag manifest and ``Payload-Oxum``.
2. **The ledger**, when one is given: every archived copy and noise-model file it records is
   listed in the manifest with the same SHA-256 (a manifest that lost an entry, or an entry that
   disagrees with what was verified at archiving).
3. **Decoding** a seeded sample of the lossy copies (all of them with ``full``): every plane
   decodes (stream CRCs) to the recorded shape and dtype, as a fresh process would (the noise
   model from the file or the archive's ``data/models/``, none from memory). The SHA-256 guards
   the bytes; decoding guards against a codec or a model file that no longer reads them.

Pure reading: nothing in the archive is changed.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from rawgate.codecs import fresh_model_lookup, get_codec
from rawgate.codecs.containers import TIFF_TAG_INFO, read_ome_tiff_planes

from .archive import ARCHIVE_SUFFIX, check_bag, read_bag_manifest

__all__ = ["ArchiveReport", "verify_archive", "lossy_copies"]


@dataclass
class ArchiveReport:
    """What :func:`verify_archive` found.

    Attributes
    ----------
    root
        The archive (bag) folder.
    files
        Payload files the manifest lists (each hashed).
    decoded
        Lossy copies decoded, of ``lossy`` in the archive.
    lossy
        Lossy copies in the archive.
    problems
        One line per problem, naming the file.
    """

    root: Path
    files: int = 0
    decoded: int = 0
    lossy: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        what = (f"{self.files} file(s) checked against the manifest (SHA-256), {self.decoded} of "
                f"{self.lossy} lossy copies decoded")
        if self.ok:
            return f"archive {self.root}: ok — {what}"
        return f"archive {self.root}: {len(self.problems)} problem(s) — {what}"

    def to_dict(self) -> dict:
        return {"root": str(self.root), "ok": self.ok, "files": self.files, "decoded": self.decoded,
                "lossy": self.lossy, "problems": list(self.problems)}


def _stored_spec(path: Path) -> str | None:
    """The codec spec a rawgate OME-TIFF names (None: not a rawgate file, or unreadable)."""
    try:
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages.first.tags.get(TIFF_TAG_INFO)
            return None if tag is None else str(json.loads(tag.value)["codec"])
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the decode check
        return None


def lossy_copies(root: Path, manifest: Mapping[str, str]) -> list[str]:
    """Manifest paths of the archive copies (``*.ome.tif``) coded with a lossy codec."""
    out = []
    for rel in sorted(manifest):
        if not rel.endswith(ARCHIVE_SUFFIX) or not (root / rel).is_file():
            continue
        spec = _stored_spec(root / rel)
        try:
            lossy = spec is None or not get_codec(spec).lossless
        except ValueError:
            lossy = True  # a codec this rawgate does not know: decoding will say so
        if lossy:
            out.append(rel)
    return out


def _decode_problem(path: Path) -> str | None:
    """Why the copy does not decode (None: every plane decodes to the recorded shape and dtype)."""
    try:
        with fresh_model_lookup(), read_ome_tiff_planes(path) as planes:
            h, w = (int(s) for s in planes.shape[-2:])
            for i in range(planes.n_planes):
                p = np.asarray(planes.plane(i))
                if p.shape != (h, w) or p.dtype != planes.dtype:
                    return f"plane {i} decodes to {p.dtype}{p.shape}, the file records {planes.dtype}{(h, w)}"
    except Exception as e:  # noqa: BLE001 - any failure to decode is the finding
        return f"{type(e).__name__}: {e}"
    return None


def verify_archive(root: str | Path, *, full: bool = False, fraction: float = 0.1, seed: int = 0,
                   recorded: Mapping[str, str] | None = None) -> ArchiveReport:
    """Check an archive folder (a rawgate BagIt bag).

    Parameters
    ----------
    root
        The archive folder (``daemon.archive_dir``).
    full
        Decode every lossy copy (default: a seeded sample).
    fraction
        Share of the lossy copies decoded without ``full`` (at least one when there is any).
    seed
        Seed of the sample; the sample also depends on each path, so a new copy does not
        reshuffle the others.
    recorded
        ``{path relative to root: SHA-256}`` the ledger holds for archived copies and model
        files, checked against the manifest.

    Returns
    -------
    ArchiveReport
    """
    root = Path(root)
    rep = ArchiveReport(root=root)
    if not root.is_dir():
        rep.problems.append(f"missing: {root} is not a folder")
        return rep
    manifest = read_bag_manifest(root)
    rep.files = len(manifest)
    rep.problems += check_bag(root)
    for rel, sha in sorted((recorded or {}).items()):
        listed = manifest.get(rel)
        if listed is None:
            rep.problems.append(f"not in manifest (the ledger records it): {rel}")
        elif listed != sha:
            rep.problems.append(f"manifest disagrees with the ledger: {rel} (manifest {listed}, ledger {sha})")
    lossy = lossy_copies(root, manifest)
    rep.lossy = len(lossy)
    if full:
        picks = lossy
    else:
        score = {rel: zlib.crc32(f"{seed}:{rel}".encode()) / 2**32 for rel in lossy}
        picks = [rel for rel in lossy if score[rel] < fraction]
        if lossy and not picks:
            picks = [min(lossy, key=score.__getitem__)]
    for rel in picks:
        why = _decode_problem(root / rel)
        rep.decoded += 1
        if why is not None:
            rep.problems.append(f"does not decode: {rel} ({why})")
    return rep
