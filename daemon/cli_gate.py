"""``rawgate check`` and ``rawgate segmenter train|show``.

``rawgate check RAW --codec SPEC --calibration FILE [--segmenter MODEL]`` compresses one frame
(or 3-D stack) with the codec, decodes it, runs the ε spot check against N raw-equivalent
replicas and writes ``epsilon.json`` and ``report.html``. Exit code 0: the verdict passed;
1: it failed; 2: bad input (message on stderr, nothing written).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from ._cli_common import EXIT_FAILED_CHECK, ReplicasAroundOpt, ReplicasOpt, _fail, _user_errors, console

segmenter_app = typer.Typer(help="Train and inspect segmenters for the ε gate.", no_args_is_help=True)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise typer.BadParameter(f"{what}: comma-separated numbers expected, got {text!r}") from None
    if not vals:
        raise typer.BadParameter(f"{what}: at least one value")
    return vals


def _select(arr: np.ndarray, axes: str | None, frame: int, volume: bool | None,
            plane: int | None = None) -> tuple[np.ndarray, str]:
    """The 2-D frame or 3-D volume the check runs on, and a description of the choice.

    ``frame`` picks the index of the first leading axis (a time point), ``plane`` the Z plane
    of a stack checked as a 2-D frame (a 2-D segmenter on a Z stack)."""
    axes = (axes or "").upper()
    if len(axes) != arr.ndim:
        axes = {2: "YX", 3: "TYX", 4: "TZYX", 5: "TCZYX"}.get(arr.ndim, "")
    if arr.ndim == 2:
        return arr, "2-D frame"
    if plane is not None:
        if volume:
            raise ValueError("--plane checks one Z plane as a 2-D frame; it cannot go with --volume")
        if "Z" not in axes:
            raise ValueError(f"--plane {plane}: the image has no Z axis (axes {axes})")
        volume = False
    is_volume = ("Z" in axes) if volume is None else volume
    # drop every leading axis but Z: take index `frame` of the first, 0 of the others
    picked = []
    a = arr
    for ax in axes[:-2]:
        if ax == "Z" and is_volume:
            continue
        if ax == "Z" and plane is not None:
            i = plane
        else:
            i = frame if not picked or (len(picked) == 1 and picked[0].startswith("Z=")) else 0
        pos = axes.index(ax) - len(picked)
        if not 0 <= i < a.shape[pos]:
            raise ValueError(f"--frame {frame} is out of range: axis {ax} has {a.shape[pos]} planes")
        a = np.take(a, i, axis=pos)
        picked.append(f"{ax}={i}")
    if a.ndim == 3 and not is_volume:  # unknown leading axis
        a = a[frame]
        picked.append(f"plane {frame}")
    what = "3-D volume" if a.ndim == 3 else "2-D frame"
    return a, what + (f" ({', '.join(picked)})" if picked else "")


def check(
    raw: Annotated[Path, typer.Argument(help="raw image: TIFF/OME-TIFF/.npy (a frame, time series or Z stack)")],
    codec: Annotated[str, typer.Option("--codec", help="codec spec, e.g. noisecal:step=2, jpeg:ratio=10 (-c is --config everywhere)")] = "noisecal",
    calibration: Annotated[Optional[Path], typer.Option(help="the camera's noise model (.rgnoise)")] = None,
    segmenter: Annotated[Optional[str], typer.Option(help="segmenter: a model file or an entry-point name")] = None,
    decoded: Annotated[Optional[Path], typer.Option(help="use this already-decoded/compressed copy instead of --codec")] = None,
    replicas: ReplicasOpt = 10,
    replicas_around: ReplicasAroundOpt = "raw",
    seed: Annotated[int, typer.Option(help="seed of replicas, tiles and pixel sample")] = 0,
    transform: Annotated[Optional[str], typer.Option(help="run on raw, replicas and decoded before segmenting: "
                                                     "fbp (filtered back-projection of a sinogram, one "
                                                     "projection per row) or an entry-point name")] = None,
    frame: Annotated[int, typer.Option(help="which frame of a time series")] = 0,
    volume: Annotated[Optional[bool], typer.Option("--volume/--no-volume", help="check a Z stack as one volume "
                                                   "(default: when it has a Z axis); --no-volume: plane by plane")] = None,
    plane: Annotated[Optional[int], typer.Option(help="check this Z plane of a stack as a 2-D frame (a 2-D "
                                                 "segmenter on a Z stack)")] = None,
    tiles: Annotated[Optional[int], typer.Option(help="check only this many seeded tiles")] = None,
    tile_size: Annotated[int, typer.Option(help="tile edge \\[pixels]")] = 512,
    false_reject_rate: Annotated[float, typer.Option(help="α: chance a raw-equivalent input fails")] = 0.002,
    report: Annotated[Path, typer.Option(help="folder for epsilon.json and report.html")] = Path("epsilon-report"),
    json_out: Annotated[bool, typer.Option("--json", help="print the verdict as JSON")] = False,
) -> None:
    """Spot-check ε of a codec on one frame: exit 0 on pass, 1 on fail, 2 on bad input."""
    from .cli_codecs import read_image
    from rawgate.codecs import get_codec
    from rawgate.gate.check import GateConfig, spot_check
    from rawgate.gate.report import write_report
    from rawgate.gate.segmenter import load_segmenter
    from rawgate.gate.transforms import load_transform
    from rawgate.gate.verdict import VerdictPolicy

    with _user_errors():
        if calibration is None:
            _fail("--calibration is required: replicas come from the camera's noise model")
        from rawgate.calibration.model import NoiseModel

        model = NoiseModel.load(calibration)
        arr, meta = read_image(raw)
        arr, what = _select(arr, meta.get("axes"), frame, volume, plane)
        if not np.issubdtype(arr.dtype, np.integer):
            _fail(f"{raw}: raw camera data is integer ADU, got {arr.dtype}")
        seg = load_segmenter(segmenter) if segmenter else None
        if decoded is not None:
            dec, dmeta = read_image(decoded, model)
            dec, _ = _select(dec, dmeta.get("axes") or meta.get("axes"), frame, volume)
            spec = f"file:{decoded.name}"
            ratio = None
        else:
            c = get_codec(codec, noise_model=model) if codec.startswith("noisecal") else get_codec(codec)
            data = c.encode(arr)
            dec = c.decode(data)
            spec = c.spec
            ratio = arr.nbytes / len(data)
        cfg = GateConfig(
            n_replicas=replicas, seed=seed, tiles=tiles, tile_size=tile_size, replicas_around=replicas_around,
            transform=load_transform(transform) if transform else None,
            policy=VerdictPolicy(false_reject_rate=false_reject_rate),
        )
        rep = spot_check(
            arr, dec, model, seg, cfg,
            meta={"raw": str(raw), "selection": what, "codec": spec, "compression_ratio": ratio,
                  "transform_spec": transform,
                  "segmenter": getattr(seg, "describe", lambda: {"kind": "plug-in", "name": segmenter})()
                  if seg is not None else None},
        )
        html = write_report(rep, report)
    v = rep.verdict
    if json_out:
        console.print_json(json.dumps({"verdict": v.to_dict(), "report": str(html)}, default=float))
    else:
        _print_summary(rep, spec, ratio, what)
        console.print(f"report: {html}", highlight=False)
    if not v.passed:
        raise typer.Exit(EXIT_FAILED_CHECK)


def _print_summary(rep, spec: str, ratio: float | None, what: str) -> None:
    t = Table(title=f"ε spot check: {spec} on a {what}")
    for col in ("statistic", "ε", "camera-noise range", ""):
        t.add_column(col, justify="right" if col != "statistic" else "left")
    judged = {j.name: j for j in rep.verdict.judged}
    filters = [judged[s.name] for s in rep.stats if s.family == "filter"]
    for s in rep.stats:
        j = judged[s.name]
        if s.family == "filter" and j.passed:
            continue  # a dozen filter rows: counted below, shown when they fail, all in the report
        lim = f"≤ {j.upper:.3g}" if j.lower is None else f"{j.lower:+.3g} … {j.upper:+.3g}"
        mark = ("[dim]not judged[/]" if not j.judged
                else "[green]ok[/]" if j.passed else f"[red]FAIL ({j.excess:.1f} null σ beyond)[/]")
        t.add_row(s.name, f"{s.value:+.3f}", lim, mark)
    console.print(t)
    if filters:
        ok = sum(1 for j in filters if j.passed)
        console.print(f"filter statistics (model-free ε): {ok} of {len(filters)} within the camera-noise range"
                      + ("" if ok == len(filters) else "; the others are in the table") + "; all in the report",
                      highlight=False)
    if rep.matching is not None:
        m = rep.matching
        console.print(
            f"objects: {m.n_raw_objects} in raw, {m.n_objects_scored} scored; unmatched "
            f"{m.unmatched_fraction_compressed:.1%} (compressed), {m.unmatched_fraction_replicas:.1%} (replicas, mean)",
            highlight=False,
        )
    u = rep.sigma_uncertainty
    console.print(
        f"σ_raw from {rep.n_replicas} replicas: ±{u['relative_standard_error']:.0%} relative "
        f"(95 %: ×{u['ci95_low']:.2f} … ×{u['ci95_high']:.2f}); time {rep.timings_s['total']:.1f} s"
        + (f"; ratio {ratio:.2f}×" if ratio else ""),
        highlight=False,
    )
    for n in rep.notes:
        console.print(f"[yellow]note:[/] {n}", highlight=False)
    v = rep.verdict
    console.print(("[bold green]PASS[/] " if v.passed else "[bold red]FAIL[/] ") + v.reason, highlight=False)


@segmenter_app.command("train")
def segmenter_train(
    image: Annotated[Path, typer.Option(help="raw image the labels were drawn on (2-D or a 3-D stack)")],
    labels: Annotated[Path, typer.Option(help="sparse label image: 0 unlabelled, 1 background, 2 foreground")],
    out: Annotated[Path, typer.Option(help="model file to write (.skops)")],
    scales: Annotated[str, typer.Option(help="feature scales σ \\[pixels], comma-separated")] = "0.7,1.6,3.5",
    trees: Annotated[int, typer.Option(help="random-forest trees")] = 100,
    max_depth: Annotated[Optional[int], typer.Option(help="tree depth limit (default: none)")] = None,
    threshold: Annotated[float, typer.Option(help="foreground probability threshold")] = 0.5,
    min_size: Annotated[int, typer.Option(help="drop objects smaller than this \\[pixels/voxels]")] = 0,
    foreground: Annotated[int, typer.Option(help="label value meaning foreground")] = 2,
    seed: Annotated[int, typer.Option(help="seed of the forest")] = 0,
) -> None:
    """Train the random-forest pixel classifier from a sparse annotation and save it with skops."""
    from .cli_codecs import read_image
    from rawgate.gate.features import FeatureSpec
    from rawgate.gate.segmenter import train_pixel_classifier

    with _user_errors():
        img, _ = read_image(image)
        lab, _ = read_image(labels)
        img, lab = np.squeeze(img), np.squeeze(lab)
        model = train_pixel_classifier(
            img, lab, features=FeatureSpec(scales=_floats(scales, "--scales")), n_trees=trees,
            max_depth=max_depth, threshold=threshold, min_object_px=min_size,
            foreground_label=foreground, seed=seed,
        )
        model.save(out)
        n = int(np.max(model(img))) if img.size <= 2**24 else None
    d = model.describe()
    t = Table(title=f"segmenter → {out}", show_header=False)
    t.add_row("image", f"{img.dtype} {'×'.join(map(str, img.shape))} ({img.ndim}-D)")
    t.add_row("labelled pixels", ", ".join(f"class {k}: {v}" for k, v in d["trained_on"]["labelled_px"].items()))
    t.add_row("features", f"{d['n_features']} ({', '.join(d['features']['kinds'])} at σ = {d['features']['scales']})")
    t.add_row("forest", f"{d['n_trees']} trees, threshold {d['threshold']}")
    if n is not None:
        t.add_row("objects in the training image", str(n))
    console.print(t)


@segmenter_app.command("show")
def segmenter_show(
    model: Annotated[Path, typer.Argument(help="model file (.skops)")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print what a segmenter file holds (refuses files that are not rawgate segmenters)."""
    from rawgate.gate.segmenter import PixelClassifier

    with _user_errors():
        m = PixelClassifier.load(model)
    d = m.describe()
    if as_json:
        console.print_json(json.dumps(d, default=str))
        return
    tr = d.get("trained_on", {})
    feats = d["features"]
    t = Table(title=f"segmenter {model.name}", show_header=False)
    t.add_column("field")
    t.add_column("value", overflow="fold")
    rows = [
        ("kind", f"{d['kind']}: random forest, {d['n_trees']} trees → foreground probability ≥ {d['threshold']:g} "
                 "→ connected components"),
        ("dimensions", f"{d['ndim']}-D"),
        ("features", f"{d['n_features']}: {', '.join(feats.get('kinds', []))} at σ = "
                     f"{', '.join(f'{s:g}' for s in feats.get('scales', []))} px"),
        ("smallest object", f"{d['min_object_px']} px" if d["min_object_px"] else "any"),
        ("trained on", f"{'×'.join(map(str, tr.get('shape', [])))} {tr.get('dtype', '')}, "
                       f"{tr.get('samples_used', '?')} labelled pixels used "
                       f"({', '.join(f'class {k}: {v}' for k, v in tr.get('labelled_px', {}).items())})"),
        ("intensity range", "–".join(f"{v:.4g}" for v in tr.get("intensity_range", [])) + " (0.1–99.9 %)"),
        ("trained at", str(tr.get("trained_at", "?"))),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


def register(app: typer.Typer) -> None:
    """Add the gate commands to the ``rawgate`` app."""
    app.command()(check)
    app.add_typer(segmenter_app, name="segmenter")
