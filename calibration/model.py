"""The per-pixel noise model and its one self-describing, versioned file.

File format (``.rgnoise``): a zip of ``.npy`` arrays (``numpy.load`` opens it, with
``allow_pickle=False``) plus ``meta.json`` holding the format name and version, the camera
identity, dates, fit quality, EMVA figures and a SHA-256 per array. Loading verifies all of it,
so a truncated, corrupted or foreign file is refused with the reason instead of yielding maps.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_write, read_manifest, to_jsonable
from .instruments._protocol import CameraIdentity

__all__ = ["NoiseModel", "ModelError", "ModelMismatchError", "MODEL_SUFFIX"]

MODEL_FORMAT = "rawgate.noise_model"
#: 2: ``meta_sha256`` covers every metadata field (v1 files still load; they must carry
#: ``model_sha256``)
MODEL_VERSION = 2
MODEL_SUFFIX = ".rgnoise"
_ARRAYS = ("offset_adu", "gain_e_per_adu", "read_noise_e", "dark_current_e_per_s", "bad_pixels")


class ModelError(ValueError):
    """A noise-model file is missing, corrupt, foreign, or internally inconsistent."""


class ModelMismatchError(ModelError):
    """A frame or camera does not match the model (shape, binning, ROI, bit depth …)."""


def meta_sha256(meta: dict[str, Any]) -> str:
    """SHA-256 of a model's ``meta.json`` fields (canonical JSON, every field but this hash):
    the creation date, the ``estimated`` flag, the identity, the EMVA figures (``noisecal`` uses
    the saturation level), the maps' digests and content hash."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False, allow_nan=False).encode()).hexdigest()


def _check_meta_hash(meta: dict[str, Any], path: Any) -> None:
    """Refuse a model whose metadata were edited or whose hashes were removed.

    (A hash without a secret stops edits and damage, not a forger who recomputes it; the
    archive's manifest records each model file's SHA-256 besides.)
    """
    if not isinstance(meta.get("sha256"), dict) or not meta.get("model_sha256"):
        raise ModelError(f"{path}: no content hash (model_sha256): refused; re-create the model")
    if int(meta.get("version", 1)) >= 2:
        if not meta.get("meta_sha256"):
            raise ModelError(f"{path}: no metadata hash (meta_sha256): refused; re-create the model")
        if meta["meta_sha256"] != meta_sha256(meta):
            raise ModelError(f"{path}: its metadata (meta.json) were changed after it was written "
                             "(date, flags, identity or figures): refused")


@dataclass
class NoiseModel:
    """Per-pixel Poisson–Gaussian noise model of one camera in one configuration.

    ``adu = offset_adu + (electrons + N(0, read_noise_e)) / gain_e_per_adu``, with
    ``electrons ~ Poisson(signal_e + dark_current_e_per_s · t)``.

    Attributes
    ----------
    identity
        Camera the model is valid for (name, serial, bit depth, binning, ROI, readout mode).
    offset_adu
        Dark level at zero exposure [ADU], ``(H, W)``.
    gain_e_per_adu
        Conversion gain [e-/ADU], ``(H, W)``.
    read_noise_e
        Read noise [e-], ``(H, W)``.
    dark_current_e_per_s
        Dark current [e-/s], ``(H, W)``, or None when not measured.
    bad_pixels
        Bit mask of bad pixels (reasons in :data:`rawgate.calibration.fit.BAD_PIXEL_REASONS`).
    created
        ISO 8601 UTC timestamp of the calibration.
    estimated
        True when estimated from image data rather than calibrated with a sweep.
    fit_quality, emva
        Fit-quality figures and the EMVA 1288 global figures.
    """

    identity: CameraIdentity
    offset_adu: np.ndarray
    gain_e_per_adu: np.ndarray
    read_noise_e: np.ndarray
    dark_current_e_per_s: np.ndarray | None
    bad_pixels: np.ndarray
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    estimated: bool = False
    fit_quality: dict[str, Any] = field(default_factory=dict)
    emva: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        self.offset_adu = np.asarray(self.offset_adu, np.float32)
        self.gain_e_per_adu = np.asarray(self.gain_e_per_adu, np.float32)
        self.read_noise_e = np.asarray(self.read_noise_e, np.float32)
        if self.dark_current_e_per_s is not None:
            self.dark_current_e_per_s = np.asarray(self.dark_current_e_per_s, np.float32)
        self.bad_pixels = np.asarray(self.bad_pixels, np.uint8)
        self._validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_fit(cls, fit, identity: CameraIdentity, *, source: str = "sweep") -> "NoiseModel":
        """Build from a :class:`~rawgate.calibration.fit.FitResult`."""
        m = fit.maps
        return cls(
            identity=identity,
            offset_adu=m.offset_adu,
            gain_e_per_adu=m.gain_e_per_adu,
            read_noise_e=m.read_noise_e,
            dark_current_e_per_s=m.dark_current_e_per_s,
            bad_pixels=m.bad_pixels,
            fit_quality=to_jsonable(fit.quality),
            emva=to_jsonable(fit.emva.summary()),
            source=source,
        )

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.offset_adu.shape)  # type: ignore[return-value]

    @property
    def adc_max(self) -> int:
        return 2**self.identity.bit_depth - 1

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.created)

    def age_days(self, now: datetime | None = None) -> float:
        now = now or datetime.now(timezone.utc)
        return (now - self.created_at).total_seconds() / 86400.0

    @property
    def sha256(self) -> str:
        """Content hash of the maps and identity: names the model inside compressed data."""
        h = hashlib.sha256()
        h.update(json.dumps(self.identity.to_dict(), sort_keys=True).encode())
        for name in _ARRAYS:
            a = getattr(self, name)
            h.update(name.encode())
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        shape = self.offset_adu.shape
        if len(shape) != 2 or min(shape) < 1:
            raise ModelError(f"maps must be 2-D, got shape {shape}")
        for name in _ARRAYS[1:]:
            a = getattr(self, name)
            if a is not None and a.shape != shape:
                raise ModelError(f"{name} has shape {a.shape}, offset_adu has {shape}")
        for name in ("offset_adu", "gain_e_per_adu", "read_noise_e"):
            if not np.isfinite(getattr(self, name)).all():
                raise ModelError(f"{name} contains NaN or infinite values")
        if not (self.gain_e_per_adu > 0).all():
            raise ModelError("gain_e_per_adu must be positive everywhere")
        if (self.read_noise_e < 0).any():
            raise ModelError("read_noise_e must be non-negative")
        x, y, w, h = self.identity.roi
        if (h, w) != shape:
            raise ModelError(
                f"maps have shape {shape} but the camera ROI is {w}×{h} (x={x}, y={y})"
            )

    def check_frame(self, frame: np.ndarray, identity: CameraIdentity | None = None) -> None:
        """Refuse a frame (``(..., H, W)``) or camera that this model does not describe.

        Raises
        ------
        ModelMismatchError
            Naming every mismatching field.
        """
        problems = []
        if identity is not None:
            problems += self.identity.mismatches(identity)
        if frame.ndim < 2 or tuple(frame.shape[-2:]) != self.shape:
            problems.append(
                f"frame shape: model is {self.shape[1]}×{self.shape[0]} px, frame is "
                f"{'×'.join(map(str, frame.shape[::-1]))}"
            )
        if np.issubdtype(frame.dtype, np.integer) and frame.size and int(frame.max()) > self.adc_max:
            problems.append(
                f"bit depth: frame has values up to {int(frame.max())}, above the model's "
                f"{self.identity.bit_depth}-bit range"
            )
        if problems:
            raise ModelMismatchError(
                "frame does not match the noise model " + f"({self.source or 'model'}): " + "; ".join(problems)
            )

    # ------------------------------------------------------------------ I/O
    def _write_zip(self, fh) -> None:
        digests: dict[str, str] = {}
        zf = zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED, compresslevel=1)
        for name in _ARRAYS:
            a = getattr(self, name)
            if a is None:
                continue
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
            data = buf.getvalue()
            digests[name] = hashlib.sha256(data).hexdigest()
            zf.writestr(f"{name}.npy", data)
        meta = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "identity": self.identity.to_dict(),
            "created": self.created,
            "estimated": self.estimated,
            "source": self.source,
            "fit_quality": to_jsonable(self.fit_quality),
            "emva": to_jsonable(self.emva),
            "sha256": digests,
            "model_sha256": self.sha256,
            "units": {
                "offset_adu": "ADU",
                "gain_e_per_adu": "e-/ADU",
                "read_noise_e": "e- rms",
                "dark_current_e_per_s": "e-/s",
                "bad_pixels": "bit mask",
            },
        }
        meta["meta_sha256"] = meta_sha256(meta)
        zf.writestr("meta.json", json.dumps(meta, indent=1, allow_nan=False))
        zf.close()

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file, fsync, rename); returns the path."""
        path = Path(path)
        atomic_write(path, self._write_zip)
        return path

    def to_bytes(self) -> bytes:
        """The exact bytes :meth:`save` writes (for embedding a model inside compressed data)."""
        buf = io.BytesIO()
        self._write_zip(buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, origin: str = "embedded noise model") -> "NoiseModel":
        """Read and verify a model from the bytes of a model file (see :meth:`load`)."""
        return cls._read_zip(io.BytesIO(data), origin)

    @classmethod
    def load(cls, path: str | Path) -> "NoiseModel":
        """Read and verify a model file.

        Raises
        ------
        ModelError
            File missing, not a rawgate noise model, newer format, corrupt, or inconsistent.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"noise model not found: {path}")
        return cls._read_zip(path, path)

    @classmethod
    def _read_zip(cls, source, path) -> "NoiseModel":
        try:
            with zipfile.ZipFile(source) as zf:
                meta = read_manifest(
                    zf, "meta.json", fmt=MODEL_FORMAT, max_version=MODEL_VERSION, path=path,
                    what="noise model", missing="is not a rawgate noise model (no meta.json)",
                    error=ModelError,
                )
                _check_meta_hash(meta, path)
                arrays: dict[str, np.ndarray | None] = {}
                for name in _ARRAYS:
                    if name not in meta["sha256"]:
                        arrays[name] = None
                        continue
                    data = zf.read(f"{name}.npy")
                    if hashlib.sha256(data).hexdigest() != meta["sha256"][name]:
                        raise ModelError(f"{path}: {name} fails its checksum (file corrupted)")
                    arrays[name] = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
        except ModelError:
            raise
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
            raise ModelError(f"{path} is corrupt or truncated: {e}") from e
        for req in ("offset_adu", "gain_e_per_adu", "read_noise_e", "bad_pixels"):
            if arrays.get(req) is None:
                raise ModelError(f"{path} lacks the {req} map")
        model = cls(
            identity=CameraIdentity.from_dict(meta["identity"]),
            created=meta["created"],
            estimated=bool(meta.get("estimated", False)),
            source=meta.get("source", "") or str(path),
            fit_quality=meta.get("fit_quality", {}),
            emva=meta.get("emva", {}),
            **arrays,  # type: ignore[arg-type]
        )
        if meta["model_sha256"] != model.sha256:
            raise ModelError(f"{path}: content hash mismatch (file corrupted)")
        return model

    def summary(self) -> dict[str, Any]:
        """Identity, dates and robust statistics of each map over good pixels (for reports)."""
        from .fit import map_statistics

        good = self.bad_pixels == 0
        return {
            "identity": self.identity.to_dict(),
            "created": self.created,
            "estimated": self.estimated,
            "shape": list(self.shape),
            "bad_pixels": int((~good).sum()),
            "bad_pixel_fraction": float((~good).mean()),
            "maps": map_statistics(self),
            "emva": self.emva,
            "fit_quality": self.fit_quality,
            "sha256": self.sha256,
        }
