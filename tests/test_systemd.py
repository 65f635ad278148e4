"""The systemd units in systemd/: `systemd-analyze verify` accepts them, they carry the
hardening and scheduling the README promises, and the sysusers/tmpfiles files work together.

`systemd-analyze verify` loads unit files without a running systemd (no PID 1, no D-Bus), so
this runs in a container. Two things it needs:

* the ExecStart= binary must exist and be executable, so each unit is copied into tmp_path
  with /opt/rawgate/.venv/bin/rawgate rewritten to this environment's `rawgate` entry point;
* `--recursive-errors=no`: verify only the named unit, not the host's units it pulls in
  (network-online.target...), and — on systemd 252 — make a bad setting in it an exit status
  of 1. With the default mode, 252 prints "Failed to parse service type, ignoring" and still
  exits 0 (test_verify_catches_a_broken_directive pins this down).

Verify on the real units prints nothing at all here (systemd 252, Debian 12): no complaint
about the `rawgate` user (it is only resolved at start), nor about the credential files
(only read at start). The test is strict: exit status 0 and not one output line that names
the units or their files. Lines about *other* units (a broken unit elsewhere on a
developer's host) are not ours to judge and are tolerated.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNITS = ("rawgate.service", "rawgate-calibrate.service", "rawgate-calibrate.timer",
         "rawgate-archive-verify.service", "rawgate-archive-verify.timer")
PROD_ENTRY_POINT = "/opt/rawgate/.venv/bin/rawgate"

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")


def _entry_point() -> str:
    """This environment's `rawgate` console script (next to the interpreter in a venv)."""
    beside = Path(sys.executable).with_name("rawgate")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("rawgate")
    assert found, "the `rawgate` entry point is not installed (pip install -e .)"
    return found


def _parse(text: str) -> dict[str, dict[str, list[str]]]:
    """Unit file → {section: {key: [values in order]}}: repeated keys (ReadWritePaths=,
    Environment=, LoadCredential=) are kept, which configparser cannot do."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    return _parse((SYSTEMD_DIR / name).read_text())


def _one(unit: dict, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= is not set"
    assert len(values) == 1, f"[{section}] {key}= is set {len(values)} times: {values}"
    return values[0]


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """All units, with ExecStart= pointing at this environment's `rawgate`."""
    entry = _entry_point()
    for name in UNITS:
        text = (SYSTEMD_DIR / name).read_text()
        (tmp_path / name).write_text(text.replace(PROD_ENTRY_POINT, entry))
    return tmp_path


def _verify(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", "--generators=no", "--recursive-errors=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
    )


def _lines_about_units(output: str, unit_dir: Path) -> list[str]:
    names = list(UNITS) + [n.rsplit(".", 1)[0] for n in UNITS]
    return [
        line
        for line in output.splitlines()
        if line.strip() and (str(unit_dir) in line or any(n in line for n in names))
    ]


# --- systemd-analyze verify --------------------------------------------------------------


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_verify_accepts_unit(unit_dir: Path, name: str) -> None:
    proc = _verify(unit_dir / name)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"systemd-analyze verify {name} exited {proc.returncode}:\n{output}"
    ours = _lines_about_units(output, unit_dir)
    assert not ours, f"systemd-analyze verify {name} complained:\n" + "\n".join(ours)
    # In the copy, ExecStart= names an existing executable (that is what verify checked).
    for cmd in _parse((unit_dir / name).read_text()).get("Service", {}).get("ExecStart", []):
        assert Path(cmd.split()[0]).is_file()


@needs_analyze
def test_verify_catches_a_broken_directive(unit_dir: Path) -> None:
    """The verify test can fail: a misspelt Type= is reported and exits non-zero."""
    unit = unit_dir / "rawgate.service"
    text = unit.read_text()
    assert "\nType=notify\n" in text
    unit.write_text(text.replace("\nType=notify\n", "\nType=notifyy\n"))
    proc = _verify(unit)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert re.search(r"rawgate\.service:\d+: .*notifyy", output), output


@needs_analyze
def test_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    """Without the rewrite, ExecStart= names /opt/rawgate/..., absent here: verify reports it.
    This is why the units are verified from a rewritten copy, and proves verify looks at it."""
    if Path(PROD_ENTRY_POINT).exists():
        pytest.skip(f"{PROD_ENTRY_POINT} is installed on this machine")
    unit = tmp_path / "rawgate.service"
    shutil.copy(SYSTEMD_DIR / "rawgate.service", unit)
    proc = _verify(unit)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert f"Command {PROD_ENTRY_POINT} is not executable" in output, output


@needs_analyze
def test_verify_catches_a_bad_calendar(unit_dir: Path) -> None:
    timer = unit_dir / "rawgate-calibrate.timer"
    text = timer.read_text()
    timer.write_text(re.sub(r"(?m)^OnCalendar=.*$", "OnCalendar=Mon *-*-* 25:00:00", text))
    proc = _verify(timer)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "calendar" in (proc.stdout + proc.stderr).lower()


@needs_analyze
def test_calendar_is_valid() -> None:
    spec = _one(_unit("rawgate-calibrate.timer"), "Timer", "OnCalendar")
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "calendar", spec], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Next elapse" in proc.stdout


# --- what the units must contain ---------------------------------------------------------

# Shared by both services.
HARDENING = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0027",
    "User": "rawgate",
    "Group": "rawgate",
    "StateDirectory": "rawgate",
}


@pytest.mark.parametrize("name", ["rawgate.service", "rawgate-calibrate.service", "rawgate-archive-verify.service"])
def test_services_are_hardened(name: str) -> None:
    unit = _unit(name)
    for key, want in HARDENING.items():
        assert _one(unit, "Service", key) == want, f"{name}: {key}="
    service = unit["Service"]
    # numba's LLVM JIT needs writable+executable memory.
    assert "MemoryDenyWriteExecute" not in service
    assert "PYTHONUNBUFFERED=1" in service["Environment"]
    # /opt is read-only: numba's cache must be pointed at the writable cache directory.
    assert _one(unit, "Service", "CacheDirectory") == "rawgate"
    assert any(e.startswith("NUMBA_CACHE_DIR=%C/rawgate") for e in service["Environment"])


def test_daemon_unit() -> None:
    unit = _unit("rawgate.service")
    service = unit["Service"]
    assert _one(unit, "Service", "Type") == "notify"
    assert _one(unit, "Service", "NotifyAccess") == "main"
    assert _one(unit, "Service", "ExecStart") == f"{PROD_ENTRY_POINT} run --config /etc/rawgate/rawgate.yaml"
    assert _one(unit, "Service", "Restart") == "on-failure"
    assert int(_one(unit, "Service", "RestartSec")) > 0
    assert _one(unit, "Service", "WatchdogSec") == "60"
    assert _one(unit, "Service", "TimeoutStartSec")
    assert int(_one(unit, "Service", "TimeoutStopSec")) >= 60
    assert _one(unit, "Service", "PrivateDevices") == "yes"
    rw = " ".join(service["ReadWritePaths"]).split()
    assert {"-/data/acquisition", "-/srv/rawgate/archive"} <= set(rw)
    # Credentials: every LoadCredential= has a SetCredential= default of the same ID, so a
    # missing file does not fail the start; the IDs are the ones the daemon reads.
    loaded = {v.split(":", 1)[0]: v.split(":", 1)[1] for v in service["LoadCredential"]}
    defaults = {v.split(":", 1)[0] for v in service["SetCredential"]}
    assert loaded == {
        "webhook_url": "/etc/rawgate/credentials/webhook_url",
        "smtp_password": "/etc/rawgate/credentials/smtp_password",
    }
    assert defaults == set(loaded)
    assert _one(unit, "Install", "WantedBy") == "multi-user.target"


def test_calibrate_unit() -> None:
    unit = _unit("rawgate-calibrate.service")
    service = unit["Service"]
    assert _one(unit, "Service", "Type") == "oneshot"
    # Calibrate, then the drift/age check that alerts (real options: checked against --help below).
    assert service["ExecStart"] == [f"{PROD_ENTRY_POINT} calibrate --config /etc/rawgate/rawgate.yaml",
                                    f"{PROD_ENTRY_POINT} calibration check --config /etc/rawgate/rawgate.yaml"]
    # The camera is reached through device nodes: nothing may restrict them. ProtectClock=
    # implies DeviceAllow=char-rtc r, which turns DevicePolicy=auto into an allow-list.
    for key in ("PrivateDevices", "ProtectClock", "DeviceAllow", "DevicePolicy"):
        assert key not in service, f"rawgate-calibrate.service: {key}= would hide the camera"
    assert "Restart" not in service
    # Started by the timer, not at boot.
    assert "Install" not in unit


def test_archive_verify_unit() -> None:
    unit = _unit("rawgate-archive-verify.service")
    assert _one(unit, "Service", "Type") == "oneshot"
    assert _one(unit, "Service", "ExecStart") == f"{PROD_ENTRY_POINT} archive verify --config /etc/rawgate/rawgate.yaml"
    assert "ReadWritePaths" not in unit["Service"]  # the archive is only read
    assert "Restart" not in unit["Service"] and "Install" not in unit


def test_calibrate_options_exist() -> None:
    """Every --option in the ExecStart= lines is one the CLI accepts."""
    for line in _unit("rawgate-calibrate.service")["Service"]["ExecStart"] + [
            _one(_unit("rawgate.service"), "Service", "ExecStart"),
            _one(_unit("rawgate-archive-verify.service"), "Service", "ExecStart")]:
        cmd = line.split()
        sub = [a for a in cmd[1:] if not a.startswith("--") and not a.startswith("/")]
        proc = subprocess.run(
            [_entry_point(), *sub, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
        )
        assert proc.returncode == 0, proc.stderr
        for opt in (a for a in cmd[2:] if a.startswith("--")):
            assert opt in proc.stdout, f"`rawgate {sub}` has no {opt}"


@pytest.mark.parametrize("name", ["rawgate-calibrate", "rawgate-archive-verify"])
def test_timer_pairs_the_service(name: str) -> None:
    timer = _unit(f"{name}.timer")
    assert _one(timer, "Timer", "Unit") == f"{name}.service"
    assert (SYSTEMD_DIR / _one(timer, "Timer", "Unit")).is_file()
    assert _one(timer, "Timer", "OnCalendar")
    assert _one(timer, "Timer", "Persistent") == "true"
    assert _one(timer, "Timer", "RandomizedDelaySec")
    assert _one(timer, "Install", "WantedBy") == "timers.target"


@pytest.mark.parametrize("name", UNITS)
def test_configparser_reads_units(name: str) -> None:
    """A plain INI reader (what packaging tools use) reads the files too."""
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # keep key case
    cp.read_string((SYSTEMD_DIR / name).read_text())
    assert "Unit" in cp and cp["Unit"]["Description"].startswith("rawgate")


def test_readme_matches_units() -> None:
    readme = (SYSTEMD_DIR / "README.md").read_text()
    for needle in (
        "systemctl enable --now rawgate.service rawgate-calibrate.timer rawgate-archive-verify.timer",
        "/etc/rawgate/credentials/webhook_url",
        "/etc/rawgate/credentials/smtp_password",
        "MemoryDenyWriteExecute",
        "WatchdogSec=60",
        "rawgate.sysusers.conf",
        "rawgate.tmpfiles.conf",
    ):
        assert needle in readme, needle


# --- sysusers.d and tmpfiles.d -----------------------------------------------------------


@pytest.mark.skipif(
    not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles")),
    reason="systemd-sysusers / systemd-tmpfiles not installed",
)
def test_sysusers_and_tmpfiles(tmp_path: Path) -> None:
    """sysusers creates the user in an empty root; tmpfiles then creates the folders for it
    (before sysusers it could not resolve `rawgate`)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    sysusers = subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(SYSTEMD_DIR / "rawgate.sysusers.conf")],
        capture_output=True, text=True, timeout=30,
    )
    assert sysusers.returncode == 0, sysusers.stderr
    passwd = (root / "etc/passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("rawgate:"))
    name, _, uid, gid, _, home, shell = entry.split(":")
    assert int(uid) < 1000 and home == "/var/lib/rawgate" and shell.endswith("nologin")
    assert re.search(rf"(?m)^rawgate:x:{gid}:", (root / "etc/group").read_text())

    tmpfiles = subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create", str(SYSTEMD_DIR / "rawgate.tmpfiles.conf")],
        capture_output=True, text=True, timeout=30,
    )
    archive = root / "srv/rawgate/archive"
    credentials = root / "etc/rawgate/credentials"
    assert archive.is_dir() and credentials.is_dir(), tmpfiles.stderr
    assert (archive.stat().st_mode & 0o777, credentials.stat().st_mode & 0o777) == (0o750, 0o700)
    assert "Failed to resolve" not in tmpfiles.stderr
    if os.geteuid() == 0:
        assert tmpfiles.returncode == 0, tmpfiles.stderr
        assert (archive.stat().st_uid, archive.stat().st_gid) == (int(uid), int(gid))
        assert credentials.stat().st_uid == 0
    else:
        # Not root: the folders are made, only handing them to rawgate/root is refused.
        problems = [
            line for line in tmpfiles.stderr.splitlines()
            if line.strip() and not re.search(r"fchownat\(\) of .* failed: Operation not permitted", line)
        ]
        assert not problems, tmpfiles.stderr
