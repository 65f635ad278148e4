"""``learned``: CompressAI's image codecs, coded into real bitstreams, for 16-bit microscopy.

The six architectures Zhou et al. compare (``bmshj2018-factorized``, ``bmshj2018-hyperprior``,
``mbt2018-mean``, ``mbt2018``, ``cheng2020-anchor``, ``cheng2020-attn``), metric ``mse`` or
``ms-ssim``, with weights from a local file or folder — never downloaded.

A plane is mapped to [0, 1] (``mapping=study``: ``x / 65535`` as in the study; ``mapping=range``:
``(x − lo) / (hi − lo)`` with the plane's own minimum and maximum, recorded in the stream),
repeated to 3 channels, cut into ``tile`` × ``tile`` tiles (memory stays bounded for 2048²
frames), each tile zero-padded to a multiple of 64 and coded by the model's ``compress``;
decoding runs ``decompress``, crops, averages the 3 channels and maps back (rounded, clipped to
the dtype).

Never silently wrong: hyperprior and autoregressive models can decode differently on another
machine or build (CompressAI issue 279). The encoder decodes its own stream and stores the
SHA-256 of that reconstruction; the decoder compares and refuses a mismatch. The stream header
carries what decoding needs: architecture and its constructor sizes (``N``, ``M``), quality,
metric, the weights' SHA-256, mapping, tile layout and padding, torch and compressai versions.

torch and compressai are an optional extra (``pip install 'rawgate[learned]'`` then
``pip install --no-deps compressai==1.2.8``); they are imported on first use, so the codec is
registered (and ``rawgate --help`` runs) without them.

Weights are found, in order: the ``weights=`` file; a rawgate checkpoint or CompressAI's own
file name (``bmshj2018-factorized-prior-1-446d5c7f.pth.tar``) in the folders of
``RAWGATE_WEIGHTS_PATH`` (``os.pathsep``-separated) and ``$TORCH_HOME/hub/checkpoints``; for
decoding, any file there whose SHA-256 is the stream's. A missing file is an error naming the
file and the folders searched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._stream import CorruptStreamError
from .base import Codec, CodecError, register_codec
from .learned3d import ARCH_3D, PAD_3D, build_factorized3d

__all__ = ["ARCHITECTURES", "Learned", "LearnedUnavailableError", "WeightsNotFoundError", "build_model",
           "load_checkpoint", "save_checkpoint", "weights_dirs"]

#: architecture → (CompressAI class name, constructor arguments)
ARCHITECTURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "bmshj2018-factorized": ("FactorizedPrior", ("N", "M")),
    "bmshj2018-hyperprior": ("ScaleHyperprior", ("N", "M")),
    "mbt2018-mean": ("MeanScaleHyperprior", ("N", "M")),
    "mbt2018": ("JointAutoregressiveHierarchicalPriors", ("N", "M")),
    "cheng2020-anchor": ("Cheng2020Anchor", ("N",)),
    "cheng2020-attn": ("Cheng2020Attention", ("N",)),
    # Table S3's 3-D variant: trained here on stacks (rawgate.codecs.learned3d), no zoo weights
    "factorized3d": ("FactorizedPrior3D", ("N", "M")),
}
METRICS = ("mse", "ms-ssim")
MAPPINGS = ("study", "range")
#: the analysis transforms downsample by 64 (with the hyperprior)
PAD_MULTIPLE = 64
CHECKPOINT_FORMAT = "rawgate.learned.checkpoint"

_MODELS: dict[str, Any] = {}  # weights SHA-256 → model ready to code (update(force=True), eval)
_LOCK = threading.Lock()  # CompressAI's entropy coders are not re-entrant across threads
_FILE_SHA: dict[tuple[str, int, int], str] = {}


class LearnedUnavailableError(CodecError):
    """torch or compressai is not installed."""


class WeightsNotFoundError(CodecError):
    """The model weights are in none of the places looked at."""


def _torch():
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import compressai  # noqa: F401
            import torch
    except ImportError as e:
        raise LearnedUnavailableError(
            f"learned codecs need torch and compressai ({e}): pip install 'rawgate[learned]' and "
            "pip install --no-deps compressai==1.2.8 (make test does both)") from None
    return torch


def weights_dirs() -> list[Path]:
    """Folders searched for weights: ``RAWGATE_WEIGHTS_PATH`` then ``$TORCH_HOME/hub/checkpoints``."""
    dirs = [Path(p) for p in os.environ.get("RAWGATE_WEIGHTS_PATH", "").split(os.pathsep) if p]
    torch_home = Path(os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                      / "torch")
    return dirs + [torch_home / "hub" / "checkpoints"]


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _FILE_SHA[key] = h.hexdigest()
    return _FILE_SHA[key]


def zoo_file_name(arch: str, metric: str, quality: int) -> str | None:
    """CompressAI's own file name of a zoo model (as it would download it), or None."""
    from compressai.zoo.image import model_urls

    try:
        return model_urls[arch][metric][int(quality)].rsplit("/", 1)[-1]
    except KeyError:
        return None


def _find_checkpoint(dirs: list[Path], arch: str, metric: str, quality: int) -> Path | None:
    """The first rawgate checkpoint (``*.pt``, ``*.pth``, ``*.pth.tar``, by name) in ``dirs``
    trained as ``arch`` / ``metric`` / ``quality`` (read with ``weights_only``: no code runs)."""
    torch = _torch()
    for d in dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if not p.is_file() or not p.name.endswith((".pt", ".pth", ".pth.tar")):
                continue
            try:
                obj = torch.load(p, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - not ours, or damaged: look further
                continue
            if (isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT and obj.get("arch") == arch
                    and obj.get("metric") == metric and int(obj.get("quality", -1)) == int(quality)):
                return p
    return None


def build_model(arch: str, sizes: dict[str, int]):
    """An untrained CompressAI model of ``arch`` with constructor sizes ``sizes`` (``N``, ``M``)."""
    _torch()
    import compressai.models as cm

    if arch not in ARCHITECTURES:
        raise CodecError(f"learned: unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    cls_name, args = ARCHITECTURES[arch]
    missing = [a for a in args if a not in sizes]
    if missing:
        raise CodecError(f"learned: {arch} needs {', '.join(missing)}")
    if arch == ARCH_3D:
        return build_factorized3d(**{a: int(sizes[a]) for a in args})
    return getattr(cm, cls_name)(**{a: int(sizes[a]) for a in args})


def save_checkpoint(model, path: str | os.PathLike, *, arch: str, metric: str, quality: int,
                    sizes: dict[str, int], extra: dict[str, Any] | None = None) -> Path:
    """Save a model as a rawgate checkpoint: its state dict plus what rebuilds it (architecture,
    sizes, metric, quality). Loaded with ``weights_only=True`` (no code runs when it is read)."""
    torch = _torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    torch.save({"format": CHECKPOINT_FORMAT, "arch": arch, "metric": metric, "quality": int(quality),
                "sizes": {k: int(v) for k, v in sizes.items()}, "extra": dict(extra or {}),
                "state_dict": model.state_dict()}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, arch: str | None = None, metric: str | None = None,
                    quality: int | None = None) -> tuple[Any, dict[str, Any]]:
    """``(model ready to code, description)`` from a rawgate checkpoint or a CompressAI zoo file
    (whose architecture, metric and quality must then be given)."""
    torch = _torch()
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file
        raise CodecError(f"learned: cannot read weights {path}: {type(e).__name__}: {e}") from None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        desc = {k: obj[k] for k in ("arch", "metric", "quality", "sizes")}
        state = obj["state_dict"]
    else:
        if arch is None or metric is None or quality is None:
            raise CodecError(f"learned: {path} is not a rawgate checkpoint; give arch, metric and quality")
        from compressai.zoo.image import cfgs

        state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
        names = ARCHITECTURES[arch][1]
        desc = {"arch": arch, "metric": metric, "quality": int(quality),
                "sizes": dict(zip(names, cfgs[arch][int(quality)]))}
    from compressai.zoo.pretrained import load_pretrained

    model = build_model(desc["arch"], desc["sizes"])
    try:
        model.load_state_dict(load_pretrained(state))
    except Exception as e:  # noqa: BLE001 - wrong architecture or sizes for these weights
        raise CodecError(f"learned: {path} does not fit {desc['arch']} {desc['sizes']}: {e}") from None
    model.update(force=True)
    model.eval()
    desc["sha256"] = _sha256(path)
    desc["path"] = str(path)
    return model, desc


@register_codec
@dataclasses.dataclass(frozen=True)
class Learned(Codec):
    codec_id: ClassVar[str] = "learned"
    family: ClassVar[str] = "lossy"
    summary: ClassVar[str] = ("CompressAI learned image compression (6 architectures, mse/ms-ssim), "
                              "weights from a local file or folder; optional extra")
    dtypes: ClassVar[tuple[str, ...] | None] = ("uint8", "uint16")
    option_help: ClassVar[dict[str, str]] = {
        "arch": ", ".join(ARCHITECTURES),
        "quality": "the zoo quality (1–8; cheng2020 1–6), or what a trained checkpoint says",
        "metric": "mse or ms-ssim",
        "weights": "weights file (a rawgate checkpoint or CompressAI's); default: looked up in "
                   "RAWGATE_WEIGHTS_PATH and $TORCH_HOME/hub/checkpoints",
        "mapping": "study (x/65535, the paper's) or range (the plane's own min–max, recorded)",
        "tile": "tile size in pixels (a multiple of 64; bounds memory for large frames)",
        "zchunk": f"{ARCH_3D}: planes coded as one volume (a multiple of {PAD_3D[0]})",
    }
    arch: str = "bmshj2018-factorized"
    quality: int = 1
    metric: str = "mse"
    weights: str | None = dataclasses.field(default=None, metadata={"spec": True})
    mapping: str = "study"
    tile: int = 512
    zchunk: int = 16

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise CodecError(f"learned: unknown architecture {self.arch!r}; known: {', '.join(ARCHITECTURES)}")
        if self.metric not in METRICS:
            raise CodecError(f"learned: metric must be one of {METRICS}, got {self.metric!r}")
        if self.mapping not in MAPPINGS:
            raise CodecError(f"learned: mapping must be one of {MAPPINGS}, got {self.mapping!r}")
        if self.tile < PAD_MULTIPLE or self.tile % PAD_MULTIPLE:
            raise CodecError(f"learned: tile must be a positive multiple of {PAD_MULTIPLE}, got {self.tile}")
        if self.zchunk < PAD_3D[0] or self.zchunk % PAD_3D[0]:
            raise CodecError(f"learned: zchunk must be a positive multiple of {PAD_3D[0]}, got {self.zchunk}")

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        cfg.pop("weights", None)  # a local path is not part of the stream's identity (its SHA-256 is)
        return cfg

    # ------------------------------------------------------------------ weights
    def _weights_for_encode(self) -> tuple[Any, dict[str, Any]]:
        _torch()
        if self.weights:
            path = Path(self.weights)
            if not path.is_file():
                raise WeightsNotFoundError(f"learned: weights file {path} does not exist")
            return self._cached(path)
        name = zoo_file_name(self.arch, self.metric, self.quality)
        dirs = weights_dirs()
        for d in dirs:
            if name and (d / name).is_file():
                return self._cached(d / name)
        found = _find_checkpoint(dirs, self.arch, self.metric, self.quality)
        if found is not None:
            return self._cached(found)
        raise WeightsNotFoundError(
            f"learned: no weights for {self.arch} {self.metric} quality {self.quality}: give weights=FILE, or put "
            f"{name or 'a rawgate checkpoint'} in one of: {', '.join(map(str, dirs))} (weights are never downloaded)")

    def _weights_for_decode(self, header: dict[str, Any]) -> Any:
        sha = header["weights_sha256"]
        if sha in _MODELS:
            return _MODELS[sha][0]
        candidates = [Path(self.weights)] if self.weights else []
        name = zoo_file_name(header["arch"], header["metric"], header["quality"])
        dirs = weights_dirs()
        for d in dirs:
            if name:
                candidates.append(d / name)
            if d.is_dir():
                candidates += sorted(p for p in d.iterdir() if p.is_file())
        for p in candidates:
            if p.is_file() and _sha256(p) == sha:
                model, _ = self._cached(p, header)
                return model
        raise WeightsNotFoundError(
            f"learned: this stream needs the weights with SHA-256 {sha} ({header['arch']} {header['metric']} "
            f"quality {header['quality']}{', file ' + name if name else ''}); none in: "
            f"{', '.join(map(str, dirs))} (set RAWGATE_WEIGHTS_PATH or give weights=FILE)")

    def _cached(self, path: Path, header: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        sha = _sha256(path)
        if sha not in _MODELS:
            src = header or {"arch": self.arch, "metric": self.metric, "quality": self.quality}
            model, desc = load_checkpoint(path, src["arch"], src["metric"], src["quality"])
            _MODELS[sha] = (model, desc)
        return _MODELS[sha]

    # ------------------------------------------------------------------ coding
    def _to_unit(self, p: np.ndarray) -> tuple[np.ndarray, list[float]]:
        top = float(np.iinfo(p.dtype).max)
        if self.mapping == "study":
            lo, hi = 0.0, top
        else:
            lo, hi = float(p.min()), float(p.max())
            hi = max(hi, lo + 1.0)
        return ((p.astype(np.float32) - lo) / (hi - lo)).astype(np.float32), [lo, hi]

    @staticmethod
    def _from_unit(u: np.ndarray, lohi: list[float], dtype: np.dtype) -> np.ndarray:
        lo, hi = lohi
        top = float(np.iinfo(dtype).max)
        return np.clip(np.floor(u.astype(np.float64) * (hi - lo) + lo + 0.5), 0, top).astype(dtype)

    @staticmethod
    def _tiles(h: int, w: int, t: int) -> list[tuple[int, int, int, int]]:
        return [(y, x, min(t, h - y), min(t, w - x)) for y in range(0, h, t) for x in range(0, w, t)]

    def _code_tile(self, model, u: np.ndarray) -> tuple[list[list[bytes]], list[int], np.ndarray]:
        torch = _torch()
        import torch.nn.functional as F

        h, w = u.shape
        H, W = -(-h // PAD_MULTIPLE) * PAD_MULTIPLE, -(-w // PAD_MULTIPLE) * PAD_MULTIPLE
        x = torch.from_numpy(np.ascontiguousarray(u))[None, None].repeat(1, 3, 1, 1)
        x = F.pad(x, (0, W - w, 0, H - h), mode="constant", value=0.0)
        with torch.no_grad():
            c = model.compress(x)
            rec = model.decompress(c["strings"], c["shape"])["x_hat"]
        strings = [[bytes(s) for s in group] for group in c["strings"]]
        return strings, [int(v) for v in c["shape"]], rec[0, :, :h, :w].mean(0).numpy()

    def _decode_tile(self, model, strings: list[list[bytes]], shape: list[int], h: int, w: int) -> np.ndarray:
        torch = _torch()
        with torch.no_grad():
            rec = model.decompress(strings, tuple(shape))["x_hat"]
        return rec[0, :, :h, :w].mean(0).numpy()

    def _encode(self, a: np.ndarray) -> tuple[dict[str, Any], list[bytes]]:
        torch = _torch()
        import compressai

        model, desc = self._weights_for_encode()
        if desc["arch"] != self.arch:
            raise CodecError(f"learned: the weights {desc['path']} are {desc['arch']}, not {self.arch}")
        if self.arch == ARCH_3D:
            return self._encode3d(model, desc, a)
        h, w = a.shape[-2:]
        planes = a.reshape(-1, h, w)
        tiles = self._tiles(h, w, self.tile)
        sections: list[bytes] = []
        lohis, recon_sha, shapes = [], [], []
        with _LOCK:
            for p in planes:
                u, lohi = self._to_unit(p)
                rec = np.empty((h, w), np.float32)
                for (y, x, th, tw) in tiles:
                    strings, shape, r = self._code_tile(model, u[y:y + th, x:x + tw])
                    sections.append(_pack_strings(strings))
                    shapes.append(shape)
                    rec[y:y + th, x:x + tw] = r
                lohis.append(lohi)
                recon_sha.append(hashlib.sha256(self._from_unit(rec, lohi, p.dtype).tobytes()).hexdigest())
        extra = {
            "arch": desc["arch"], "sizes": desc["sizes"], "quality": desc["quality"], "metric": desc["metric"],
            "weights_sha256": desc["sha256"], "mapping": self.mapping, "lo_hi": lohis, "tile": self.tile,
            "tiles": [list(t) for t in tiles], "latent_shapes": shapes, "pad_multiple": PAD_MULTIPLE,
            "channels": 3, "recon_sha256": recon_sha,
            "versions": {"torch": torch.__version__, "compressai": compressai.__version__},
        }
        return extra, sections

    # ------------------------------------------------------------------ the 3-D model: volumes
    @staticmethod
    def _chunks3d(shape: tuple[int, ...], zchunk: int) -> list[tuple[int, int]]:
        """``(first plane, planes)`` of each coded volume: a 2-D frame is one plane; a stack's
        planes (leading axes folded, so a T × Z stack is coded per T) in runs of ``zchunk``."""
        h, w = shape[-2:]
        n = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        z = int(shape[-3]) if len(shape) > 2 else 1
        return [(s + z0, min(zchunk, z - z0)) for s in range(0, n, z) for z0 in range(0, z, zchunk)]

    def _code_volume(self, model, u: np.ndarray) -> tuple[list[list[bytes]], list[int], np.ndarray]:
        torch = _torch()
        import torch.nn.functional as F

        z, h, w = u.shape
        Z, H, W = (-(-n // m) * m for n, m in zip(u.shape, PAD_3D))
        x = F.pad(torch.from_numpy(np.ascontiguousarray(u))[None, None], (0, W - w, 0, H - h, 0, Z - z))
        with torch.no_grad():
            c = model.compress(x)
            rec = model.decompress(c["strings"], c["shape"])["x_hat"]
        strings = [[bytes(s) for s in group] for group in c["strings"]]
        return strings, [int(v) for v in c["shape"]], rec[0, 0, :z, :h, :w].numpy()

    def _encode3d(self, model, desc: dict[str, Any], a: np.ndarray) -> tuple[dict[str, Any], list[bytes]]:
        torch = _torch()
        import compressai

        h, w = a.shape[-2:]
        planes = a.reshape(-1, h, w)
        chunks = self._chunks3d(a.shape, self.zchunk)
        tiles = self._tiles(h, w, self.tile)
        sections, lohis, shapes, recon_sha = [], [], [], [""] * len(planes)
        with _LOCK:
            for z0, nz in chunks:
                vol = planes[z0:z0 + nz]
                u, lohi = self._to_unit(vol)  # one mapping per volume: the planes stay comparable
                rec = np.empty(vol.shape, np.float32)
                for (y, x, th, tw) in tiles:
                    strings, shape, r = self._code_volume(model, u[:, y:y + th, x:x + tw])
                    sections.append(_pack_strings(strings))
                    shapes.append(shape)
                    rec[:, y:y + th, x:x + tw] = r
                lohis.append(lohi)
                for k, plane in enumerate(self._from_unit(rec, lohi, a.dtype)):
                    recon_sha[z0 + k] = hashlib.sha256(plane.tobytes()).hexdigest()
        extra = {
            "arch": desc["arch"], "sizes": desc["sizes"], "quality": desc["quality"], "metric": desc["metric"],
            "weights_sha256": desc["sha256"], "mapping": self.mapping, "lo_hi": lohis, "tile": self.tile,
            "tiles": [list(t) for t in tiles], "zchunks": [list(c) for c in chunks], "latent_shapes": shapes,
            "pad_multiple": list(PAD_3D), "channels": 1, "recon_sha256": recon_sha,
            "versions": {"torch": torch.__version__, "compressai": compressai.__version__},
        }
        return extra, sections

    def _decode3d(self, header, sections, dtype, shape):
        try:
            tiles = [tuple(int(v) for v in t) for t in header["tiles"]]
            chunks = [tuple(int(v) for v in c) for c in header["zchunks"]]
            lohis, recon_sha, shapes = header["lo_hi"], header["recon_sha256"], header["latent_shapes"]
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptStreamError(f"learned: corrupted stream header: {e}") from e
        h, w = shape[-2:]
        n = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        if (len(sections) != len(chunks) * len(tiles) or len(shapes) != len(sections) or len(lohis) != len(chunks)
                or len(recon_sha) != n or sum(nz for _, nz in chunks) != n):
            raise CorruptStreamError(f"learned: {len(sections)} sections for {len(chunks)} volume(s) of "
                                     f"{len(tiles)} tile(s) and {n} plane(s)")
        model = self._weights_for_decode(header)
        torch = _torch()
        out = np.empty((n, h, w), dtype)
        k = 0
        with _LOCK, torch.no_grad():
            for (z0, nz), lohi in zip(chunks, lohis):
                rec = np.empty((nz, h, w), np.float32)
                for (y, x, th, tw) in tiles:
                    r = model.decompress(_unpack_strings(sections[k]), tuple(shapes[k]))["x_hat"]
                    rec[:, y:y + th, x:x + tw] = r[0, 0, :nz, :th, :tw].numpy()
                    k += 1
                out[z0:z0 + nz] = self._from_unit(rec, lohi, dtype)
        self._check_recon(out, recon_sha, header)
        return out.reshape(shape)

    @staticmethod
    def _check_recon(out: np.ndarray, recon_sha: list[str], header: dict[str, Any]) -> None:
        """Refuse planes that differ from the encoder's own reconstruction (CompressAI issue 279)."""
        for i, plane in enumerate(out):
            got = hashlib.sha256(plane.tobytes()).hexdigest()
            if got != recon_sha[i]:
                v = header.get("versions", {})
                raise CorruptStreamError(
                    f"learned: plane {i} decodes to another image than the encoder's own reconstruction "
                    f"(SHA-256 {got[:12]}…, stream {recon_sha[i][:12]}…): the model desynchronised between "
                    f"machines or builds (CompressAI issue 279; encoded with torch {v.get('torch')}, compressai "
                    f"{v.get('compressai')}) or the stream was altered; refusing to return it")

    def _decode(self, header, sections, dtype, shape):
        _torch()
        if header.get("arch") == ARCH_3D:
            return self._decode3d(header, sections, dtype, shape)
        try:
            tiles = [tuple(int(v) for v in t) for t in header["tiles"]]
            lohis, recon_sha, shapes = header["lo_hi"], header["recon_sha256"], header["latent_shapes"]
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptStreamError(f"learned: corrupted stream header: {e}") from e
        h, w = shape[-2:]
        n = len(lohis)
        if len(sections) != n * len(tiles) or len(shapes) != len(sections):
            raise CorruptStreamError(f"learned: {len(sections)} sections for {n} plane(s) of {len(tiles)} tile(s)")
        model = self._weights_for_decode(header)
        out = np.empty((n, h, w), dtype)
        k = 0
        with _LOCK:
            for i in range(n):
                rec = np.empty((h, w), np.float32)
                for (y, x, th, tw) in tiles:
                    rec[y:y + th, x:x + tw] = self._decode_tile(model, _unpack_strings(sections[k]), shapes[k], th, tw)
                    k += 1
                out[i] = self._from_unit(rec, lohis[i], dtype)
        self._check_recon(out, recon_sha, header)
        return out.reshape(shape)


def _pack_strings(strings: list[list[bytes]]) -> bytes:
    """CompressAI's ``strings`` (one list per latent, one bytes per batch item) as one section."""
    parts = [struct.pack("<I", len(strings))]
    for group in strings:
        parts.append(struct.pack("<I", len(group)))
        for s in group:
            parts += [struct.pack("<I", len(s)), s]
    return b"".join(parts)


def _unpack_strings(buf: memoryview | bytes) -> list[list[bytes]]:
    mv = memoryview(buf)
    pos = 0

    def u32() -> int:
        nonlocal pos
        if pos + 4 > len(mv):
            raise CorruptStreamError("learned: truncated tile section")
        (v,) = struct.unpack_from("<I", mv, pos)
        pos += 4
        return v

    out = []
    for _ in range(u32()):
        group = []
        for _ in range(u32()):
            n = u32()
            if pos + n > len(mv):
                raise CorruptStreamError("learned: truncated tile section")
            group.append(bytes(mv[pos:pos + n]))
            pos += n
        out.append(group)
    if pos != len(mv):
        raise CorruptStreamError("learned: trailing bytes in a tile section")
    return out
