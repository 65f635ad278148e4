"""Small I/O helpers shared by the sweep, model and report writers: durable atomic writes
and conversion to strict JSON."""

from __future__ import annotations

import json
import math
import zipfile
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_write", "fsync_replace", "read_manifest", "to_jsonable"]


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # directory fsync is not supported on every filesystem
        pass


def fsync_replace(tmp: Path, final: Path) -> None:
    """Flush ``tmp`` to disk, rename it over ``final`` and flush the directory entry."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def atomic_write(path: Path, writer: Callable[[IO[bytes]], Any], mode: int = 0o644) -> None:
    """Call ``writer(binary_file)`` on a temporary file beside ``path``, fsync it and rename it
    into place; on any failure the temporary file is removed and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
        os.chmod(tmp, mode)  # mkstemp creates 0600; these files are meant to be shared
        fsync_replace(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays to Python numbers and lists, tuples to lists,
    objects with ``to_dict`` to dicts, non-finite floats to ``None``, other unknowns to ``str``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    return str(obj)


def read_manifest(
    zf: zipfile.ZipFile,
    member: str,
    *,
    fmt: str,
    max_version: int,
    path: Path,
    what: str,
    missing: str,
    error: type[Exception],
) -> dict[str, Any]:
    """Read the JSON manifest ``member`` of a rawgate zip and check its format and version.

    Raises ``error`` naming ``path``: ``missing`` when there is no manifest, "not a rawgate
    ``what``" for a foreign format, and the version gap when the file is newer than this rawgate.
    """
    try:
        meta = json.loads(zf.read(member))
    except KeyError:
        raise error(f"{path} {missing}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise error(f"{path} is not a rawgate {what}")
    if int(meta.get("version", 0)) > max_version:
        raise error(
            f"{path} is {what} format v{meta['version']}; this rawgate reads ≤ v{max_version} "
            "(upgrade rawgate)"
        )
    return meta
