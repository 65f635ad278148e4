"""The package layout promised in DESIGN.md: one import package ``rawgate``; the codecs and the ε
gate are libraries at ``rawgate.codecs`` and ``rawgate.gate`` that import nothing of the daemon;
dependencies point one way (calibration ← codecs ← gate ← daemon)."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: package → packages it must never import
FORBIDDEN = {
    "calibration": ("rawgate.codecs", "rawgate.gate", "rawgate.daemon"),
    "codecs": ("rawgate.gate", "rawgate.daemon"),
    "gate": ("rawgate.daemon",),
    # the report kit only renders: it knows no package but calibration's file helpers
    "reports": ("rawgate.codecs", "rawgate.gate", "rawgate.daemon"),
}


def _imports(path: Path, package: str) -> set[str]:
    """Absolute names of every module imported by a source file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(ROOT / package).with_suffix("")
    here = ["rawgate", package, *rel.parts[:-1]]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            mod = ".".join([*base, node.module] if node.module else base)
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package):
    bad = []
    for f in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(f, package):
            if any(name == x or name.startswith(x + ".") for x in FORBIDDEN[package]):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_the_libraries_load_without_the_daemon():
    code = (
        "import json, sys\n"
        "import rawgate.codecs, rawgate.gate\n"
        "names = {n: bool(getattr(rawgate.gate, n)) for n in rawgate.gate.__all__}\n"
        "print(json.dumps({'daemon': sorted(m for m in sys.modules if m.startswith('rawgate.daemon')),"
        " 'codecs': rawgate.codecs.__all__, 'gate': sorted(names)}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["daemon"] == []
    for name in ("get_codec", "write_ome_tiff", "read_ome_zarr", "PlaneStack", "fresh_model_lookup"):
        assert name in got["codecs"]
    for name in ("spot_check", "GateConfig", "VerdictPolicy", "load_segmenter", "write_report"):
        assert name in got["gate"]


def test_the_old_homes_are_gone():
    assert not (ROOT / "daemon" / "codecs").exists() and not (ROOT / "daemon" / "gate").exists()
    for old in ("rawgate.daemon.codecs", "rawgate.daemon.gate", "rawgate.daemon.planes"):
        assert importlib.util.find_spec(old) is None, old


def test_version_is_the_installed_one():
    r = subprocess.run([sys.executable, "-m", "rawgate.daemon.cli", "--version"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"rawgate {version('rawgate')}"
