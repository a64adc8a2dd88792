"""Secrets kept in files: created once at random, then the same on every start."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_secret(path: Path) -> bytes:
    """Reads the secret at ``path``, or creates a random one (mode 0600) so restarts keep it.

    Safe when several processes start at once: the key is written to a private temporary file and
    hard-linked into place, which fails if another process got there first; then its key is read.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first; use that one
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_text().strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds {len(key)} characters; a secret needs at least 32 (delete it to regenerate)")
    return key.encode()
