"""Raw data is never released on a bad archive copy (the release guard, issue 25 slice 1).

The operator's scenario: ``retention: {action: delete}`` and ``noisecal:step=2``; single-frame
TIFFs are archived with a long ``keep_days``; the daemon is stopped; one archived copy gets a byte
flipped, one is deleted and one is truncated to 0 bytes; the daemon is restarted with
``keep_days: 0`` (start-up queues the releases that are due). The three damaged items must keep
their raw files, be quarantined as critical with a reason naming the copy and the retry command,
raise a critical alert each at a real HTTP receiver, and show in ``status``; the intact item is
released. ``rawgate retry`` then archives the three again from raw, over the bad copies, and they
are released; the bag is then valid for rawgate's own check and for bagit-python.
"""

from __future__ import annotations

import json

import bagit
import numpy as np
import pytest
import yaml

from rawgate.daemon.archive import check_bag, sha256_file
from rawgate.codecs import get_codec, register_model
from rawgate.codecs.containers import read_ome_tiff_planes
from rawgate.codecs.models import find_model, fresh_model_lookup, store_model
from rawgate.codecs.noisecal import _MAPS
from rawgate.daemon.ledger import Ledger
from rawgate.daemon.service import write_manifest
from rawgate.calibration.simulation import make_sensor_truth, render_frames, truth_noise_model

from daemon_harness import Tree, wait_until


def _set_keep_days(t: Tree, days: float) -> None:
    cfg = yaml.safe_load(t.config.read_text())
    cfg["daemon"]["retention"]["keep_days"] = days
    t.config.write_text(yaml.safe_dump(cfg))


@pytest.mark.slow
def test_damaged_archive_copies_keep_their_raw_data(tmp_path):
    t = Tree(tmp_path, daemon={"retention": {"keep_days": 3650, "action": "delete"}})
    try:
        _scenario(t)
    finally:
        t.close()


def _scenario(t: Tree) -> None:
    names = ["flipped.tif", "deleted.tif", "truncated.tif", "intact.tif"]
    raws = {n: t.write_tiff(n) for n in names}
    raw_bytes = {n: p.read_bytes() for n, p in raws.items()}
    t.start()
    t.wait_ready()
    wait_until(lambda: t.counts()["archived"] == 4, 120, "4 items archived")
    assert t.stop() == 0
    with Ledger(t.state / "ledger.sqlite") as led:
        items = {it.relpath: it for it in led.items()}
    copies = {n: t.archive / items[n].archive_path for n in names}
    for n in names:
        assert items[n].codec == "noisecal:step=2" and items[n].verdict == "approved"
        assert sha256_file(copies[n]) == items[n].sha256_archive

    # the damage, done while the daemon is down
    data = bytearray(copies["flipped.tif"].read_bytes())
    data[len(data) // 2] ^= 0x01
    copies["flipped.tif"].write_bytes(bytes(data))
    copies["deleted.tif"].unlink()
    copies["truncated.tif"].write_bytes(b"")
    damaged = ["flipped.tif", "deleted.tif", "truncated.tif"]

    _set_keep_days(t, 0)
    t.start()
    t.wait_ready()
    wait_until(lambda: (c := t.counts())["quarantined"] == 3 and c["raw_released"] == 1, 120,
               "3 damaged items quarantined and the intact one released")
    for n in damaged:
        assert raws[n].read_bytes() == raw_bytes[n], f"raw {n} was touched although its archive copy is bad"
    assert not raws["intact.tif"].exists()

    s = t.status()
    assert s["counts"]["archived"] == 0 and s["counts"]["quarantined"] == 3, s["counts"]
    r = t.cli("quarantine", "list", "--json")
    assert r.returncode == 0, r.stderr
    reasons = {q["relpath"]: q["reason"] for q in json.loads(r.stdout)}
    assert set(reasons) == set(damaged), reasons
    assert "changed after archiving" in reasons["flipped.tif"]
    assert "missing" in reasons["deleted.tif"]
    assert "changed after archiving" in reasons["truncated.tif"]
    for n in damaged:
        assert str(copies[n]) in reasons[n], reasons[n]
        assert f"rawgate retry {items[n].id}" in reasons[n] and "raw data kept" in reasons[n], reasons[n]

    def critical() -> list[dict]:
        return [a for a in t.webhook.received if a.get("severity") == "critical"]

    wait_until(lambda: len(critical()) >= 3, 30, "3 critical alerts")
    text = json.dumps(critical())
    for n in damaged:
        assert n in text, n

    # retry: archived again from the kept raw data, over the bad copies, then released
    for n in damaged:
        r = t.cli("retry", n)
        assert r.returncode == 0, r.stderr
    wait_until(lambda: t.counts()["raw_released"] == 4, 120, "the 3 retried items archived and released")
    for n in damaged:
        assert not raws[n].exists()
    assert t.stop() == 0
    assert check_bag(t.archive) == []
    bag = bagit.Bag(str(t.archive))
    bag.validate()  # raises BagValidationError with the details when the bag is not valid
    with Ledger(t.state / "ledger.sqlite") as led:
        assert led.problems() == []
        for n in damaged:
            it = led.find(items[n].root, n)
            assert it.attempts == 1 and sha256_file(t.archive / it.archive_path) == it.sha256_archive

    # `rawgate archive verify -c`: the bag against the ledger too; a manifest that lost an entry
    r = t.cli("archive", "verify", "--full")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("5 file(s) checked against the manifest (SHA-256), 4 of 4 lossy copies decoded")
    manifest = t.archive / "manifest-sha256.txt"
    lines = manifest.read_text().splitlines()
    manifest.write_text("".join(ln + "\n" for ln in lines if not ln.endswith("data/scope/intact.ome.tif")))
    r = t.cli("archive", "verify")
    out = r.stdout.strip().splitlines()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not in manifest (the ledger records it): data/scope/intact.ome.tif" in out, out
    assert "not in manifest: data/scope/intact.ome.tif" in out, out
    wait_until(lambda: any(a.get("title") == "archive verification failed" for a in t.webhook.received), 30,
               "the verification alert")


def test_fresh_model_lookup_sets_the_process_models_aside(tmp_path, monkeypatch):
    """The release re-check decodes as a new process would: a model this process still holds in
    memory but whose store file is gone must not decode a stream that does not embed it."""
    monkeypatch.setenv("RAWGATE_MODEL_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    truth = make_sensor_truth((32, 32), seed=11)
    model = truth_noise_model(truth)
    frame = render_frames(truth, 30.0, 20.0, 1, np.random.default_rng(1))[0]
    codec = get_codec("noisecal:step=2", noise_model=model, embed_model=False)
    stream = codec.encode(frame)
    sha = register_model(model)
    stored = store_model(model, tmp_path / "store")

    plain = get_codec("noisecal:step=2")
    expected = np.asarray(plain.decode(stream))  # found in this process's memory
    with fresh_model_lookup():
        assert sha not in _MAPS and find_model(sha) is not None  # loaded again from the store file
        assert np.array_equal(np.asarray(get_codec("noisecal:step=2").decode(stream)), expected)
    stored.unlink()
    with fresh_model_lookup():
        assert find_model(sha) is None
        with pytest.raises(Exception, match="noise model"):
            get_codec("noisecal:step=2").decode(stream)
    # the process's models are back after the block
    assert find_model(sha) is model
    assert np.array_equal(np.asarray(plain.decode(stream)), expected)


def test_fresh_model_lookup_still_decodes_a_self_contained_copy(tmp_path, monkeypatch):
    """An archive copy that embeds its model decodes inside the block with nothing but itself."""
    from rawgate.daemon.archive import verify_copy, write_copy
    from rawgate.daemon.sources import ItemRef, open_stack
    import tifffile

    monkeypatch.setenv("RAWGATE_MODEL_PATH", str(tmp_path / "store"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    truth = make_sensor_truth((32, 32), seed=12)
    model = truth_noise_model(truth)
    frames = render_frames(truth, 30.0, 20.0, 2, np.random.default_rng(2))
    tifffile.imwrite(tmp_path / "raw.tif", frames, photometric="minisblack")
    with open_stack(tmp_path, ItemRef("raw.tif", "tiff")) as stack:
        write_copy(stack, tmp_path / "copy.ome.tif", "noisecal:step=2", noise_model=model)
        with fresh_model_lookup():
            res = verify_copy(tmp_path / "copy.ome.tif", stack, lossless=False)
    assert res.ok, res.reason
    with read_ome_tiff_planes(tmp_path / "copy.ome.tif") as r:
        assert r.n_planes == 2


def test_a_crash_interrupted_release_rechecks_the_copy(tmp_path):
    """A release a crash interrupted (ledger says raw_released, the raw file still there) is
    finished at start-up only after the archived copy is checked again: with the copy damaged in
    between, raw is kept, the item is quarantined with a critical alert, and a retry archives it
    again and releases it."""
    from rawgate.daemon import pipeline
    from rawgate.daemon.config import load_config
    from rawgate.daemon.ledger import ItemState as S

    t = Tree(tmp_path)
    try:
        w = pipeline.Worker(load_config(t.config))
        raw = t.write_tiff("cell.tif")
        item, _ = w.ledger.discover(str(t.acq.resolve()), "cell.tif", "tiff")
        w.ledger.transition(item.id, S.DISCOVERED, S.COMPLETE, complete_at=0.0)
        watch = w.watch_of(item)
        while (state := w.ledger.get(item.id).state) is not S.ARCHIVED:
            pipeline.STEPS[state](w, w.ledger.get(item.id), watch, pipeline.Outcome(item.id))
        # the crash: the ledger move was recorded, the deletion never ran
        write_manifest(t.archive, w.ledger)
        w.ledger.transition(item.id, S.ARCHIVED, S.RAW_RELEASED, detail={"action": "delete", "files": 1})
        copy = t.archive / w.ledger.get(item.id).archive_path
        data = bytearray(copy.read_bytes())
        data[-100] ^= 0x40
        copy.write_bytes(bytes(data))

        out = pipeline.advance(w, item.id)  # the restarted daemon finishing the release
        assert out.state == "quarantined" and raw.is_file()
        assert "changed after archiving" in out.reason and f"rawgate retry {item.id}" in out.reason
        assert [a["severity"] for a in out.alerts] == ["critical"]

        w.ledger.retry(item.id)
        w.ledger.transition(item.id, S.DISCOVERED, S.COMPLETE, complete_at=0.0)
        assert pipeline.advance(w, item.id).state == "archived"
        write_manifest(t.archive, w.ledger)
        assert pipeline.advance(w, item.id).state == "raw_released"
        assert not raw.exists()
        assert sha256_file(copy) == w.ledger.get(item.id).sha256_archive
        assert w.ledger.problems() == []
    finally:
        t.close()


def test_a_damaged_model_file_keeps_the_raw_data_of_every_copy_that_needs_it(tmp_path):
    """The archive stores each noise model once (``data/models/<sha>.rgmaps``) and every noisecal
    copy refers to it: damaging that one file must stop the release of all of them (the model
    file is checked against its recorded SHA-256, and the copy decoded without the worker's
    in-memory model). A retry writes the model file again and the items are released."""
    from rawgate.daemon import pipeline
    from rawgate.daemon.config import load_config
    from rawgate.daemon.ledger import ItemState as S

    t = Tree(tmp_path)
    try:
        w = pipeline.Worker(load_config(t.config))
        raws, ids = {}, {}
        for n in ("a.tif", "b.tif"):
            raws[n] = t.write_tiff(n)
            item, _ = w.ledger.discover(str(t.acq.resolve()), n, "tiff")
            ids[n] = item.id
            w.ledger.transition(item.id, S.DISCOVERED, S.COMPLETE, complete_at=0.0)
            while (state := w.ledger.get(item.id).state) is not S.ARCHIVED:
                pipeline.STEPS[state](w, w.ledger.get(item.id), w.watch_of(item), pipeline.Outcome(item.id))
        (rel, (sha, nbytes)), = w.ledger.model_files().items()
        mfile = t.archive / rel
        assert rel == f"data/models/{t.model.sha256}.rgmaps" and sha256_file(mfile) == sha
        for n in ids:  # the copies refer to it instead of carrying the maps
            copy = t.archive / w.ledger.get(ids[n]).archive_path
            assert copy.stat().st_size < nbytes

        write_manifest(t.archive, w.ledger)
        good = mfile.read_bytes()
        data = bytearray(good)
        data[len(data) // 2] ^= 0x10
        mfile.write_bytes(bytes(data))
        for n in ids:
            out = pipeline.advance(w, ids[n])
            assert out.state == "quarantined", (n, out.state, out.reason)
            assert f"noise-model file {mfile}" in out.reason and "changed after archiving" in out.reason
            assert raws[n].is_file()

        mfile.unlink()
        for n in ids:
            w.ledger.retry(ids[n])
            w.ledger.transition(ids[n], S.DISCOVERED, S.COMPLETE, complete_at=0.0)
            assert pipeline.advance(w, ids[n]).state == "archived"
            write_manifest(t.archive, w.ledger)
            assert pipeline.advance(w, ids[n]).state == "raw_released"
            assert not raws[n].exists()
        assert mfile.read_bytes() == good and w.ledger.model_files()[rel][0] == sha
        assert w.ledger.problems() == []
    finally:
        t.close()


@pytest.mark.slow
def test_raw_data_waits_for_a_durable_manifest(tmp_path):
    """Slice 3: raw data is released only for copies a durable manifest lists. While the
    manifest cannot be written (here the archive root is made read-only; the daemon runs without
    CAP_DAC_OVERRIDE, as its service user does), a new copy is archived but its raw data stays;
    one critical alert goes out, `status` and the metrics say so; once the manifest can be
    written, the held release goes ahead at once, not at the next 60 s retention sweep."""
    import os
    import shutil
    import time
    import urllib.request

    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("needs setpriv to drop CAP_DAC_OVERRIDE as root")
    t = Tree(tmp_path)
    try:
        first = t.write_tiff("first.tif")
        t.start(drop_dac=True)
        st = t.wait_ready()
        wait_until(lambda: t.counts()["raw_released"] == 1, 120, "first.tif released")
        manifest = t.archive / "manifest-sha256.txt"
        assert "data/scope/first.ome.tif" in manifest.read_text() and not first.exists()

        os.chmod(t.archive, 0o555)  # no new file in the bag root: the manifest's temporary file fails
        second = t.write_tiff("second.tif")
        wait_until(lambda: t.counts()["archived"] == 1, 120, "second.tif archived")
        wait_until(lambda: t.status()["daemon"].get("manifest_error"), 30, "status to show the manifest error")
        time.sleep(12)  # two more manifest attempts
        assert second.exists() and t.counts()["archived"] == 1 and t.counts()["raw_released"] == 1
        assert "second" not in manifest.read_text()
        held = [a for a in t.webhook.received if "manifest" in a.get("title", "")]
        assert len(held) == 1 and held[0]["severity"] == "critical", held
        assert "Permission denied" in t.status()["daemon"]["manifest_error"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{st['metrics_port']}/metrics", timeout=10).read().decode()
        assert 'rawgate_component_up{component="manifest"} 0.0' in text
        r = t.cli("status")
        assert r.returncode == 0 and "manifest cannot be written" in " ".join(r.stdout.split()), r.stdout

        os.chmod(t.archive, 0o755)
        t0 = time.monotonic()
        wait_until(lambda: t.counts()["raw_released"] == 2, 40, "second.tif released once the manifest is written")
        assert time.monotonic() - t0 < 30  # not waiting for the 60 s retention sweep
        assert not second.exists() and "data/scope/second.ome.tif" in manifest.read_text()
        assert t.status()["daemon"].get("manifest_error") is None
        text = urllib.request.urlopen(f"http://127.0.0.1:{st['metrics_port']}/metrics", timeout=10).read().decode()
        assert 'rawgate_component_up{component="manifest"} 1.0' in text
        assert t.stop() == 0
        assert check_bag(t.archive) == []
    finally:
        os.chmod(t.archive, 0o755)
        t.close()
