"""The noise-model file: self-describing, verified on load, refusing what it does not describe."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
import pytest

from rawgate.calibration.model import ModelError, ModelMismatchError, NoiseModel


def test_round_trip_keeps_everything(tmp_path, default_model):
    p = default_model.save(tmp_path / "m.rgnoise")
    assert not (tmp_path / "m.rgnoise.partial").exists()
    m = NoiseModel.load(p)
    assert m.identity == default_model.identity
    assert m.sha256 == default_model.sha256
    for name in ("offset_adu", "gain_e_per_adu", "read_noise_e", "dark_current_e_per_s", "bad_pixels"):
        np.testing.assert_array_equal(getattr(m, name), getattr(default_model, name))
    assert m.emva["system_gain_adu_per_e"] == pytest.approx(default_model.emva["system_gain_adu_per_e"])
    # standard tools open it: a zip of .npy plus JSON
    with np.load(p, allow_pickle=False) as z:
        assert z["gain_e_per_adu"].shape == m.shape
    with zipfile.ZipFile(p) as zf:
        meta = json.loads(zf.read("meta.json"))
    assert meta["format"] == "rawgate.noise_model" and meta["version"] == 2 and len(meta["meta_sha256"]) == 64
    assert meta["units"]["gain_e_per_adu"] == "e-/ADU"


def _rewrite(src, dst, mutate):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, mutate(item.filename, zin.read(item.filename)))


def test_corrupt_files_are_refused(tmp_path, default_model):
    p = default_model.save(tmp_path / "m.rgnoise")

    def flip(name, data):
        if name == "gain_e_per_adu.npy":
            b = bytearray(data)
            b[-5] ^= 0xFF
            return bytes(b)
        return data

    _rewrite(p, tmp_path / "flip.rgnoise", flip)
    with pytest.raises(ModelError, match="checksum"):
        NoiseModel.load(tmp_path / "flip.rgnoise")
    (tmp_path / "trunc.rgnoise").write_bytes(p.read_bytes()[:1000])
    with pytest.raises(ModelError, match="corrupt or truncated"):
        NoiseModel.load(tmp_path / "trunc.rgnoise")
    (tmp_path / "text.rgnoise").write_text("not a model")
    with pytest.raises(ModelError):
        NoiseModel.load(tmp_path / "text.rgnoise")
    with pytest.raises(ModelError, match="not found"):
        NoiseModel.load(tmp_path / "absent.rgnoise")

    def newer(name, data):
        if name == "meta.json":
            meta = json.loads(data)
            meta["version"] = 99
            return json.dumps(meta).encode()
        return data

    _rewrite(p, tmp_path / "new.rgnoise", newer)
    with pytest.raises(ModelError, match="v99"):
        NoiseModel.load(tmp_path / "new.rgnoise")


@pytest.mark.parametrize("edit", [
    lambda m: m.update(created="2099-01-01T00:00:00+00:00"),  # never stale
    lambda m: m["emva"].update(saturation_adu=100.0),  # noisecal stores exactly above it
    lambda m: m.update(estimated=not m["estimated"]),
    lambda m: m["identity"].update(serial="OTHER"),
    lambda m: m.pop("meta_sha256"),
    lambda m: m.pop("model_sha256"),
], ids=["created", "saturation", "estimated", "serial", "no meta hash", "no content hash"])
def test_edited_metadata_are_refused(tmp_path, default_model, edit):
    """Re-zipping meta.json with edits (or without its hashes) is refused: every metadata field
    is covered by meta_sha256, and a model without a content hash is not read."""
    p = default_model.save(tmp_path / "m.rgnoise")

    def mutate(name, data):
        if name == "meta.json":
            meta = json.loads(data)
            meta.setdefault("emva", {})
            edit(meta)
            return json.dumps(meta).encode()
        return data

    _rewrite(p, tmp_path / "edited.rgnoise", mutate)
    with pytest.raises(ModelError, match="refused"):
        NoiseModel.load(tmp_path / "edited.rgnoise")


def test_a_version_1_file_still_loads_but_needs_its_content_hash(tmp_path, default_model):
    """Files written before the metadata hash (format v1) load; without model_sha256 they are refused."""
    p = default_model.save(tmp_path / "m.rgnoise")

    def v1(drop_content_hash):
        def mutate(name, data):
            if name == "meta.json":
                meta = json.loads(data)
                meta["version"] = 1
                meta.pop("meta_sha256")
                if drop_content_hash:
                    meta.pop("model_sha256")
                return json.dumps(meta).encode()
            return data
        return mutate

    _rewrite(p, tmp_path / "v1.rgnoise", v1(False))
    assert NoiseModel.load(tmp_path / "v1.rgnoise").sha256 == default_model.sha256
    _rewrite(p, tmp_path / "v1-bare.rgnoise", v1(True))
    with pytest.raises(ModelError, match="no content hash"):
        NoiseModel.load(tmp_path / "v1-bare.rgnoise")


def test_inconsistent_maps_are_refused(default_model):
    with pytest.raises(ModelError, match="positive"):
        dataclasses.replace(default_model, gain_e_per_adu=np.zeros(default_model.shape))
    with pytest.raises(ModelError, match="NaN"):
        dataclasses.replace(default_model, offset_adu=np.full(default_model.shape, np.nan))
    with pytest.raises(ModelError, match="ROI"):
        dataclasses.replace(default_model, identity=dataclasses.replace(default_model.identity, roi=(0, 0, 64, 64)))


def test_mismatching_frames_and_cameras_are_refused(default_model):
    ok = np.full(default_model.shape, 500, np.uint16)
    default_model.check_frame(ok)
    default_model.check_frame(np.stack([ok, ok]))  # 3-D stacks of matching planes are fine
    with pytest.raises(ModelMismatchError, match="frame shape"):
        default_model.check_frame(np.zeros((64, 128), np.uint16))
    other = dataclasses.replace(default_model.identity, binning=2, serial="X")
    with pytest.raises(ModelMismatchError, match="binning") as e:
        default_model.check_frame(ok, other)
    assert "serial" in str(e.value)
    m12 = dataclasses.replace(default_model, identity=dataclasses.replace(default_model.identity, bit_depth=12))
    with pytest.raises(ModelMismatchError, match="bit depth"):
        m12.check_frame(np.full(default_model.shape, 5000, np.uint16))
