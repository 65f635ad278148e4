"""``rawgate learned train``: a real training run on generated frames, checkpoints, Ctrl-C and
--resume (the resumed run ends with the same weights as an uninterrupted one)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

pytest.importorskip("compressai", reason="the learned extra (make test installs it)")

from rawgate.calibration import scenes  # noqa: E402
from rawgate.calibration.simulation import make_sensor_truth, render_frames  # noqa: E402
from rawgate.codecs import get_codec  # noqa: E402

RAWGATE = [sys.executable, "-m", "rawgate.daemon.cli"]
ARGS = ["--arch", "bmshj2018-factorized", "--sizes", "N=8,M=12", "--patch", "64", "--batch", "2", "--lr", "1e-3",
        "--mapping", "range"]


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    truth = make_sensor_truth((128, 128), seed=5)
    sc = scenes.dense_cells((128, 128), seed=2)
    tifffile.imwrite(d / "frames.tif", render_frames(truth, sc.flux, sc.exposure_ms, 3, np.random.default_rng(1)))
    return d / "frames.tif"


def _weights(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def test_train_interrupt_and_resume(frames, tmp_path):
    full, cut = tmp_path / "full.pt", tmp_path / "cut.pt"
    r = subprocess.run([*RAWGATE, "learned", "train", str(frames), "--out", str(full), "--steps", "40", *ARGS],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trained bmshj2018-factorized" in r.stdout and _weights(full)["extra"]["training"]["step"] == 40

    # Ctrl-C once the first checkpoint (step 4) is on disk: saved, exit 130
    p = subprocess.Popen([*RAWGATE, "learned", "train", str(frames), "--out", str(cut), "--steps", "40",
                          "--every", "4", *ARGS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    while not cut.exists() and time.monotonic() - t0 < 120 and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    text = p.communicate(timeout=120)[0]
    assert p.returncode == 130, text
    stopped = _weights(cut)["extra"]["training"]["step"]
    assert 4 <= stopped < 40 and f"interrupted at step {stopped}" in " ".join(text.split())

    r = subprocess.run([*RAWGATE, "learned", "train", str(frames), "--out", str(cut), "--resume"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming {cut} at step {stopped} of 40" in " ".join(r.stdout.split())
    a, b = _weights(full), _weights(cut)
    assert [h[0] for h in b["extra"]["training"]["history"]] == list(range(1, 41))
    for k, v in a["state_dict"].items():  # the same weights as the run that was never stopped
        assert np.array_equal(v.numpy(), b["state_dict"][k].numpy()), k

    # the checkpoint codes frames
    x = tifffile.imread(frames)[0]
    c = get_codec(f"learned:weights={cut},mapping=range,tile=64")
    assert c.decode(c.encode(x)).shape == x.shape


def test_bad_training_input(frames, tmp_path):
    r = subprocess.run([*RAWGATE, "learned", "train", str(frames), "--out", str(tmp_path / "x.pt"), "--resume"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no checkpoint" in r.stdout + r.stderr
    r = subprocess.run([*RAWGATE, "learned", "train", str(frames), "--out", str(tmp_path / "x.pt"), "--patch", "256",
                        *ARGS[:4]], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "smaller than the 256" in " ".join((r.stdout + r.stderr).split())


def test_train_the_3d_model_on_stacks_from_the_command_line(tmp_path):
    """`rawgate learned train STACK… --arch factorized3d`: trained on Z stacks (each file one
    volume), the checkpoint codes a stack as volumes; a single frame is refused."""
    truth = make_sensor_truth((96, 96), seed=5)
    paths = []
    for s in range(2):
        sc = scenes.nuclei_3d((8, 96, 96), seed=s)
        rng = np.random.default_rng(s)
        stack = np.stack([render_frames(truth, sc.flux[k], sc.exposure_ms, 1, rng)[0] for k in range(8)])
        tifffile.imwrite(tmp_path / f"s{s}.tif", stack)
        paths.append(str(tmp_path / f"s{s}.tif"))
    out = tmp_path / "v.pt"
    args = ["--arch", "factorized3d", "--sizes", "N=8,M=12", "--patch", "64", "--patch-z", "8", "--batch", "2",
            "--lr", "1e-3", "--mapping", "range", "--steps", "12"]
    r = subprocess.run([*RAWGATE, "learned", "train", *paths, "--out", str(out), *args],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trained factorized3d" in r.stdout and _weights(out)["extra"]["training"]["patch_z"] == 8
    x = tifffile.imread(paths[0])
    c = get_codec(f"learned:arch=factorized3d,weights={out},mapping=range,tile=64,zchunk=8")
    assert c.decode(c.encode(x)).shape == x.shape
    tifffile.imwrite(tmp_path / "flat.tif", x[0])
    r = subprocess.run([*RAWGATE, "learned", "train", str(tmp_path / "flat.tif"), "--out", str(tmp_path / "y.pt"),
                        *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "trains on Z stacks" in r.stdout + r.stderr
