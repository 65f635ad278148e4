"""The one small Protocol every camera source implements."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["CameraIdentity", "Instrument", "InstrumentError"]


class InstrumentError(RuntimeError):
    """A camera or light source could not be reached or failed mid-operation."""


@dataclass(frozen=True)
class CameraIdentity:
    """What a noise model is valid for.

    Attributes
    ----------
    name, serial
        Camera model name and serial number (or the best identifier the adapter exposes).
    bit_depth
        Significant bits per pixel (12 for a 12-bit camera, even when stored in uint16).
    binning
        Binning factor (square).
    roi
        ``(x, y, width, height)`` in unbinned sensor pixels... as Micro-Manager reports it.
    readout_mode
        Camera readout mode (e.g. "Standard", "Fast scan"), or "" when not exposed.
    """

    name: str
    serial: str
    bit_depth: int
    binning: int
    roi: tuple[int, int, int, int]
    readout_mode: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["roi"] = list(self.roi)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CameraIdentity":
        return cls(
            name=str(d["name"]),
            serial=str(d["serial"]),
            bit_depth=int(d["bit_depth"]),
            binning=int(d["binning"]),
            roi=tuple(int(v) for v in d["roi"]),  # type: ignore[arg-type]
            readout_mode=str(d.get("readout_mode", "")),
        )

    def mismatches(self, other: "CameraIdentity", labels: tuple[str, str] = ("model", "camera")) -> list[str]:
        """Fields on which a frame from ``other`` cannot use a model made for ``self``, worded
        with ``labels`` for the two sides (``("model A", "model B")`` when comparing models)."""
        out = []
        for f in ("name", "serial", "bit_depth", "binning", "roi", "readout_mode"):
            a, b = getattr(self, f), getattr(other, f)
            if a != b:
                out.append(f"{f}: {labels[0]} has {a!r}, {labels[1]} has {b!r}")
        return out


@runtime_checkable
class Instrument(Protocol):
    """A camera plus a controllable light, as the photon-transfer sweep needs it.

    Units: exposure in milliseconds; light level as a fraction in ``[0, 1]`` of the configured
    light range (0 = dark: light off or shutter closed).
    """

    def identity(self) -> CameraIdentity: ...

    def set_exposure(self, exposure_ms: float) -> None: ...

    def set_light(self, level: float) -> None: ...

    def snap(self, n: int) -> np.ndarray:
        """Acquire ``n`` frames; returns ``(n, H, W)`` in the camera's dtype."""
        ...

    def close(self) -> None: ...
