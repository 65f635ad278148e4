"""The daemon's ε-budgeted rate: ``noisecal:step=auto`` in a watch rule.

A rule whose codec leaves its rate to the ε budget codes with the setting stored in the ledger
for that watch rule and camera (:class:`~rawgate.daemon.ledger.RateKey`). The setting comes from
``rawgate evaluate --store`` on the lab's own frames, or — when none is stored — from the same
search (:func:`rawgate.gate.evaluate.search_setting`) run by the daemon on the first item's first
plane. Every item is still spot-checked; when a check rejects an item coded at the stored
setting, the setting steps back to the next smaller one (:meth:`AutoSpec.step_back`) and an
alert says so; when none is left the rule codes losslessly until someone searches again.

Numerics live in :mod:`rawgate.gate.evaluate`; this module only decides and records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rawgate.calibration.model import NoiseModel
from rawgate.codecs.auto import AutoSpec

from .ledger import Ledger, RateKey, RateSetting

__all__ = ["DITHERS", "MARGIN", "search_regions", "setting_for", "step_back"]

#: a setting the daemon searches passes only if this many draws of the codec's dither pass
DITHERS = 3
#: and it codes this fraction below the passing edge (then lower, by the same factor, until that passes)
MARGIN = 0.1


def search_regions(regions: Sequence[np.ndarray], models: Sequence[NoiseModel], auto: AutoSpec, *,
                   segmenter: Any, gate_config: Any) -> tuple[float | None, list[float], str]:
    """Search ``auto`` on the given regions (each with its noise model): ``(best value or None,
    the values that passed, a one-line account)``."""
    from rawgate.gate.check import prepare_reference
    from rawgate.gate.evaluate import search_setting

    refs = [(f"region {i}", prepare_reference(r, m, segmenter, gate_config))
            for i, (r, m) in enumerate(zip(regions, models))]
    s = search_setting(refs, auto, dithers=DITHERS, margin=MARGIN)
    passing = [v for v, ok, _ in s.tried if ok and (s.safe is None or v <= s.safe)]
    if s.best is None:
        return None, passing, f"even {s.option}={s.first_failing:g} fails the ε gate ({', '.join(s.failing[:3])})"
    edge = (f"{s.option}={s.best:g} passes (the highest searched)" if s.first_failing is None else
            f"{s.option}={s.best:g} passes, {s.option}={s.first_failing:g} fails ({', '.join(s.failing[:3])})")
    if s.safe is None:
        return None, passing, f"{edge}; nothing {MARGIN:.0%} below it passes {DITHERS} dither draws"
    return s.safe, passing, f"{edge}; coded {MARGIN:.0%} below the edge: {s.option}={s.safe:g}"


def setting_for(ledger: Ledger, key: RateKey, search: Any) -> tuple[RateSetting, bool]:
    """The stored setting of ``key``; when none is stored, ``search()`` (returning what
    :func:`search_regions` does) finds one and it is stored. Returns ``(setting, searched now)``."""
    stored = ledger.rate_setting(key)
    if stored is not None:
        return stored, False
    best, passing, why = search()
    return ledger.store_rate_setting(key, best, passing, f"searched by the daemon: {why}"), True


def step_back(ledger: Ledger, key: RateKey, auto: AutoSpec, failed: float, why: str) -> tuple[bool, float | None]:
    """After a spot check rejected a copy coded at ``failed``: lower the stored setting to the next
    smaller one (None: none left, code losslessly). Returns ``(stepped now, new value)``; False
    when another rejection already stepped it back."""
    stored = ledger.rate_setting(key)
    new = auto.step_back(failed, stored.passing if stored else ())
    return ledger.step_back_rate(key, failed, new, why), new
