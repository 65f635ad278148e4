"""The work on one item, from ``complete`` to ``raw_released``, one ledger state at a time.

:func:`advance` runs in a worker process. It reads the item's state from the ledger, does that
state's step, and records the move *before* the next step starts::

    complete  → encoded   the copy written (staged) in the archive's `.rawgate-staging/`
    encoded   → verified  the staged copy re-read from disk and decoded, plane by plane; SHA-256
                          of the raw files and of the copy recorded
    verified  → checked   ε spot check of sampled planes (raw vs the decoded copy) → verdict
    checked   → approved | rejected
    approved  → archived  the staged copy moved into the archive tree (atomic rename)
    rejected  → archived  a lossless fallback copy written, verified bit-exact and moved in
    archived  → raw_released   only for an approved item once the retention time has passed,
                               after re-hashing the raw files against the recorded digests and
                               the archived copy against its recorded SHA-256 (and decoding it)

Every step is idempotent (its outputs are at deterministic paths and atomic), so a crash at any
point is recovered by running the step again; the ledger's compare-and-set makes a second worker
on the same item stop at its first move. Problems with the item itself (unreadable, truncated,
shape unlike the calibration, disk full, deleted mid-way) quarantine it with a reason.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import fnmatch
import json
import logging
import os
import signal
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rawgate.calibration._files import atomic_write, to_jsonable
from rawgate.calibration.drift import DriftTolerances
from rawgate.calibration.model import ModelMismatchError, NoiseModel

from .archive import (
    ArchiveError, DiskFullError, archive_relpath, combine_digests, promote, release_raw, sha256_file, verify_copy,
    write_copy,
)
from .calibrations import ModelLibrary, select_model
from rawgate.codecs import get_codec
from rawgate.codecs.auto import AutoSpec
from rawgate.codecs.containers import MODELS_DIR
from rawgate.codecs.models import find_model, fresh_model_lookup, model_sha256
from .config import RawgateConfig, RuleConfig, WatchConfig
from . import rates
from .ledger import Item, ItemState, Ledger, RateKey, StaleTransitionError
from .sources import ItemRef, SourceError, UnsafePathError, item_files, open_stack

__all__ = ["Outcome", "Quarantine", "Worker", "advance", "sample_planes", "staging_dir", "LEDGER_NAME"]

log = logging.getLogger("rawgate.pipeline")
S = ItemState
LEDGER_NAME = "ledger.sqlite"
STAGING = ".rawgate-staging"
#: A copy that fails verification this many times quarantines the item.
MAX_VERIFY_FAILURES = 2


class Quarantine(Exception):
    """The item itself is the problem: quarantine it with this reason (and alert)."""

    def __init__(self, reason: str, severity: str = "warning") -> None:
        super().__init__(reason)
        self.reason = reason
        self.severity = severity


@dataclass
class Outcome:
    """What one :func:`advance` call did, for the service's alerts and metrics (picklable)."""

    item_id: int
    relpath: str = ""
    root: str = ""
    state: str = ""
    verdict: str | None = None
    reason: str | None = None
    note: str | None = None
    raw_bytes: int = 0
    archive_bytes: int = 0
    latency_s: float | None = None
    epsilons: list[tuple[str, str, float]] = field(default_factory=list)
    calibration: tuple[str, float] | None = None
    alerts: list[dict[str, str]] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    def alert(self, key: str, severity: str, title: str, text: str) -> None:
        self.alerts.append({"key": key, "severity": severity, "title": title, "text": text})


def staging_dir(cfg: RawgateConfig) -> Path:
    """Staged copies live on the archive's filesystem, so moving one in is an atomic rename."""
    return cfg.daemon.archive_dir / STAGING


def models_dir(cfg: RawgateConfig) -> Path:
    """Where the archive stores each noise model once (``data/models/<sha256>.rgmaps``, bag
    payload); copies in the archive and in its staging folder refer to them by SHA-256."""
    return cfg.daemon.archive_dir / "data" / MODELS_DIR


def sample_planes(n_planes: int, *, first_frame: bool, fraction: float, max_frames: int, seed: int,
                  key: str) -> list[int]:
    """Plane indices the ε check looks at: the first plane (if asked) plus a seeded fraction.

    The choice depends only on ``seed`` and ``key`` (the item's path), so a re-run after a crash
    checks the same planes.
    """
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8", "surrogateescape"))])
    picks = [0] if first_frame and n_planes > 0 else []
    if n_planes > 1 and fraction > 0:
        others = np.flatnonzero(rng.random(n_planes - 1) < fraction) + 1
        picks += [int(i) for i in rng.permutation(others)]
    if not picks and n_planes > 0:
        picks = [int(rng.integers(n_planes))]
    return sorted(picks[:max_frames])


def _digest_files(root: Path, files: list[Path]) -> tuple[str, dict[str, str]]:
    """The item's digest (:func:`rawgate.daemon.archive.sha256_files`) and the per-file SHA-256
    it is made of (kept so a release can re-check each file)."""
    per = {Path(f).relative_to(root).as_posix(): sha256_file(f) for f in files}
    return combine_digests(per), per


def _set_parent_death_signal() -> None:
    """Linux: die with the daemon. A worker orphaned by ``kill -9`` must not keep writing while a
    restarted daemon redoes the same item (the ledger would refuse its moves, but not its files)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    except OSError:
        pass


class Worker:
    """Per-process state: the config, a ledger connection, the calibrations and the segmenter."""

    def __init__(self, cfg: RawgateConfig) -> None:
        self.cfg = cfg
        d = cfg.daemon
        self.ledger = Ledger(d.state_dir / LEDGER_NAME)
        dirs = d.calibrations.dirs or [cfg.calibration.output_dir]
        self.library = ModelLibrary(dirs)
        self._segmenter: Any = None
        self._watch = {str(w.path.resolve()): w for w in d.watch}
        dr = cfg.calibration.drift
        self.drift = DriftTolerances(dr.gain_rel, dr.read_noise_rel, dr.offset_adu, dr.new_bad_pixel_fraction)
        self.drift_cache: dict = {}

    def watch_of(self, item: Item) -> WatchConfig:
        try:
            return self._watch[item.root]
        except KeyError:
            raise Quarantine(f"{item.root} is no longer a watched folder in the configuration") from None

    def segmenter(self) -> Any:
        spec = self.cfg.daemon.gate.segmenter
        if spec and self._segmenter is None:
            from rawgate.gate.segmenter import load_segmenter

            self._segmenter = load_segmenter(spec)
        return self._segmenter

    def staged(self, item: Item, fallback: bool = False) -> Path:
        return staging_dir(self.cfg) / f"{item.id}{'.fallback' if fallback else ''}.ome.tif"

    def final(self, item: Item, watch: WatchConfig) -> Path:
        return (self.cfg.daemon.archive_dir / "data" / watch.archive_name
                / archive_relpath(item.relpath, item.kind, item.generation))


# ---------------------------------------------------------------------------------------- steps
def _rule(watch: WatchConfig, relpath: str, metadata: dict[str, Any]) -> tuple[int, RuleConfig]:
    """The first rule (its index and itself) whose glob matches the path (fnmatch: ``*`` crosses
    folders, so ``**`` matches everything) and whose metadata entries equal the item's (top level
    or Micro-Manager ``Summary``)."""
    summary = metadata.get("Summary")
    flat = dict(summary) if isinstance(summary, dict) else {}
    flat.update({k: v for k, v in metadata.items() if not isinstance(v, (dict, list))})
    for i, r in enumerate(watch.rules):
        if fnmatch.fnmatch(relpath, r.match) and all(str(flat.get(k)) == str(v) for k, v in r.metadata.items()):
            return i, r
    raise Quarantine(f"no rule of {watch.path} matches {relpath}")


def _gate_config(g: Any) -> Any:
    """The spot check's settings; the daemon picks its tiles itself (:func:`_check_regions`)."""
    from rawgate.gate.check import GateConfig
    from rawgate.gate.verdict import VerdictPolicy

    return GateConfig(n_replicas=g.replicas, seed=g.seed, tiles=None, replicas_around=g.replicas_around,
                      policy=VerdictPolicy(false_reject_rate=g.false_reject_rate))


def _auto_setting(w: Worker, item: Item, watch: WatchConfig, rule_index: int, auto: AutoSpec, stack: Any,
                  model: NoiseModel, out: Outcome) -> tuple[RateKey, float | None]:
    """The ε-budgeted value of ``auto`` for this watch rule and camera (:mod:`.rates`): stored, or
    searched now on this item's first plane (the spot check's regions) and stored."""
    key = RateKey(watch.archive_name, rule_index, model.identity.serial or "unknown", auto.spec)

    def search() -> tuple[float | None, list[float], str]:
        g = w.cfg.daemon.gate
        plane = stack.plane(0)
        regions = _check_regions(plane, plane, model, g, f"{item.relpath}#0")
        return rates.search_regions([r for r, _, _, _ in regions], [m for _, _, m, _ in regions], auto,
                                    segmenter=w.segmenter(), gate_config=_gate_config(g))

    setting, searched = rates.setting_for(w.ledger, key, search)
    if searched:
        got = "lossless (no setting passes)" if setting.value is None else auto.at(setting.value)
        sev = "warning" if setting.value is None else "info"
        out.alert(f"rate:{key.watch}:{key.rule}:{key.camera}:{auto.spec}", sev, f"rate set: {auto.spec} → {got}",
                  f"Searched on {item.relpath} for watch {key.watch!r} rule {key.rule}, camera {key.camera}: "
                  f"{setting.source.split(': ', 1)[-1]}.")
    return key, setting.value



def _injected_pause(step: str, relpath: str) -> None:
    """Test hook: ``RAWGATE_INJECT_FAULTS=pause:<step>:<name part>=<s>`` sleeps before ``step``
    of items whose path contains ``name part`` (lets a test delete a file mid-processing)."""
    for f in os.environ.get("RAWGATE_INJECT_FAULTS", "").split(","):
        parts = f.strip().split(":")
        if len(parts) == 3 and parts[0] == "pause" and parts[1] == step and "=" in parts[2]:
            name, secs = parts[2].split("=", 1)
            if name in relpath:
                time.sleep(float(secs))


def _encode(w: Worker, item: Item, watch: WatchConfig, out: Outcome) -> None:
    cfg = w.cfg
    _injected_pause("encode", item.relpath)
    ref = ItemRef(item.relpath, item.kind)
    with open_stack(Path(item.root), ref) as stack:
        h, wd = stack.shape[-2:]
        rule_index, rule = _rule(watch, item.relpath, stack.metadata)
        spec = rule.codec or cfg.compression.codec
        auto = AutoSpec.parse(spec)
        codec = get_codec(auto.at(auto.lowest) if auto else spec)
        model = None
        note = None
        model_path = None
        rate: dict[str, Any] = {}
        # a lossy copy needs the camera's calibration: noisecal codes with it, and the ε check
        # draws its replicas from it (for every lossy codec)
        if not codec.lossless and (codec.needs_noise_model or cfg.daemon.gate.enabled):
            cu = cfg.daemon.calibrations
            sel = select_model(w.library.models(), (h, wd), camera=rule.camera, max_age_days=cu.max_age_days,
                               on_stale=cu.on_stale, on_drift=cu.on_drift, drift=w.drift, drift_cache=w.drift_cache)
            if sel.model is not None and sel.age_days is not None:
                out.calibration = (sel.model.identity.serial, sel.age_days)
            if sel.action == "quarantine":
                raise Quarantine(sel.problems[0])
            for p in sel.problems:
                out.alert(f"calibration:{p[:60]}", "warning", "calibration problem", p)
            if sel.action == "lossless":
                spec = cfg.compression.fallback_codec
                note = "; ".join(sel.problems)
            else:
                model_path = sel.path
                try:
                    sel.model.check_frame(stack.plane(0))
                except ModelMismatchError as e:
                    raise Quarantine(str(e)) from None
                if auto is not None:
                    key, value = _auto_setting(w, item, watch, rule_index, auto, stack, sel.model, out)
                    if value is None:
                        spec = cfg.compression.fallback_codec
                        note = (f"{auto.spec}: no setting passes the ε gate for camera {key.camera} "
                                f"(watch {key.watch!r} rule {key.rule}); run `rawgate evaluate --store` to search again")
                    else:
                        spec = auto.at(value)
                        rate = {"auto": auto.spec, "rate_key": list(key.as_row()), "value": value}
                    codec = get_codec(spec)
                if codec.needs_noise_model:
                    model = sel.model
        elif auto is not None:  # no calibration to search or check with
            spec = cfg.compression.fallback_codec
        copy = write_copy(stack, w.staged(item), spec, noise_model=model, models_dir=models_dir(cfg))
    detail = {"model": model_path, "staged": str(copy.path), "codec": spec, **rate}
    if model is not None:  # the ε check finds the model again by this, not by its path
        detail["model_sha256"] = model_sha256(model)
    if copy.model_file is not None:
        rel = copy.model_file.relative_to(cfg.daemon.archive_dir).as_posix()
        w.ledger.record_model_file(rel, copy.model_file_sha256 or "", copy.model_file.stat().st_size)
        detail["model_file"] = rel
    w.ledger.transition(item.id, S.COMPLETE, S.ENCODED, detail=detail,
                        codec=spec, raw_bytes=copy.raw_nbytes, archive_bytes=copy.nbytes, note=note)


def _verify(w: Worker, item: Item, watch: WatchConfig, out: Outcome) -> None:
    staged = w.staged(item)
    ref = ItemRef(item.relpath, item.kind)
    root = Path(item.root)
    if not staged.is_file():
        w.ledger.transition(item.id, S.ENCODED, S.COMPLETE, detail={"redo": "staged copy missing"})
        return
    codec = get_codec(item.codec)
    # decoded as a fresh process would: a copy that refers to the archive's model file must
    # decode from that file, not from the model this worker encoded with
    with fresh_model_lookup(), open_stack(root, ref) as stack:
        res = verify_copy(staged, stack, lossless=codec.lossless)
    if not res.ok:
        failures = sum(1 for a, b, _ in w.ledger.history(item.id) if a == S.ENCODED and b == S.COMPLETE)
        staged.unlink(missing_ok=True)
        if failures + 1 >= MAX_VERIFY_FAILURES:
            raise Quarantine(f"the archive copy failed verification {failures + 1} times: {res.reason}", "critical")
        w.ledger.transition(item.id, S.ENCODED, S.COMPLETE, detail={"redo": f"verification failed: {res.reason}"})
        return
    digest, per_file = _digest_files(root, item_files(root, ref))
    w.ledger.transition(item.id, S.ENCODED, S.VERIFIED, sha256_raw=digest, sha256_archive=sha256_file(staged),
                        detail={"files": per_file, "max_abs_error": res.max_abs_error,
                                "mean_error": res.mean_error})


def crop_model(model: NoiseModel, y0: int, x0: int, h: int, w: int) -> NoiseModel:
    """The noise model of the ``h`` × ``w`` pixel region at ``(y0, x0)`` (a sub-ROI of the camera)."""
    sl = (slice(y0, y0 + h), slice(x0, x0 + w))
    x, y, _, _ = model.identity.roi
    ident = dataclasses.replace(model.identity, roi=(x + x0, y + y0, w, h))
    dark = None if model.dark_current_e_per_s is None else model.dark_current_e_per_s[sl]
    return dataclasses.replace(model, identity=ident, offset_adu=model.offset_adu[sl],
                               gain_e_per_adu=model.gain_e_per_adu[sl], read_noise_e=model.read_noise_e[sl],
                               dark_current_e_per_s=dark, bad_pixels=model.bad_pixels[sl])


def _check_regions(raw: np.ndarray, decoded: np.ndarray, model: NoiseModel, g: Any, key: str) -> list[tuple]:
    """``(raw, decoded, model, where)`` of each region the ε check looks at: the whole plane, or
    ``g.tiles`` seeded tiles of ``g.tile_size`` pixels, each with its slice of the noise model."""
    h, w = raw.shape[-2:]
    t = g.tile_size
    if g.tiles is None or (t >= h and t >= w):
        return [(raw, decoded, model, "whole plane")]
    t = min(t, h, w)
    rng = np.random.default_rng([g.seed, zlib.crc32(key.encode("utf-8", "surrogateescape"))])
    out = []
    for _ in range(g.tiles):
        y0, x0 = int(rng.integers(0, h - t + 1)), int(rng.integers(0, w - t + 1))
        out.append((raw[y0:y0 + t, x0:x0 + t], decoded[y0:y0 + t, x0:x0 + t], crop_model(model, y0, x0, t, t),
                    f"tile {t}×{t} at y={y0}, x={x0}"))
    return out


def _encoding_model(w: Worker, encoded: dict[str, Any]) -> NoiseModel:
    """The noise model an item was encoded with, found by the SHA-256 its ``encoded`` step
    recorded: among the calibration folders' models (wherever the file is now), then in the model
    stores. A ledger written before hashes were recorded names it by path only.

    Raises :class:`Quarantine` when no model with that hash is found: checking with another
    model (a calibration file rewritten in place) would judge the copy against the wrong noise.
    """
    sha, path = encoded.get("model_sha256"), encoded.get("model")
    if not sha:
        model = dict(w.library.models()).get(path) if path else None
        if model is None:
            raise Quarantine(f"the calibration used to encode ({path}) is no longer readable")
        return model
    # from disk only (not a model this worker process happens to hold), so that the verdict does
    # not depend on which worker encoded the item
    model = next((m for _, m in w.library.models() if model_sha256(m) == sha), None)
    if model is None:
        with fresh_model_lookup():
            model = find_model(sha)
    if model is None:
        raise Quarantine(f"the calibration used to encode (SHA-256 {sha[:16]}…, read from {path}) is in none of "
                         f"the calibration folders any more (moved away, or rewritten with other content); "
                         "put it back and `rawgate retry` the item")
    return model


def _check(w: Worker, item: Item, watch: WatchConfig, out: Outcome) -> None:
    from rawgate.codecs.containers import read_ome_tiff_planes
    from rawgate.gate.check import spot_check

    g = w.cfg.daemon.gate
    codec = get_codec(item.codec)
    report_path = None
    if codec.lossless:
        verdict = "rejected" if item.note else "approved"
        note = item.note or "lossless: the copy is bit-exact"
    elif not g.enabled:
        verdict, note = "unchecked", "ε check disabled: raw data are kept"
    else:
        _injected_pause("check", item.relpath)
        model = _encoding_model(w, w.ledger.last_detail(item.id, S.ENCODED))
        # the daemon picks the seeded tiles itself and hands the check only those pixels (with the
        # matching slice of the noise model): drawing replicas of a whole 2048² frame to use one
        # 512² tile of them took 2.3 s of a 4 s check
        gcfg = _gate_config(g)
        ref = ItemRef(item.relpath, item.kind)
        reports = []
        failing: list[str] = []
        decoded = read_ome_tiff_planes(w.staged(item))
        try:
            with open_stack(Path(item.root), ref) as stack:
                planes = sample_planes(stack.n_planes, first_frame=g.first_frame, fraction=g.fraction,
                                       max_frames=g.max_frames, seed=g.seed, key=item.relpath)
                for i in planes:
                    regions = _check_regions(stack.plane(i), decoded.plane(i), model, g, f"{item.relpath}#{i}")
                    for k, (raw_p, dec_p, tile_model, where) in enumerate(regions):
                        rep = spot_check(raw_p, dec_p, tile_model, w.segmenter(), gcfg,
                                         meta={"item": item.relpath, "plane": i, "region": where, "codec": item.codec})
                        reports.append({"plane": i, "region": where, **rep.to_dict()})
                        if g.html_report:
                            from rawgate.gate.report import write_report

                            write_report(rep, w.cfg.daemon.state_dir / "reports" / str(item.id)
                                         / (f"plane-{i}" + (f"-tile-{k}" if k else "")))
                        for s in rep.stats:
                            out.epsilons.append((s.name, s.family, float(s.value)))
                        if not rep.verdict.passed:
                            failing += [f"plane {i} ({where}): {j.name}" for j in rep.verdict.judged
                                        if j.judged and not j.passed]
        finally:
            decoded.close()
        verdict = "approved" if not failing else "rejected"
        note = (f"ε within the camera noise on {len(planes)} sampled plane(s)" if not failing
                else "ε outside the camera noise: " + ", ".join(failing[:8]) + (" …" if len(failing) > 8 else ""))
        rdir = w.cfg.daemon.state_dir / "reports"
        rdir.mkdir(parents=True, exist_ok=True)
        report_file = rdir / f"{item.id}.epsilon.json"
        data = json.dumps(to_jsonable({"item": item.relpath, "root": item.root, "planes": reports}), default=float)
        atomic_write(report_file, lambda fh: fh.write(data.encode()))
        report_path = str(report_file)
    w.ledger.transition(item.id, S.VERIFIED, S.CHECKED, verdict=verdict, note=note, report_path=report_path)


def _decide(w: Worker, item: Item, watch: WatchConfig, out: Outcome) -> None:
    """checked → approved | rejected, from the verdict recorded with the check (its own step, so a
    crash between the two moves resumes here)."""
    if item.verdict == "rejected":
        _step_back_rate(w, item, out)
        w.ledger.transition(item.id, S.CHECKED, S.REJECTED)
        out.alert(f"rejected:{item.root}/{item.relpath}", "warning", f"rejected: {item.relpath}",
                  f"{item.note}. Archived with the lossless fallback; raw data kept.")
    else:
        w.ledger.transition(item.id, S.CHECKED, S.APPROVED)


def _step_back_rate(w: Worker, item: Item, out: Outcome) -> None:
    """A rejected copy coded at an ε-budgeted setting lowers that setting (once) and alerts."""
    enc = w.ledger.last_detail(item.id, S.ENCODED)
    if "auto" not in enc:
        return
    auto = AutoSpec.parse(enc["auto"])
    if auto is None:
        return
    key, failed = RateKey(*enc["rate_key"]), float(enc["value"])
    stepped, new = rates.step_back(w.ledger, key, auto, failed, f"{item.relpath}: {item.note}")
    if stepped:
        now = "lossless (no smaller setting left)" if new is None else auto.at(new)
        out.alert(f"rate:{key.watch}:{key.rule}:{key.camera}:{auto.spec}", "critical" if new is None else "warning",
                  f"rate stepped back: {auto.at(failed)} → {now}",
                  f"The spot check rejected {item.relpath} ({item.note}); watch {key.watch!r} rule {key.rule}, "
                  f"camera {key.camera} now codes with {now}.")


def _place(w: Worker, item: Item, staged: Path, final: Path, sha: str) -> None:
    """Move the verified staged copy into the archive tree (idempotent), then re-check it."""
    if staged.is_file() and final.is_file() and sha256_file(final) != sha and not _is_ours(w, item, final):
        raise Quarantine(f"the archive path {final} already holds another item's copy", "critical")
    promote(staged, final)
    if not final.is_file():
        raise Quarantine(f"the staged copy of {item.relpath} is gone and the archive has none", "critical")
    if sha256_file(final) != sha:
        raise Quarantine(f"the archived copy {final} does not match its verified checksum", "critical")


def _is_ours(w: Worker, item: Item, final: Path) -> bool:
    holder = w.ledger.holder_of(final.relative_to(w.cfg.daemon.archive_dir).as_posix())
    return holder is None or holder == item.id


def _archive_approved(w: Worker, item: Item, watch: WatchConfig, out: Outcome) -> None:
    final = w.final(item, watch)
    _place(w, item, w.staged(item), final, item.sha256_archive or "")
    w.ledger.transition(item.id, S.APPROVED, S.ARCHIVED, archive_path=final.relative_to(w.cfg.daemon.archive_dir).as_posix(),
                        archived_at=time.time())


def _archive_rejected(w: Worker, item: Item, watch: WatchConfig, out: Outcome) -> None:
    cfg = w.cfg
    final = w.final(item, watch)
    staged, sha, codec_spec, nbytes = w.staged(item), item.sha256_archive or "", item.codec, item.archive_bytes
    if not get_codec(item.codec).lossless:
        fb = w.staged(item, fallback=True)
        ref = ItemRef(item.relpath, item.kind)
        with open_stack(Path(item.root), ref) as stack:
            copy = write_copy(stack, fb, cfg.compression.fallback_codec)
            res = verify_copy(fb, stack, lossless=True)
        if not res.ok:
            fb.unlink(missing_ok=True)
            raise Quarantine(f"the lossless fallback copy failed verification: {res.reason}", "critical")
        staged, sha, codec_spec, nbytes = fb, copy.sha256, cfg.compression.fallback_codec, copy.nbytes
    _place(w, item, staged, final, sha)
    w.staged(item).unlink(missing_ok=True)
    w.ledger.transition(item.id, S.REJECTED, S.ARCHIVED, archive_path=final.relative_to(cfg.daemon.archive_dir).as_posix(),
                        sha256_archive=sha, codec=codec_spec, archive_bytes=nbytes, archived_at=time.time())


def release_due(cfg: RawgateConfig, item: Item, now: float | None = None) -> bool:
    """Whether an archived item's raw data may go now: approved, its copy listed in the last
    durable BagIt manifest (the service marks it after each fsynced manifest write), and the
    retention time passed."""
    r = cfg.daemon.retention
    if item.state is not S.ARCHIVED or item.verdict != "approved" or r.action == "keep":
        return False
    if not item.sha256_archive or item.manifest_sha256 != item.sha256_archive:
        return False
    now = time.time() if now is None else now
    return now - (item.archived_at or now) >= r.keep_days * 86400.0


def _release(w: Worker, item: Item, watch: WatchConfig, out: Outcome) -> None:
    """Re-hash the raw files against the digests recorded at verification; release only those.

    The ledger move comes first (it re-checks verdict and archive copy inside its transaction);
    a crash between the move and the deletion is finished by :func:`_finish_release`.
    """
    if not release_due(w.cfg, item):
        raise _Stop
    latest = w.ledger.find(item.root, item.relpath)
    if latest is not None and latest.id != item.id:
        # the path came back with new content (a later generation owns the file now): this item's
        # raw data is gone already, its copy stays in the archive, nothing is released for it
        raise _Stop
    unchanged, changed = _matching_raw_files(w, item)
    if changed:
        out.alert(f"changed:{item.root}/{item.relpath}", "warning", f"raw data changed after archiving: {item.relpath}",
                  f"{len(changed)} file(s) differ from the archived copy; they are kept, not released.")
        raise _Stop
    _check_archived_copy(w, item)
    w.ledger.transition(item.id, S.ARCHIVED, S.RAW_RELEASED,
                        detail={"action": w.cfg.daemon.retention.action, "files": len(unchanged)})
    _release_files(w, item, unchanged)
    raise _Stop


def _matching_raw_files(w: Worker, item: Item) -> tuple[list[Path], list[Path]]:
    """The item's raw files still present, split into those whose SHA-256 equals the one recorded
    at verification and those that changed since."""
    root = Path(item.root)
    recorded: dict[str, str] = w.ledger.last_detail(item.id, S.VERIFIED).get("files", {})
    same, changed = [], []
    for rel, sha in recorded.items():
        f = root / rel
        if f.is_file():
            (same if sha256_file(f) == sha else changed).append(f)
    return same, changed


def _check_archived_copy(w: Worker, item: Item) -> None:
    """Right before raw data goes: the archived copy must still be the one verified.

    Its SHA-256 is recomputed from disk and compared with the ledger's (a missing file is a
    mismatch), and the copy is decoded plane by plane against the raw data (bit-exact for lossless
    codecs) the way a fresh process would, without this worker's in-memory models: the hash
    guards the bytes, the decode guards against a codec or a shared calibration file that changed
    since archiving. Any problem raises :class:`Quarantine` (critical): raw is kept, an alert
    goes out, and ``rawgate retry <id>`` archives the item again from raw, over the bad copy.
    """
    kept = f"raw data kept; `rawgate retry {item.id}` archives it again from raw"
    if not item.archive_path or not item.sha256_archive:
        raise Quarantine(f"{item.relpath}: no archive copy recorded; {kept}", "critical")
    final = w.cfg.daemon.archive_dir / item.archive_path
    if not final.is_file():
        raise Quarantine(f"the archived copy {final} is missing; {kept}", "critical")
    got = sha256_file(final)
    if got != item.sha256_archive:
        raise Quarantine(f"the archived copy {final} was changed after archiving (SHA-256 {got[:16]}…, "
                         f"recorded {item.sha256_archive[:16]}…); {kept}", "critical")
    model_rel = w.ledger.last_detail(item.id, S.ENCODED).get("model_file")
    if model_rel and get_codec(item.codec or "").needs_noise_model:
        # one model file serves many copies: it is checked like the copy itself
        mfile = w.cfg.daemon.archive_dir / model_rel
        recorded = w.ledger.model_files().get(model_rel)
        if not mfile.is_file():
            raise Quarantine(f"the noise-model file {mfile} that the archived copy {final} needs is missing; {kept}",
                             "critical")
        if recorded is None or sha256_file(mfile) != recorded[0]:
            raise Quarantine(f"the noise-model file {mfile} that the archived copy {final} needs was changed "
                             f"after archiving; {kept}", "critical")
    try:
        # decoded as a fresh process would: the models this worker already holds in memory are set
        # aside, so the copy must decode from what it embeds or from the model stores on disk
        with fresh_model_lookup(), open_stack(Path(item.root), ItemRef(item.relpath, item.kind)) as stack:
            res = verify_copy(final, stack, lossless=get_codec(item.codec or "").lossless)
    except (SourceError, OSError, ValueError) as e:
        raise Quarantine(f"the archived copy {final} could not be decode-checked against the raw data ({e}); "
                         f"{kept}", "critical") from None
    if not res.ok:
        raise Quarantine(f"the archived copy {final} no longer decodes to the raw data: {res.reason}; {kept}",
                         "critical")


def _release_files(w: Worker, item: Item, files: list[Path]) -> None:
    r = w.cfg.daemon.retention
    if files:
        holding = None if r.holding_dir is None else r.holding_dir / w.watch_of(item).archive_name
        release_raw(Path(item.root), files, action="move" if r.action == "move" else "delete", holding_dir=holding)


def _finish_release(w: Worker, item: Item, watch: WatchConfig, out: Outcome) -> None:
    """Redo the deletion/move of a released item's raw files that a crash interrupted (only files
    that still match their recorded digests: a new file under the same name is left alone), after
    the archived copy is checked again."""
    files = _matching_raw_files(w, item)[0]
    if files:
        _check_archived_copy(w, item)
    _release_files(w, item, files)
    raise _Stop


class _Stop(Exception):
    """Nothing more to do for this item now."""


STEPS = {
    S.COMPLETE: _encode,
    S.ENCODED: _verify,
    S.VERIFIED: _check,
    S.CHECKED: _decide,
    S.APPROVED: _archive_approved,
    S.REJECTED: _archive_rejected,
    S.ARCHIVED: _release,
    S.RAW_RELEASED: _finish_release,
}


def _quarantine_reason(e: BaseException) -> tuple[str, str]:
    if isinstance(e, Quarantine):
        return e.reason, e.severity
    if isinstance(e, DiskFullError):
        return str(e), "critical"
    if isinstance(e, (SourceError, UnsafePathError, ModelMismatchError)):
        return str(e), "warning"
    if isinstance(e, FileNotFoundError):
        return f"file disappeared during processing: {e.filename or e}", "warning"
    if isinstance(e, PermissionError):
        return f"permission denied: {e.filename or e}", "warning"
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"archive disk full: {e}", "critical"
    if isinstance(e, ArchiveError):
        return str(e), "critical"
    return f"internal error ({type(e).__name__}): {e}", "critical"


def advance(w: Worker, item_id: int) -> Outcome:
    """Run the item's steps until it is archived (or released, rejected-and-archived, quarantined).

    Never raises for a problem with the item: it is quarantined and the outcome says why.
    """
    item = w.ledger.get(item_id)
    out = Outcome(item_id, item.relpath, item.root)
    try:
        watch = w.watch_of(item)
        while True:
            item = w.ledger.get(item_id)
            step = STEPS.get(item.state)
            if step is None:
                break
            out.steps.append(item.state.value)
            step(w, item, watch, out)
    except (_Stop, StaleTransitionError) as e:
        if isinstance(e, StaleTransitionError):
            log.info("item %d moved on elsewhere: %s", item_id, e)
    except Exception as e:  # noqa: BLE001 - every failure of an item ends in quarantine, never in a dead worker
        reason, severity = _quarantine_reason(e)
        if severity == "critical" and not isinstance(e, (Quarantine, DiskFullError)):
            log.exception("item %d (%s)", item_id, item.relpath)
        try:
            w.ledger.quarantine(item_id, reason)
            out.alert(f"quarantined:{item.root}/{item.relpath}", severity, f"quarantined: {item.relpath}", reason)
        except StaleTransitionError as e2:
            log.warning("item %d could not be quarantined: %s", item_id, e2)
        for p in (w.staged(item), w.staged(item, fallback=True)):
            p.unlink(missing_ok=True)
    item = w.ledger.get(item_id)
    out.state, out.verdict, out.reason, out.note = item.state.value, item.verdict, item.reason, item.note
    if item.state in (S.ARCHIVED, S.RAW_RELEASED) and ({"approved", "rejected"} & set(out.steps)):
        out.raw_bytes, out.archive_bytes = item.raw_bytes or 0, item.archive_bytes or 0
        if item.complete_at and item.archived_at:
            out.latency_s = item.archived_at - item.complete_at
    return out


# ------------------------------------------------------------------------- worker process glue
_WORKER: Worker | None = None


def init_worker(config_json: str) -> None:
    """ProcessPoolExecutor initializer: build this process's :class:`Worker`."""
    global _WORKER
    _set_parent_death_signal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service decides when to stop
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s [worker]: %(message)s")
    cfg = RawgateConfig.model_validate_json(config_json)
    # each worker gets its share of the cores: numba kernels and codec threads of several workers
    # would otherwise oversubscribe them (2 workers × 2 threads on 2 cores ran the check 1.5× slower)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // cfg.daemon.workers.processes)
    os.environ["RAWGATE_THREADS"] = str(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass
    _WORKER = Worker(cfg)


def run_in_worker(item_id: int) -> Outcome:
    """Entry point of a pool job."""
    assert _WORKER is not None, "init_worker did not run"
    return advance(_WORKER, item_id)
