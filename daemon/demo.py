"""``rawgate demo``, second half: the daemon on the simulated microscope.

After the calibration (``cli.demo``), this starts the service on a temporary tree beside the
output, acquires multi-dimensional acquisitions (T × Z) through pymmcore-plus's MDA engine into
OME-TIFF in the watched folder (pymmcore-plus ``OMETiffWriter``; a ``.done`` sentinel written when
each acquisition has finished is the lab's handshake), and waits until the daemon has compressed,
verified, ε-checked and archived them. One acquisition goes to a folder whose rule uses a plain
lossy codec (JPEG), so the demo also shows a rejection: lossless fallback, raw kept, alert.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pymmcore_plus.experimental.unicore import StageDevice

from .config import RawgateConfig

__all__ = ["DemoItem", "run_daemon_demo"]

log = logging.getLogger("rawgate.demo")

#: The demo's acquisitions: (relative path, codec rule note). A rule sends ``lossy-trial/`` to JPEG.
ACQUISITIONS = ("cells_t3_z3.ome.tif", "lossy-trial/cells_t3_z3.ome.tif")
LOSSY_TRIAL_CODEC = "jpeg:ratio=30"


class DemoFocus(StageDevice):
    """A Z focus drive for the simulated microscope (the simulated sample is thin: position only
    changes the stage coordinate recorded in the metadata)."""

    def __init__(self) -> None:
        super().__init__()
        self._z = 0.0

    def set_position_um(self, val: float) -> None:
        self._z = float(val)

    def get_position_um(self) -> float:
        return self._z

    def set_origin(self) -> None:
        self._z = 0.0

    def home(self) -> None:
        self._z = 0.0

    def stop(self) -> None:
        pass


@dataclass
class DemoItem:
    relpath: str
    state: str
    verdict: str | None
    codec: str | None
    ratio: float | None
    archive_path: str | None
    raw: str
    note: str | None
    report: str | None
    tried: str | None = None  # the codec the rule asked for (a rejected item is archived with the fallback)


def _train_segmenter(inst: Any, out: Path) -> Path:
    """The lab's segmentation model for the demo: a pixel classifier trained on one snap of the
    dense-cell sample against the simulation's ground truth (no network, a few seconds)."""
    from rawgate.calibration.scenes import dense_cells

    from rawgate.gate.segmenter import train_pixel_classifier

    img = inst.snap(1)[0]
    truth = dense_cells(img.shape, seed=0).labels
    labels = np.where(truth > 0, 2, 1).astype(np.uint8)
    clf = train_pixel_classifier(img, labels, n_trees=24, max_depth=12, max_samples=60_000, min_object_px=20)
    return clf.save(out / "cells-segmenter.skops")


def _acquire(core: Any, path: Path) -> int:
    """A T × Z acquisition through the MDA engine into an OME-TIFF; returns the frames written."""
    import warnings

    import useq

    with warnings.catch_warnings():  # "handlers will move to ome-writers": still the 0.18 API
        warnings.simplefilter("ignore", FutureWarning)
        from pymmcore_plus.mda.handlers import OMETiffWriter

    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 3}, z_plan={"range": 4.0, "step": 2.0},
                           axis_order="tpzc")
    path.parent.mkdir(parents=True, exist_ok=True)
    core.mda.run(seq, output=OMETiffWriter(str(path)))
    (path.parent / f"{path.name}.done").write_text("acquisition finished\n")  # the handshake
    return len(list(seq))


#: what the demo codes its approved acquisition with
DEMO_CODEC = "noisecal:step=1.5"
#: the daemon config a demo run writes into its folder, so the commands it prints work on it
CONFIG_NAME = "rawgate.yaml"


def fresh_demo_folder(out: Path) -> bool:
    """Start a demo's daemon folder clean: a folder left by an earlier demo run (it holds the
    config the demo writes) is removed, so its ledger and archive never show up as this run's.
    Anything else already at ``out`` is refused. Returns whether an earlier run was removed."""
    import shutil

    if not out.exists():
        return False
    if not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG_NAME).is_file()):
        raise FileExistsError(f"{out} exists and is not a rawgate demo folder: choose another --out")
    shutil.rmtree(out)
    return True


def write_demo_config(cfg: RawgateConfig, path: Path) -> Path:
    """The demo's daemon config as YAML (absolute paths), for ``rawgate status -c`` and friends."""
    import yaml

    from rawgate.calibration._files import atomic_write

    text = "# written by `rawgate demo`: use it with `rawgate status -c`, `quarantine list -c`, `archive verify -c`\n"
    text += yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False)
    atomic_write(path, lambda fh: fh.write(text.encode()))
    return path


def demo_daemon_config(out: Path, model_dir: Path, segmenter: Path | None) -> RawgateConfig:
    """The demo's daemon settings (all paths under ``out``)."""
    return RawgateConfig.model_validate({
        "version": 1,
        # step 1.5, not the default 2: with the cells separated, the gate judges ~60 per-object
        # statistics, and step 2 failed 1 of 16 dither draws on the demo scene at 256² (1.5: 0 of 16)
        "compression": {"codec": DEMO_CODEC, "fallback_codec": "jpegxl:effort=1"},
        "daemon": {
            "state_dir": str(out / "state"),
            "archive_dir": str(out / "archive"),
            "watch": [{
                "path": str(out / "acquisition"), "name": "scope1",
                "completeness": {"sentinel": "{name}.done"},
                "rules": [{"match": "lossy-trial/*", "codec": LOSSY_TRIAL_CODEC}, {"match": "**"}],
            }],
            "calibrations": {"dirs": [str(model_dir)]},
            "gate": {"replicas": 10, "tiles": 1, "tile_size": 256, "first_frame": True,
                     "segmenter": str(segmenter) if segmenter else None, "html_report": True},
            "retention": {"keep_days": 0, "action": "move", "holding_dir": str(out / "raw-released")},
            "workers": {"processes": 2, "queue_size": 2},
            "metrics": {"enabled": False},
            "alerts": {"log": True},
        },
    })


#: what the demo says when an item reaches a state (``say`` of :func:`run_daemon_demo`)
_STEP_WORDS = {
    "complete": "complete (the acquisition's handshake file is there)",
    "encoded": "coded with {codec}",
    "verified": "copy re-read and decoded: verified",
    "checked": "ε spot check: {verdict}",
    "approved": "approved",
    "rejected": "rejected: {note}",
    "archived": "archived with {codec}",
    "raw_released": "raw data released (moved to raw-released/)",
    "quarantined": "quarantined: {reason}",
}


def _say_progress(led: Any, seen: dict[int, str], say: Callable[[str], None]) -> None:
    """One line per item and state reached since the last call."""
    from .ledger import ItemState

    for i in led.items():
        if seen.get(i.id) == i.state.value:
            continue
        history = [b for _, b, _ in led.history(i.id)]
        start = history.index(seen[i.id]) + 1 if seen.get(i.id) in history else 0
        for state in history[start:]:
            words = _STEP_WORDS.get(state)
            if words:
                # what the rule tried (the item's codec becomes the fallback once a copy is rejected)
                codec = led.last_detail(i.id, ItemState.ENCODED).get("codec") if state == "encoded" else i.codec
                say(f"{i.relpath}: " + words.format(codec=codec, verdict=i.verdict, note=(i.note or "")[:60],
                                                    reason=i.reason))
        seen[i.id] = i.state.value


def run_daemon_demo(out: Path, model_dir: Path, *, seed: int, shape: tuple[int, int], bit_depth: int,
                    timeout_s: float = 300.0,
                    say: Callable[[str], None] | None = None) -> tuple[list[DemoItem], RawgateConfig]:
    """Start the daemon, acquire, wait for the archive; returns one row per item. ``say`` gets
    a line for each acquisition and each step an item takes, as it happens."""
    say = say or (lambda _: None)
    from rawgate.calibration.instruments import SimulatedInstrument

    from .ledger import ItemState, Ledger
    from .pipeline import LEDGER_NAME
    from .service import Service

    out = Path(out)
    fresh_demo_folder(out)
    (out / "acquisition").mkdir(parents=True, exist_ok=True)
    inst = SimulatedInstrument(seed=seed, shape=shape, bit_depth=bit_depth)
    try:
        core = inst.core
        core.loadPyDevice("Focus", DemoFocus())
        core.initializeDevice("Focus")
        core.setFocusDevice("Focus")
        core.setProperty("Camera", "Sample", "dense cells")
        core.setProperty("LED", "Intensity", 10.0)
        # the lamp stays on for the whole demo: UniMMCore's snap does not open a Python shutter
        # device by itself (auto-shutter or not), and frames taken dark hold no cells to judge
        core.setShutterOpen("LED", True)
        core.setExposure(10.0)
        segmenter = _train_segmenter(inst, out)
        cfg = demo_daemon_config(out, model_dir, segmenter)
        write_demo_config(cfg, out / CONFIG_NAME)
        stop = threading.Event()
        service = Service(cfg)
        errors: list[BaseException] = []

        def serve() -> None:
            try:
                service.run(stop)
            except BaseException as e:  # noqa: BLE001 - reported by the caller
                errors.append(e)
                stop.set()

        th = threading.Thread(target=serve, name="rawgate-service", daemon=True)
        th.start()
        status = cfg.daemon.state_dir / "status.json"
        t0 = time.monotonic()
        while not status.exists() and not errors and time.monotonic() - t0 < 60:
            time.sleep(0.1)
        say(f"segmenter trained on one snap of the dense cells: {segmenter.name}")
        for rel in ACQUISITIONS:
            n = _acquire(core, out / "acquisition" / rel)
            say(f"acquired {rel}: {n} frames (T 3 × Z 3) through pymmcore-plus's MDA engine")
    finally:
        inst.close()
    ret = cfg.daemon.retention
    releases_now = ret.action != "keep" and ret.keep_days == 0

    def done(i) -> bool:
        """Finished for the demo: released, quarantined, or archived and not about to release raw
        data (an approved copy releases once the next durable manifest lists it, within seconds)."""
        if i.state in (ItemState.RAW_RELEASED, ItemState.QUARANTINED):
            return True
        return i.state is ItemState.ARCHIVED and not (releases_now and i.verdict == "approved")

    ledger_path = cfg.daemon.state_dir / LEDGER_NAME
    seen: dict[int, str] = {}
    try:
        while time.monotonic() - t0 < timeout_s and not errors:
            if ledger_path.exists():
                with Ledger(ledger_path) as led:
                    _say_progress(led, seen, say)
                    items = led.items()
                    if len(items) >= len(ACQUISITIONS) and all(done(i) for i in items):
                        break
            time.sleep(0.3)
    finally:
        stop.set()
        th.join(timeout=90)
    if errors:
        raise errors[0]
    rows = []
    with Ledger(ledger_path) as led:
        _say_progress(led, seen, say)
        for i in led.items():
            ratio = (i.raw_bytes / i.archive_bytes) if i.raw_bytes and i.archive_bytes else None
            raw = {"raw_released": f"moved to raw-released/scope1/{i.relpath}",
                   "archived": "kept (not approved)"}.get(i.state.value, "kept")
            report = None
            if i.report_path:
                html = sorted(Path(i.report_path).parent.glob(f"{i.id}/plane-*/report.html"))
                report = str(html[0]) if html else i.report_path
            rows.append(DemoItem(i.relpath, i.state.value, i.verdict, i.codec, ratio, i.archive_path, raw,
                                 i.reason or i.note, report, led.last_detail(i.id, ItemState.ENCODED).get("codec")))
    (out / "daemon-summary.json").write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    return rows, cfg
