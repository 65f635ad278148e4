"""rawgate's codecs: lossless, classical lossy, and the noise-calibrated ``noisecal``.

Every codec is addressable by a short spec string (``noisecal:step=2``, ``jpeg:ratio=10``) and
writes a self-describing stream; see :mod:`.base` for the registry and :mod:`._stream` for the
framing. Importing this package registers all codecs (with rawgate and numcodecs).
"""

from . import lossless, lossy, noisecal  # noqa: F401  (registers the codecs)
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
from .models import ModelNotFoundError, find_model, register_model, store_model
from .noisecal import NoiseCal

__all__ = [
    "Codec",
    "CodecError",
    "CorruptStreamError",
    "ModelNotFoundError",
    "NoiseCal",
    "codec_classes",
    "codec_of",
    "decode_any",
    "find_model",
    "get_codec",
    "parse_spec",
    "register_codec",
    "register_model",
    "store_model",
]

from . import containers  # noqa: F401  (registers rawgate's OME-TIFF decoder with tifffile)
