"""The ``learned`` codec: a small CompressAI model trained here (a real rate–distortion loop on
simulated camera frames, seconds), real entropy coding, self-describing streams, the
reconstruction hash, and weights that are only ever read from local files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("compressai", reason="the learned extra (make test installs it)")

from rawgate.calibration import scenes  # noqa: E402
from rawgate.calibration.simulation import make_sensor_truth, render_frames  # noqa: E402
from rawgate.codecs import CorruptStreamError, codec_of, decode_any, get_codec, read_ome_tiff, write_ome_tiff  # noqa: E402
from rawgate.codecs._stream import pack, unpack  # noqa: E402
from rawgate.codecs.learned import (  # noqa: E402
    Learned, WeightsNotFoundError, _MODELS, load_checkpoint, save_checkpoint, zoo_file_name)
from rawgate.codecs.learned_train import train  # noqa: E402

ARCH, SIZES = "bmshj2018-factorized", {"N": 8, "M": 12}


@pytest.fixture(scope="module")
def frames():
    truth = make_sensor_truth((128, 160), seed=1)
    sc = scenes.dense_cells((128, 160), seed=0)
    return render_frames(truth, sc.flux, sc.exposure_ms, 4, np.random.default_rng(0))


@pytest.fixture(scope="module")
def trained(frames, tmp_path_factory):
    """A tiny factorized-prior model trained on three frames (the fourth is the test frame)."""
    losses = []
    model = train(frames[:3], arch=ARCH, sizes=SIZES, steps=40, patch=64, batch=4, lr=1e-3, mapping="range",
                  lmbda=0.05, progress=lambda step, loss, bpp: losses.append(loss))
    path = save_checkpoint(model, tmp_path_factory.mktemp("weights") / "tiny.pt", arch=ARCH, metric="mse",
                           quality=1, sizes=SIZES)
    return model, path, losses


@pytest.fixture(autouse=True)
def _no_weights_around(tmp_path, monkeypatch):
    """Nothing found by accident: empty weights folders, and no model cached by another test."""
    monkeypatch.setenv("RAWGATE_WEIGHTS_PATH", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    _MODELS.clear()


def test_training_is_a_real_loop(trained):
    _, _, losses = trained
    assert len(losses) == 40 and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5]), losses


@pytest.mark.parametrize("mapping", ["study", "range"])
def test_decode_equals_the_models_forward_reconstruction(trained, frames, mapping):
    import torch
    import torch.nn.functional as F

    model, path, _ = trained
    codec = get_codec(f"learned:weights={path},mapping={mapping},tile=64")
    x = frames[3]
    stream = codec.encode(x)
    y = codec.decode(stream)
    assert y.dtype == np.uint16 and y.shape == x.shape
    # what the network itself gives (forward pass in eval mode, tile by tile), mapped back
    u, lohi = codec._to_unit(x)
    ref = np.empty(x.shape, np.float32)
    for (ty, tx, th, tw) in codec._tiles(*x.shape, 64):
        t = torch.from_numpy(np.ascontiguousarray(u[ty:ty + th, tx:tx + tw]))[None, None].repeat(1, 3, 1, 1)
        t = F.pad(t, (0, -tw % 64, 0, -th % 64))
        with torch.no_grad():
            # CompressAI's decompress clamps x̂ to [0, 1]; its forward pass does not
            ref[ty:ty + th, tx:tx + tw] = model(t)["x_hat"].clamp(0, 1)[0, :, :th, :tw].mean(0).numpy()
    np.testing.assert_array_equal(y, Learned._from_unit(ref, lohi, np.dtype(np.uint16)))
    h, _ = unpack(stream)
    assert h["arch"] == ARCH and h["sizes"] == SIZES and h["mapping"] == mapping and len(h["tiles"]) == 6
    assert h["lo_hi"] == [[0.0, 65535.0]] if mapping == "study" else [[float(x.min()), float(x.max())]]
    assert set(h["versions"]) == {"torch", "compressai"} and len(h["recon_sha256"]) == 1
    assert x.nbytes / len(stream) > 2  # a real entropy-coded bitstream, not the pixels


def test_run_to_run_and_stacks(trained, frames):
    _, path, _ = trained
    codec = get_codec(f"learned:weights={path},mapping=range,tile=128")
    a, b = codec.encode(frames[1:3]), codec.encode(frames[1:3])
    assert a == b
    da, db = codec.decode(a), codec.decode(a)
    assert da.shape == (2, 128, 160) and np.array_equal(da, db)
    np.testing.assert_array_equal(da[1], codec.decode(codec.encode(frames[2])))


def test_streams_are_self_describing_and_find_their_weights_by_hash(trained, frames, tmp_path, monkeypatch):
    _, path, _ = trained
    stream = get_codec(f"learned:weights={path},mapping=range,tile=64").encode(frames[3])
    h, _ = unpack(stream)
    assert "weights" not in h["codec"]  # a local path is not the stream's identity; the hash is
    _MODELS.clear()
    with pytest.raises(WeightsNotFoundError) as e:
        decode_any(stream)
    assert h["weights_sha256"] in str(e.value) and str(tmp_path / "no-weights") in str(e.value)
    folder = tmp_path / "lab-weights"
    folder.mkdir()
    (folder / "renamed.bin").write_bytes(path.read_bytes())
    monkeypatch.setenv("RAWGATE_WEIGHTS_PATH", str(folder))
    assert isinstance(codec_of(stream), Learned)
    np.testing.assert_array_equal(decode_any(stream), get_codec(f"learned:weights={path}").decode(stream))


def test_a_missing_weights_file_names_the_file_and_the_folders(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        get_codec(f"learned:weights={tmp_path / 'nope.pt'}").encode(np.zeros((64, 64), np.uint16))
    with pytest.raises(WeightsNotFoundError) as e:
        get_codec("learned:arch=mbt2018,quality=3,metric=ms-ssim").encode(np.zeros((64, 64), np.uint16))
    msg = str(e.value)
    assert zoo_file_name("mbt2018", "ms-ssim", 3) in msg and "never downloaded" in msg
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in msg


def test_a_zoo_file_in_torch_home_is_found_by_compressai_name(tmp_path, monkeypatch):
    """A lab that copied CompressAI's weights into $TORCH_HOME/hub/checkpoints: found under the
    zoo's own file name (here a quality-1 model trained in a few steps, saved as a bare state dict)."""
    import torch
    from compressai.zoo.image import cfgs

    n, m = cfgs[ARCH][1]
    model = train(np.full((2, 64, 64), 1000, np.uint16), arch=ARCH, sizes={"N": n, "M": m}, steps=2, batch=1)
    ckpt = tmp_path / "torch-home" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(model.state_dict(), ckpt / zoo_file_name(ARCH, "mse", 1))
    x = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7) % 4000
    stream = get_codec("learned:quality=1").encode(x)
    assert unpack(stream)[0]["sizes"] == {"N": n, "M": m}
    assert get_codec("learned").decode(stream).shape == (64, 64)


def test_a_reconstruction_that_differs_is_refused(trained, frames):
    """The desynchronisation guard: a stream whose recorded reconstruction hash is not what this
    machine decodes (as a model that decodes differently elsewhere would give) is refused."""
    _, path, _ = trained
    codec = get_codec(f"learned:weights={path},mapping=range,tile=64")
    stream = codec.encode(frames[3])
    header, sections = unpack(stream)
    header["recon_sha256"] = ["0" * 64]
    forged = pack(header, [bytes(s) for s in sections])
    with pytest.raises(CorruptStreamError, match="issue 279"):
        codec.decode(forged)
    tampered = bytearray(stream)
    tampered[-40] ^= 0x01
    with pytest.raises(CorruptStreamError):
        codec.decode(bytes(tampered))


def test_learned_copies_in_ome_tiff(trained, frames, tmp_path, monkeypatch):
    _, path, _ = trained
    spec = f"learned:weights={path},mapping=range,tile=64"
    p = write_ome_tiff(tmp_path / "x.ome.tif", frames[:2], spec, axes="TYX")
    monkeypatch.setenv("RAWGATE_WEIGHTS_PATH", str(path.parent))
    _MODELS.clear()
    a, meta = read_ome_tiff(p)
    assert meta["codec"].startswith("learned") and a.shape == (2, 128, 160)
    np.testing.assert_array_equal(a, get_codec(spec).decode(get_codec(spec).encode(frames[:2])))


def test_checkpoints_are_read_without_running_code(trained, tmp_path):
    _, path, _ = trained
    model, desc = load_checkpoint(path)
    assert desc["arch"] == ARCH and desc["sizes"] == SIZES and len(desc["sha256"]) == 64
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(Exception, match="cannot read weights"):
        load_checkpoint(bad)
    assert not (tmp_path / "pwned").exists()


def test_the_core_never_imports_torch():
    code = ("import sys, json\n"
            "import rawgate.codecs, rawgate.daemon.cli\n"
            "from rawgate.codecs import get_codec\n"
            "get_codec('learned:arch=mbt2018')\n"
            "print(json.dumps(sorted(m for m in ('torch', 'compressai') if m in sys.modules)))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
    r = subprocess.run([sys.executable, "-m", "rawgate.daemon.cli", "codecs"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "learned" in r.stdout, r.stdout + r.stderr
