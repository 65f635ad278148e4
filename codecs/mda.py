"""Code frames as the camera delivers them: a pymmcore-plus MDA output handler.

``core.mda.run(sequence, output=RawgateWriter("acq/cells.ome.tif", "noisecal:step=2",
noise_model=model))`` writes a rawgate OME-TIFF while the acquisition runs: each frame is coded
as it arrives (the OME-TIFF writer pulls planes one at a time, in a bounded window of threads),
the file appears under its name only once complete (temporary file, fsync, rename), and the
completeness handshake ``{name}.done`` is written after it — the daemon then only verifies,
checks ε and archives. Nothing is written under the final name if a frame never arrives
(a cancelled acquisition): the error says which.

The handler knows pymmcore-plus's protocol (``sequenceStarted``, ``frameReady``,
``sequenceFinished``, called in order from pymmcore-plus's relay thread) and useq's events;
it imports neither. Frames that arrive faster than they are coded wait in memory: ``stats``
reports the peak.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .base import Codec, CodecError

__all__ = ["MDAWriterError", "RawgateWriter", "HANDSHAKE_SUFFIX"]

_log = logging.getLogger("rawgate.mda")
#: the file that says an acquisition is complete (the daemon's default sentinel, ``{name}.done``)
HANDSHAKE_SUFFIX = ".done"
#: MDA axes rawgate files carry, and their OME letters (positions and grids: one writer each)
_OME = {"t": "T", "c": "C", "z": "Z"}


class MDAWriterError(CodecError):
    """The acquisition cannot be written (an axis rawgate files cannot hold, a missing frame)."""


class _LiveStack:
    """A :class:`~rawgate.codecs.planes.PlaneStack` fed by the MDA: ``plane(i)`` waits for frame
    ``i`` and hands it over (not kept once taken)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, axes: str, metadata: dict[str, Any],
                 physical_sizes: dict[str, float]) -> None:
        self.shape, self.dtype, self.axes = shape, dtype, axes
        self.metadata, self.physical_sizes = metadata, physical_sizes
        self._frames: dict[int, np.ndarray] = {}
        self._cond = threading.Condition()
        self._ended = False
        self.peak_waiting = 0

    @property
    def n_planes(self) -> int:
        return int(np.prod(self.shape[:-2], dtype=np.int64))

    def put(self, index: int, img: np.ndarray) -> None:
        with self._cond:
            if index in self._frames:
                raise MDAWriterError(f"frame {index} arrived twice")
            self._frames[index] = img
            self.peak_waiting = max(self.peak_waiting, len(self._frames))
            self._cond.notify_all()

    def end(self) -> None:
        """No more frames come: a plane still missing fails the write."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def plane(self, index: int) -> np.ndarray:
        with self._cond:
            while index not in self._frames:
                if self._ended:
                    raise MDAWriterError(f"frame {index} of {self.n_planes} never arrived: the acquisition "
                                         "ended early; nothing was written under the final name")
                self._cond.wait()
            return self._frames.pop(index)

    def close(self) -> None:
        self.end()


class RawgateWriter:
    """A pymmcore-plus MDA output handler writing a rawgate OME-TIFF as frames arrive.

    Parameters
    ----------
    path
        The ``.ome.tif`` to write (its folder is created).
    codec
        Codec spec, config or object (``"noisecal:step=2"``, ``"zstd"``).
    noise_model
        The camera's noise model, for ``noisecal``.
    embed_model
        Store the model's maps in the file (default) or only its SHA-256 (an archive that keeps
        models once; see :func:`~rawgate.codecs.containers.write_ome_tiff`).
    handshake
        Write ``{name}.done`` beside the file once it is complete.

    Attributes
    ----------
    stats
        ``frames`` received, ``peak_waiting`` (frames waiting to be coded at once), ``seconds``
        from the first frame to the file on disk, ``path``.
    error
        What went wrong (also raised by :meth:`sequenceFinished` and :meth:`result`), or None.
    """

    def __init__(self, path: str | Path, codec: Codec | str | dict = "noisecal:step=2", *,
                 noise_model: Any = None, embed_model: bool = True, handshake: bool = True) -> None:
        from .base import get_codec

        self.path = Path(path)
        self.codec = codec if isinstance(codec, Codec) else get_codec(codec)
        self.noise_model, self.embed_model, self.handshake = noise_model, embed_model, handshake
        self._letters: list[str] = []   # MDA axis letters of the file's leading axes, outer first
        self._sizes: dict[str, int] = {}
        self._meta: dict[str, Any] = {}
        self._z_step: float | None = None
        self._stack: _LiveStack | None = None
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self.error: BaseException | None = None
        self.stats: dict[str, Any] = {"frames": 0, "peak_waiting": 0, "seconds": None, "path": str(self.path)}

    # ------------------------------------------------------------------ pymmcore-plus's protocol
    def sequenceStarted(self, sequence: Any, meta: Any = None) -> None:  # noqa: N802 - the protocol's name
        sizes = {str(k): int(v) for k, v in dict(getattr(sequence, "sizes", {})).items() if int(v) > 0}
        extra = sorted(a for a, n in sizes.items() if a not in _OME and n > 1)
        if extra:
            self.error = MDAWriterError(f"{self.path.name}: axes {extra} (positions, grid) need one writer each; "
                                        "a rawgate file holds T, C and Z")
            return
        order = str(getattr(sequence, "axis_order", "tpgcz"))
        self._letters = [a for a in order if a in _OME and sizes.get(a, 0) > 0]
        self._sizes = {a: sizes[a] for a in self._letters}
        z_plan = getattr(sequence, "z_plan", None)
        self._z_step = float(getattr(z_plan, "step", 0) or 0) or None
        try:
            self._meta = {"MDASequence": sequence.model_dump(mode="json")}
        except Exception:  # noqa: BLE001 - metadata is a courtesy, never a reason to lose frames
            self._meta = {}

    def frameReady(self, img: np.ndarray, event: Any, meta: Any = None) -> None:  # noqa: N802
        if self.error is not None:
            return
        try:
            if self._stack is None:
                self._start(np.asarray(img), meta)
            index = 0
            for a in self._letters:
                i = int(dict(getattr(event, "index", {})).get(a, 0))
                if not 0 <= i < self._sizes[a]:
                    raise MDAWriterError(f"frame index {a}={i} outside the sequence's {self._sizes[a]}")
                index = index * self._sizes[a] + i
            assert self._stack is not None
            self._stack.put(index, np.array(img, copy=True))
            self.stats["frames"] += 1
        except BaseException as e:  # noqa: BLE001 - kept and raised at the end of the sequence
            self.error = e
            if self._stack is not None:
                self._stack.end()

    def sequenceFinished(self, sequence: Any = None) -> None:  # noqa: N802
        """Wait for the file; a failure is logged here (this runs in pymmcore-plus's relay
        thread) and raised by :meth:`result`."""
        try:
            self.result()
        except Exception as e:  # noqa: BLE001
            _log.error("rawgate MDA writer: %s", e)

    # ------------------------------------------------------------------ the writer
    def _start(self, first: np.ndarray, meta: Any) -> None:
        from .containers import write_ome_tiff

        shape = tuple(self._sizes[a] for a in self._letters) + tuple(first.shape)
        axes = "".join(_OME[a] for a in self._letters) + "YX"
        sizes: dict[str, float] = {}
        px = (meta or {}).get("pixel_size_um") if isinstance(meta, dict) else None
        if px:
            sizes.update(X=float(px), Y=float(px))
        if self._z_step and "Z" in axes:
            sizes["Z"] = self._z_step
        self._stack = _LiveStack(shape, first.dtype, axes, self._meta, sizes)
        self._t0 = time.perf_counter()

        def write() -> None:
            try:
                write_ome_tiff(self.path, self._stack, self.codec, noise_model=self.noise_model,
                               embed_model=self.embed_model)
                if self.handshake:
                    done = self.path.with_name(self.path.name + HANDSHAKE_SUFFIX)
                    done.write_text(f"written by rawgate's MDA writer: {self.stats['frames']} frame(s)\n")
                self.stats["seconds"] = time.perf_counter() - self._t0
            except BaseException as e:  # noqa: BLE001 - raised by result()
                self.error = e

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=write, name=f"rawgate-mda-{self.path.name}", daemon=True)
        self._thread.start()

    def result(self, timeout_s: float | None = None) -> Path:
        """Wait for the file (every frame received so far coded and written): its path, or the
        error that stopped it."""
        if self._stack is not None:
            self._stack.end()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise MDAWriterError(f"{self.path.name}: still writing after {timeout_s} s")
        if self._stack is not None:
            self.stats["peak_waiting"] = self._stack.peak_waiting
        if self.error is not None:
            raise self.error
        if self._stack is None:
            raise MDAWriterError(f"{self.path.name}: the acquisition delivered no frame")
        return self.path
