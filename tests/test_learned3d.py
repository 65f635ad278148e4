"""The 3-D learned model (issue 27, slice 3): a factorized prior with 3-D convolutions, trained
here from scratch on simulated stacks (a real rate–distortion loop, seconds), coded into real
volume bitstreams, decoded to exactly the network's own reconstruction, in OME-Zarr with chunks
that span Z, and resumable like the 2-D training."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("compressai", reason="the learned extra (make test installs it)")

from rawgate.calibration import scenes  # noqa: E402
from rawgate.calibration.simulation import make_sensor_truth, render_frames  # noqa: E402
from rawgate.codecs import CorruptStreamError, get_codec, read_ome_zarr, write_ome_zarr  # noqa: E402
from rawgate.codecs._stream import pack, unpack  # noqa: E402
from rawgate.codecs.learned import Learned, _MODELS, save_checkpoint  # noqa: E402
from rawgate.codecs.learned3d import PAD_3D  # noqa: E402
from rawgate.codecs.learned_train import Phase, Trainer  # noqa: E402

ARCH, SIZES = "factorized3d", {"N": 8, "M": 12}


def _stack(seed: int, z: int = 10) -> np.ndarray:
    """A Z stack of 3-D nuclei through the simulated sensor (Z × 96 × 80)."""
    sc = scenes.nuclei_3d((z, 96, 80), seed=seed)
    truth = make_sensor_truth((96, 80), seed=1)
    rng = np.random.default_rng(seed)
    return np.stack([render_frames(truth, sc.flux[k], sc.exposure_ms, 1, rng)[0] for k in range(z)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    stacks = [_stack(0), _stack(1)]
    t = Trainer(stacks, arch=ARCH, sizes=SIZES, phases=[Phase("mse", 30, 0.05)], patch=64, batch=2, lr=1e-3,
                mapping="range", patch_z=8)
    losses = []
    model = t.run(progress=lambda s, m, loss, bpp: losses.append(loss))
    path = save_checkpoint(model, tmp_path_factory.mktemp("w") / "tiny3d.pt", arch=ARCH, metric="mse", quality=1,
                           sizes=SIZES)
    return model, path, losses


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("RAWGATE_WEIGHTS_PATH", str(tmp_path / "none"))
    _MODELS.clear()


def test_a_real_3d_training_loop(trained):
    model, _, losses = trained
    assert len(losses) == 30 and np.mean(losses[-8:]) < 0.8 * np.mean(losses[:4]), losses
    assert type(model).__name__ == "FactorizedPrior3D"
    with pytest.raises(ValueError, match="MSE only"):
        Trainer([_stack(0)], arch=ARCH, sizes=SIZES, phases=[Phase("ms-ssim", 5, 1.0)], patch=64)
    with pytest.raises(ValueError, match="smaller than the 8 × 64"):
        Trainer([_stack(0, z=4)], arch=ARCH, sizes=SIZES, phases=[Phase("mse", 5, 1.0)], patch=64)


def test_decode_equals_the_networks_reconstruction_of_the_volume(trained):
    import torch
    import torch.nn.functional as F

    model, path, _ = trained
    x = _stack(2)  # 10 planes: zchunk 8 codes a volume of 8 and one of 2 (padded to 4)
    codec = get_codec(f"learned:arch={ARCH},weights={path},mapping=range,tile=64,zchunk=8")
    stream = codec.encode(x)
    y = codec.decode(stream)
    assert y.shape == x.shape and y.dtype == np.uint16
    h, _ = unpack(stream)
    assert h["arch"] == ARCH and h["channels"] == 1 and h["zchunks"] == [[0, 8], [8, 2]]
    assert h["pad_multiple"] == list(PAD_3D) and len(h["recon_sha256"]) == 10 and len(h["tiles"]) == 4
    ref = np.empty(x.shape, np.float32)
    for (z0, nz), lohi in zip(h["zchunks"], h["lo_hi"]):
        u, got = codec._to_unit(x[z0:z0 + nz])
        assert got == lohi
        for (ty, tx, th, tw) in codec._tiles(96, 80, 64):
            t = torch.from_numpy(np.ascontiguousarray(u[:, ty:ty + th, tx:tx + tw]))[None, None]
            t = F.pad(t, (0, -tw % 16, 0, -th % 16, 0, -nz % 4))
            with torch.no_grad():
                ref[z0:z0 + nz, ty:ty + th, tx:tx + tw] = model(t)["x_hat"].clamp(0, 1)[0, 0, :nz, :th, :tw].numpy()
    for (z0, nz), lohi in zip(h["zchunks"], h["lo_hi"]):
        np.testing.assert_array_equal(y[z0:z0 + nz], Learned._from_unit(ref[z0:z0 + nz], lohi, np.dtype(np.uint16)))
    assert x.nbytes / len(stream) > 2  # an entropy-coded bitstream
    # a single frame is a volume of one plane; a T × Z array is coded per T
    assert codec.decode(codec.encode(x[3])).shape == (96, 80)
    tz = np.stack([x[:4], x[4:8]])
    assert unpack(codec.encode(tz))[0]["zchunks"] == [[0, 4], [4, 4]]
    # the desynchronisation guard holds for volumes too
    header, sections = unpack(stream)
    header["recon_sha256"] = ["0" * 64] * 10
    with pytest.raises(CorruptStreamError, match="issue 279"):
        codec.decode(pack(header, [bytes(s) for s in sections]))


def test_ome_zarr_chunks_spanning_z_are_coded_as_volumes(trained, tmp_path, monkeypatch):
    _, path, _ = trained
    x = _stack(3, z=8)
    spec = f"learned:arch={ARCH},weights={path},mapping=range,tile=128,zchunk=8"
    # the zarr codec's configuration keeps no local path: the checkpoint is found in the weights
    # folder by architecture / metric / quality when writing, by its SHA-256 when reading
    monkeypatch.setenv("RAWGATE_WEIGHTS_PATH", str(path.parent))
    p = write_ome_zarr(tmp_path / "s.ome.zarr", x, spec, axes="ZYX", chunks=(8, 96, 80))
    _MODELS.clear()
    a, meta = read_ome_zarr(p)
    assert meta["codec"].startswith("learned")
    np.testing.assert_array_equal(a, get_codec(spec).decode(get_codec(spec).encode(x)))


def test_3d_training_resumes_where_it_stopped(tmp_path):
    stacks = [_stack(0)]
    kw = dict(arch=ARCH, sizes=SIZES, phases=[Phase("mse", 6, 0.05)], patch=64, batch=2, lr=1e-3, mapping="range")
    whole = Trainer(stacks, **kw)
    whole.run()
    half = Trainer(stacks, **kw)
    half.run(until=3)
    half.save(tmp_path / "ck.pt")
    resumed = Trainer.resume(tmp_path / "ck.pt", stacks)
    assert resumed.step == 3 and resumed.patch_z == 8
    resumed.run()
    assert [h[2] for h in resumed.history] == pytest.approx([h[2] for h in whole.history], rel=1e-5)
