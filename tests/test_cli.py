"""The `rawgate` CLI as a user runs it: real subprocesses, real files, real signals."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rawgate.calibration.model import NoiseModel

RAWGATE = [sys.executable, "-m", "rawgate.daemon.cli"]


def run(*args, timeout=300, **kw):
    return subprocess.run([*RAWGATE, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)


def sim_config(tmp_path: Path, shape=(48, 48), frames=12, levels=10) -> Path:
    p = tmp_path / "sim.yaml"
    p.write_text(
        f"calibration:\n  instrument:\n    kind: simulated\n    simulated: {{seed: 3, shape: [{shape[0]}, {shape[1]}]}}\n"
        f"  sweep:\n    dark_exposures_ms: [10, 100, 300]\n    dark_frames: {frames}\n"
        f"    light_levels: {levels}\n    frames_per_level: {frames}\n"
    )
    return p


def only_run_folder(out: Path) -> Path:
    entries = list(out.iterdir())
    assert len(entries) == 1, entries
    return entries[0]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    r = run("calibrate", "-c", sim_config(tmp), "--out", tmp / "out")
    assert r.returncode == 0, r.stderr
    return tmp, only_run_folder(tmp / "out"), r


def test_calibrate_writes_one_complete_folder(calibrated):
    _, folder, r = calibrated
    assert {p.name for p in folder.iterdir()} == {"sweep.rgsweep", "noise_model.rgnoise", "report"}
    assert (folder / "report" / "report.html").is_file()
    summary = json.loads((folder / "report" / "summary.json").read_text())
    assert "system gain K" in r.stdout and "truth: planted_defects_flagged_fraction" in r.stdout
    m = NoiseModel.load(folder / "noise_model.rgnoise")
    assert m.emva["system_gain_adu_per_e"] == pytest.approx(summary["emva"]["system_gain_adu_per_e"])


def test_show_and_json(calibrated):
    _, folder, _ = calibrated
    r = run("calibration", "show", folder / "noise_model.rgnoise")
    assert r.returncode == 0 and "SIM-0003" in r.stdout
    r = run("calibration", "show", "--json", folder / "noise_model.rgnoise")
    assert json.loads(r.stdout)["identity"]["serial"] == "SIM-0003"
    r = run("calibration", "show", "--json", folder)  # the run's folder: its noise_model.rgnoise
    assert r.returncode == 0 and json.loads(r.stdout)["identity"]["serial"] == "SIM-0003"


def test_compare_exit_codes(calibrated, tmp_path):
    _, folder, _ = calibrated
    model = folder / "noise_model.rgnoise"
    assert run("calibration", "compare", model, model).returncode == 0
    m = NoiseModel.load(model)
    drifted = dataclasses.replace(m, gain_e_per_adu=m.gain_e_per_adu * 1.1).save(tmp_path / "d.rgnoise")
    r = run("calibration", "compare", model, drifted)
    assert r.returncode == 1 and "OUT OF TOLERANCE" in r.stdout and "gain changed by +10" in r.stdout
    (tmp_path / "bad.rgnoise").write_bytes(model.read_bytes()[:500])
    r = run("calibration", "compare", model, tmp_path / "bad.rgnoise")
    assert r.returncode == 2 and "corrupt or truncated" in r.stderr


def test_refit_from_saved_sweep(calibrated, tmp_path):
    _, folder, _ = calibrated
    r = run("calibration", "refit", folder / "sweep.rgsweep", "--out", tmp_path / "re")
    assert r.returncode == 0, r.stderr
    again = NoiseModel.load(only_run_folder(tmp_path / "re") / "noise_model.rgnoise")
    first = NoiseModel.load(folder / "noise_model.rgnoise")
    assert again.emva["system_gain_adu_per_e"] == pytest.approx(first.emva["system_gain_adu_per_e"])


def test_democamera_through_config(tmp_path):
    cfg = tmp_path / "demo_cam.yaml"
    cfg.write_text(
        "calibration:\n  instrument:\n    kind: mmcore\n    roi: [0, 0, 64, 64]\n"
        "    properties: {Camera: {Mode: Noise, 'Photon Conversion Factor': 2.0}}\n"
        "    light: {device: Camera, property: Photon Flux, dark_value: 2.0, max_value: 5000.0}\n"
        "  sweep: {dark_exposures_ms: [0.0], dark_frames: 8, light_levels: 8, frames_per_level: 8}\n"
    )
    r = run("calibrate", "-c", cfg, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    folder = only_run_folder(tmp_path / "out")
    assert folder.name.startswith("V1.0_")
    m = NoiseModel.load(folder / "noise_model.rgnoise")
    assert m.emva["system_gain_adu_per_e"] == pytest.approx(0.5, rel=0.02)
    assert m.identity.name == "DemoCamera-MultiMode" and m.shape == (64, 64)


def test_no_camera_is_a_clear_error_and_writes_nothing(tmp_path):
    mm = tmp_path / "nocam.cfg"
    mm.write_text("Device,XY,DemoCamera,DXYStage\nProperty,Core,Initialize,1\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"calibration:\n  output_dir: out\n  instrument:\n    kind: mmcore\n    config_file: {mm}\n"
        "    light: {device: XY, property: Speed, dark_value: 0, max_value: 1}\n"
    )
    r = run("calibrate", "-c", cfg)
    assert r.returncode == 2
    assert "no camera device is loaded" in r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_camera_property_refused_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "calibration:\n  instrument:\n    kind: mmcore\n    properties: {Camera: {Mode: NoSuchMode}}\n"
        "    light: {device: Camera, property: Photon Flux, dark_value: 2, max_value: 5000}\n"
    )
    r = run("calibrate", "-c", cfg, "--out", tmp_path / "out")
    assert r.returncode == 2 and "refused a configured setting" in r.stderr


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM when the test process dies (a killed pytest must not leave a
    # calibration running, as one did once after a CI-style timeout); elsewhere a no-op.
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def test_ctrl_c_mid_sweep_writes_nothing(tmp_path):
    cfg = sim_config(tmp_path, shape=(256, 256), frames=100, levels=24)
    out = tmp_path / "out"
    p = subprocess.Popen([*RAWGATE, "calibrate", "-c", str(cfg), "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=_die_with_parent)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out.exists() and any(out.iterdir())):
            time.sleep(0.1)  # wait until the sweep is writing
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:  # the test failed before the child ended: do not leave it running
            p.kill()
            p.communicate()
    assert p.returncode == 130, stderr
    assert "interrupted" in stderr
    assert list(out.iterdir()) == []


def test_config_validate(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("calibration:\n  sweep:\n    frames_per_level: 0\n  typo: 1\n")
    r = run("config", "validate", bad)
    assert r.returncode == 2
    assert "calibration.sweep.frames_per_level" in r.stderr and "calibration.typo" in r.stderr
    assert run("config", "validate", Path(__file__).parent.parent / "configs" / "example.yaml").returncode == 0


def test_camera_failure_mid_sweep_is_a_clear_error_and_writes_nothing(tmp_path):
    cfg = sim_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("seed: 3,", "seed: 3, fail_after_frames: 100,"))
    r = run("calibrate", "-c", cfg, "--out", tmp_path / "out")
    assert r.returncode == 2
    assert "failed while snapping" in r.stderr and "lost connection" in r.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_saturated_sweep_is_refused_and_writes_nothing(tmp_path):
    cfg = sim_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("seed: 3,", "seed: 3, max_photons_per_ms: 1.0e+7,"))
    r = run("calibrate", "-c", cfg, "--out", tmp_path / "out")
    assert r.returncode == 2 and "saturated" in r.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_mismatched_models_are_refused(calibrated, tmp_path):
    _, folder, _ = calibrated
    m = NoiseModel.load(folder / "noise_model.rgnoise")
    other = dataclasses.replace(m, identity=dataclasses.replace(m.identity, serial="OTHER-CAM"))
    r = run("calibration", "compare", folder / "noise_model.rgnoise", other.save(tmp_path / "o.rgnoise"))
    assert r.returncode == 2 and "different camera configurations" in r.stderr and "OTHER-CAM" in r.stderr
    assert "model B has 'OTHER-CAM'" in " ".join(r.stderr.split())
    # a run folder stands for its model; the title names the folders (every model file has one name)
    r = run("calibration", "compare", folder, folder)
    assert r.returncode == 0, r.stderr
    assert f"model A ({folder.name}/)" in " ".join(r.stdout.split())
