"""Micro-Manager through pycromanager: the ZMQ bridge to a running Micro-Manager (GUI or headless).

Same behaviour and light-level semantics as :class:`~.mmcore.MMCoreInstrument`, over
pycromanager's snake_case core API (``core.snap_image()``, ``core.get_tagged_image()``...).
The bridge moves pixels at well under 100 MB/s, so frames are pulled one at a time into a
preallocated stack rather than batched on the Java side. ``pycromanager`` is optional
(``pip install rawgate[pycromanager]``) and only imported by :meth:`PycromanagerInstrument.connect`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._protocol import CameraIdentity, InstrumentError
from .mmcore import LightControl

__all__ = ["PycromanagerInstrument", "DEFAULT_PORT"]

DEFAULT_PORT = 4827
"""Micro-Manager's default ZMQ server port (Tools > Options > "Run server on port 4827")."""


def _str_list(v: Any) -> list[str]:
    """A Java ``StrVector`` over the bridge (``size()``/``get(i)``) or any iterable, as strings."""
    if hasattr(v, "size") and hasattr(v, "get"):
        return [str(v.get(i)) for i in range(int(v.size()))]
    return [str(s) for s in v]


def _roi(r: Any) -> tuple[int, int, int, int]:
    """A ``java.awt.Rectangle`` (``x``, ``y``, ``width``, ``height`` fields) or a 4-sequence."""
    if hasattr(r, "width") and hasattr(r, "height"):
        return int(r.x), int(r.y), int(r.width), int(r.height)
    x, y, w, h = r
    return int(x), int(y), int(w), int(h)


class PycromanagerInstrument:
    """An :class:`~rawgate.calibration.instruments.Instrument` over a ``pycromanager.Core()``.

    Parameters
    ----------
    core
        A pycromanager core (``pycromanager.Core()``), or anything with its snake_case API.
    light
        Light-level mapping (same semantics as for :class:`~.mmcore.MMCoreInstrument`).
    camera
        Camera device label; default: the core's current camera.

    Raises
    ------
    InstrumentError
        No camera, a light device that is not loaded, a missing light property, or a core call
        that fails (the bridge dropped, Micro-Manager closed).
    """

    def __init__(self, core: Any, light: LightControl, camera: str | None = None) -> None:
        self.core = core
        self.light = light
        try:
            cam = camera or str(core.get_camera_device() or "")
            if not cam:
                raise InstrumentError(
                    "no camera device is loaded in Micro-Manager (check the hardware "
                    "configuration and that the camera is connected and powered)"
                )
            self.camera = cam
            if camera:
                core.set_camera_device(camera)
            loaded = set(_str_list(core.get_loaded_devices()))
            for dev in (light.device, light.shutter):
                if dev and dev not in loaded:
                    raise InstrumentError(
                        f"light device {dev!r} is not loaded (loaded: {sorted(loaded)})"
                    )
            if (
                light.property_name
                and light.device
                and not core.has_property(light.device, light.property_name)
            ):
                raise InstrumentError(
                    f"device {light.device!r} has no property {light.property_name!r}"
                )
            if light.shutter:
                core.set_auto_shutter(False)
        except InstrumentError:
            raise
        except Exception as e:
            raise InstrumentError(
                f"Micro-Manager (pycromanager) failed while setting up camera "
                f"{camera or '(current)'!r}: {e}"
            ) from e

    @classmethod
    def connect(
        cls,
        light: LightControl,
        camera: str | None = None,
        port: int = DEFAULT_PORT,
        timeout_ms: int = 1000,
    ) -> "PycromanagerInstrument":
        """Connect to a running Micro-Manager through its ZMQ server.

        Parameters
        ----------
        light
            Light-level mapping.
        camera
            Camera device label; default: Micro-Manager's current camera.
        port
            ZMQ server port of Micro-Manager (default 4827).
        timeout_ms
            How long [ms] to wait for the server's handshake. Only the connection is bounded:
            later calls (a long exposure) wait as long as they take.

        Raises
        ------
        InstrumentError
            pycromanager is not installed, or nothing answers on ``port``.
        """
        try:
            from pycromanager import Core
        except ImportError as e:
            raise InstrumentError(
                "pycromanager is not installed: pip install 'rawgate[pycromanager]'"
            ) from e
        try:
            core = Core(port=int(port), timeout=int(timeout_ms))
        except Exception as e:
            raise InstrumentError(
                f"no running Micro-Manager on port {port}: start Micro-Manager with the server "
                f'enabled (Tools > Options > "Run server on port {port}") or pass the right '
                f"port ({e})"
            ) from e
        return cls(core, light, camera)

    def _fail(self, what: str, e: Exception) -> InstrumentError:
        return InstrumentError(f"camera {self.camera!r} (pycromanager) failed while {what}: {e}")

    def _prop(self, name: str) -> str | None:
        if self.core.has_property(self.camera, name):
            return str(self.core.get_property(self.camera, name))
        return None

    def identity(self) -> CameraIdentity:
        c = self.core
        try:
            bit_depth = self._prop("BitDepth")
            name = self._prop("CameraName") or c.get_device_name(self.camera)
            serial = (
                self._prop("SerialNumber")
                or self._prop("CameraID")
                or c.get_device_library(self.camera)
            )
            roi = _roi(c.get_roi())
            return CameraIdentity(
                name=str(name),
                serial=str(serial),
                bit_depth=int(float(bit_depth)) if bit_depth else int(c.get_image_bit_depth()),
                binning=int(float(self._prop("Binning") or 1)),
                roi=roi,
                readout_mode=str(self._prop("ReadoutMode") or self._prop("Mode") or ""),
            )
        except Exception as e:
            raise self._fail("reading its identity", e) from e

    def set_exposure(self, exposure_ms: float) -> None:
        """Set the camera exposure [ms]."""
        try:
            self.core.set_exposure(self.camera, float(exposure_ms))
        except Exception as e:
            raise self._fail(f"setting exposure {exposure_ms} ms", e) from e

    def set_light(self, level: float) -> None:
        """Set the light to ``level`` in ``[0, 1]`` of the configured range (0 = dark)."""
        lc, c = self.light, self.core
        value = lc.value_for(level)
        try:
            if lc.property_name and lc.device:
                c.set_property(lc.device, lc.property_name, value)
            if lc.shutter:
                c.set_shutter_open(lc.shutter, bool(level > 0))
            c.wait_for_system()
        except Exception as e:
            raise InstrumentError(
                f"could not set light level {level} (camera {self.camera!r}): {e}"
            ) from e

    def snap(self, n: int) -> np.ndarray:
        """Acquire ``n`` frames one at a time; returns ``(n, H, W)`` in the camera's dtype."""
        c = self.core
        out: np.ndarray | None = None
        try:
            h, w = int(c.get_image_height()), int(c.get_image_width())
            for i in range(n):
                c.snap_image()
                try:
                    ti = c.get_tagged_image()
                except TypeError:  # headless Python backend: (cam_index, camera, height, width)
                    ti = c.get_tagged_image(0, self.camera, h, w)
                pix = np.asarray(ti.pix)
                tags = ti.tags
                fh, fw = int(tags.get("Height", h)), int(tags.get("Width", w))
                if out is None:
                    out = np.empty((n, fh, fw), pix.dtype)
                out[i] = pix.reshape(fh, fw)
        except Exception as e:
            raise self._fail("snapping", e) from e
        if out is None:
            return np.empty((0, h, w), np.uint16)
        return out

    def close(self) -> None:
        """Leave Micro-Manager running (it belongs to the user); just drop the reference."""
        self.core = None
