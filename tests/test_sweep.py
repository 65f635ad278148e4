"""Streaming statistics, saved sweeps, and interrupted sweeps."""

from __future__ import annotations

import tracemalloc
import zipfile

import numpy as np
import pytest

from rawgate.calibration.instruments import InstrumentError, SimulatedInstrument
from rawgate.calibration.sweep import SweepError, accumulate_level, load_sweep, run_sweep


def test_streaming_statistics_equal_numpy_on_the_same_frames():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 65535, size=(37, 20, 30), dtype=np.uint16)
    lv = accumulate_level(iter(frames), kind="light", light_level=0.5, exposure_ms=3.0, adc_max=65535)
    f = frames.astype(np.float64)
    np.testing.assert_allclose(lv.mean_adu, f.mean(0), rtol=1e-6)
    np.testing.assert_allclose(lv.var_adu2, f.var(0, ddof=1), rtol=1e-5)
    np.testing.assert_array_equal(lv.n_clipped, (frames == 65535).sum(0) + (frames == 0).sum(0))
    d = f[0] - f[1]
    assert lv.pair_var_adu2 == pytest.approx((d**2).mean() / 2 - d.mean() ** 2 / 2)
    # N = 2: the generalised global variance is exactly EMVA's pair formula
    lv2 = accumulate_level(iter(frames[:2]), kind="light", light_level=1, exposure_ms=1, adc_max=65535)
    assert lv2.global_temporal_var == pytest.approx(lv2.pair_var_adu2, rel=1e-6)


def test_memory_does_not_grow_with_frames_per_level():
    frame = np.zeros((256, 256), np.uint16)

    def peak(n):
        tracemalloc.start()
        accumulate_level((frame for _ in range(n)), kind="dark", light_level=0, exposure_ms=1, adc_max=65535)
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return p

    small, large = peak(10), peak(400)
    assert large < small * 1.2  # independent of N (400 frames would be 52 MB)
    assert large < 12 * frame.size * 8  # a handful of int64/float64 per-pixel accumulators


def test_saved_sweep_round_trips_and_is_memory_mapped(default_sweep):
    _, sweep, path = default_sweep
    again = load_sweep(path)
    assert again.identity == sweep.identity
    assert len(again.levels) == len(sweep.levels) == 3 + 24
    assert isinstance(again.levels[0].mean_adu, np.memmap)
    np.testing.assert_array_equal(again.levels[5].var_adu2, sweep.levels[5].var_adu2)
    assert again.plan["frames_per_level"] == 100


def test_camera_failure_mid_sweep_leaves_nothing(tmp_path, small_plan):
    inst = SimulatedInstrument(seed=1, shape=(32, 32))
    inst.scope.fail_after_frames = 100
    out = tmp_path / "s.rgsweep"
    with pytest.raises(InstrumentError, match="failed while snapping"):
        run_sweep(inst, small_plan, out)
    assert list(tmp_path.iterdir()) == []
    assert inst.scope.intensity_percent == 0.0  # light switched off afterwards


def test_ctrl_c_mid_sweep_leaves_nothing(tmp_path, small_plan):
    inst = SimulatedInstrument(seed=1, shape=(32, 32))

    def interrupt(p):
        if p.done == 150:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(inst, small_plan, tmp_path / "s.rgsweep", progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_or_corrupt_sweep_files_are_refused(tmp_path, default_sweep):
    _, _, path = default_sweep
    with pytest.raises(SweepError, match="not found"):
        load_sweep(tmp_path / "missing.rgsweep")
    # a zip without manifest: what an interrupted writer would have produced
    partial = tmp_path / "p.rgsweep"
    with zipfile.ZipFile(partial, "w") as zf:
        zf.writestr("level000_mean_adu.npy", b"x")
    with pytest.raises(SweepError, match="did not complete"):
        load_sweep(partial)
    truncated = tmp_path / "t.rgsweep"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SweepError, match="corrupt or truncated"):
        load_sweep(truncated)
    (tmp_path / "n.rgsweep").write_text("hello")
    with pytest.raises(SweepError):
        load_sweep(tmp_path / "n.rgsweep")


def test_processes_holding_a_core_exit_cleanly(tmp_path):
    """MMCore delivers events on a native thread; without releasing it before interpreter
    finalization the process aborted (exit 134) in most runs. Closed or not, it must exit 0."""
    import subprocess
    import sys

    script = tmp_path / "s.py"
    script.write_text(
        "import sys\n"
        "from rawgate.calibration.instruments import SimulatedInstrument\n"
        "inst = SimulatedInstrument(seed=1, shape=(16, 16))\n"
        "inst.set_light(0.5)\ninst.snap(2)\n"
        "if sys.argv[1] == 'close':\n    inst.close()\n"
    )
    codes = [
        subprocess.run([sys.executable, str(script), mode], capture_output=True, timeout=60).returncode
        for mode in ("close", "leave") * 4
    ]
    assert codes == [0] * 8
