"""Writing files so that a crash leaves either the old state or the complete new one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Makes a rename or create inside ``path`` survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, tmp_folder: Path, *, durable: bool = True) -> None:
    """Writes ``data`` to a temporary file in ``tmp_folder`` (same file system), then renames it to ``path``.

    Readers see no file or the whole file, never a part. With ``durable``, the data and the rename
    are fsynced first, so they also survive a power loss.
    """
    tmp = tmp_folder / secrets.token_hex(16)
    try:
        with open(tmp, "xb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
