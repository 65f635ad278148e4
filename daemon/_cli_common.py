"""What every ``rawgate`` command shares: consoles, exit codes, turning errors into messages."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated, Iterator

import typer
from rich.markup import escape as rich_escape
from rich.console import Console

from .config import ConfigError

console = Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole in logs

#: options ``rawgate check`` and ``rawgate evaluate`` share (one wording, one default)
ReplicasOpt = Annotated[int, typer.Option(help="raw-equivalent replicas N")]
ReplicasAroundOpt = Annotated[str, typer.Option(help="raw (the paper's) or estimate: replicas around a denoised "
                                                "estimate of the mean image, pixel-wise one camera noise from the "
                                                "truth (not better at low signal: bench/gate_truth.py)")]

EXIT_FAILED_CHECK = 1
EXIT_BAD_INPUT = 2


def _fail(msg: str, code: int = EXIT_BAD_INPUT) -> None:
    # the message carries user text (paths, values): never read it as rich markup
    err.print(f"[bold red]error:[/] {rich_escape(msg)}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the library's documented errors into a message and exit code 2."""
    from rawgate.calibration.fit import FitError
    from rawgate.calibration.instruments import InstrumentError
    from rawgate.calibration.model import ModelError
    from rawgate.calibration.sweep import SweepError

    try:
        yield
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: nothing was written[/]")
        raise typer.Exit(130) from None
    except ConfigError as e:
        _fail(str(e))
    except (InstrumentError, SweepError, FitError, ModelError, ValueError, OSError) as e:
        _fail(f"{type(e).__name__}: {e}")


