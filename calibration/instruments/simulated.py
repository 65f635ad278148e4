"""rawgate's simulated microscope: an sCMOS camera and an LED as pymmcore-plus Python devices
inside a real ``UniMMCore``, so the simulated path exercises the same MMCore API as hardware.

The physics lives in :mod:`rawgate.calibration.simulation`; this module only adapts it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from pymmcore_plus.experimental.unicore import (
    ShutterDevice,
    SimpleCameraDevice,
    UniMMCore,
    pymm_property,
)

from ..scenes import dense_cells, microspheres
from ..simulation import SensorTruth, flat_field, make_sensor_truth, render_frames
from .mmcore import LightControl, MMCoreInstrument

__all__ = [
    "Scene",
    "SCENES",
    "SimulatedMicroscope",
    "SimulatedSCMOSCamera",
    "SimulatedLED",
    "SimulatedInstrument",
]

#: A scene maps the sensor shape to relative photon flux per pixel (1 = full LED flux).
Scene = Callable[[tuple[int, int]], np.ndarray]



def _relative_flux(flux: np.ndarray) -> np.ndarray:
    """Flux scaled to a maximum of 1 (the LED sets the absolute level)."""
    top = float(flux.max())
    return flux / top if top > 0 else flux


def _microspheres(shape: tuple[int, int]) -> np.ndarray:
    """Phase-contrast microspheres (:func:`rawgate.calibration.scenes.microspheres`, seed 0),
    relative flux in [0, 1] (background ≈ 0.6, halo peaks 1)."""
    return _relative_flux(microspheres(shape, seed=0).flux)


def _dense_cells(shape: tuple[int, int]) -> np.ndarray:
    """Dense fluorescent cells (:func:`rawgate.calibration.scenes.dense_cells`, seed 0),
    relative flux in [0, 1] (background ≈ 0.01)."""
    return _relative_flux(dense_cells(shape, seed=0).flux)


#: Samples that fit the simulated stage's slot, by name (the camera's ``Sample`` property).
#: Calibration uses the flat field; the 2-D benchmark scenes of :mod:`rawgate.calibration.scenes`
#: register here as relative flux (their ground truth comes from calling the scene functions).
SCENES: dict[str, Scene] = {
    "flat field": flat_field,
    "microspheres": _microspheres,
    "dense cells": _dense_cells,
}


@dataclass
class SimulatedMicroscope:
    """Shared state of the simulated stage: the sensor, the LED and the sample in the slot.

    Attributes
    ----------
    truth
        The sensor's ground truth.
    max_photons_per_ms
        Photon flux per pixel at 100 % LED intensity [photons/ms].
    sample
        Name of the sample in the slot (a key of :data:`SCENES`; flat field for calibration).
    """

    truth: SensorTruth
    max_photons_per_ms: float = 5000.0
    sample: str = "flat field"
    intensity_percent: float = 0.0
    shutter_open: bool = False
    seed: int = 0
    fail_after_frames: int | None = None  # fault injection: the camera dies after N frames
    rng: np.random.Generator = field(init=False)
    frames_served: int = field(default=0, init=False)
    _scene: tuple[str, np.ndarray] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed + 1)

    def photons_per_ms(self) -> np.ndarray | float:
        if not self.shutter_open or self.intensity_percent <= 0:
            return 0.0
        if self._scene is None or self._scene[0] != self.sample:  # render once per sample
            self._scene = (self.sample, SCENES[self.sample](self.truth.shape))
        return self.max_photons_per_ms * self.intensity_percent / 100.0 * self._scene[1]


class SimulatedSCMOSCamera(SimpleCameraDevice):
    """A uint16 sCMOS camera with per-pixel offset, gain, read noise and dark current."""

    def __init__(self, scope: SimulatedMicroscope) -> None:
        self._scope = scope
        self._exposure_ms = 10.0
        self._binning = 1
        super().__init__()

    # --- identity as properties, as real adapters expose them
    @pymm_property(is_read_only=True, name="SerialNumber")
    def serial_number(self) -> str:
        return self._scope.truth.serial

    @pymm_property(allowed_values=[12, 16], name="BitDepth")
    def bit_depth(self) -> int:
        return self._scope.truth.bit_depth

    @bit_depth.setter
    def bit_depth(self, value: int) -> None:
        if int(value) != self._scope.truth.bit_depth:
            raise ValueError("the simulated camera's bit depth is fixed when it is built")

    @pymm_property(allowed_values=list(SCENES), name="Sample")
    def sample(self) -> str:
        return self._scope.sample

    @sample.setter
    def sample(self, value: str) -> None:
        if value not in SCENES:
            raise ValueError(f"unknown sample {value!r}; known: {sorted(SCENES)}")
        self._scope.sample = value

    @pymm_property(allowed_values=["Standard"], name="ReadoutMode")
    def readout(self) -> str:
        return "Standard"

    def get_camera_name(self) -> str:
        return "rawgate simulated sCMOS"

    def get_binning(self) -> int:
        return self._binning

    def set_binning(self, value: int) -> None:
        value = int(value)
        if value not in (1, 2, 4):
            raise ValueError(f"binning must be 1, 2 or 4, got {value}")
        self._binning = value
        self._roi = None

    def get_exposure(self) -> float:
        return self._exposure_ms

    def set_exposure(self, exposure: float) -> None:
        self._exposure_ms = float(exposure)

    def sensor_shape(self) -> tuple[int, int]:
        h, w = self._scope.truth.shape
        return (h // self._binning, w // self._binning)

    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16)

    def snap(self, buffer: np.ndarray) -> Mapping:
        s = self._scope
        if s.fail_after_frames is not None and s.frames_served >= s.fail_after_frames:
            raise RuntimeError("simulated camera failure: lost connection to camera")
        render_frames(
            s.truth,
            s.photons_per_ms(),
            self._exposure_ms,
            1,
            s.rng,
            binning=self._binning,
            out=buffer[np.newaxis],
        )
        s.frames_served += 1
        return {"rawgate_simulated": "1"}


class SimulatedLED(ShutterDevice):
    """An LED with an on/off state and an ``Intensity`` property in percent."""

    def __init__(self, scope: SimulatedMicroscope) -> None:
        self._scope = scope
        super().__init__()

    def get_open(self) -> bool:
        return self._scope.shutter_open

    def set_open(self, open: bool) -> None:
        self._scope.shutter_open = bool(open)

    @pymm_property(limits=(0.0, 100.0), name="Intensity")
    def intensity(self) -> float:
        return self._scope.intensity_percent

    @intensity.setter
    def intensity(self, value: float) -> None:
        self._scope.intensity_percent = float(value)


#: Light mapping of the simulated LED (what a user would write in the config).
SIMULATED_LIGHT = LightControl(
    device="LED", property_name="Intensity", dark_value=0.0, max_value=100.0, shutter="LED"
)


class SimulatedInstrument(MMCoreInstrument):
    """The simulated microscope behind a real ``UniMMCore``.

    Parameters
    ----------
    truth
        Sensor to simulate; default a seeded 256² ORCA-like sensor.
    seed
        Seed for the sensor maps (when ``truth`` is None) and the noise stream.
    max_photons_per_ms
        Flux at 100 % LED [photons/pixel/ms].
    binning, roi
        Optional binning and ROI ``(x, y, w, h)`` set through MMCore.
    """

    def __init__(
        self,
        truth: SensorTruth | None = None,
        *,
        seed: int = 0,
        shape: tuple[int, int] = (256, 256),
        bit_depth: int = 16,
        max_photons_per_ms: float = 5000.0,
        binning: int = 1,
        roi: tuple[int, int, int, int] | None = None,
    ) -> None:
        truth = truth or make_sensor_truth(shape, seed=seed, bit_depth=bit_depth)
        self.scope = SimulatedMicroscope(truth, max_photons_per_ms=max_photons_per_ms, seed=seed)
        core = UniMMCore()
        core.loadPyDevice("Camera", SimulatedSCMOSCamera(self.scope))
        core.loadPyDevice("LED", SimulatedLED(self.scope))
        core.initializeAllDevices()
        core.setCameraDevice("Camera")
        core.setShutterDevice("LED")
        if binning != 1:
            core.setProperty("Camera", "Binning", binning)
        if roi is not None:
            core.setROI(*roi)
        super().__init__(core, SIMULATED_LIGHT, camera="Camera")

    @property
    def truth(self) -> SensorTruth:
        return self.scope.truth
