"""Configs shipped in configs/ validate; bad configs list every error with its field path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rawgate.daemon.cli import DEMO_SETTINGS
from rawgate.daemon.config import ConfigError, RawgateConfig, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", ["example.yaml", "demo.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(CONFIGS / name, environ={})
    assert isinstance(cfg, RawgateConfig)


def test_demo_yaml_is_what_the_demo_runs():
    from_file = RawgateConfig.model_validate(yaml.safe_load((CONFIGS / "demo.yaml").read_text()))
    assert from_file == RawgateConfig.model_validate(DEMO_SETTINGS)


def test_every_error_is_reported_with_its_path(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(
        "calibration:\n"
        "  sweep:\n    dark_frames: 1\n    light_levls: 3\n"
        "  instrument:\n    kind: mmcore\n    simulated: {bit_depth: 14}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(p, environ={})
    locs = dict(e.value.errors)
    assert "calibration.sweep.dark_frames" in locs
    assert "calibration.sweep.light_levls" in locs
    assert "calibration.instrument.simulated.bit_depth" in locs
    assert len(e.value.errors) >= 3


def test_not_yaml_and_not_a_mapping(tmp_path):
    (tmp_path / "a.yaml").write_text("calibration: [unclosed\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(tmp_path / "a.yaml", environ={})
    (tmp_path / "b.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "b.yaml", environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml", environ={})


def test_environment_overrides(tmp_path):
    env = {"RAWGATE_CALIBRATION__SWEEP__FRAMES_PER_LEVEL": "42", "RAWGATE_CALIBRATION__INSTRUMENT__SIMULATED__SEED": "9"}
    cfg = load_config(CONFIGS / "demo.yaml", environ=env)
    assert cfg.calibration.sweep.frames_per_level == 42
    assert cfg.calibration.instrument.simulated.seed == 9
    with pytest.raises(ConfigError, match="calibration.sweep.frames_per_level"):
        load_config(CONFIGS / "demo.yaml", environ={"RAWGATE_CALIBRATION__SWEEP__FRAMES_PER_LEVEL": "1"})


def test_relative_paths_resolve_against_the_file(tmp_path):
    (tmp_path / "c.yaml").write_text("calibration:\n  output_dir: out\n")
    assert load_config(tmp_path / "c.yaml", environ={}).calibration.output_dir == tmp_path / "out"


def test_the_archive_name_models_is_reserved(tmp_path):
    """``data/models/`` holds the archive's noise-model files; a watched folder may not map there."""
    (tmp_path / "models").mkdir()
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"version": 1, "daemon": {
        "state_dir": str(tmp_path / "s"), "archive_dir": str(tmp_path / "a"),
        "watch": [{"path": str(tmp_path / "models")}]}}))
    with pytest.raises(ConfigError) as e:
        load_config(p, environ={})
    assert any("models" in msg and "another `name`" in msg for _, msg in e.value.errors), e.value.errors
    cfg = yaml.safe_load(p.read_text())
    cfg["daemon"]["watch"][0]["name"] = "scope"
    p.write_text(yaml.safe_dump(cfg))
    assert load_config(p, environ={}).daemon.watch[0].archive_name == "scope"


def test_configs_that_validate_but_cannot_work_are_refused(tmp_path):
    """Issue 30: the state folder inside a watched folder or the archive, the holding folder
    inside a watched folder, a section given twice — each refused with the field and the reason."""
    import yaml as _yaml

    from rawgate.daemon.config import ConfigError, load_config

    (tmp_path / "acq").mkdir()

    def refused(daemon: dict) -> str:
        p = tmp_path / "c.yaml"
        p.write_text(_yaml.safe_dump({"version": 1, "daemon": {"watch": [{"path": "acq"}], **daemon}}))
        with pytest.raises(ConfigError) as e:
            load_config(p)
        return str(e.value)

    assert "ingest its own ledger" in refused({"state_dir": "acq/state", "archive_dir": "archive"})
    assert "must be separate folders" in refused({"state_dir": "archive", "archive_dir": "archive"})
    assert "must be separate folders" in refused({"state_dir": "archive/state", "archive_dir": "archive"})
    assert "come back as new items" in refused({"state_dir": "state", "archive_dir": "archive",
                                                "retention": {"action": "move", "holding_dir": "acq/held"}})
    p = tmp_path / "twice.yaml"
    p.write_text("version: 1\ndaemon:\n  state_dir: s1\ndaemon:\n  state_dir: s2\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "'daemon' is given twice (first at line 2)" in str(e.value) and "line 4" in str(e.value)
    p.write_text(_yaml.safe_dump({"version": 1, "daemon": {"watch": [{"path": "acq"}], "state_dir": "state",
                                                           "archive_dir": "archive"}}))
    assert load_config(p).daemon.state_dir == tmp_path / "state"


def test_errors_in_the_environment_or_the_file_encoding_are_one_line_errors(tmp_path):
    """An override that is not YAML and a config file that is not UTF-8 give the field path and
    the reason (exit 2 through the CLI), never a traceback."""
    from rawgate.daemon.config import ConfigError, load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("version: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg, {"RAWGATE_DAEMON__WORKERS__PROCESSES": "[unclosed"})
    assert "RAWGATE_DAEMON__WORKERS__PROCESSES" in str(e.value) and "daemon.workers.processes" in str(e.value)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("version: 1\n# café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(latin1, {})
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "rawgate.daemon.cli", "config", "validate", str(latin1)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not UTF-8" in r.stdout + r.stderr


def test_relative_paths_of_environment_overrides_are_taken_from_the_file(tmp_path, monkeypatch):
    from rawgate.daemon.config import load_config

    folder = tmp_path / "etc"
    folder.mkdir()
    cfg = folder / "rawgate.yaml"
    cfg.write_text("version: 1\ndaemon:\n  watch: [{path: /data/acq}]\n  archive_dir: /data/archive\n")
    monkeypatch.chdir(tmp_path)  # the working directory differs from the file's folder
    got = load_config(cfg, {"RAWGATE_DAEMON__STATE_DIR": "state"})
    assert got.daemon.state_dir == folder / "state"
