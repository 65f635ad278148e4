"""Help texts and error messages survive rich markup: a unit in brackets (``[e-/ADU]``,
``[px]``) is text, not a style tag that rich would silently drop."""

from __future__ import annotations

import re

import typer
from typer.testing import CliRunner

from rawgate.daemon.cli import app


def _commands(cmd, path: tuple[str, ...] = ()):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_bracketed_unit_in_option_help_is_shown():
    root = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for path, cmd in _commands(root):
        units = []
        for p in cmd.params:
            text = (getattr(p, "help", None) or "").replace("\\[", "[")
            units += re.findall(r"\[[a-z][^\]]*\]", text)
        if not units:
            continue
        out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400"}).output
        flat = " ".join(out.split())
        for u in units:
            assert u in flat, f"rawgate {' '.join(path)} --help lost {u!r}"
            checked += 1
    assert checked >= 5


def test_error_text_is_not_read_as_markup(tmp_path):
    """A path that looks like a closing tag must be printed, not raise a MarkupError."""
    bad = tmp_path / "[/bold]x[e-].tif"
    out = CliRunner().invoke(app, ["calibration", "show", str(bad)])
    assert out.exit_code == 2, out.output
    assert "[/bold]x[e-].tif" in " ".join(out.output.split()).replace(" ", "") or \
        "[/bold]x[e-].tif" in out.output.replace("\n", "")
