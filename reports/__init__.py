"""rawgate's report kit: one stylesheet and jinja2 templates, shipped as package data.

Every HTML report (``rawgate evaluate`` today; the calibration and ε reports move onto it in the
layout issue's stage 3) is a folder: ``report.html`` beside a ``plots/`` folder of PNG files, so
a report opens from a file share without a server and its plots can be copied into a paper.
The page inlines the one stylesheet (``rawgate.css``), so it renders the same wherever the
folder is moved. Plotting itself belongs to each report's module; this kit only renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["HTML_NAME", "PLOTS_DIR", "render", "stylesheet", "write_page"]

HTML_NAME = "report.html"
PLOTS_DIR = "plots"
_HERE = Path(__file__).parent
_DPI = 110


@cache
def _env() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"),
                              autoescape=jinja2.select_autoescape(("html", "j2")),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def stylesheet() -> str:
    """The one stylesheet every report inlines."""
    return (_HERE / "rawgate.css").read_text()


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` (which extends ``base.html.j2``) to HTML text."""
    return _env().get_template(template).render(stylesheet=stylesheet(), **context)


def write_page(folder: str | Path, template: str, context: Mapping[str, Any],
               figures: Mapping[str, Any]) -> Path:
    """Write a report folder: each matplotlib figure (None: skipped) as ``plots/<name>.png``,
    then ``report.html`` rendered with ``plots`` = ``{name: relative path}``; every file is
    written atomically. Returns the HTML path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from rawgate.calibration._files import atomic_write  # (stage 3 gives the kit its own file helpers)

    folder = Path(folder)
    (folder / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    plots = {}
    for name, fig in figures.items():
        if fig is None:
            continue
        FigureCanvasAgg(fig)
        fig.tight_layout()
        rel = f"{PLOTS_DIR}/{name}.png"
        atomic_write(folder / rel, lambda fh, f=fig: f.savefig(fh, format="png", dpi=_DPI))
        plots[name] = rel
    html = render(template, plots=plots, **context)
    out = folder / HTML_NAME
    atomic_write(out, lambda fh: fh.write(html.encode()))
    return out
