"""One daemon per archive (the release guard's slice 2).

Two daemons with their own state folders and one archive would each rewrite the archive's
manifest from their own ledger, dropping the other's entries while its raw data is already
released. The second daemon must refuse to start (exit 2) and name the holder: pid, host and
state folder. Real ``rawgate run`` subprocesses, real ``flock``.
"""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
import yaml

from daemon_harness import RAWGATE, Tree, wait_until

pytestmark = pytest.mark.slow


def test_a_second_daemon_on_the_same_archive_is_refused(tmp_path):
    t = Tree(tmp_path / "one")
    second = None
    try:
        t.write_tiff("a.tif")
        t.start()
        t.wait_ready()
        wait_until(lambda: t.counts()["raw_released"] == 1, 120, "the first daemon to release a.tif")
        manifest = t.archive / "manifest-sha256.txt"
        wait_until(lambda: manifest.is_file() and "data/scope/a.ome.tif" in manifest.read_text(), 90,
                   "the manifest to list a.tif's copy")

        cfg = yaml.safe_load(t.config.read_text())
        state2 = tmp_path / "state2"
        state2.mkdir()
        cfg["daemon"]["state_dir"] = str(state2)
        c2 = tmp_path / "second.yaml"
        c2.write_text(yaml.safe_dump(cfg))
        r = subprocess.run([*RAWGATE, "run", "--config", str(c2)], capture_output=True, text=True, timeout=90,
                           env=t.env())
        assert r.returncode == 2, r.stderr
        err = " ".join(r.stderr.split())
        for part in (f"pid {t.proc.pid}", socket.gethostname(), str(t.state), str(t.archive)):
            assert part in err, (part, err)
        assert not (state2 / "status.json").exists() and not (state2 / "ledger.sqlite").exists()

        # the same state folder is refused too, naming the holder
        r = subprocess.run([*RAWGATE, "run", "--config", str(t.config)], capture_output=True, text=True, timeout=90,
                           env=t.env())
        assert r.returncode == 2 and f"pid {t.proc.pid}" in " ".join(r.stderr.split()), r.stderr
        # the first daemon's manifest still lists its copy; status still finds it running
        assert "data/scope/a.ome.tif" in manifest.read_text()
        assert t.status()["running"]

        # once the first daemon stops, the second may take the archive
        assert t.stop() == 0
        with open(t.log, "ab") as fh:
            second = subprocess.Popen([*RAWGATE, "run", "--config", str(c2)], stdout=fh, stderr=subprocess.STDOUT,
                                      env=t.env(), start_new_session=True)

        def ready():
            assert second.poll() is None, t.log.read_text()[-2000:]
            try:
                return json.loads((state2 / "status.json").read_text()).get("pid") == second.pid
            except (OSError, ValueError):
                return False

        wait_until(ready, 60, "the second daemon to start")
        lock = json.loads((t.archive / ".rawgate.lock").read_text())
        assert lock == {"pid": second.pid, "host": socket.gethostname(), "state_dir": str(state2)}
    finally:
        if second is not None and second.poll() is None:
            second.terminate()
            assert second.wait(timeout=60) == 0
        t.close()
