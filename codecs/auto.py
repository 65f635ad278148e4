"""Codec specs with one option left to the ε-budgeted search: ``noisecal:step=auto``.

``rawgate evaluate`` searches such a spec for the most compressive setting that passes the ε
gate; the daemon accepts the same strings in its configuration and codes with the setting stored
for the camera and watch rule (:mod:`rawgate.daemon.rates`). The parser lives with the codec
registry so that both validate an ``auto`` spec the same way as any other spec.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .base import CodecError, get_codec

__all__ = ["SEARCHABLE", "AutoSpec", "is_auto_spec"]


def is_auto_spec(spec: str) -> bool:
    """Whether ``spec`` leaves an option to the search (``…=auto``)."""
    _, _, rest = spec.partition(":")
    return any(p.replace(" ", "").endswith("=auto") for p in rest.split(","))


#: what ``option=auto`` searches per codec: (option, lowest, highest); a larger value compresses
#: more. ``step`` is noisecal's quantisation step in noise σ; ``ratio`` the target ratio.
SEARCHABLE: dict[str, tuple[str, float, float]] = {
    "noisecal": ("step", 0.5, 16.0),
    "jpeg": ("ratio", 2.0, 200.0),
    "jpeg2k": ("ratio", 2.0, 200.0),
    "jpegxr": ("ratio", 2.0, 200.0),
    "jpegxl": ("ratio", 2.0, 200.0),
    "lerc": ("ratio", 2.0, 200.0),
}


@dataclass(frozen=True)
class AutoSpec:
    """A spec with one option left to the search: ``noisecal:step=auto``, ``jpeg:ratio=auto``."""

    codec: str
    option: str
    others: tuple[str, ...]  # the other ``key=value`` options, as written

    @property
    def spec(self) -> str:
        return f"{self.codec}:" + ",".join((f"{self.option}=auto", *self.others))

    def at(self, value: float) -> str:
        """The concrete spec with the searched option set to ``value``."""
        return f"{self.codec}:" + ",".join((f"{self.option}={value:g}", *self.others))

    @property
    def lowest(self) -> float:
        """The least compressive setting the search tries."""
        return SEARCHABLE[self.codec][1]

    def step_back(self, value: float, passing: Iterable[float] = ()) -> float | None:
        """The next smaller setting after ``value`` failed a spot check.

        The largest of ``passing`` (settings that passed when searched) below ``value``; else
        ``value / √2`` (one half-step of the search's geometric ladder, to 3 significant
        digits); None when that is below :attr:`lowest`: no setting is left, code losslessly.
        """
        below = [float(p) for p in passing if float(p) < value]
        if below:
            return max(below)
        v = float(f"{value / math.sqrt(2):.3g}")
        return v if v >= self.lowest else None

    @classmethod
    def parse(cls, spec: str) -> "AutoSpec | None":
        """The auto spec, or None when ``spec`` has no ``=auto`` option; CodecError when the
        codec or option cannot be searched, or the other options are invalid."""
        name, _, rest = spec.strip().partition(":")
        items = [p.strip() for p in rest.split(",") if p.strip()]
        autos = [p for p in items if p.replace(" ", "").endswith("=auto")]
        if not autos:
            return None
        name = name.strip().lower()
        if name not in SEARCHABLE:
            raise CodecError(f"{spec!r}: `auto` is searched for {', '.join(f'{c}:{o}' for c, (o, _, _) in SEARCHABLE.items())}"
                             f", not for {name}")
        option = autos[0].split("=", 1)[0].strip()
        if len(autos) > 1 or option != SEARCHABLE[name][0]:
            raise CodecError(f"{spec!r}: only {SEARCHABLE[name][0]}=auto can be searched for {name}")
        a = cls(name, option, tuple(p for p in items if p not in autos))
        get_codec(a.at(SEARCHABLE[name][1]))  # the other options, checked by the registry
        return a


