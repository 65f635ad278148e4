"""``rawgate evaluate``: choose a compression policy from evidence on the lab's own frames.

``rawgate evaluate FRAMES… --codecs 'zstd noisecal:step=2 jpeg:ratio=10' [--calibration FILE]
[--segmenter MODEL]`` runs every codec on every frame and prints the study's tables — ratio and
space saving (Table S1); PSNR, SSIM, MS-SSIM, Pearson, bias (Table S2) — beside the ε table
(whole-image ε, mean per-object |ε|, verdict), and writes ``evaluation.json``. A frame without a
calibration is judged with a noise model estimated from itself, marked "estimated" everywhere.
Exit 0 when the evaluation ran (whatever the verdicts), 2 on bad input.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from ._cli_common import ReplicasAroundOpt, ReplicasOpt, _fail, _user_errors, console


def evaluate(
    frames: Annotated[list[Path], typer.Argument(help="raw frames or stacks: TIFF / OME-TIFF / OME-Zarr / "
                                                 "NDTiff folder / .npy")],
    codecs: Annotated[Optional[str], typer.Option("--codecs", help="codec specs separated by spaces or ';', e.g. "
                                                  "'zstd noisecal:step=auto jpeg:ratio=10' (default: the lossless "
                                                  "set, the study's baselines at 10:1 and 100:1, 8-bit, noisecal at "
                                                  "steps 1, 2, 4)")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="the camera's noise model (.rgnoise); default: "
                                                        "estimated from each frame, marked as such")] = None,
    segmenter: Annotated[Optional[str], typer.Option(help="segmenter: a model file or an entry-point name")] = None,
    replicas: ReplicasOpt = 10,
    replicas_around: ReplicasAroundOpt = "raw",
    seed: Annotated[int, typer.Option(help="seed of the replicas")] = 0,
    frame: Annotated[int, typer.Option(help="which frame of a time series")] = 0,
    volume: Annotated[Optional[bool], typer.Option("--volume/--no-volume", help="treat a 3-D stack as a volume "
                                                   "(default: when it has a Z axis)")] = None,
    plane: Annotated[Optional[int], typer.Option(help="evaluate this Z plane of a stack as a 2-D frame")] = None,
    false_reject_rate: Annotated[float, typer.Option(help="α: chance a raw-equivalent input fails")] = 0.002,
    out: Annotated[Path, typer.Option(help="folder for evaluation.json")] = Path("evaluation"),
    json_out: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
    html: Annotated[bool, typer.Option("--html/--no-html", help="write DIR/report.html with plots")] = True,
    jobs: Annotated[Optional[int], typer.Option(min=1, help="codecs scored at once (default: the cores)")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="keep each result in DIR/cache and re-use "
                                         "it: an interrupted run goes on where it stopped")] = True,
    fresh: Annotated[bool, typer.Option("--fresh", help="empty DIR/cache first")] = False,
    store: Annotated[Optional[str], typer.Option(help="WATCH[:RULE]: store each `auto` search's setting for this "
                                                 "watched folder's rule (default rule 0) and the calibration's "
                                                 "camera, in the ledger of --config; the daemon codes with it")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (with --store)")] = None,
) -> None:
    """Every codec on every frame: the study's tables (ratio, space saving, PSNR, SSIM, MS-SSIM,
    Pearson, bias) beside ε and the verdict; exit 0 when it ran, 2 on bad input."""
    from rawgate.calibration.model import NoiseModel
    from rawgate.gate.check import GateConfig, prepare_reference
    from rawgate.gate.evaluate import (DEFAULT_CODECS, AutoSpec, Evaluation, FrameScorer, evaluate_frame,
                                       parse_codec_list, recommend, search_setting)
    from rawgate.gate.verdict import VerdictPolicy

    from .cli_codecs import read_image
    from .cli_gate import _select

    with _user_errors():
        specs = parse_codec_list(codecs if codecs is not None else list(DEFAULT_CODECS))
        parsed = [(s, AutoSpec.parse(s)) for s in specs]
        autos = [a for _, a in parsed if a is not None]
        fixed = [s for s, a in parsed if a is None]
        if not frames:
            _fail("no frame to evaluate")
        model = NoiseModel.load(calibration) if calibration is not None else None
        target = _store_target(store, config, autos, model) if store is not None else None
        seg = None
        if segmenter:
            from rawgate.gate.segmenter import load_segmenter

            seg = load_segmenter(segmenter)
        selected = []
        for path in frames:
            arr, meta = _read_frames(path, read_image)
            arr, what = _select(arr, meta.get("axes"), frame, volume, plane)
            if not np.issubdtype(arr.dtype, np.integer):
                _fail(f"{path}: raw camera data is integer ADU, got {arr.dtype}")
            selected.append((path, arr, what))
        cfg = GateConfig(n_replicas=replicas, seed=seed, replicas_around=replicas_around,
                         policy=VerdictPolicy(false_reject_rate=false_reject_rate))
        store = None if not resume else JsonResultStore(out / "cache")
        if store is not None and fresh:
            store.clear()
        jobs = jobs or os.cpu_count() or 1
        infos, results, scorers = [], [], []
        with _progress(json_out) as bar, _kept_on_interrupt(store):
            task = bar.add_task("frames", total=len(selected) * (1 + len(fixed)))
            for path, arr, what in selected:
                m, estimated = model, False
                if m is None:
                    from rawgate.calibration.estimate import estimate_noise_model

                    m, estimated = estimate_noise_model(arr), True
                bar.update(task, description=f"{path.name}: replicas and reference")
                ref = prepare_reference(arr, m, seg, cfg)  # one reference per frame, for every codec
                bar.advance(task)
                key = _frame_key(arr, m, cfg, segmenter)
                info, res = evaluate_frame(arr, m, fixed, name=path.name, segmenter=seg, config=cfg,
                                           estimated=estimated, reference=ref, jobs=jobs, store=store, key=key,
                                           progress=lambda spec, p=path: bar.update(
                                               task, advance=1, description=f"{p.name}: {spec}"))
                infos.append(info)
                results += res
                scorers.append(FrameScorer(path.name, ref, key=key, store=store))
            searches = []
            for a in autos:
                # a setting stored for the daemon is searched as the daemon searches: several dither
                # draws, and an operating point below the edge (rawgate.daemon.rates)
                from . import rates

                kw = {} if target is None else {"dithers": rates.DITHERS, "margin": rates.MARGIN}
                st = bar.add_task(f"searching {a.spec}", total=None)
                searches.append(search_setting(scorers, a, jobs=jobs, **kw, progress=lambda spec, t=st: bar.update(
                    t, advance=1, description=f"searching: {spec}")))
                bar.update(st, total=bar.tasks[st].completed)
        ev = Evaluation(frames=infos, results=results,
                        settings={"codecs": specs, "replicas": replicas, "seed": seed, "replicas_around": replicas_around,
                                  "false_reject_rate": false_reject_rate,
                                  "calibration": str(calibration) if calibration else None,
                                  "segmenter": segmenter},
                        searches=searches, recommendation=recommend(results, searches))
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(ev.to_dict(), indent=1, default=float))
        _write_csv(ev, out / "evaluation.csv")
        if html:
            from rawgate.gate.evaluate_report import write_evaluation_report

            with console.status("writing the HTML report…"):
                report = write_evaluation_report(ev, out)
        stored = _store(target, searches, len(selected)) if target is not None else []
    if json_out:
        print(json.dumps(ev.to_dict(), default=float))
        return
    _print_tables(ev)
    _print_search(ev)
    for line in stored:
        console.print(line, highlight=False)
    if store is not None and store.hits:
        console.print(f"re-used {store.hits} stored result(s) from {store.folder} (--fresh scores everything again)",
                      highlight=False)
    console.print(f"results: {out / 'evaluation.json'}, {out / 'evaluation.csv'}"
                  + (f"; report: {report}" if html else ""), highlight=False)


def _store_target(store: str, config: Path | None, autos: list, model) -> tuple:
    """``(ledger path, watch name, rule index, camera)`` for ``--store WATCH[:RULE]``, checked
    against the config: the rule must code with one of the searched ``auto`` specs."""
    from rawgate.codecs.auto import AutoSpec

    from .config import load_config

    if config is None:
        _fail("--store needs the daemon's --config (its ledger keeps the setting)")
    if model is None:
        _fail("--store needs --calibration: the setting is stored for that calibration's camera")
    if not autos:
        _fail("--store needs an `auto` codec spec to search, e.g. --codecs noisecal:step=auto")
    cfg = load_config(config)
    name, _, rule_s = store.partition(":")
    watch = next((w for w in cfg.daemon.watch if w.archive_name == name), None)
    if watch is None:
        _fail(f"--store {store}: no watched folder named {name!r} in {config} "
              f"(names: {', '.join(w.archive_name for w in cfg.daemon.watch) or 'none'})")
    try:
        rule = int(rule_s or 0)
        r = watch.rules[rule]
    except (ValueError, IndexError):
        _fail(f"--store {store}: {name!r} has rules 0…{len(watch.rules) - 1}")
    spec = r.codec or cfg.compression.codec
    a = AutoSpec.parse(spec)
    if a is None or a.spec not in {x.spec for x in autos}:
        _fail(f"--store {store}: that rule codes with {spec!r}; search it with --codecs '{spec}'")
    from .pipeline import LEDGER_NAME

    return (cfg.daemon.state_dir / LEDGER_NAME, name, rule, model.identity.serial or "unknown", a.spec)


def _store(target: tuple, searches: list, n_frames: int) -> list[str]:
    """Store the search of the rule's spec in the ledger; the lines to print."""
    from . import rates
    from .ledger import Ledger, RateKey

    path, watch, rule, camera, spec = target
    s = next(x for x in searches if x.auto == spec)
    key = RateKey(watch, rule, camera, spec)
    passing = [v for v, ok, _ in s.tried if ok and (s.safe is None or v <= s.safe)]
    why = (f"rawgate evaluate on {n_frames} frame(s): " + ("nothing passes" if s.safe is None else
           f"{s.option}={s.best:g} passes, {rates.MARGIN:.0%} below: {s.option}={s.safe:g}"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with Ledger(path) as led:
        led.store_rate_setting(key, s.safe, passing, why, replace=True)
    got = "lossless (no setting passes)" if s.safe is None else f"{spec.split(':')[0]}:{s.option}={s.safe:g}"
    return [f"stored for watch {watch!r} rule {rule}, camera {camera}: {spec} → {got} (ledger {path})"]


class JsonResultStore:
    """One JSON file per frame × codec × setting in ``folder`` (named by the SHA-256 of the key),
    written atomically: what an interrupted ``rawgate evaluate`` re-uses."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.hits = 0

    def _path(self, key: str) -> Path:
        return self.folder / (hashlib.sha256(key.encode()).hexdigest() + ".json")

    def get(self, key: str):
        from rawgate.gate.evaluate import CodecResult

        p = self._path(key)
        try:
            d = json.loads(p.read_text())
            if d.get("key") != key:
                return None
            r = CodecResult(**d["result"])
        except (OSError, ValueError, TypeError, KeyError):
            return None  # absent, or written by another version: score it again
        self.hits += 1
        return r

    def put(self, key: str, result) -> None:
        from dataclasses import asdict

        self.folder.mkdir(parents=True, exist_ok=True)
        p = self._path(key)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.partial")
        tmp.write_text(json.dumps({"key": key, "result": asdict(result)}, default=float))
        os.replace(tmp, p)

    def clear(self) -> None:
        for p in self.folder.glob("*.json"):
            p.unlink()


def _frame_key(arr: np.ndarray, model, cfg, segmenter: str | None) -> str:
    """What a stored result depends on: the pixels, the noise model, the gate's settings, the
    segmenter (its file's SHA-256) and this rawgate's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("rawgate")
    except PackageNotFoundError:
        ver = "?"
    seg = segmenter or ""
    if seg and Path(seg).is_file():
        seg = hashlib.sha256(Path(seg).read_bytes()).hexdigest()
    pixels = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    return "|".join([ver, pixels, str(arr.shape), arr.dtype.name, model.sha256, str(cfg.n_replicas), str(cfg.seed),
                     repr(cfg.policy.false_reject_rate), cfg.replicas_around, seg])


@contextmanager
def _kept_on_interrupt(store: "JsonResultStore | None") -> Iterator[None]:
    """Ctrl-C: say what was kept and how to go on (exit 130)."""
    try:
        yield
    except KeyboardInterrupt:
        from ._cli_common import err

        kept = "" if store is None else f"; the results so far are kept in {store.folder}"
        err.print(f"[yellow]interrupted{kept}: run the same command again to go on[/]", highlight=False)
        raise typer.Exit(130) from None


def _progress(quiet: bool):
    """A progress bar with ETA on the console (on stderr; none with --json)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ._cli_common import err

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err, disable=quiet, transient=False)


def _read_frames(path: Path, read_image):
    """A file rawgate reads, or a Micro-Manager NDTiff dataset folder (read with ndstorage)."""
    if path.is_dir() and (path / "NDTiff.index").is_file():
        from .sources import ItemRef, open_stack

        with open_stack(path.parent, ItemRef(path.name, "ndtiff")) as st:
            arr = np.stack([np.asarray(st.plane(i)) for i in range(st.n_planes)]).reshape(st.shape)
            return arr, {"axes": getattr(st, "axes", None)}
    return read_image(path)


#: evaluation.csv columns: one row per frame × codec (p-values one column per parameter)
_CSV = ("frame", "spec", "family", "lossless", "original_nbytes", "compressed_nbytes", "compression_ratio",
        "space_saving", "psnr_db", "ssim", "ms_ssim", "pearson", "bias_in_sigma", "worst_abs_epsilon",
        "worst_statistic", "mean_object_abs_epsilon", "passed", "seg_f1", "seg_precision", "seg_accuracy",
        "matched_objects", "p_tests_pass", "error")


def _write_csv(ev, path: Path) -> None:
    import csv

    p_names = sorted({k for r in ev.results for k in r.p_values})
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*_CSV, *(f"p_{n}" for n in p_names)])
        for r in [*ev.results, *(x for s in ev.searches for x in s.results)]:
            w.writerow([getattr(r, c) for c in _CSV] + [r.p_values.get(n) for n in p_names])


def _f(v, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def _print_tables(ev) -> None:
    estimated = {f.name for f in ev.frames if f.model == "estimated"}
    mark = {r.frame: (" (estimated model)" if r.frame in estimated else "") for r in ev.results}
    t1 = Table(title="compression (Table S1)")
    for c in ("frame", "codec", "ratio", "space saving"):
        t1.add_column(c, justify="left" if c in ("frame", "codec") else "right")
    t2 = Table(title="fidelity (Table S2)")
    for c in ("frame", "codec", "PSNR dB", "SSIM", "MS-SSIM", "Pearson", "bias σ"):
        t2.add_column(c, justify="left" if c in ("frame", "codec") else "right")
    t3 = Table(title="ε against the camera noise")
    for c in ("frame", "codec", "worst |ε|", "mean |ε| per object", "verdict"):
        t3.add_column(c, justify="left" if c in ("frame", "codec", "verdict") else "right")
    for r in ev.results:
        fr = r.frame + mark[r.frame]
        if r.error:
            for t in (t1, t2, t3):
                t.add_row(fr, r.spec, f"[red]error: {r.error}[/]", *[""] * (len(t.columns) - 3))
            continue
        t1.add_row(fr, r.spec, _f(r.compression_ratio, ".2f"), _f(r.space_saving, ".1%"))
        t2.add_row(fr, r.spec, _f(r.psnr_db, ".2f"), _f(r.ssim, ".4f"), _f(r.ms_ssim, ".4f"),
                   _f(r.pearson, ".5f"), _f(r.bias_in_sigma, "+.3f"))
        worst = "—" if r.worst_abs_epsilon is None else f"{r.worst_abs_epsilon:.2f} ({r.worst_statistic})"
        verdict = "[green]pass[/]" if r.passed else "[red]FAIL[/]: " + ", ".join(r.failing[:3])
        t3.add_row(fr, r.spec, worst, _f(r.mean_object_abs_epsilon, ".2f"), verdict)
    for t in (t1, t2, t3):
        console.print(t)
    seg = [r for r in ev.results if r.seg_f1 is not None]
    if seg:
        names = sorted({k for r in seg for k in r.p_values})
        t4 = Table(title="the study's downstream checks: segmentation vs raw (Table S5), paired t-test p (Table S6)")
        for c in ("frame", "codec", "F1", "precision", "accuracy", "pairs", *[f"p {n}" for n in names]):
            t4.add_column(c, justify="left" if c in ("frame", "codec") else "right")
        for r in seg:
            t4.add_row(r.frame + mark[r.frame], r.spec, f"{r.seg_f1:.3f}", f"{r.seg_precision:.3f}",
                       f"{r.seg_accuracy:.3f}", str(r.matched_objects),
                       *[_f(r.p_values.get(n), ".3f") for n in names])
        console.print(t4)
        missed = [r for r in seg if r.p_tests_pass and r.passed is False]
        for r in missed:
            console.print(f"[bold yellow]note:[/] {r.frame}: {r.spec} passes the study's p-value tests (every p ≥ "
                          f"0.05) but fails ε ({', '.join(r.failing[:3])}): the measurements moved further than "
                          "the camera noise moves them, and a t-test on one image does not see it", highlight=False)
    for f in ev.frames:
        objs = "no segmenter" if f.n_objects is None else f"{f.n_objects} objects in the raw segmentation"
        console.print(f"{f.name}: {'×'.join(map(str, f.shape))} {f.dtype}, noise model {f.model} "
                      f"({f.model_sha256[:12]}…), {objs}", highlight=False)


def _print_search(ev) -> None:
    from rawgate.gate.evaluate import JETRAW_PUBLISHED_RATIO

    if ev.searches:
        t = Table(title="ε-budgeted search: the most compressive setting that passes on every frame")
        for c in ("search", "passes up to", "ratio", "fails at", "failing statistics", "settings tried"):
            t.add_column(c, justify="left" if c in ("search", "failing statistics") else "right")
        for s in ev.searches:
            ratio = next((r for v, ok, r in s.tried if v == s.best), None)
            t.add_row(s.auto, "—" if s.best is None else f"{s.option}={s.best:g}", _f(ratio, ".2f"),
                      "—" if s.first_failing is None else f"{s.option}={s.first_failing:g}",
                      ", ".join(s.failing[:3]), str(len(s.tried)))
        console.print(t)
    r = ev.recommendation
    if r is None:
        console.print("[bold red]no setting passed the ε gate on every frame[/]: keep raw data or archive losslessly",
                      highlight=False)
        return
    console.print(f"[bold]recommended:[/] {r.spec} — ratio {r.mean_ratio:.2f}:1 (Jetraw publishes ≈ "
                  f"{JETRAW_PUBLISHED_RATIO}:1); {r.why}", highlight=False)
    console.print("config:\n" + r.config_snippet, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
