"""The cluster key file: the shared secret gossip is encrypted with.

The file holds one line, the base64 of 32 random bytes (`proglog certs cluster-key
--out FILE` makes one). Every node of a cluster must be given the same file with
`--cluster-key-file`; a node with another key cannot join.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path

__all__ = ["KEY_BYTES", "ClusterKeyError", "load_cluster_key", "new_cluster_key"]

KEY_BYTES = 32
_FLAG = "--cluster-key-file"


class ClusterKeyError(Exception):
    """The cluster key file cannot be used; the message names the flag and the file."""


def load_cluster_key(path: Path | str) -> bytes:
    """The 32-byte key in `path` (base64 text, surrounding whitespace ignored)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ClusterKeyError(
            f"{_FLAG} {path}: no such file (make one with `proglog certs cluster-key --out {path}`)"
        ) from None
    except IsADirectoryError:
        raise ClusterKeyError(f"{_FLAG} {path}: is a directory, not a key file") from None
    except UnicodeDecodeError:
        raise ClusterKeyError(f"{_FLAG} {path}: not base64 text") from None
    except OSError as exc:
        raise ClusterKeyError(f"{_FLAG} {path}: cannot read it: {exc.strerror}") from None
    if not text:
        raise ClusterKeyError(f"{_FLAG} {path}: the file is empty")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ClusterKeyError(
            f"{_FLAG} {path}: not base64 (expected the base64 of {KEY_BYTES} bytes on one line)"
        ) from None
    if len(key) != KEY_BYTES:
        raise ClusterKeyError(
            f"{_FLAG} {path}: the key is {len(key)} bytes, it must be {KEY_BYTES} "
            f"(make one with `proglog certs cluster-key`)"
        )
    return key


def new_cluster_key() -> str:
    """A new key as the file holds it: base64 of 32 bytes from the OS's CSPRNG."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")
