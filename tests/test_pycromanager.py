"""PycromanagerInstrument over a STAND-IN core (pymmcore-plus + the real DemoCamera adapter).

No Micro-Manager GUI/Java runtime runs in CI, so the pycromanager ``Core()`` is replaced by
:class:`StandInPycromanagerCore` (see ``tests/pycromanager_standin.py``), which exposes the
same snake_case API over a real ``CMMCorePlus``. Only :meth:`PycromanagerInstrument.connect`
touches the real pycromanager package (its failure path: nothing listening on the port).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pymmcore_plus import CMMCorePlus

from rawgate.calibration.fit import fit_sweep
from rawgate.calibration.instruments import Instrument, InstrumentError, LightControl
from rawgate.calibration.instruments.pycromanager import PycromanagerInstrument, _roi, _str_list
from rawgate.calibration.sweep import SweepPlan, run_sweep

try:
    from tests.pycromanager_standin import StandInPycromanagerCore
except ImportError:  # tests/ is on sys.path (pytest's default rootdir-less import mode)
    from pycromanager_standin import StandInPycromanagerCore

LIGHT = LightControl(device="Camera", property_name="Photon Flux", dark_value=2.0, max_value=5000.0)


@pytest.fixture
def mmc() -> Iterator[CMMCorePlus]:
    core = CMMCorePlus()
    core.loadSystemConfiguration()  # DemoCamera config (mm-test-adapters)
    core.setProperty("Camera", "Mode", "Noise")
    core.setROI(0, 0, 64, 64)
    yield core
    core.unloadAllDevices()


@pytest.fixture
def inst(mmc: CMMCorePlus) -> PycromanagerInstrument:
    return PycromanagerInstrument(StandInPycromanagerCore(mmc), LIGHT)


def test_is_an_instrument(inst: PycromanagerInstrument) -> None:
    assert isinstance(inst, Instrument)
    assert inst.camera == "Camera"


def test_identity(inst: PycromanagerInstrument) -> None:
    ident = inst.identity()
    assert ident.name == "DemoCamera-MultiMode"
    assert ident.serial == "V1.0"  # CameraID: DemoCamera has no SerialNumber
    assert ident.bit_depth == 16
    assert ident.binning == 1
    assert ident.roi == (0, 0, 64, 64)
    assert ident.readout_mode == "Noise"


def test_snap_shape_dtype(inst: PycromanagerInstrument) -> None:
    inst.set_exposure(5.0)
    frames = inst.snap(3)
    assert frames.shape == (3, 64, 64)
    assert frames.dtype == np.uint16
    assert not np.array_equal(frames[0], frames[1])  # distinct frames, not one copied
    assert inst.snap(0).shape == (0, 64, 64)


@pytest.mark.parametrize("level", [0.0, 0.25, 1.0])
def test_set_light_sets_property(
    inst: PycromanagerInstrument, mmc: CMMCorePlus, level: float
) -> None:
    inst.set_light(level)
    want = LIGHT.dark_value + level * (LIGHT.max_value - LIGHT.dark_value)
    assert float(mmc.getProperty("Camera", "Photon Flux")) == pytest.approx(want, abs=1e-3)


def test_bridge_value_shapes() -> None:
    """ROI as a Rectangle-like object or a 4-sequence; device lists as StrVector or iterable."""
    from types import SimpleNamespace

    assert _roi(SimpleNamespace(x=1, y=2, width=30, height=40)) == (1, 2, 30, 40)
    assert _roi([1, 2, 30, 40]) == (1, 2, 30, 40)
    vec = SimpleNamespace(size=lambda: 2, get=lambda i: ["Camera", "LED"][i])
    assert _str_list(vec) == ["Camera", "LED"]
    assert _str_list(("Camera", "LED")) == ["Camera", "LED"]


def test_set_light_out_of_range(inst: PycromanagerInstrument) -> None:
    with pytest.raises(ValueError):
        inst.set_light(1.5)


def test_exposure(inst: PycromanagerInstrument, mmc: CMMCorePlus) -> None:
    inst.set_exposure(12.5)
    assert mmc.getExposure() == pytest.approx(12.5)


def test_missing_light_device(mmc: CMMCorePlus) -> None:
    with pytest.raises(InstrumentError, match="not loaded"):
        PycromanagerInstrument(
            StandInPycromanagerCore(mmc), LightControl(device="NoSuchLamp", property_name="X")
        )
    with pytest.raises(InstrumentError, match="no property"):
        PycromanagerInstrument(
            StandInPycromanagerCore(mmc), LightControl(device="Camera", property_name="Nope")
        )


def test_shutter_light(mmc: CMMCorePlus) -> None:
    inst = PycromanagerInstrument(
        StandInPycromanagerCore(mmc), LightControl(shutter="White Light Shutter")
    )
    assert not mmc.getAutoShutter()
    inst.set_light(0.0)
    assert not mmc.getShutterOpen("White Light Shutter")
    inst.set_light(0.5)
    assert mmc.getShutterOpen("White Light Shutter")


def test_snap_failure_names_camera(mmc: CMMCorePlus) -> None:
    class Broken(StandInPycromanagerCore):
        def snap_image(self) -> None:
            raise RuntimeError("Camera snap timed out")

    inst = PycromanagerInstrument(Broken(mmc), LIGHT)
    with pytest.raises(InstrumentError, match="camera 'Camera'.*snap timed out"):
        inst.snap(2)


# pyjavaz's socket thread re-raises its handshake timeout (plus "cannot join current thread")
# in the background; the caller still gets a normal exception, which connect() wraps.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_connect_nothing_listening() -> None:
    pytest.importorskip("pycromanager")
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(InstrumentError, match=f"no running Micro-Manager on port {port}"):
        PycromanagerInstrument.connect(LIGHT, port=port, timeout_ms=200)
    assert time.monotonic() - t0 < 10.0


def test_connect_without_pycromanager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycromanager", None)  # import fails
    with pytest.raises(InstrumentError, match="pycromanager is not installed"):
        PycromanagerInstrument.connect(LIGHT)


@pytest.mark.parametrize("pcf", [1.0, 2.5])
def test_sweep_and_fit_end_to_end(
    inst: PycromanagerInstrument, mmc: CMMCorePlus, tmp_path: Path, pcf: float
) -> None:
    mmc.setProperty("Camera", "Photon Conversion Factor", pcf)
    read_noise_e = float(mmc.getProperty("Camera", "ReadNoise (electrons)"))
    plan = SweepPlan(
        dark_exposures_ms=(0.0,),
        dark_frames=8,
        light_exposure_ms=10.0,
        light_levels=8,
        frames_per_level=8,
    )
    sweep = run_sweep(inst, plan, tmp_path / "sweep.zip")
    emva = fit_sweep(sweep).emva
    assert emva.system_gain_adu_per_e == pytest.approx(1.0 / pcf, rel=0.02)
    assert emva.temporal_dark_noise_e == pytest.approx(read_noise_e, rel=0.05)
