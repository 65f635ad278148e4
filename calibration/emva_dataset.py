"""Read an EMVA 1288 descriptor file and its images into a :class:`SweepStats`.

The descriptor format (EMVA 1288 release 4.x, as written by the reference implementation's
``emva1288.camera.dataset_generator.DatasetGenerator`` and read by its
``emva1288.process.parser.ParseEmvaDescriptorFile``)::

    v 4.0                      # format version
    n bits width height        # once, before any image group
    b exposure_ns photons      # a bright group: mean photons per pixel during the exposure
    i images\\image0.png        # its images (≥ 2), paths relative to the descriptor's folder
    i images\\image1.png
    d exposure_ns              # a dark group
    i images\\image2.png
    i images\\image3.png

Blank lines and lines starting with ``#`` are ignored; a decimal comma is accepted as the
reference parser accepts it; image paths may use ``\\`` or ``/``.

Each group becomes one :class:`~rawgate.calibration.sweep.LevelStats` (``"dark"`` for ``d``,
``"light"`` for ``b``), folded frame by frame with
:func:`~rawgate.calibration.sweep.accumulate_level`, so memory stays at a few frames whatever
the size of the dataset. Groups of 2 images (EMVA "temporal" points) and of more images
(EMVA "spatial" points) are both kept, in file order.

Light level: the descriptor gives the photon count per pixel *during the exposure* (the
irradiation, ∝ irradiance × exposure). The fit (:func:`~rawgate.calibration.fit.fit_sweep`)
takes ``light_level × exposure_ms`` as the relative irradiation, so ``light_level`` is the
photon *rate* ``photons / exposure`` relative to the largest rate in the file. For an
irradiance-variation dataset (one exposure) that is simply ``photons / max(photons)``; for an
exposure-time-variation dataset (one irradiance, as the reference generator writes by
default) every level is ≈ 1 and the exposure carries the variation — either way
``light_level × exposure_ms`` is proportional to the photon count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .instruments._protocol import CameraIdentity
from .sweep import LevelStats, SweepError, SweepStats, accumulate_level

__all__ = ["EMVADatasetError", "EMVADescriptor", "sweep_from_emva_descriptor", "parse_emva_descriptor"]

_VERSION_RE = re.compile(r"4(\.\d+)*")


class EMVADatasetError(ValueError):
    """An EMVA 1288 descriptor file or one of its images is invalid; the message names the file
    and line."""


@dataclass
class _Group:
    kind: str  # "dark" | "light"
    exposure_ns: float
    photons: float
    lineno: int
    line: str
    images: list[tuple[int, Path]] = field(default_factory=list)  # (line number, path)


@dataclass
class EMVADescriptor:
    """A parsed and validated descriptor: format, version and image groups (no pixels read)."""

    path: Path
    version: str
    bits: int
    width: int
    height: int
    groups: list[_Group]


def _num(tok: str) -> float:
    return float(tok.replace(",", "."))


def parse_emva_descriptor(path: str | Path) -> EMVADescriptor:
    """Parse and validate a descriptor file without reading any image.

    Checks the syntax of every line, the version (4.x), the ``n`` line, that every group has
    ≥ 2 images and that every image file exists.

    Raises
    ------
    EMVADatasetError
        Naming the file, the line number and the offending line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EMVADatasetError(f"EMVA 1288 descriptor file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EMVADatasetError(f"cannot read EMVA 1288 descriptor {path}: {e}") from e
    base = path.parent

    def err(lineno: int, line: str, why: str) -> EMVADatasetError:
        return EMVADatasetError(f"{path}, line {lineno}: {why}: {line!r}")

    version: str | None = None
    fmt: tuple[int, int, int] | None = None
    groups: list[_Group] = []
    current: _Group | None = None

    def close(g: _Group | None) -> None:
        if g is not None and len(g.images) < 2:
            raise err(
                g.lineno, g.line, f"an image group needs at least 2 'i' lines, it has {len(g.images)}"
            )

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        cmd = tok[0]
        if cmd == "i":
            if len(tok) != 2:
                raise err(lineno, line, "expected 'i relative/path/to/image' (one path, no spaces)")
            if current is None:
                raise err(lineno, line, "image line outside a 'b' or 'd' group")
            rel = tok[1].replace("\\", "/")
            img = Path(rel) if Path(rel).is_absolute() else base / rel
            if not img.is_file():
                raise err(lineno, line, f"image file not found: {img}")
            current.images.append((lineno, img))
            continue
        if cmd in ("b", "d"):
            close(current)
            current = None
            want = 3 if cmd == "b" else 2
            if len(tok) != want:
                usage = "b exposure_ns photons" if cmd == "b" else "d exposure_ns"
                raise err(lineno, line, f"expected '{usage}'")
            if fmt is None:
                raise err(lineno, line, "image group before the 'n bits width height' line")
            try:
                values = [_num(t) for t in tok[1:]]
            except ValueError:
                raise err(lineno, line, "not a number") from None
            if not all(math.isfinite(v) for v in values):
                raise err(lineno, line, "not a finite number")
            exposure = values[0]
            if exposure <= 0:
                raise err(lineno, line, "exposure time must be > 0 ns")
            photons = values[1] if cmd == "b" else 0.0
            if cmd == "b" and photons <= 0:
                raise err(lineno, line, "a bright group needs a photon count > 0 (use 'd' for dark)")
            current = _Group("light" if cmd == "b" else "dark", exposure, photons, lineno, line)
            groups.append(current)
            continue
        if cmd == "v":
            if len(tok) != 2:
                raise err(lineno, line, "expected 'v version'")
            if version is not None:
                raise err(lineno, line, "a second 'v' line")
            version = tok[1]
            if not _VERSION_RE.fullmatch(version):
                raise err(lineno, line, f"unsupported descriptor version {version} (this reader reads 4.x)")
            continue
        if cmd == "n":
            if len(tok) != 4:
                raise err(lineno, line, "expected 'n bits width height'")
            if fmt is not None:
                raise err(lineno, line, "a second 'n' line")
            try:
                bits, width, height = (int(t) for t in tok[1:])
            except ValueError:
                raise err(lineno, line, "bits, width and height must be integers") from None
            if not 1 <= bits <= 32:
                raise err(lineno, line, f"bit depth {bits} out of range 1–32")
            if width < 1 or height < 1:
                raise err(lineno, line, "width and height must be ≥ 1")
            fmt = (bits, width, height)
            continue
        raise err(lineno, line, f"unknown line type {cmd!r} (expected v, n, b, d or i)")
    close(current)

    if version is None:
        raise EMVADatasetError(f"{path}: no 'v' version line (expected 'v 4.0')")
    if fmt is None:
        raise EMVADatasetError(f"{path}: no 'n bits width height' line")
    if not groups:
        raise EMVADatasetError(f"{path}: no 'b' or 'd' image groups")
    return EMVADescriptor(path, version, fmt[0], fmt[1], fmt[2], groups)


def _read_image(img: Path) -> np.ndarray:
    if img.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(img))
    from PIL import Image  # PNG/BMP/PGM..., as the reference implementation writes them

    with Image.open(img) as im:
        if im.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            raise ValueError(f"a {im.mode} image is not a single-channel gray image")
        return np.asarray(im)


def _frames(d: EMVADescriptor, g: _Group) -> Iterator[np.ndarray]:
    adc_max = 2**d.bits - 1
    for lineno, img in g.images:
        where = f"{d.path}, line {lineno} ({img.name})"
        try:
            f = _read_image(img)
        except Exception as e:  # any decoder error: name the file
            raise EMVADatasetError(f"{where}: cannot read image: {e}") from e
        if f.ndim != 2:
            raise EMVADatasetError(f"{where}: expected a single-channel 2-D image, got shape {f.shape}")
        if f.shape != (d.height, d.width):
            raise EMVADatasetError(
                f"{where}: image is {f.shape[1]}×{f.shape[0]} (width×height) but the 'n' line "
                f"says {d.width}×{d.height}"
            )
        if not np.issubdtype(f.dtype, np.integer):
            if not np.array_equal(f, np.round(f)):
                raise EMVADatasetError(f"{where}: pixel values are not integers (dtype {f.dtype})")
            f = f.astype(np.int64)
        if f.size and (int(f.max()) > adc_max or int(f.min()) < 0):
            raise EMVADatasetError(
                f"{where}: pixel values {int(f.min())}…{int(f.max())} outside 0…{adc_max} "
                f"of the {d.bits}-bit depth on the 'n' line"
            )
        yield f


def sweep_from_emva_descriptor(path: str | Path) -> SweepStats:
    """Turn an EMVA 1288 dataset (descriptor + images) into a :class:`SweepStats`.

    Every ``d`` group becomes a ``"dark"`` level and every ``b`` group a ``"light"`` level;
    exposure [ms] = descriptor ns / 10⁶; ``light_level`` = photon rate relative to the largest
    in the file (see the module docstring), so ``light_level × exposure_ms`` ∝ photons.
    The whole descriptor (syntax, version, image files present) is validated before any image
    is read; images are then streamed one at a time.

    Raises
    ------
    EMVADatasetError
        Malformed or unknown line, version not 4.x, missing image file, image size or bit depth
        not matching the ``n`` line, a group with fewer than 2 images; the message names the
        file and line.
    """
    d = parse_emva_descriptor(path)
    adc_max = 2**d.bits - 1
    rates = [g.photons / g.exposure_ns for g in d.groups if g.kind == "light"]
    max_rate = max(rates) if rates else 1.0
    levels: list[LevelStats] = []
    for g in d.groups:
        level = g.photons / g.exposure_ns / max_rate if g.kind == "light" else 0.0
        try:
            lv = accumulate_level(
                _frames(d, g),
                kind=g.kind,
                light_level=level,
                exposure_ms=g.exposure_ns / 1e6,
                adc_max=adc_max,
            )
        except SweepError as e:  # pragma: no cover - parse_emva_descriptor ensures ≥ 2 images
            raise EMVADatasetError(f"{d.path}, line {g.lineno}: {e}: {g.line!r}") from e
        levels.append(lv)
    identity = CameraIdentity(
        name="EMVA 1288 dataset",
        serial=d.path.name,
        bit_depth=d.bits,
        binning=1,
        roi=(0, 0, d.width, d.height),
    )
    plan = {
        "emva_descriptor": str(d.path),
        "emva_version": d.version,
        "groups": len(d.groups),
        "max_photon_rate_per_ns": max_rate,
    }
    return SweepStats(identity=identity, levels=levels, plan=plan, source=f"emva1288:{d.path}")
