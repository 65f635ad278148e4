"""rawgate's codecs: lossless, classical lossy, and the noise-calibrated ``noisecal``.

Every codec is addressable by a short spec string (``noisecal:step=2``, ``jpeg:ratio=10``) and
writes a self-describing stream; see :mod:`.base` for the registry and :mod:`._stream` for the
framing. Importing this package registers all codecs (with rawgate and numcodecs) and rawgate's
OME-TIFF decoder with tifffile. A lab script needs only this package::

    from rawgate.codecs import get_codec, write_ome_tiff, read_ome_tiff
    write_ome_tiff("stack.ome.tif", stack, "noisecal:step=2", noise_model=model)

The library knows nothing of the daemon: it imports only :mod:`rawgate.calibration`.
"""

from . import learned, lossless, lossy, noisecal  # noqa: F401  (registers the codecs; learned imports torch only when used)
from ._stream import CorruptStreamError
from .base import (
    Codec,
    CodecError,
    codec_classes,
    codec_of,
    decode_any,
    get_codec,
    parse_spec,
    register_codec,
)
from .models import ModelNotFoundError, find_model, fresh_model_lookup, register_model, store_model
from .noisecal import NoiseCal
from .planes import ArrayStack, PlaneStack, as_stack

__all__ = [
    "ArrayStack",
    "Codec",
    "CodecError",
    "ContainerError",
    "CorruptStreamError",
    "ModelNotFoundError",
    "NoiseCal",
    "PlaneStack",
    "as_stack",
    "codec_classes",
    "codec_of",
    "decode_any",
    "find_model",
    "fresh_model_lookup",
    "get_codec",
    "parse_spec",
    "read_ome_tiff",
    "read_ome_tiff_planes",
    "read_ome_zarr",
    "register_codec",
    "register_model",
    "store_model",
    "write_ome_tiff",
    "write_ome_zarr",
]

# registers rawgate's OME-TIFF decoder with tifffile
from .containers import (  # noqa: E402
    ContainerError,
    read_ome_tiff,
    read_ome_tiff_planes,
    read_ome_zarr,
    write_ome_tiff,
    write_ome_zarr,
)
