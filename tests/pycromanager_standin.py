"""STAND-IN, not pycromanager.

Exposes the same snake_case API as ``pycromanager.Core()`` over a real pymmcore-plus
``CMMCorePlus`` loaded with the real DemoCamera adapter; used because no Micro-Manager
GUI/Java runtime runs in CI. Return values mimic what pycromanager's ZMQ bridge hands back
(a TaggedImage whose ``pix`` is a flat 1-D array, a ``java.awt.Rectangle``-like ROI, a
``StrVector``-like device list) so that the adapter's translation code really runs.
Only the calls used by :class:`rawgate.calibration.instruments.pycromanager.PycromanagerInstrument`
are translated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pymmcore_plus import CMMCorePlus

__all__ = ["StandInPycromanagerCore", "StandInTaggedImage", "StandInRectangle", "StandInStrVector"]


@dataclass
class StandInTaggedImage:
    """Like pycromanager's TaggedImage: ``pix`` flat (1-D), ``tags`` a dict."""

    pix: np.ndarray
    tags: dict[str, Any]


@dataclass
class StandInRectangle:
    """Like ``java.awt.Rectangle`` over the bridge: public ``x``, ``y``, ``width``, ``height``."""

    x: int
    y: int
    width: int
    height: int


class StandInStrVector:
    """Like ``mmcorej.StrVector`` over the bridge: ``size()`` and ``get(i)``, not iterable."""

    def __init__(self, items: Any) -> None:
        self._items = [str(s) for s in items]

    def size(self) -> int:
        return len(self._items)

    def get(self, i: int) -> str:
        return self._items[i]

    __iter__ = None  # the Java shadow is not a Python iterable


class StandInPycromanagerCore:
    """STAND-IN, not pycromanager: exposes the same snake_case API as ``pycromanager.Core()``
    over a real pymmcore-plus ``CMMCorePlus`` loaded with the real DemoCamera adapter; used
    because no Micro-Manager GUI/Java runtime runs in CI.

    Parameters
    ----------
    core
        A loaded ``CMMCorePlus``.
    """

    def __init__(self, core: CMMCorePlus) -> None:
        from rawgate.calibration.instruments.mmcore import release_at_exit

        self._c = core
        release_at_exit(core)  # a real core: stop its callback thread before the test process exits

    def get_camera_device(self) -> str:
        return self._c.getCameraDevice()

    def set_camera_device(self, label: str) -> None:
        self._c.setCameraDevice(label)

    def get_loaded_devices(self) -> StandInStrVector:
        return StandInStrVector(self._c.getLoadedDevices())

    def has_property(self, label: str, name: str) -> bool:
        return self._c.hasProperty(label, name)

    def get_property(self, label: str, name: str) -> str:
        return self._c.getProperty(label, name)

    def set_property(self, label: str, name: str, value: bool | int | float | str) -> None:
        self._c.setProperty(label, name, value)

    def get_device_name(self, label: str) -> str:
        return self._c.getDeviceName(label)

    def get_device_library(self, label: str) -> str:
        return self._c.getDeviceLibrary(label)

    def set_exposure(self, label: str, exposure_ms: float) -> None:
        self._c.setExposure(label, exposure_ms)

    def set_shutter_open(self, label: str, state: bool) -> None:
        self._c.setShutterOpen(label, state)

    def set_auto_shutter(self, state: bool) -> None:
        self._c.setAutoShutter(state)

    def wait_for_system(self) -> None:
        self._c.waitForSystem()

    def snap_image(self) -> None:
        self._c.snapImage()

    def get_tagged_image(self) -> StandInTaggedImage:
        img = self._c.getImage()
        h, w = img.shape
        return StandInTaggedImage(
            pix=img.ravel().copy(),
            tags={"Width": w, "Height": h, "Camera": self._c.getCameraDevice()},
        )

    def get_image_width(self) -> int:
        return self._c.getImageWidth()

    def get_image_height(self) -> int:
        return self._c.getImageHeight()

    def get_image_bit_depth(self) -> int:
        return self._c.getImageBitDepth()

    def get_roi(self) -> StandInRectangle:
        x, y, w, h = self._c.getROI()
        return StandInRectangle(int(x), int(y), int(w), int(h))
