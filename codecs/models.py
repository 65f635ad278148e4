"""Where decoders find the noise model a stream names by its SHA-256.

Order: models registered in this process (every model a codec was built with, and every model
embedded in a stream or container that was read), then the model store directories: the paths in
``RAWGATE_MODEL_PATH`` (``os.pathsep``-separated) and ``$XDG_DATA_HOME/rawgate/models``
(default ``~/.local/share/rawgate/models``), holding files named ``<sha256>.rgnoise``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rawgate.calibration.model import MODEL_SUFFIX, ModelError, NoiseModel

__all__ = ["register_model", "find_model", "store_model", "store_dirs", "model_sha256",
           "ModelNotFoundError", "fresh_model_lookup", "register_hash_cache", "find_model_in_memory"]

_KNOWN: dict[str, NoiseModel] = {}
_SHA_BY_ID: dict[int, tuple[NoiseModel, str]] = {}
#: every per-process cache keyed by a model's SHA-256 (``_KNOWN`` and what codecs derive from a
#: model, e.g. noisecal's quantised maps): :func:`fresh_model_lookup` sets them all aside
_HASH_CACHES: list[dict] = [_KNOWN]


def register_hash_cache(cache: dict) -> dict:
    """Declare a per-process cache keyed by model SHA-256, so that :func:`fresh_model_lookup`
    sets it aside too; returns ``cache``."""
    if not any(c is cache for c in _HASH_CACHES):
        _HASH_CACHES.append(cache)
    return cache


@contextmanager
def fresh_model_lookup() -> Iterator[None]:
    """Decode inside this block as a new process would: no model registered so far is seen.

    Every model cache of this process is emptied for the block (models found or registered
    inside it are forgotten at its end) and restored afterwards. A stream then resolves its
    model only from what it embeds or from the model stores on disk, so a check inside the block
    notices a store file that changed or vanished since the model was first loaded. Not
    thread-safe: use it where one thread decodes (a worker process's step).
    """
    saved = [dict(c) for c in _HASH_CACHES]
    for c in _HASH_CACHES:
        c.clear()
    try:
        yield
    finally:
        for c, old in zip(_HASH_CACHES, saved):
            c.clear()
            c.update(old)


class ModelNotFoundError(ModelError):
    """A stream needs a noise model that is neither embedded, given, registered nor stored."""


def model_sha256(model: NoiseModel) -> str:
    """``model.sha256``, computed once per model object (it hashes every map)."""
    hit = _SHA_BY_ID.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    sha = model.sha256
    if len(_SHA_BY_ID) > 16:
        _SHA_BY_ID.clear()
    _SHA_BY_ID[id(model)] = (model, sha)
    return sha


def register_model(model: NoiseModel) -> str:
    """Make a model findable by hash in this process; returns its hash."""
    sha = model_sha256(model)
    _KNOWN.setdefault(sha, model)
    return sha


def store_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("RAWGATE_MODEL_PATH", "").split(os.pathsep) if p]
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return dirs + [data_home / "rawgate" / "models"]


def store_model(model: NoiseModel, directory: str | Path | None = None) -> Path:
    """Save a model into a store directory as ``<sha256>.rgnoise`` (atomic; no-op if present)."""
    d = Path(directory) if directory is not None else store_dirs()[-1]
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{model_sha256(model)}{MODEL_SUFFIX}"
    if not path.exists():
        model.save(path)
    return path


def find_model_in_memory(sha: str) -> NoiseModel | None:
    """The model with this hash if this process registered it (no store is read)."""
    return _KNOWN.get(sha)


def find_model(sha: str) -> NoiseModel | None:
    """The model with this hash, or None."""
    if sha in _KNOWN:
        return _KNOWN[sha]
    for d in store_dirs():
        path = d / f"{sha}{MODEL_SUFFIX}"
        if path.is_file():
            model = NoiseModel.load(path)
            if model_sha256(model) == sha:
                _KNOWN[sha] = model
                return model
    return None
