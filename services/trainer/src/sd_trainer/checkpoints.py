"""Checkpoint files of a run, written atomically, mirrored to the object store, and found again to resume.

A run's folder holds `checkpoints/step-<step:09d>.pt` and `checkpoints/latest.json` ({"step", "key"}).
A checkpoint file is written to a temporary name, flushed to disk and renamed; latest.json is written
the same way only afterwards, so latest.json always names a complete file, even after a SIGKILL at any
moment. The store gets the same order: the checkpoint object first, latest.json last.

`StoreMirror` copies files of the run folder to `training/<run_id>/` in the object store on one
background thread, in the order they were handed to it (the store interface is async; the loop is not).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from sd_common.objectstore import ObjectNotFound, ObjectStore

CHECKPOINTS_DIR = "checkpoints"
LATEST = f"{CHECKPOINTS_DIR}/latest.json"
MAX_CHECKPOINT_BYTES = 8 * 1024**3


class CheckpointError(RuntimeError):
    """latest.json names a checkpoint that cannot be read (a file changed outside the run)."""


def checkpoint_name(step: int) -> str:
    """The run-folder-relative name of the checkpoint at `step`."""
    return f"{CHECKPOINTS_DIR}/step-{step:09d}.pt"


def write_atomically(path: Path, data: bytes) -> None:
    """Writes `data` to `path` so that a reader (or a crash) sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any]) -> str:
    """Writes the checkpoint of `step` and then latest.json; returns the checkpoint's relative name."""
    name = checkpoint_name(step)
    path = Path(run_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    write_atomically(Path(run_dir) / LATEST, json.dumps({"step": step, "key": name}).encode())
    return name


def read_latest(run_dir: Path) -> dict[str, Any] | None:
    """latest.json of the run folder, or None when the run has no checkpoint yet."""
    path = Path(run_dir) / LATEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def load_latest(run_dir: Path) -> dict[str, Any] | None:
    """The newest complete checkpoint's state (on CPU), or None when there is none."""
    latest = read_latest(run_dir)
    if latest is None:
        return None
    path = Path(run_dir) / latest["key"]
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path}, named by {LATEST}, cannot be read: {e}") from None


class StoreMirror:
    """Copies run files to `training/<run_id>/` in the store, one at a time, in the order given."""

    def __init__(self, store: ObjectStore, run_id: str, run_dir: Path):
        self.store = store
        self.prefix = f"training/{run_id}/"
        self.run_dir = Path(run_dir)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-mirror")
        self._loop = asyncio.new_event_loop()
        self._pending: list[Future] = []
        self._lock = threading.Lock()

    def key(self, relative: str) -> str:
        """The store key of a run-folder-relative name."""
        return self.prefix + relative

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def upload(self, relative: str, *, content_type: str = "application/octet-stream") -> Future:
        """Queues a copy of the file as it is now (read at submission, so later rewrites do not race)."""
        data = (self.run_dir / relative).read_bytes()
        future = self._pool.submit(self._run, self.store.put_bytes(self.key(relative), data,
                                                                   content_type=content_type))
        with self._lock:
            self._pending.append(future)
        return future

    def upload_tree(self, relative_dir: str) -> None:
        """Queues every file under a run-folder-relative directory (TensorBoard events, curves)."""
        folder = self.run_dir / relative_dir
        if folder.is_dir():
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                self.upload(path.relative_to(self.run_dir).as_posix())

    def download_latest(self, newer_than: int = -1) -> bool:
        """Copies the store's latest.json and its checkpoint into the run folder if newer than `newer_than`."""
        def fetch() -> bool:
            async def go() -> bool:
                try:
                    latest_raw = await self.store.get_bytes(self.key(LATEST), max_bytes=1 << 16)
                except ObjectNotFound:
                    return False
                latest = json.loads(latest_raw)
                if latest["step"] <= newer_than:
                    return False
                data = await self.store.get_bytes(self.key(latest["key"]), max_bytes=MAX_CHECKPOINT_BYTES)
                write_atomically(self.run_dir / latest["key"], data)
                write_atomically(self.run_dir / LATEST, latest_raw)
                return True
            return self._run(go())
        return self._pool.submit(fetch).result()

    def flush(self) -> None:
        """Waits for every queued copy; raises the first failure."""
        with self._lock:
            pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Flushes, closes the store and stops the thread."""
        try:
            self.flush()
        finally:
            self._pool.submit(self._run, self.store.close()).result()
            self._pool.shutdown(wait=True)
            self._loop.close()
