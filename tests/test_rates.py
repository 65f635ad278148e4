"""The ε budget sets the daemon's rate (issue 28, slice 4): ``noisecal:step=auto`` in a watch rule.

Real noise model, real TIFFs, real SQLite ledger and the daemon's own pipeline steps run in this
process: the first item searches the setting and stores it for the watch rule and camera; a spot
check that rejects a copy steps the setting back and alerts; with no setting left the rule codes
losslessly and keeps raw data.
"""

from __future__ import annotations

import pytest
import yaml

from rawgate.codecs.auto import AutoSpec
from rawgate.daemon import pipeline
from rawgate.daemon.config import ConfigError, load_config
from rawgate.daemon.ledger import ItemState as S
from rawgate.daemon.ledger import RateKey

from daemon_harness import Tree


def _archive(w: pipeline.Worker, t: Tree, name: str) -> tuple[object, list[dict]]:
    """Write ``name`` and run the daemon's steps on it up to ``archived``; (item, alerts)."""
    t.write_tiff(name)
    item, _ = w.ledger.discover(str(t.acq.resolve()), name, "tiff")
    w.ledger.transition(item.id, S.DISCOVERED, S.COMPLETE, complete_at=0.0)
    watch = w.watch_of(item)
    alerts: list[dict] = []
    while (state := w.ledger.get(item.id).state) is not S.ARCHIVED:
        out = pipeline.Outcome(item.id)
        pipeline.STEPS[state](w, w.ledger.get(item.id), watch, out)
        alerts += out.alerts
    return w.ledger.get(item.id), alerts


@pytest.fixture
def tree(tmp_path):
    t = Tree(tmp_path, compression={"codec": "noisecal:step=auto"},
             daemon={"retention": {"keep_days": 3650, "action": "delete"}})
    yield t
    t.close()


def test_first_item_searches_the_rate_later_items_reuse_it_and_a_rejection_steps_back(tree):
    t = tree
    w = pipeline.Worker(load_config(t.config))
    key = RateKey("scope", 0, t.model.identity.serial, "noisecal:step=auto")
    assert w.ledger.rate_setting(key) is None

    first, alerts = _archive(w, t, "a.tif")
    stored = w.ledger.rate_setting(key)
    assert stored is not None and stored.value is not None, stored
    # the search found a step above the default 2 that passes on this camera's frames …
    assert 2 < stored.value <= 16 and stored.value in stored.passing and "searched by the daemon" in stored.source
    assert (first.verdict, first.codec) == ("approved", f"noisecal:step={stored.value:g}")
    assert [a["severity"] for a in alerts] == ["info"] and "rate set" in alerts[0]["title"]
    # … and the next item is coded with it, without a second search
    second, alerts = _archive(w, t, "b.tif")
    assert second.codec == first.codec and second.verdict == "approved" and alerts == []
    assert w.ledger.rate_setting(key).history == stored.history

    # the camera changes (the stored value is now far too coarse): the spot check rejects the
    # copy, the item falls back to lossless, and the setting steps back to the next that passed
    w.ledger.store_rate_setting(key, 16.0, [0.5, 2.0, stored.value], "set by hand", replace=True)
    third, alerts = _archive(w, t, "c.tif")
    assert (third.verdict, third.codec) == ("rejected", "jpegxl:effort=1")
    assert (t.acq / "c.tif").is_file()
    after = w.ledger.rate_setting(key)
    assert after.value == stored.value and [h["value"] for h in after.history] == [16.0, stored.value]
    assert "c.tif" in after.history[-1]["why"]
    sev = {a["title"].split(":")[0]: a["severity"] for a in alerts}
    assert sev == {"rate stepped back": "warning", "rejected": "warning"}, alerts
    assert any(f"noisecal:step=16 → noisecal:step={stored.value:g}" in a["title"] for a in alerts)
    fourth, _ = _archive(w, t, "d.tif")
    assert (fourth.verdict, fourth.codec) == ("approved", first.codec)
    assert w.ledger.problems() == []


def test_no_setting_left_codes_losslessly_keeps_raw_and_alerts(tree):
    t = tree
    w = pipeline.Worker(load_config(t.config))
    key = RateKey("scope", 0, t.model.identity.serial, "noisecal:step=auto")
    w.ledger.store_rate_setting(key, 0.6, [0.6], "set by hand")
    a, _ = _archive(w, t, "a.tif")
    assert (a.verdict, a.codec) == ("approved", "noisecal:step=0.6")
    # a rejection at 0.6 leaves nothing below the lowest setting (0.5); a second rejection of
    # the same setting (another worker's item) finds it already stepped back and does nothing
    new = AutoSpec.parse("noisecal:step=auto").step_back(0.6, [0.6])
    assert new is None
    assert w.ledger.step_back_rate(key, 0.6, new, "a.tif: by hand")
    assert not w.ledger.step_back_rate(key, 0.6, new, "a.tif: again")
    assert w.ledger.rate_setting(key).value is None
    b, _ = _archive(w, t, "b.tif")
    assert (b.verdict, b.codec) == ("rejected", "jpegxl:effort=1")
    assert "no setting passes the ε gate" in b.note and "rawgate evaluate --store" in b.note
    assert (t.acq / "b.tif").is_file()


def test_step_back_walks_the_passing_settings_then_halves():
    a = AutoSpec.parse("noisecal:step=auto,preset=fast")
    assert a.step_back(5.66, [0.5, 2.0, 4.0, 5.66]) == 4.0
    assert a.step_back(4.0, []) == 2.83 and a.step_back(0.6) is None
    assert AutoSpec.parse("jpeg:ratio=auto").step_back(2.5) is None


@pytest.mark.parametrize("section, error", [
    ({"compression": {"codec": "zstd:level=auto"}}, "compression.codec"),
    ({"compression": {"fallback_codec": "noisecal:step=auto"}}, "compression.fallback_codec"),
    ({"compression": {"codec": "noisecal:step=auto"}, "daemon": {"gate": {"enabled": False}}}, "needs the ε spot checks"),
    ({"daemon": {"watch": [{"path": "acq", "rules": [{"codec": "jpeg:ratio=auto,bogus=1"}]}]}},
     "daemon.watch.0.rules.0.codec"),
])
def test_auto_specs_are_validated_like_every_codec_spec(tmp_path, section, error):
    (tmp_path / "acq").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"version": 1, **section}))
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert error in str(e.value)
    ok = {"version": 1, "compression": {"codec": "noisecal:step=auto,preset=fast"},
          "daemon": {"watch": [{"path": "acq", "rules": [{"codec": "jpeg2k:ratio=auto"}]}]}}
    cfg.write_text(yaml.safe_dump(ok))
    assert load_config(cfg).compression.codec == "noisecal:step=auto,preset=fast"


def test_evaluate_store_sets_the_rate_the_daemon_codes_with(tree, tmp_path):
    """`rawgate evaluate --store scope -c rawgate.yaml` searches on the lab's frames and stores the
    setting for the watch rule and the calibration's camera; the daemon codes with it, no search."""
    from typer.testing import CliRunner

    from rawgate.daemon.cli import app

    t = tree
    frames = [t.write_tiff(f"eval/f{i}.tif") for i in range(2)]
    cal = str(t.cal / "cam.rgnoise")
    base = ["evaluate", *map(str, frames), "--calibration", cal, "--replicas", "5", "--out", str(tmp_path / "ev"),
            "-c", str(t.config)]
    runner = CliRunner()
    bad = runner.invoke(app, [*base, "--codecs", "noisecal:step=auto", "--store", "nowhere"])
    assert bad.exit_code == 2 and "no watched folder named 'nowhere'" in bad.output, bad.output
    bad = runner.invoke(app, [*base, "--codecs", "jpeg:ratio=auto", "--store", "scope"])
    assert bad.exit_code == 2 and "codes with 'noisecal:step=auto'" in bad.output, bad.output
    r = runner.invoke(app, [*base, "--codecs", "noisecal:step=auto", "--store", "scope:0"])
    assert r.exit_code == 0, r.output
    key = RateKey("scope", 0, t.model.identity.serial, "noisecal:step=auto")
    w = pipeline.Worker(load_config(t.config))
    stored = w.ledger.rate_setting(key)
    assert stored is not None and stored.value is not None and "rawgate evaluate on 2 frame(s)" in stored.source
    assert f"noisecal:step=auto → noisecal:step={stored.value:g}" in " ".join(r.output.split())
    item, alerts = _archive(w, t, "a.tif")
    assert (item.verdict, item.codec) == ("approved", f"noisecal:step={stored.value:g}") and alerts == []
    # `rawgate status` lists the stored rate
    st = CliRunner().invoke(app, ["status", "-c", str(t.config), "--json"])
    assert st.exit_code == 0, st.output
    import json

    rates = json.loads(st.output)["rates"]
    assert [(x["watch"], x["rule"], x["auto"], x["value"]) for x in rates] == [
        ("scope", 0, "noisecal:step=auto", stored.value)]
