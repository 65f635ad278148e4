"""A real ``rawgate run`` in a subprocess on a temporary tree, for the daemon tests and bench.

Nothing is mocked: the daemon watches a real folder with watchdog, writes a real SQLite ledger,
real archive files, posts alerts to a real HTTP server on 127.0.0.1 and serves real metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tifffile
import yaml

from rawgate.calibration.simulation import make_sensor_truth, render_frames, truth_noise_model

RAWGATE = [sys.executable, "-m", "rawgate.daemon.cli"]


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        received: list[dict] = []
        self.received = received
        self.down = False  # True: answer 500 and record nothing (an outage)
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n))
                if outer.down:
                    outer.refused += 1
                    self.send_response(500)
                    self.end_headers()
                    return
                received.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def texts(self) -> list[str]:
        return [json.dumps(r) for r in self.received]


def wait_until(cond: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.2) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class Tree:
    """``acq/`` (watched), ``archive/``, ``state/``, ``cal/`` (a noise model) and a config."""

    def __init__(self, tmp: Path, *, shape: tuple[int, int] = (64, 64), seed: int = 3,
                 daemon: dict | None = None, compression: dict | None = None) -> None:
        self.tmp = tmp
        self.acq, self.archive, self.state, self.cal = (tmp / n for n in ("acq", "archive", "state", "cal"))
        for d in (self.acq, self.state, self.cal):
            d.mkdir(parents=True, exist_ok=True)
        self.truth = make_sensor_truth(shape, seed=seed)
        self.model = truth_noise_model(self.truth)
        self.model.save(self.cal / "cam.rgnoise")
        self.rng = np.random.default_rng(seed)
        self.webhook = WebhookReceiver()
        d = {
            "state_dir": str(self.state), "archive_dir": str(self.archive),
            "watch": [{"path": str(self.acq), "name": "scope",
                       "completeness": {"quiet_period_s": 0.5, "format_quiet_s": 0.2}}],
            "calibrations": {"dirs": [str(self.cal)]},
            "gate": {"replicas": 5, "tiles": None, "first_frame": True},
            "retention": {"keep_days": 0, "action": "delete"},
            "workers": {"processes": 2, "queue_size": 4},
            "rescan_interval_s": 30,
            "alerts": {"webhooks": [{"url_env": "RAWGATE_TEST_WEBHOOK", "flavor": "generic",
                                     "min_severity": "warning"}],
                       "dedupe_window_s": 0, "max_per_hour": 10000},
            "metrics": {"port": 0},
        }
        d.update(daemon or {})
        cfg = {"version": 1, "compression": {"codec": "noisecal:step=2", **(compression or {})}, "daemon": d}
        self.config = tmp / "rawgate.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "daemon.log"

    # ------------------------------------------------------------------ data
    def frames(self, n: int, level_ms: float = 20.0) -> np.ndarray:
        return render_frames(self.truth, 30.0, level_ms, n, self.rng)

    def write_tiff(self, relpath: str, planes: int = 1, atomic: bool = True) -> Path:
        """A camera TIFF (``planes`` × H × W uint16) at ``acq/relpath``."""
        p = self.acq / relpath
        p.parent.mkdir(parents=True, exist_ok=True)
        data = self.frames(planes)
        data = data[0] if planes == 1 else data
        if atomic:
            tmp = p.with_name(f".{p.name}.partial")
            tifffile.imwrite(tmp, data, photometric="minisblack")
            os.replace(tmp, p)
        else:
            tifffile.imwrite(p, data, photometric="minisblack")
        return p

    # ------------------------------------------------------------------ the daemon
    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env["RAWGATE_TEST_WEBHOOK"] = self.webhook.url
        env.update(extra)
        return env

    def start(self, *, drop_dac: bool = False, **env: str) -> subprocess.Popen:
        """Start ``rawgate run``; with ``drop_dac`` as root, without CAP_DAC_OVERRIDE (so file
        permissions apply to it, as they do to the dedicated service user)."""
        cmd = list(RAWGATE) + ["run", "--config", str(self.config)]
        if drop_dac and os.geteuid() == 0 and shutil.which("setpriv"):
            cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", *cmd]
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env(**env),
                                     start_new_session=True)
        fh.close()
        return self.proc

    def wait_ready(self, timeout_s: float = 60) -> dict:
        """Until the daemon wrote its status file for this process."""
        def ready() -> dict | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                st = json.loads((self.state / "status.json").read_text())
            except (OSError, ValueError):
                return None
            return st if st.get("pid") == self.proc.pid else None
        return wait_until(ready, timeout_s, "the daemon to start")

    def kill9(self, main_only: bool = False) -> None:
        """SIGKILL the daemon. ``main_only``: only the main process, as ``kill -9 PID`` does (its
        workers must then die with it, by their parent-death signal); else the whole group."""
        assert self.proc is not None
        try:
            if main_only:
                os.kill(self.proc.pid, signal.SIGKILL)
            else:
                os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def group_alive(self) -> bool:
        """Whether any process of the last daemon's group still runs (e.g. an orphaned worker)."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def stop(self, timeout_s: float = 90) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"daemon did not stop on SIGTERM:\n{self.log.read_text()[-3000:]}") from None

    def cli(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*RAWGATE, *args, "--config", str(self.config)], capture_output=True, text=True,
                              timeout=timeout_s, env=self.env())

    def status(self) -> dict:
        r = self.cli("status", "--json", "--recent", "0")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def counts(self) -> dict[str, int]:
        return self.status()["counts"]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill9()
        self.webhook.close()
        if self.log.exists():  # shown by pytest when the test failed
            print("---- daemon log (last 4000 characters) ----\n" + self.log.read_text()[-4000:])
