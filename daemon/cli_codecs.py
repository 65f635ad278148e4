"""``rawgate compress``, ``rawgate decompress`` and ``rawgate codecs``.

Output formats follow the file name: ``*.ome.tif``/``*.ome.tiff`` → OME-TIFF, ``*.ome.zarr``/
``*.zarr`` → OME-Zarr v3, anything else (``*.rgc`` by convention) → one bare rawgate stream.
Inputs: TIFF/OME-TIFF (tifffile), ``.npy``, rawgate streams and containers.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.table import Table

from ._cli_common import _fail, _user_errors, console

STREAM_SUFFIX = ".rgc"


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".ome.tif", ".ome.tiff")):
        return "ome-tiff"
    if name.endswith((".zarr", ".ome.zarr")):
        return "ome-zarr"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    if name.endswith(".npy"):
        return "npy"
    return "stream"


def read_image(path: Path, model=None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read any input rawgate accepts; returns the array and metadata (axes, Micro-Manager …)."""
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    kind = _kind(path)
    if kind in ("ome-tiff", "ome-zarr"):
        from rawgate.codecs import containers

        reader = containers.read_ome_tiff if kind == "ome-tiff" else containers.read_ome_zarr
        arr, meta = reader(path)
        return np.asarray(arr), dict(meta or {})
    if kind == "tiff":
        import tifffile

        with tifffile.TiffFile(path) as tf:
            s = tf.series[0]
            meta: dict[str, Any] = {}
            # tifffile names the dimensions of a TIFF without axes metadata with generic letters
            # ('I' pages, 'Q' unknown, 'S' samples): those are not axes; the containers' default
            # for the number of dimensions (TYX, TZYX, …) or --axes applies instead
            if set(s.axes) <= set("TCZYX"):
                meta["axes"] = s.axes
            if tf.micromanager_metadata:
                meta["micromanager"] = tf.micromanager_metadata
            return s.asarray(), meta
    if kind == "npy":
        return np.load(path, allow_pickle=False), {}
    from rawgate.codecs import codec_of

    data = path.read_bytes()
    codec = codec_of(data)
    if model is not None and getattr(codec, "needs_noise_model", False):  # ignored by codecs that need none
        codec = codec_of(data, noise_model=model)
    return codec.decode(data), {}


def _write_stream(path: Path, data: bytes) -> None:
    from rawgate.calibration._files import atomic_write

    atomic_write(path, lambda fh: fh.write(data))


def _load_model(calibration: Optional[Path]):
    if calibration is None:
        return None
    from rawgate.calibration.model import NoiseModel

    return NoiseModel.load(calibration)


def compress(
    src: Annotated[Path, typer.Argument(help="input image: TIFF/OME-TIFF, .npy")],
    dst: Annotated[Path, typer.Argument(help="output: *.ome.tif, *.ome.zarr, or a stream (*.rgc)")],
    codec: Annotated[str, typer.Option("--codec", help="codec spec, e.g. noisecal:step=2, jpeg:ratio=10 (-c is --config everywhere)")] = "noisecal",
    calibration: Annotated[Optional[Path], typer.Option(help="noise model (.rgnoise) for noisecal")] = None,
    axes: Annotated[Optional[str], typer.Option(help="axes of the input, e.g. TYX (default: from the file)")] = None,
) -> None:
    """Compress an image or stack; prints ratio, throughput and (with a calibration) SNR cost and bias."""
    from rawgate.codecs import get_codec, quality

    with _user_errors():
        model = _load_model(calibration)
        c = get_codec(codec, noise_model=model) if model is not None and codec.startswith("noisecal") else get_codec(codec)
        arr, meta = read_image(src)
        if axes:
            meta["axes"] = axes
        t0 = time.perf_counter()
        kind = _kind(dst)
        if kind in ("ome-tiff", "ome-zarr"):
            from rawgate.codecs import containers

            writer = containers.write_ome_tiff if kind == "ome-tiff" else containers.write_ome_zarr
            writer(dst, arr, c, axes=meta.get("axes"), metadata=meta.get("micromanager"),
                   noise_model=getattr(c, "noise_model", None))
            nbytes = _size(dst)
        elif kind in ("tiff", "npy"):
            _fail(f"{dst}: compressed output must be *.ome.tif, *.ome.zarr or a stream (*.rgc)")
        else:
            data = c.encode(arr)
            _write_stream(dst, data)
            nbytes = len(data)
            if model is not None and getattr(c, "embed_model", True) is False:
                from rawgate.codecs import store_model

                console.print(f"model not embedded; stored for decoding in {store_model(model)}")
        dt = time.perf_counter() - t0
        # the codec alone, in memory (no container, no disk), for the throughput beside the wall time
        codec_dt = None
        if arr.nbytes <= 256e6:
            t1 = time.perf_counter()
            c.encode(arr)
            codec_dt = time.perf_counter() - t1
        embedded = None
        if getattr(c, "needs_noise_model", False) and (kind in ("ome-tiff", "ome-zarr") or c.embed_model):
            from rawgate.codecs.noisecal import codec_maps

            embedded = len(codec_maps(c.noise_model).to_bytes()) if c.noise_model is not None else None
        decoded, _ = read_image(dst, model)
        if decoded.shape != arr.shape or decoded.dtype != arr.dtype:
            _fail(f"verification failed: decoded {decoded.dtype}{decoded.shape}, input {arr.dtype}{arr.shape}")
    t = Table(title=f"{src.name} → {dst.name}", show_header=False)
    t.add_column("figure", no_wrap=True)
    t.add_column("value", overflow="fold")
    opts = {k: v for k, v in c.get_config().items() if k not in ("id", "noise_model", "model_sha256") and v is not None}
    t.add_row("codec", c.codec_id + (":" + ",".join(f"{k}={v}" for k, v in opts.items()) if opts else ""))
    t.add_row("input", f"{arr.dtype} {'×'.join(map(str, arr.shape))} ({arr.nbytes / 1e6:.2f} MB)")
    t.add_row("output", f"{nbytes / 1e6:.3f} MB")
    t.add_row("compression ratio", f"{quality.compression_ratio(arr.nbytes, nbytes):.2f}")
    t.add_row("space saving", f"{quality.space_saving(arr.nbytes, nbytes):.1%}")
    if getattr(c, "model_sha256", None):
        t.add_row("noise model", f"{c.model_sha256[:16]}… ({'embedded' if embedded else 'not embedded'})")
    if embedded:
        t.add_row("noise model (embedded)", f"{embedded / 1e6:.3f} MB of the output: ratio "
                  f"{quality.compression_ratio(arr.nbytes, max(1, nbytes - embedded)):.2f} without it")
    t.add_row("wall time", f"{dt:.2f} s ({arr.nbytes / 1e6 / dt:.3g} MB/s incl. reading the model and writing)")
    if codec_dt:
        t.add_row("codec encode", f"{codec_dt:.2f} s ({arr.nbytes / 1e6 / codec_dt:.3g} MB/s in memory)")
    exact = bool(np.array_equal(decoded, arr))
    t.add_row("bit-exact", "yes" if exact else "no")
    if not exact:
        t.add_row("mean error (bias)", f"{quality.mean_error(arr, decoded):+.4f} ADU")
        # float data have no implied range: PSNR against the input's own range
        span = (float(np.ptp(arr)) or 1.0) if arr.dtype.kind == "f" else None
        t.add_row("PSNR", f"{quality.psnr(arr, decoded, data_range=span):.2f} dB"
                  + (" (against the input's range)" if span is not None else ""))
        if model is not None:
            sig = quality.sigma_from_model_adu(arr, model.offset_adu, model.gain_e_per_adu,
                                               model.read_noise_e)
            sig = np.maximum(sig, 1e-3)
            t.add_row("bias", f"{quality.bias_in_sigma(arr, decoded, sig):+.4f} σ")
            t.add_row("added noise", f"{quality.added_noise_sigma(arr, decoded, sig):.3f} σ")
            t.add_row("SNR cost", f"{quality.snr_cost_db(arr, decoded, sig):.3f} dB")
    console.print(t)
    if embedded and embedded > 0.2 * nbytes:
        console.print(f"[yellow]note:[/] the noise model's maps are {embedded / nbytes:.0%} of this file. The "
                      "daemon stores each model once per archive; for single files use "
                      f"{'a stream with ' if kind not in ('ome-tiff', 'ome-zarr') else ''}`--codec "
                      f"{c.codec_id}:embed_model=false` (the model then goes to the model store, "
                      "~/.local/share/rawgate/models, where decoding finds it).", highlight=False)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def decompress(
    src: Annotated[Path, typer.Argument(help="rawgate stream, OME-TIFF or OME-Zarr")],
    dst: Annotated[Path, typer.Argument(help="output .tif or .npy")],
    calibration: Annotated[Optional[Path], typer.Option(help="noise model, when the data do not carry it")] = None,
) -> None:
    """Decompress to a plain TIFF (tifffile) or .npy, with the original dtype and shape."""
    with _user_errors():
        model = _load_model(calibration)
        if model is not None:
            from rawgate.codecs import register_model

            register_model(model)
        arr, meta = read_image(src, model)
        kind = _kind(dst)
        if kind == "npy":
            from rawgate.calibration._files import atomic_write

            atomic_write(dst, lambda fh: np.save(fh, arr, allow_pickle=False))
        elif kind in ("tiff", "ome-tiff"):
            import io

            import tifffile

            buf = io.BytesIO()
            axes = meta.get("axes")
            # a metadata dict (even empty) makes tifffile record the shape, so a 5-D array
            # comes back 5-D (without one it is read as pages: 3-D)
            tifffile.imwrite(buf, arr, metadata={"axes": axes} if axes else {}, ome=kind == "ome-tiff")
            _write_stream(dst, buf.getvalue())
        else:
            _fail(f"{dst}: output must be .tif/.tiff or .npy")
    console.print(f"{src.name} → {dst.name}: {arr.dtype} {'×'.join(map(str, arr.shape))}")


def export(
    item: Annotated[str, typer.Argument(help="a rawgate OME-TIFF / OME-Zarr file, or (with -c) an archived "
                                             "item's id or path")],
    out: Annotated[Path, typer.Argument(help="the standard OME-TIFF to write")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config: find ITEM in its ledger "
                                                   "and archive")] = None,
    compression: Annotated[str, typer.Option(help="zlib (every reader), zstd or none")] = "zlib",
) -> None:
    """Decode an archived copy into a standard OME-TIFF that Fiji / Bio-Formats, QuPath or a plain
    tifffile open without rawgate (axes, pixel sizes and Micro-Manager metadata kept)."""
    from rawgate.codecs.containers import export_ome_tiff

    with _user_errors():
        src = Path(item)
        if config is not None:
            from .cli_service import _find, _ledger
            from .config import load_config

            cfg = load_config(config)
            with _ledger(cfg) as ledger:
                found = _find(ledger, cfg, item)
            if not found.archive_path:
                _fail(f"item {found.id} ({found.relpath}) is {found.state}: it has no archive copy yet")
            src = cfg.daemon.archive_dir / found.archive_path
        if not src.exists():
            raise FileNotFoundError(f"no such file: {src}")
        if not out.name.lower().endswith((".tif", ".tiff")):
            _fail(f"{out}: the export is an OME-TIFF (.ome.tif)")
        export_ome_tiff(src, out, compression=compression)
    console.print(f"{src.name} → {out} (standard OME-TIFF, {compression}; {out.stat().st_size / 1e6:.2f} MB)",
                  highlight=False)


def list_codecs() -> None:
    """List every codec with its family and options (use as NAME:key=value,...)."""
    from rawgate.codecs import codec_classes

    t = Table(title="rawgate codecs")
    t.add_column("codec", style="bold")
    t.add_column("family")
    t.add_column("what")
    t.add_column("options (default)")
    for cid, cls in codec_classes().items():
        hints = typing.get_type_hints(cls)
        opts = []
        for f in dataclasses.fields(cls):
            if not f.init or f.name == "noise_model":
                continue
            tp = getattr(hints[f.name], "__name__", str(hints[f.name]).replace("typing.", ""))
            help_ = cls.option_help.get(f.name, "")
            opts.append(f"{f.name}={f.default} ({tp}) {help_}".rstrip())
        t.add_row(cid, cls.family, cls.summary, "\n".join(opts))
    console.print(t)


def register(app: typer.Typer) -> None:
    """Add the codec commands to the ``rawgate`` app."""
    app.command()(compress)
    app.command()(decompress)
    app.command()(export)
    app.command("codecs")(list_codecs)
