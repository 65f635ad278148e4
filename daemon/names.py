"""File names that are not valid UTF-8.

POSIX file names are bytes. A name written by a machine with another code page (an SMB share,
a USB disk from a Windows PC: ``bad\\xffname.tif``) reaches Python as a ``str`` with surrogate
escapes (``'bad\\udcffname.tif'``, PEP 383), which opens the file but cannot be encoded as UTF-8:
not into SQLite text, a BagIt manifest, an e-mail or a terminal. This module is the one place
that decides how such a name is stored, shown and archived:

* :func:`db_path` / :func:`from_db_path`: lossless in the ledger — valid UTF-8 as text,
  anything else as the name's raw bytes (a BLOB), which :func:`os.fsdecode` turns back into
  the same ``str``;
* :func:`shown`: printable text for messages, logs, alerts and tables (``\\xff`` for each
  byte that is not UTF-8);
* :func:`utf8_safe`: the name of the item's archive copy, each byte that is not UTF-8 as
  ``~XX``, so the copy's name is valid UTF-8 and its BagIt manifest line is valid. (Not
  ``%XX``: a ``%`` must itself be percent-encoded in a manifest (RFC 8493 §2.1.3), which
  rawgate does but bagit-python 1.8 does not decode, so its validation would miss the file.)
"""

from __future__ import annotations

import codecs
import os
from typing import Any

__all__ = ["is_utf8", "db_path", "from_db_path", "shown", "utf8_safe"]


def is_utf8(name: str) -> bool:
    """Whether ``name`` encodes as UTF-8 (no surrogate escapes from undecodable bytes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def db_path(name: str | os.PathLike[str] | None) -> str | bytes | None:
    """``name`` as an SQLite parameter: text when it is valid UTF-8, else its raw bytes."""
    if name is None:
        return None
    text = os.fspath(name)
    return text if is_utf8(text) else os.fsencode(text)


def from_db_path(value: Any) -> Any:
    """The inverse of :func:`db_path` (other values pass through)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def shown(text: Any) -> Any:
    """``text`` with each undecodable byte of a file name written as ``\\xNN`` (valid UTF-8;
    non-strings pass through)."""
    if not isinstance(text, str) or is_utf8(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _tilde(err: UnicodeDecodeError) -> tuple[str, int]:
    bad = err.object[err.start:err.end]
    return "".join(f"~{b:02X}" for b in bad), err.end


codecs.register_error("rawgate-tilde", _tilde)


def utf8_safe(name: str) -> str:
    """``name`` with each undecodable byte written as ``~XX`` (valid UTF-8 names unchanged)."""
    if is_utf8(name):
        return name
    return os.fsencode(name).decode("utf-8", "rawgate-tilde")
