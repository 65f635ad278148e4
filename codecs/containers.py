"""rawgate streams inside standard containers: OME-TIFF (tifffile) and OME-Zarr v3 (zarr-python 3).

Both containers hold one rawgate stream per plane (OME-TIFF: one strip = one whole ``(Y, X)``
plane; OME-Zarr: one chunk, by default one plane), so every plane decodes on its own and every
stream keeps its CRC: a damaged segment or chunk is refused with :class:`CorruptStreamError`,
never decoded into wrong pixels. A codec that needs a noise model (``noisecal``) writes its
streams with ``embed_model=false``; what it needs of the model is stored **once** per file or
dataset: the codec's quantised maps (:class:`.noisecal.CodecMaps`, ``CodecMaps.to_bytes()``,
≈ 1.5 B/px: 6.2 MB at 2048² on a simulated sensor) — not the full calibration
(``NoiseModel.to_bytes()``, ≈ 10 B/px: 41.6 MB at 2048², 56.5 MB with a dark-current map).
Decoders need only those maps; the metadata still names the model by its SHA-256. Readers
register the stored maps (:func:`.noisecal.register_maps`) after checking that they name the
model the data need. Files of format version 1, which stored the full model (a zip, told apart
by its first bytes), are still read: that model is verified and registered.

OME-TIFF
--------
* Compression tag :data:`TIFF_COMPRESSION` (50400, private range; not a value tifffile,
  libtiff or imagecodecs use). ``import rawgate.codecs`` registers the decoder in
  ``tifffile.TIFF.DECOMPRESSORS``, so ``tifffile.imread`` reads these files in any process that
  imported rawgate. A custom code takes tifffile's generic path: ``decompress(data, out=nbytes)``
  must return the segment's bytes in the file's byte order (always little-endian here); the
  decoder refuses a stream whose decoded size is not exactly ``nbytes``.
* Writing: tifffile refuses compression values outside its ``COMPRESSION`` enum, so the
  pre-compressed streams are written through tifffile's "iterator of encoded segments" path
  under the zstd tag, and the Compression tag of every page is then rewritten in place with
  ``TiffTag.overwrite`` (in a temporary file renamed over ``path`` at the end: an interrupted
  write never leaves a file whose streams would be read as zstd).
* Private tags on the first page: :data:`TIFF_TAG_INFO` (65400, ASCII JSON: codec config and
  spec, dtype, shape, axes, physical sizes, model hash, the Micro-Manager metadata) and
  :data:`TIFF_TAG_MODEL` (65401, UNDEFINED: ``CodecMaps.to_bytes()``). The OME-XML carries the
  axes and physical sizes for every OME reader. (Not Micro-Manager's own tag 51123: tifffile
  then takes the file for a Micro-Manager stack and logs header errors on every read.)
* Streaming: :func:`write_ome_tiff` also takes a :class:`~rawgate.codecs.planes.PlaneStack`
  (a 4 GiB Micro-Manager stack is never held in memory): planes are pulled one at a time and
  coded in a bounded window, and :func:`read_ome_tiff_planes` decodes one page at a time.
  The finished file is fsynced before it is renamed over ``path`` and the directory after.
* :func:`read_ome_tiff` registers the file's maps (model hash checked) and reads with tifffile,
  so a file decodes with nothing but itself and rawgate. A bare ``tifffile.imread`` cannot see the
  model tag (a decompressor only receives the segment bytes), so in a process where neither the
  maps nor the model are registered and the model is not in a model store
  (``RAWGATE_MODEL_PATH``) it raises :class:`ModelNotFoundError` naming the model's SHA-256 (and how to read the file).

OME-Zarr v3 (OME-NGFF 0.5)
--------------------------
* :class:`RawgateZarrCodec` is a zarr v3 array→bytes codec,
  ``{"name": "rawgate", "configuration": {"codec": <rawgate codec config>, ...}}``, registered
  through the ``zarr.codecs`` entry point of this package, so ``zarr.open(path)[...]`` decodes in a
  fresh process without importing rawgate explicitly (zarr imports it when it meets the name).
* Where the noise model's maps live: at decode time zarr gives a codec nothing but its own
  configuration (``from_dict``) and, per chunk, the chunk bytes and an ``ArraySpec`` (chunk shape,
  dtype, fill value, memory order, buffer prototype) — no store, no path, no attributes, no
  sibling arrays. Maps kept as a separate array or attribute are therefore invisible to a bare
  ``zarr.open(...)[...]``; only the codec configuration travels with the codec. So:

  - small map sets go into the configuration, ``"model": base64(CodecMaps.to_bytes())``, written
    once into the array's ``zarr.json`` (not per chunk), and a fresh process decodes with zarr
    alone;
  - large ones would bloat ``zarr.json`` (2048²: 6.2 MB, 8.3 MB of base64, parsed on every open
    and by every tool that lists metadata), so above :data:`CONFIG_MODEL_LIMIT` (4 MiB of base64,
    ≈ 1450² pixels; 256²: 0.1 MB) the maps are stored once as the uint8 array
    :data:`MODEL_ARRAY` in the image group, the configuration keeps only the hash and where they
    are (``"model_array"``), and :func:`read_ome_zarr` registers them before reading. A bare
    ``zarr.open(...)[...]`` then needs the maps or the model registered, or the model in a model
    store, else raises :class:`ModelNotFoundError` naming the hash and the array.
    ``model_in_config=True`` forces the self-contained form at any size; ``False`` forces the
    separate array.
* :func:`write_ome_zarr` writes an OME-NGFF 0.5 image group: ``zarr.json`` with
  ``attributes.ome`` (``version``, one ``multiscales`` entry with typed axes and one dataset
  ``"0"`` with a scale transform) and ``attributes.rawgate`` (codec, Micro-Manager metadata);
  the array ``0`` has ``dimension_names``. Chunks are always written (``write_empty_chunks``), so
  every chunk is a verified stream; note that zarr reads a *missing* chunk file as the fill
  value (0) — a deleted chunk is a zarr-level loss rawgate cannot see.

Thread safety: tifffile and zarr decode segments/chunks from several threads at once; streams of
codecs with a noise model are coded one at a time (:data:`_MODEL_LOCK`) because their numba
kernels are already parallel and numba's fallback ``workqueue`` threading layer is not
thread-safe.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Self

import numpy as np
import tifffile
from rawgate.calibration._files import atomic_write, fsync_replace
from rawgate.calibration.model import ModelError, NoiseModel
from rawgate.codecs.planes import PlaneStack

from ._stream import CorruptStreamError, peek_header
from .base import Codec, CodecError, get_codec
from .lossless import n_workers
from .models import ModelNotFoundError, find_model, model_sha256, register_model
from .noisecal import CodecMaps, codec_maps, maps_registered, register_maps

__all__ = [
    "CONFIG_MODEL_LIMIT",
    "MODEL_ARRAY",
    "MODEL_FILE_SUFFIX",
    "MODELS_DIR",
    "TIFF_COMPRESSION",
    "TIFF_TAG_INFO",
    "TIFF_TAG_MODEL",
    "ContainerError",
    "OmeTiffPlanes",
    "RawgateZarrCodec",  # noqa: F822  (built on first access: see __getattr__)
    "read_ome_tiff",
    "read_ome_tiff_planes",
    "read_ome_zarr",
    "register_tifffile",
    "export_ome_tiff",
    "find_model_file",
    "model_file_name",
    "write_model_file",
    "write_ome_tiff",
    "write_ome_zarr",
]

#: TIFF Compression tag value of rawgate streams (private range, unused by tifffile/libtiff).
TIFF_COMPRESSION = 50400
#: private TIFF tag (first page): ASCII JSON describing the rawgate dataset
TIFF_TAG_INFO = 65400
#: private TIFF tag (first page): ``CodecMaps.to_bytes()`` of the model the streams need
#: (format version 1: ``NoiseModel.to_bytes()``, still read)
TIFF_TAG_MODEL = 65401
#: a noise model's codec maps stored once beside many files: ``<model sha256>.rgmaps`` in a
#: ``models/`` folder next to the files or above them (in a BagIt archive: ``data/models/``)
MODEL_FILE_SUFFIX = ".rgmaps"
MODELS_DIR = "models"
#: name of the codec in zarr metadata and of the ``zarr.codecs`` entry point
ZARR_CODEC_NAME = "rawgate"
#: the array (in the OME-Zarr image group) holding the maps when they are not in the codec config
MODEL_ARRAY = "rawgate_noise_model"
#: largest base64 map text put into the zarr codec configuration by default [characters]
CONFIG_MODEL_LIMIT = 4 << 20

FORMAT_TIFF = "rawgate.ome_tiff"
FORMAT_ZARR = "rawgate.ome_zarr"
#: 2: the model payload is ``CodecMaps.to_bytes()``; 1: ``NoiseModel.to_bytes()`` (still read)
FORMAT_VERSION = 2
#: first bytes of ``NoiseModel.to_bytes()`` (a zip): the payload of format version 1
_ZIP_MAGIC = b"PK\x03\x04"

_DEFAULT_AXES = {2: "YX", 3: "TYX", 4: "TZYX", 5: "TCZYX"}
_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
_LENGTH_UNITS_UM = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "micrometer": 1.0,
                    "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "m": 1e6, "meter": 1e6,
                    "nanometer": 1e-3}
_TIME_UNITS_S = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "millisecond": 1e-3,
                 "s": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}

#: serialises coding of streams that use a noise model (see the module docstring)
_MODEL_LOCK = threading.Lock()


class ContainerError(ValueError):
    """Arguments a container cannot take (axes, chunks, metadata), or a file it cannot read."""


# ====================================================================== shared helpers

def _prepare_codec(codec: Codec | str | dict, noise_model: NoiseModel | None,
                   frame_shape: tuple[int, int]) -> tuple[Codec, NoiseModel | None]:
    """The codec each plane/chunk is coded with, and the model to store once (or None).

    A codec with a noise model is rebuilt with ``embed_model=False`` and the model attached
    (from ``noise_model=``, the codec itself, or a registered/stored model it names).
    ``noise_model`` is ignored for codecs that do not use one.
    """
    codec = get_codec(codec)
    if not codec.needs_noise_model:
        return codec, None
    model = noise_model if noise_model is not None else getattr(codec, "noise_model", None)
    if model is None and getattr(codec, "model_sha256", None):
        model = find_model(codec.model_sha256)
    if model is None:
        raise ModelNotFoundError(
            f"{codec.codec_id} needs the camera's noise model: pass noise_model= (or build the "
            "codec with noise_model=)"
        )
    codec = get_codec(codec, noise_model=model, embed_model=False)  # checks a configured hash
    if tuple(model.shape) != tuple(frame_shape):
        raise ContainerError(
            f"the noise model describes {model.shape[1]}×{model.shape[0]} px frames, the data has "
            f"{frame_shape[1]}×{frame_shape[0]} px planes"
        )
    return codec, model


def _prepare_write(data: Any, axes: str | None, physical_sizes: Any, metadata: Any,
                   codec: Codec | str | dict, noise_model: NoiseModel | None, *, ngff: bool):
    """What both writers check before writing anything: the array (not empty), its axes,
    physical sizes, metadata as JSON, and the per-plane codec with the model to store once."""
    data = np.asarray(data)
    ax = _check_axes(axes, data.ndim, ngff=ngff)
    sizes = _check_physical_sizes(physical_sizes, ax)
    mm = _metadata_json(metadata)
    if data.size == 0:
        raise ContainerError(f"empty image (shape {data.shape})")
    seg_codec, model = _prepare_codec(codec, noise_model, data.shape[-2:])
    return data, ax, sizes, mm, seg_codec, model


def _check_axes(axes: str | None, ndim: int, *, ngff: bool) -> str:
    if ndim < 2:
        raise ContainerError(f"need an image or a stack of images, got {ndim} dimension(s)")
    if axes is None:
        if ndim not in _DEFAULT_AXES:
            raise ContainerError(f"no default axes for {ndim}-D data; give axes= (e.g. 'TCZYX')")
        return _DEFAULT_AXES[ndim]
    ax = str(axes).upper()
    if len(ax) != ndim:
        raise ContainerError(f"axes {axes!r} name {len(ax)} dimensions, the data has {ndim}")
    lead = ax[:-2]
    if ax[-2:] != "YX" or len(set(ax)) != len(ax) or not set(lead) <= set("TCZ"):
        raise ContainerError(
            f"axes {axes!r}: must end in 'YX', preceded by distinct axes from 'T', 'C', 'Z'"
        )
    if ngff and lead != "".join(a for a in "TCZ" if a in lead):
        raise ContainerError(
            f"axes {axes!r}: OME-NGFF orders the axes time, channel, space (e.g. 'TCZYX', 'TZYX')"
        )
    return ax


def _check_physical_sizes(sizes: Mapping[str, float] | None, axes: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (sizes or {}).items():
        k = str(key).upper()
        if k not in "XYZT" or len(k) != 1:
            raise ContainerError(
                f"physical size {key!r}: keys are 'X', 'Y', 'Z' (µm) and 'T' (s)"
            )
        if k not in axes:
            raise ContainerError(f"physical size {key!r} given, but the axes {axes!r} lack {k}")
        v = float(value)
        if not np.isfinite(v) or v <= 0:
            raise ContainerError(f"physical size {key!r} must be a positive number, got {value!r}")
        out[k] = v
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _metadata_json(metadata: Mapping[str, Any] | None) -> Any:
    """Micro-Manager metadata as plain JSON types (refusing what JSON cannot carry)."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise ContainerError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(metadata, default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ContainerError(f"metadata cannot be stored as JSON: {e}") from e


def _model_payload(model: NoiseModel) -> bytes:
    """What a container stores of the model: the codec's quantised maps."""
    return codec_maps(model).to_bytes()


def _register_stored_model(data: Any, expected_sha: str | None,
                           origin: str) -> CodecMaps | NoiseModel:
    """Register the model payload a container stores, after checking the model it names.

    The payload is ``CodecMaps.to_bytes()`` (format version 2), registered with
    :func:`register_maps`, or a whole ``NoiseModel.to_bytes()`` (version 1, a zip), verified and
    registered with :func:`register_model`. Returns what was registered.

    Raises
    ------
    ModelError
        The payload is corrupted, or names another model than the data.
    """
    data = bytes(data)
    if data[:4] == _ZIP_MAGIC:  # format version 1: the whole calibration
        model = NoiseModel.from_bytes(data, origin=origin)
        sha = model_sha256(model)
        if expected_sha and sha != expected_sha:
            raise ModelError(f"{origin}: the stored noise model ({sha[:12]}…) is not the one the "
                             f"data name ({expected_sha[:12]}…)")
        register_model(model)
        return model
    try:
        maps = CodecMaps.from_bytes(data)
    except (CorruptStreamError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ModelError(f"{origin}: the stored noise-model maps are corrupted or not rawgate "
                         f"maps: {e}") from e
    sha = maps.model_sha256
    if expected_sha and sha != expected_sha:
        raise ModelError(f"{origin}: the stored maps are of noise model {str(sha)[:12]}…, the "
                         f"data name {expected_sha[:12]}…")
    register_maps(maps)
    return maps


def model_file_name(model_sha256: str) -> str:
    """File name of a model's stored maps: ``<sha256>.rgmaps``."""
    return f"{model_sha256}{MODEL_FILE_SUFFIX}"


def write_model_file(model: NoiseModel, directory: str | os.PathLike) -> Path:
    """Store a model's codec maps once, as ``directory/<sha256>.rgmaps``, for OME-TIFFs written
    with ``embed_model=False`` in or below ``directory``'s parent (see :func:`find_model_file`).

    Written atomically (temporary file, fsync, rename, fsync of the folder). A file already
    there with the same bytes is left alone; one with other bytes (damaged) is replaced.

    Returns
    -------
    Path
        The model file.
    """
    payload = _model_payload(model)
    path = Path(directory) / model_file_name(model_sha256(model))
    try:
        if path.stat().st_size == len(payload) and path.read_bytes() == payload:
            return path
    except OSError:
        pass
    atomic_write(path, lambda fh: fh.write(payload))
    return path


def find_model_file(near: str | os.PathLike, model_sha256: str) -> Path | None:
    """The stored maps a file at ``near`` refers to: ``models/<sha256>.rgmaps`` or
    ``data/models/<sha256>.rgmaps`` in the file's folder or any folder above it (nearest
    first), so a copy inside a BagIt archive and one in its staging folder both find the
    archive's models. ``None`` when there is none."""
    name = model_file_name(model_sha256)
    for d in Path(os.path.abspath(near)).parents:
        for cand in (d / MODELS_DIR / name, d / "data" / MODELS_DIR / name):
            if cand.is_file():
                return cand
    return None


def _register_model_near(path: Path, sha: str) -> None:
    """Register the maps a file stores outside itself, unless this process holds them already."""
    if maps_registered(sha):
        return
    found = find_model_file(path, sha)
    if found is None:
        if find_model(sha) is not None:  # a model store has it
            return
        name = model_file_name(sha)
        raise ModelNotFoundError(
            f"{path} needs noise model {sha}, which it does not embed: no {MODELS_DIR}/{name} (or "
            f"data/{MODELS_DIR}/{name}) beside it or in a folder above it, and none in the model "
            "stores (RAWGATE_MODEL_PATH or ~/.local/share/rawgate/models)")
    try:
        data = found.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: its noise model {found} cannot be read: {e}") from e
    _register_stored_model(data, sha, f"{found} (the noise model of {path})")


def _decode_stream(codec: Codec | None, data: Any) -> np.ndarray:
    """Decode one stream (``codec`` None: the codec the stream names)."""
    header = peek_header(data)
    if codec is None:
        codec = get_codec(header["codec"])
    if header.get("model_sha256"):
        with _MODEL_LOCK:
            return codec.decode(data)
    return codec.decode(data)


def _encode_stream(codec: Codec, a: np.ndarray) -> bytes:
    if codec.needs_noise_model:
        with _MODEL_LOCK:
            return codec.encode(a)
    return codec.encode(a)


def _encode_planes(codec: Codec, planes: Iterable[np.ndarray],
                   n_planes: int | None = None) -> Iterator[bytes]:
    """Encoded planes in order; a bounded window of planes coded in parallel threads.

    ``planes`` may be a generator (pulled lazily: at most ``2 * n_workers()`` planes are read
    ahead of the one being written); ``n_planes`` is its length when ``len()`` cannot tell.
    """
    if n_planes is None:
        n_planes = len(planes) if hasattr(planes, "__len__") else None  # type: ignore[arg-type]
    if codec.needs_noise_model or n_planes == 1:
        for p in planes:  # kernels are parallel inside
            yield _encode_stream(codec, p)
        return
    nw = n_workers()
    with ThreadPoolExecutor(nw) as pool:
        window: deque = deque()
        for p in planes:
            window.append(pool.submit(codec.encode, p))
            del p  # the pool's work item holds the plane only until it is coded
            if len(window) >= 2 * nw:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


# ====================================================================== OME-TIFF
def _tiff_decompress(data: Any, out: Any = None, **kwargs: Any) -> Any:
    """tifffile decompressor for :data:`TIFF_COMPRESSION` segments.

    tifffile calls ``decompress(data, out=nbytes)`` and reads the result with
    ``numpy.frombuffer(result, file_dtype)``; rawgate files are little-endian.
    """
    a = _decode_stream(None, data)
    le = np.ascontiguousarray(a, a.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
    if isinstance(out, (int, np.integer)):
        if le.nbytes != int(out):
            raise CorruptStreamError(
                f"rawgate TIFF segment decodes to {le.nbytes} bytes ({a.dtype}{a.shape}), the "
                f"TIFF page expects {int(out)}"
            )
        return le
    if out is not None:
        buf = np.frombuffer(out, np.uint8) if not isinstance(out, np.ndarray) else out.reshape(-1).view(np.uint8)
        if buf.nbytes != le.nbytes:
            raise CorruptStreamError(
                f"rawgate TIFF segment decodes to {le.nbytes} bytes, the output buffer has {buf.nbytes}"
            )
        buf[...] = le
        return out
    return le


def _tiff_decompress_missing_model(data: Any, out: Any = None, **kwargs: Any) -> Any:
    try:
        return _tiff_decompress(data, out, **kwargs)
    except ModelNotFoundError as e:
        raise ModelNotFoundError(
            f"{e}. This OME-TIFF stores the model once (TIFF tag {TIFF_TAG_MODEL}, or a "
            f"{MODELS_DIR}/<sha256>{MODEL_FILE_SUFFIX} file beside or above it): read it with "
            "rawgate.codecs.read_ome_tiff(path), which registers it"
        ) from None


def register_tifffile() -> None:
    """Make tifffile decode rawgate-compressed TIFF segments (idempotent; done on import)."""
    tifffile.TIFF.DECOMPRESSORS._codecs[TIFF_COMPRESSION] = _tiff_decompress_missing_model


def _is_plane_stack(data: Any) -> bool:
    return isinstance(data, PlaneStack) and not isinstance(data, np.ndarray)


def _stack_planes(stack: Any, n: int, shape: tuple[int, int], dtype: np.dtype) -> Iterator[np.ndarray]:
    """The planes of a :class:`PlaneStack`, pulled one at a time and checked against its shape."""
    for i in range(n):
        p = np.ascontiguousarray(stack.plane(i))
        if p.shape != shape or p.dtype != dtype:
            raise ContainerError(
                f"plane {i} of the stack is {p.dtype}{p.shape}; the stack declares {dtype}{shape}"
            )
        yield p
        del p


def _stack_defaults(stack: Any, axes: str | None, metadata: Any,
                    physical_sizes: Any) -> tuple[str | None, Any, Any]:
    """Axes, metadata and physical sizes of a stack where the caller gave none.

    Sizes the stack knows for axes it lacks (a ``Z`` step of a time series) or that are not
    positive numbers are dropped; sizes the caller gives are checked as for an array.
    """
    if axes is None:
        axes = getattr(stack, "axes", None) or None
    if metadata is None:
        metadata = getattr(stack, "metadata", None) or None
    if physical_sizes is None:
        ax = str(axes or _DEFAULT_AXES.get(len(stack.shape), "")).upper()
        physical_sizes = {}
        for k, v in (getattr(stack, "physical_sizes", None) or {}).items():
            try:
                fv = float(v)
            except (TypeError, ValueError):
                continue
            if len(str(k)) == 1 and str(k).upper() in ax and np.isfinite(fv) and fv > 0:
                physical_sizes[str(k).upper()] = fv
    return axes, metadata, physical_sizes


def write_ome_tiff(
    path: str | os.PathLike,
    data: Any,
    codec: Codec | str | dict,
    *,
    axes: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    physical_sizes: Mapping[str, float] | None = None,
    noise_model: NoiseModel | None = None,
    embed_model: bool = True,
    opener: Callable[[Path], IO[bytes]] | None = None,
) -> Path:
    """Write ``data`` as an OME-TIFF whose planes are rawgate streams (one strip per plane).

    Parameters
    ----------
    path
        Output file (``.ome.tif``); written to the temporary file ``.{name}.{pid}.partial``
        beside it, fsynced, renamed over ``path``, and the directory fsynced. On any error the
        temporary file is removed and ``path`` is untouched.
    data
        ``(..., Y, X)`` array, or a :class:`~rawgate.codecs.planes.PlaneStack`, whose planes are
        then read one at a time (never the whole stack: at most ``2 * n_workers()`` planes are
        read ahead of the one being written). Every ``(Y, X)`` plane becomes one TIFF page with
        one segment.
    codec
        A rawgate codec, spec string (``"noisecal:step=2"``) or config dict.
    axes
        OME axes: distinct letters from ``T``, ``C``, ``Z`` (any order) followed by ``YX``.
        Default: a stack's own axes, else by dimensions: ``YX``, ``TYX``, ``TZYX``, ``TCZYX``.
    metadata
        Micro-Manager (or any JSON) metadata, carried over unchanged (default: a stack's own).
    physical_sizes
        ``{"X": µm, "Y": µm, "Z": µm, "T": s}`` (any subset of the axes present), written to the
        OME-XML (``PhysicalSizeX/Y/Z``, ``TimeIncrement``). Default: a stack's own (those of
        axes it has).
    noise_model
        The model for ``noisecal`` (unless the codec carries it); stored once in the file.
    embed_model
        Store the noise model's codec maps in the file (TIFF tag :data:`TIFF_TAG_MODEL`, about
        1.5 bytes per pixel of one plane), so it decodes with nothing but itself. ``False``: the
        file names the model by SHA-256 only, and readers find its maps in a ``models/`` folder
        beside or above it (:func:`write_model_file`, :func:`find_model_file`) — one copy for
        a whole archive.
    opener
        ``opener(tmp_path)`` opens the temporary file for writing (a seekable binary file,
        closed here); default: tifffile opens it. The archive uses this for fault injection.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    if _is_plane_stack(data):
        stack = data
        axes, metadata, physical_sizes = _stack_defaults(stack, axes, metadata, physical_sizes)
        shape = tuple(int(s) for s in stack.shape)
        dtype = np.dtype(stack.dtype)
        ax = _check_axes(axes, len(shape), ngff=False)
        sizes = _check_physical_sizes(physical_sizes, ax)
        mm = _metadata_json(metadata)
        n_planes = int(np.prod(shape[:-2], dtype=np.int64))
        if int(np.prod(shape, dtype=np.int64)) == 0:
            raise ContainerError(f"empty image (shape {shape})")
        if int(stack.n_planes) != n_planes:
            raise ContainerError(f"the stack has {stack.n_planes} planes, its shape {shape} "
                                 f"{n_planes}")
        seg_codec, model = _prepare_codec(codec, noise_model, shape[-2:])
        H, W = shape[-2:]
        planes: Iterable[np.ndarray] = _stack_planes(stack, n_planes, (H, W), dtype)
    else:
        data, ax, sizes, mm, seg_codec, model = _prepare_write(
            data, axes, physical_sizes, metadata, codec, noise_model, ngff=False)
        shape, dtype = tuple(data.shape), data.dtype
        H, W = shape[-2:]
        planes = data.reshape(-1, H, W)
        n_planes = len(planes)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    model_bytes = _model_payload(model) if model is not None and embed_model else None
    info = {
        "format": FORMAT_TIFF,
        "version": FORMAT_VERSION,
        "codec": seg_codec.spec,
        "codec_config": seg_codec.get_config(),
        "dtype": dtype.str,
        "shape": list(shape),
        "axes": ax,
        "physical_sizes": sizes,
        "model_sha256": model_sha256(model) if model is not None else None,
        "micromanager": mm,
    }
    extratags: list[tuple] = [
        (TIFF_TAG_INFO, 2, None, json.dumps(info, ensure_ascii=True, allow_nan=False), True)
    ]
    if model_bytes is not None:
        extratags.append((TIFF_TAG_MODEL, 7, len(model_bytes), model_bytes, True))
    ome: dict[str, Any] = {"axes": ax}
    for k in ("X", "Y", "Z"):
        if k in sizes:
            ome[f"PhysicalSize{k}"] = sizes[k]
            ome[f"PhysicalSize{k}Unit"] = "µm"
    if "T" in sizes:
        ome["TimeIncrement"] = sizes["T"]
        ome["TimeIncrementUnit"] = "s"

    bigtiff = nbytes + len(model_bytes or b"") > 2**32 - 2**26
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fh = opener(tmp) if opener is not None else None
        try:
            with tifffile.TiffWriter(fh if fh is not None else tmp, bigtiff=bigtiff, ome=True,
                                     byteorder="<") as tw:
                # tifffile accepts only COMPRESSION enum values: write the streams as
                # pre-encoded segments under the zstd tag, then rewrite the tag (below).
                tw.write(
                    _encode_planes(seg_codec, planes, n_planes), shape=shape, dtype=dtype,
                    compression="zstd", rowsperstrip=H, photometric="minisblack",
                    metadata=ome, extratags=extratags, software="rawgate",
                )
        finally:
            if fh is not None:
                fh.close()
        with tifffile.TiffFile(tmp, mode="r+b") as tif:
            for page in tif.pages:
                page.tags[259].overwrite(TIFF_COMPRESSION)  # type: ignore[union-attr]
        fsync_replace(tmp, path)  # fsync the file, rename, fsync the directory
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _ome_physical_sizes(ome_xml: str | None) -> dict[str, float]:
    if not ome_xml:
        return {}
    try:
        image = tifffile.xml2dict(ome_xml)["OME"]["Image"]
    except Exception:  # noqa: BLE001  (malformed OME-XML: no sizes)
        return {}
    if isinstance(image, list):
        image = image[0]
    pixels = image.get("Pixels", {})
    out: dict[str, float] = {}
    for k in ("X", "Y", "Z"):
        v = pixels.get(f"PhysicalSize{k}")
        if v is not None:
            out[k] = float(v) * _LENGTH_UNITS_UM.get(str(pixels.get(f"PhysicalSize{k}Unit", "µm")), 1.0)
    if pixels.get("TimeIncrement") is not None:
        out["T"] = float(pixels["TimeIncrement"]) * _TIME_UNITS_S.get(
            str(pixels.get("TimeIncrementUnit", "s")), 1.0)
    return out


def _tiff_info_register_model(tif: tifffile.TiffFile, path: Path) -> dict[str, Any]:
    """The rawgate info of an open OME-TIFF (``{}`` for a foreign one), after registering the
    noise-model maps it stores (model hash checked)."""
    page0 = tif.pages.first
    tag = page0.tags.get(TIFF_TAG_INFO)
    info: dict[str, Any] = {}
    if tag is not None:
        try:
            info = json.loads(tag.value)
        except (TypeError, ValueError) as e:
            raise ContainerError(f"{path}: rawgate tag {TIFF_TAG_INFO} is corrupted: {e}") from e
        if not isinstance(info, dict) or info.get("format") != FORMAT_TIFF:
            raise ContainerError(f"{path}: tag {TIFF_TAG_INFO} is not rawgate metadata")
        if int(info.get("version", 0)) > FORMAT_VERSION:
            raise ContainerError(
                f"{path}: rawgate OME-TIFF version {info['version']} is newer than this "
                f"rawgate ({FORMAT_VERSION}); upgrade"
            )
    mtag = page0.tags.get(TIFF_TAG_MODEL)
    if mtag is not None:
        _register_stored_model(mtag.value, info.get("model_sha256"),
                               f"{path} (noise model in TIFF tag {TIFF_TAG_MODEL})")
    elif info.get("model_sha256"):
        _register_model_near(path, info["model_sha256"])
    return info


@contextlib.contextmanager
def _damaged_tiff_is_container_error(path: Path) -> Iterator[None]:
    """tifffile's own errors on a damaged file (a truncated header, a forged tag, an impossible
    size) become :class:`ContainerError` naming the file; rawgate's errors and a missing file
    pass unchanged. Found by ``tests/test_fuzz_decoders.py``."""
    try:
        yield
    except (ContainerError, CorruptStreamError, CodecError, ModelError, FileNotFoundError, PermissionError):
        raise
    except Exception as e:  # noqa: BLE001 - tifffile raises whatever its parser hits on garbage
        # (TiffFileError, RuntimeError, AssertionError, ZeroDivisionError, struct.error, …)
        raise ContainerError(f"{path}: damaged or not a readable TIFF ({type(e).__name__}: {e})") from e


def read_ome_tiff(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read an OME-TIFF written by :func:`write_ome_tiff` (or any OME-TIFF tifffile reads).

    The model maps stored in the file are checked and registered first, so the file decodes
    with nothing but itself.

    Returns
    -------
    (array, metadata)
        The array in its original dtype and shape, and ``{"axes", "physical_sizes",
        "micromanager", "codec", "codec_config", "model_sha256"}``.
    """
    path = Path(path)
    with _damaged_tiff_is_container_error(path):
        with tifffile.TiffFile(path) as tif:
            info = _tiff_info_register_model(tif, path)
            if not info and any(getattr(pg, "compression", None) == TIFF_COMPRESSION for pg in tif.pages):
                raise ContainerError(f"{path}: rawgate-coded pages without rawgate's description of them "
                                     "(the file is damaged)")
            series = tif.series[0]
            a = series.asarray()
            physical = _ome_physical_sizes(tif.ome_metadata)
            axes = series.axes
        if info:
            shape = tuple(int(s) for s in info["shape"])
            dtype = np.dtype(info["dtype"])
            if a.dtype != dtype or a.size != int(np.prod(shape)):
                raise CorruptStreamError(
                    f"{path}: decoded {a.dtype}{a.shape}, the file describes {dtype}{shape}"
                )
            a = a.reshape(shape)
            axes = info["axes"]
        elif a.ndim < 2 or a.size == 0:
            raise ContainerError(f"{path}: no image in the file (shape {a.shape}): damaged or not an image")
    meta = {
        "axes": axes,
        "physical_sizes": physical or dict(info.get("physical_sizes") or {}),
        "micromanager": info.get("micromanager"),
        "codec": info.get("codec"),
        "codec_config": info.get("codec_config"),
        "model_sha256": info.get("model_sha256"),
    }
    return a, meta


class OmeTiffPlanes:
    """A rawgate OME-TIFF read lazily, one decoded ``(Y, X)`` page at a time (a
    :class:`~rawgate.codecs.planes.PlaneStack`).

    Made by :func:`read_ome_tiff_planes`; holds the file open until :meth:`close` (or the end of
    a ``with`` block). Only the page asked for is read and decoded, so a 4 GiB stack is checked
    with one plane in memory.

    Attributes
    ----------
    shape, dtype, axes, metadata, physical_sizes
        As in :class:`~rawgate.codecs.planes.PlaneStack`; ``metadata`` is the Micro-Manager
        metadata stored in the file (``{}`` if none).
    info
        ``{"axes", "physical_sizes", "micromanager", "codec", "codec_config", "model_sha256"}``,
        as :func:`read_ome_tiff` returns.
    path
        The file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with _damaged_tiff_is_container_error(self.path):
            self._tif = tifffile.TiffFile(self.path)
        try:
            rg = _tiff_info_register_model(self._tif, self.path)
            pages = self._tif.pages
            pages.cache = False  # keep no decoded page objects around
            if rg:
                self.shape = tuple(int(s) for s in rg["shape"])
                self.dtype = np.dtype(rg["dtype"])
                self.axes = str(rg["axes"])
            else:
                series = self._tif.series[0]
                self.shape = tuple(int(s) for s in series.shape)
                self.dtype = np.dtype(series.dtype)
                self.axes = str(series.axes)
            if len(self.shape) < 2:
                raise ContainerError(f"{self.path}: not an image stack (shape {self.shape})")
            self._n = int(np.prod(self.shape[:-2], dtype=np.int64))
            self._rawgate = bool(rg)
            n_pages = len(pages)
            if n_pages != self._n:
                raise CorruptStreamError(
                    f"{self.path}: {n_pages} TIFF pages, the file describes {self._n} planes "
                    f"of shape {self.shape}"
                )
            physical = _ome_physical_sizes(self._tif.ome_metadata)
            self.physical_sizes = physical or dict(rg.get("physical_sizes") or {})
            self.metadata = dict(rg.get("micromanager") or {})
            self.info = {
                "axes": self.axes,
                "physical_sizes": self.physical_sizes,
                "micromanager": rg.get("micromanager"),
                "codec": rg.get("codec"),
                "codec_config": rg.get("codec_config"),
                "model_sha256": rg.get("model_sha256"),
            }
        except BaseException:
            self._tif.close()
            raise

    @property
    def n_planes(self) -> int:
        """Number of ``(Y, X)`` planes (TIFF pages)."""
        return self._n

    def plane(self, index: int) -> np.ndarray:
        """Decode page ``index`` (C order over the leading axes) to a ``(Y, X)`` array.

        Raises
        ------
        CorruptStreamError
            The page's stream is damaged or decodes to another dtype or shape than the file
            describes.
        """
        if not 0 <= index < self._n:
            raise IndexError(f"plane {index} of {self._n}")
        page = self._tif.pages[index]
        H, W = self.shape[-2:]
        if self._rawgate and getattr(page, "compression", None) == TIFF_COMPRESSION:
            offsets, counts = page.dataoffsets, page.databytecounts
            if len(offsets) != 1:
                raise CorruptStreamError(f"{self.path}: page {index} has {len(offsets)} "
                                         "segments, rawgate writes one per page")
            fh = self._tif.filehandle
            fh.seek(offsets[0])
            data = fh.read(counts[0])
            if len(data) != counts[0]:
                raise CorruptStreamError(f"{self.path}: page {index} is truncated")
            try:
                a = _decode_stream(None, data)
            except CorruptStreamError as e:
                raise CorruptStreamError(f"{self.path}: page {index}: {e}") from e
        else:
            a = page.asarray()
        if a.dtype != self.dtype or a.size != H * W:
            raise CorruptStreamError(
                f"{self.path}: page {index} decodes to {a.dtype}{a.shape}, the file describes "
                f"{self.dtype}{(H, W)} planes"
            )
        return a.reshape(H, W)

    def close(self) -> None:
        """Close the file."""
        self._tif.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self._n):
            yield self.plane(i)


def read_ome_tiff_planes(path: str | os.PathLike) -> OmeTiffPlanes:
    """Open an OME-TIFF written by :func:`write_ome_tiff` for lazy reading, one page at a time.

    The noise-model maps stored in the file are checked and registered first (as
    :func:`read_ome_tiff` does). Use it in a ``with`` block, or call ``close()``.

    Returns
    -------
    OmeTiffPlanes
        A :class:`~rawgate.codecs.planes.PlaneStack` whose ``plane(i)`` decodes page ``i``,
        with the file's ``info`` dict.
    """
    return OmeTiffPlanes(path)


# ====================================================================== OME-Zarr v3
def _make_zarr_codec_class() -> type:
    """Build :class:`RawgateZarrCodec` (deferred: importing zarr costs ~0.1–0.3 s)."""
    import asyncio

    from zarr.abc.codec import ArrayBytesCodec
    from zarr.core.common import parse_named_configuration
    from zarr.registry import register_codec

    @dataclasses.dataclass(frozen=True)
    class RawgateZarrCodec(ArrayBytesCodec):
        """zarr v3 array→bytes codec: each chunk is one self-describing rawgate stream.

        Configuration: ``codec`` (the rawgate codec config, ``Codec.get_config()``), and for codecs
        with a noise model either ``model`` (base64 of ``CodecMaps.to_bytes()``; format version 1:
        of ``NoiseModel.to_bytes()``) or ``model_array`` (where the dataset stores it, for the
        error message and readers).
        """

        is_fixed_size = False

        codec: dict[str, Any]
        model: str | None = None
        model_array: str | None = None

        def __init__(self, *, codec: Codec | str | dict[str, Any], model: str | None = None,
                     model_array: str | None = None) -> None:
            cfg = get_codec(codec).get_config()  # validates; a noise model object is dropped
            object.__setattr__(self, "codec", cfg)
            object.__setattr__(self, "model", model)
            object.__setattr__(self, "model_array", model_array)

        @classmethod
        def from_dict(cls, data: dict[str, Any]) -> RawgateZarrCodec:
            _, cfg = parse_named_configuration(data, ZARR_CODEC_NAME)
            unknown = set(cfg) - {"codec", "model", "model_array"}
            if unknown:
                raise ValueError(f"rawgate zarr codec: unknown configuration {sorted(unknown)}")
            return cls(**cfg)  # type: ignore[arg-type]

        def to_dict(self) -> dict[str, Any]:
            cfg: dict[str, Any] = {"codec": dict(self.codec)}
            if self.model is not None:
                cfg["model"] = self.model
            if self.model_array is not None:
                cfg["model_array"] = self.model_array
            return {"name": ZARR_CODEC_NAME, "configuration": cfg}

        def __hash__(self) -> int:  # the config is a dict: hash its canonical JSON
            return hash((json.dumps(self.codec, sort_keys=True), self.model_array,
                         None if self.model is None else (len(self.model), self.model[-64:])))

        def __repr__(self) -> str:
            extra = f", model=<{len(self.model)} base64 chars>" if self.model else ""
            return f"RawgateZarrCodec(codec={get_codec(self.codec).spec!r}{extra})"

        def compute_encoded_size(self, input_byte_length: int, chunk_spec: Any) -> int:
            raise NotImplementedError  # variable size

        def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
            rg = get_codec(self.codec)
            native = dtype.to_native_dtype()
            if rg.dtypes is not None and native.name not in rg.dtypes:
                raise CodecError(f"{rg.codec_id}: dtype {native} not supported "
                                 f"(takes {', '.join(rg.dtypes)})")
            chunk_shape = getattr(chunk_grid, "chunk_shape", None)
            if chunk_shape is not None and len(chunk_shape) < rg.min_ndim:
                raise CodecError(f"{rg.codec_id}: chunks need ≥ {rg.min_ndim} dimensions")

        # ---------------------------------------------------------------- coding
        def _rg_codec(self) -> Codec:
            rg = self.__dict__.get("_rg")
            if rg is None:
                rg = get_codec(self.codec)
                self.__dict__["_rg"] = rg  # frozen dataclass: cache outside the fields
            return rg

        def _ensure_model(self) -> None:
            """Register the maps (or, format version 1, the model) carried in the configuration.

            Parsed once per codec object; registered again on every chunk (a dict insert), so a
            cleared registry does not break a long-lived array.
            """
            sha = self.codec.get("model_sha256")
            if not sha or self.model is None:
                return  # maps in a group array: read_ome_zarr or a model store provides them
            stored = self.__dict__.get("_stored")
            if stored is None:
                try:
                    data = base64.b64decode(self.model.encode("ascii"), validate=True)
                except (ValueError, UnicodeEncodeError) as e:
                    raise ModelError(f"the noise model in the zarr codec configuration is "
                                     f"corrupted (bad base64: {e})") from e
                stored = _register_stored_model(data, sha,
                                                "noise model in the zarr codec configuration")
                self.__dict__["_stored"] = stored  # frozen dataclass: cache outside the fields
            elif isinstance(stored, CodecMaps):
                register_maps(stored)
            else:
                register_model(stored)

        def _missing_model(self) -> ModelNotFoundError:
            sha = self.codec.get("model_sha256")
            where = (f" This dataset stores it once as the array {self.model_array!r} (relative "
                     "to the image array):" if self.model_array else "")
            return ModelNotFoundError(
                f"this zarr array needs noise model {sha}, which is neither registered nor in a "
                f"model store (RAWGATE_MODEL_PATH or ~/.local/share/rawgate/models).{where} read "
                "it with rawgate.codecs.containers.read_ome_zarr(path), which registers it"
            )

        def _decode_sync(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
            self._ensure_model()
            raw = np.asarray(chunk_bytes.as_numpy_array()).reshape(-1).view(np.uint8)
            try:
                a = _decode_stream(self._rg_codec(), memoryview(raw))
            except ModelNotFoundError:
                raise self._missing_model() from None
            want = chunk_spec.dtype.to_native_dtype()
            if a.dtype != want or a.shape != tuple(chunk_spec.shape):
                raise CorruptStreamError(
                    f"rawgate zarr chunk decodes to {a.dtype}{a.shape}, the array expects "
                    f"{want}{tuple(chunk_spec.shape)}"
                )
            return chunk_spec.prototype.nd_buffer.from_ndarray_like(a)

        def _encode_sync(self, chunk_array: Any, chunk_spec: Any) -> Any:
            self._ensure_model()
            a = np.ascontiguousarray(chunk_array.as_numpy_array())
            try:
                encoded = _encode_stream(self._rg_codec(), a)
            except ModelNotFoundError:
                raise self._missing_model() from None
            return chunk_spec.prototype.buffer.from_bytes(encoded)

        async def _decode_single(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
            return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

        async def _encode_single(self, chunk_array: Any, chunk_spec: Any) -> Any:
            return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    RawgateZarrCodec.__module__ = __name__
    RawgateZarrCodec.__qualname__ = "RawgateZarrCodec"
    register_codec(ZARR_CODEC_NAME, RawgateZarrCodec)  # also found via the entry point
    return RawgateZarrCodec


def __getattr__(name: str) -> Any:
    if name == "RawgateZarrCodec":
        cls = _make_zarr_codec_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _zarr_codec_class() -> type:
    return globals().get("RawgateZarrCodec") or __getattr__("RawgateZarrCodec")


def write_ome_zarr(
    path: str | os.PathLike,
    data: np.ndarray,
    codec: Codec | str | dict,
    *,
    axes: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    physical_sizes: Mapping[str, float] | None = None,
    chunks: tuple[int, ...] | None = None,
    noise_model: NoiseModel | None = None,
    model_in_config: bool | None = None,
    name: str | None = None,
) -> Path:
    """Write ``data`` as an OME-NGFF 0.5 (zarr v3) image group whose chunks are rawgate streams.

    Parameters
    ----------
    path
        Directory of the zarr group (replaced if it exists).
    data, codec, axes, metadata, physical_sizes, noise_model
        As for :func:`write_ome_tiff`; axes must be in OME-NGFF order (time, channel, space).
    chunks
        Chunk shape; default one ``(Y, X)`` plane per chunk. Codecs with a noise model need whole
        planes in every chunk.
    model_in_config
        Put the noise model's codec maps into the codec configuration (self-contained for a bare
        ``zarr.open``) — default: when their base64 text is ≤ :data:`CONFIG_MODEL_LIMIT`; else
        they are stored once as the array :data:`MODEL_ARRAY` of the group.
    name
        Name of the multiscale image (default: the directory name).
    """
    import zarr

    path = Path(path)
    data, ax, sizes, mm, seg_codec, model = _prepare_write(
        data, axes, physical_sizes, metadata, codec, noise_model, ngff=True)
    H, W = data.shape[-2:]
    if chunks is None:
        chunks = (1,) * (data.ndim - 2) + (H, W)
    chunks = tuple(int(c) for c in chunks)
    if len(chunks) != data.ndim or any(c < 1 for c in chunks):
        raise ContainerError(f"chunks {chunks} do not fit data of shape {data.shape}")
    if model is not None and chunks[-2:] != (H, W):
        raise ContainerError(
            f"{seg_codec.codec_id} codes whole frames: chunks must span (Y, X) = {(H, W)}, "
            f"got {chunks[-2:]}"
        )
    cls = _zarr_codec_class()
    model_b64: str | None = None
    model_bytes: bytes | None = None
    if model is not None:
        model_bytes = _model_payload(model)
        in_config = model_in_config
        if in_config is None:
            in_config = 4 * ((len(model_bytes) + 2) // 3) <= CONFIG_MODEL_LIMIT
        if in_config:
            model_b64 = base64.b64encode(model_bytes).decode("ascii")
    store_model_array = model is not None and model_b64 is None
    serializer = cls(codec=seg_codec, model=model_b64,
                     model_array=f"../{MODEL_ARRAY}" if store_model_array else None)

    scale = [1.0] * data.ndim
    axes_meta = []
    for i, a in enumerate(ax):
        entry: dict[str, Any] = {"name": a.lower(), "type": _AXIS_TYPES[a]}
        if a in sizes:
            scale[i] = sizes[a]
        if a in "XYZ" and a in sizes:
            entry["unit"] = "micrometer"
        if a == "T" and "T" in sizes:
            entry["unit"] = "second"
        axes_meta.append(entry)
    attributes = {
        "ome": {
            "version": "0.5",
            "multiscales": [{
                "name": name or path.name,
                "axes": axes_meta,
                "datasets": [{
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": scale}],
                }],
            }],
        },
        "rawgate": {
            "format": FORMAT_ZARR,
            "version": FORMAT_VERSION,
            "codec": seg_codec.spec,
            "model_sha256": model_sha256(model) if model is not None else None,
            "model_array": MODEL_ARRAY if store_model_array else None,
            "micromanager": mm,
        },
    }
    root = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=attributes)
    if store_model_array:
        assert model_bytes is not None and model is not None
        marr = root.create_array(
            MODEL_ARRAY, shape=(len(model_bytes),), dtype="uint8", chunks=(len(model_bytes),),
            compressors=None, fill_value=0,
            attributes={"rawgate": {"noise_model_sha256": model_sha256(model),
                                    "content": "CodecMaps.to_bytes() (rawgate noisecal "
                                               "quantised maps of the noise model)"}},
        )
        marr[...] = np.frombuffer(model_bytes, np.uint8)
    arr = root.create_array(
        "0", shape=data.shape, dtype=data.dtype, chunks=chunks, serializer=serializer,
        compressors=None, filters=None, fill_value=0,
        dimension_names=[a.lower() for a in ax], config={"write_empty_chunks": True},
    )
    arr[...] = data
    return path


def read_ome_zarr(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read the full-resolution image of an OME-Zarr image group written by :func:`write_ome_zarr`.

    The noise-model maps stored in the group (if any) are checked and registered first.

    Returns
    -------
    (array, metadata)
        The array, and ``{"axes", "physical_sizes", "micromanager", "codec", "codec_config",
        "model_sha256"}``.
    """
    import zarr

    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise ContainerError(f"{path} is not a zarr group: {e}") from e
    attrs = root.attrs.asdict()
    ome = attrs.get("ome")
    if not isinstance(ome, dict) or not ome.get("multiscales"):
        raise ContainerError(f"{path}: not an OME-NGFF image group (no ome.multiscales)")
    ms = ome["multiscales"][0]
    rg = attrs.get("rawgate") or {}
    if rg and int(rg.get("version", 0)) > FORMAT_VERSION:
        raise ContainerError(f"{path}: rawgate OME-Zarr version {rg['version']} is newer than "
                             f"this rawgate ({FORMAT_VERSION}); upgrade")
    model_array = rg.get("model_array")
    if model_array:
        mb = np.asarray(root[model_array][...], np.uint8).tobytes()
        _register_stored_model(mb, rg.get("model_sha256"), f"{path}/{model_array}")
    ds = ms["datasets"][0]
    arr = root[ds["path"]]
    a = arr[...]
    axes = "".join(str(x["name"]).upper() for x in ms.get("axes", []))
    scale = next((t["scale"] for t in ds.get("coordinateTransformations", [])
                  if t.get("type") == "scale"), None)
    sizes: dict[str, float] = {}
    if scale is not None:
        for entry, s in zip(ms.get("axes", []), scale, strict=False):
            unit = entry.get("unit")
            if unit is None:
                continue
            k = str(entry["name"]).upper()
            table = _TIME_UNITS_S if entry.get("type") == "time" else _LENGTH_UNITS_UM
            sizes[k] = float(s) * table.get(unit, 1.0)
    codec_cfg = None
    serializer = getattr(arr, "serializer", None)
    if serializer is not None and getattr(serializer, "codec", None) is not None:
        codec_cfg = dict(serializer.codec)
    return a, {
        "axes": axes,
        "physical_sizes": sizes,
        "micromanager": rg.get("micromanager"),
        "codec": rg.get("codec"),
        "codec_config": codec_cfg,
        "model_sha256": rg.get("model_sha256"),
    }


register_tifffile()  # on import (``import rawgate.codecs`` imports this module)


#: standard TIFF compressions :func:`export_ome_tiff` writes (what Fiji / Bio-Formats, libtiff and
#: tifffile read without rawgate): zlib (Adobe deflate) is the one every reader knows
EXPORT_COMPRESSIONS = ("zlib", "zstd", "none")


def export_ome_tiff(src: str | os.PathLike, dest: str | os.PathLike, *, compression: str = "zlib",
                    level: int | None = None) -> Path:
    """Decode a rawgate OME-TIFF or OME-Zarr into a standard OME-TIFF that opens anywhere.

    The planes are decoded one at a time (an OME-TIFF source is never held whole in memory) and
    written with a standard TIFF compression, the OME axes and physical sizes, the source's name
    and its Micro-Manager metadata (JSON in the OME ``Image/Description``). Written to a temporary
    file beside ``dest``, fsynced and renamed into place.

    Parameters
    ----------
    src
        A rawgate ``.ome.tif`` (its noise model embedded, or in a ``models/`` folder beside or
        above it) or ``.ome.zarr``.
    dest
        The standard OME-TIFF to write.
    compression
        ``"zlib"`` (default; every TIFF reader), ``"zstd"`` or ``"none"``.
    level
        Compression level (default: the library's).
    """
    if compression not in EXPORT_COMPRESSIONS:
        raise ContainerError(f"export compression must be one of {', '.join(EXPORT_COMPRESSIONS)}, got {compression!r}")
    src, dest = Path(src), Path(dest)
    if src.is_dir() or src.name.lower().endswith(".zarr"):
        arr, meta = read_ome_zarr(src)
        shape, dtype, axes = arr.shape, arr.dtype, str(meta.get("axes") or "").upper()
        sizes, mm = dict(meta.get("physical_sizes") or {}), meta.get("micromanager")
        planes: Iterable[np.ndarray] = arr.reshape(-1, *arr.shape[-2:])
        closer = None
    else:
        stack = read_ome_tiff_planes(src)
        shape, dtype, axes = stack.shape, stack.dtype, stack.axes
        sizes, mm = stack.physical_sizes, stack.metadata
        planes = (stack.plane(i) for i in range(stack.n_planes))
        closer = stack
    ome: dict[str, Any] = {"axes": axes or _DEFAULT_AXES.get(len(shape), ""), "Name": src.name}
    if mm:  # the acquisition's Micro-Manager metadata, as JSON in the OME Image Description
        ome["Description"] = json.dumps({"micromanager": mm}, default=str)
    for k in ("X", "Y", "Z"):
        v = sizes.get(k, sizes.get(k.lower()))
        if v is not None:
            ome[f"PhysicalSize{k}"] = float(v)
            ome[f"PhysicalSize{k}Unit"] = "µm"
    comp = None if compression == "none" else (compression, level) if level is not None else compression
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        with tifffile.TiffWriter(tmp, bigtiff=nbytes > 2**32 - 2**26, ome=True) as tw:
            tw.write(planes, shape=shape, dtype=dtype, compression=comp, photometric="minisblack",
                     metadata=ome, software="rawgate export")
        fsync_replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
        if closer is not None:
            closer.close()
    return dest
