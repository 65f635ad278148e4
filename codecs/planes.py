"""Plane stacks: an image or dataset read one ``(Y, X)`` plane at a time.

A whole acquisition is never held in memory (a Micro-Manager NDTiff file grows to 4 GiB):
readers of acquired data (the daemon's plane readers, for one) return a :class:`PlaneStack`, and
the OME-TIFF writer, the verifier and the ε spot check pull planes from it one by one.
:class:`ArrayStack` wraps an in-memory array in the same interface.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["PlaneStack", "ArrayStack", "as_stack", "iter_planes"]


@runtime_checkable
class PlaneStack(Protocol):
    """An ``(..., Y, X)`` image stack read plane by plane.

    Attributes
    ----------
    shape
        Full shape, leading axes first, ``(Y, X)`` last [pixels].
    dtype
        Pixel type of the camera data (``uint16`` for an sCMOS camera, in ADU).
    axes
        OME axes letters, one per dimension, ending in ``"YX"`` (e.g. ``"TZYX"``).
    metadata
        JSON-serialisable acquisition metadata (Micro-Manager summary metadata, OME), may be empty.
    physical_sizes
        ``{"X": µm, "Y": µm, "Z": µm, "T": s}`` where known.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    metadata: dict[str, Any]
    physical_sizes: dict[str, float]

    @property
    def n_planes(self) -> int:
        """Number of ``(Y, X)`` planes (product of the leading dimensions)."""
        ...

    def plane(self, index: int) -> np.ndarray:
        """Plane ``index`` (C order over the leading axes) as a ``(Y, X)`` array."""
        ...

    def close(self) -> None:
        """Release open files."""
        ...


class ArrayStack:
    """An in-memory (or memory-mapped) array as a :class:`PlaneStack`."""

    def __init__(self, data: np.ndarray, axes: str | None = None, *,
                 metadata: dict[str, Any] | None = None,
                 physical_sizes: dict[str, float] | None = None) -> None:
        a = np.asarray(data)
        if a.ndim < 2:
            raise ValueError(f"need an image or a stack of images, got shape {a.shape}")
        self._data = a
        self.shape = tuple(int(s) for s in a.shape)
        self.dtype = a.dtype
        self.axes = axes or {2: "YX", 3: "TYX", 4: "TZYX", 5: "TCZYX"}.get(a.ndim, "")
        if len(self.axes) != a.ndim:
            raise ValueError(f"axes {self.axes!r} do not fit shape {a.shape}")
        self.metadata = dict(metadata or {})
        self.physical_sizes = dict(physical_sizes or {})

    @property
    def n_planes(self) -> int:
        return int(np.prod(self.shape[:-2], dtype=np.int64))

    def plane(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n_planes:
            raise IndexError(f"plane {index} of {self.n_planes}")
        return np.asarray(self._data.reshape(-1, *self.shape[-2:])[index])

    def close(self) -> None:
        pass


def as_stack(data: Any, axes: str | None = None) -> PlaneStack:
    """``data`` itself when it is a :class:`PlaneStack`, else an :class:`ArrayStack` of it."""
    if isinstance(data, PlaneStack) and not isinstance(data, np.ndarray):
        return data
    return ArrayStack(data, axes)


def iter_planes(stack: PlaneStack) -> Iterator[np.ndarray]:
    """Every plane of ``stack`` in order, one at a time."""
    for i in range(stack.n_planes):
        yield stack.plane(i)
