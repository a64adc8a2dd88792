"""A processing request against the object store: fetch the raw session, run the pipeline, store outputs.

The local store is read in place (its objects are files); from S3 the session is copied to a
temporary folder first, because PyAV needs a seekable file. Only what the format allows is fetched:
an object larger than its file limit, or beyond the number of objects a session may have, is
represented by an empty placeholder of the right size, so the validator names it without the
processor ever reading it. The raw upload is only read, never written.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from sd_common.objectstore import (
    InvalidKey,
    LocalObjectStore,
    ObjectStore,
    ObjectStoreError,
    make_store,
    validate_prefix,
)
from sd_common.session_format.spec import MANIFEST_MAX_BYTES, MANIFEST_NAME, MAX_LISTED_FILES, file_size_limit
from sd_common.settings import StoreSettings

from .config import ProcessorConfig
from .errors import InvalidRequest, RawSessionNotFound, StoreUnavailable
from .export import DirectorySink, OutputSink
from .pipeline import ProcessingResult, Progress, process_session

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ATTEMPT = re.compile(r"[\x21-\x7e]{1,128}")
MAX_FETCHED_OBJECTS = MAX_LISTED_FILES + 8  # the manifest and a few strays; more are placeholders
_CONTENT_TYPES = {".jpg": "image/jpeg", ".json": "application/json"}


def _prefix(value: str, what: str) -> str:
    value = value.strip()
    if value.startswith("s3://"):  # s3://bucket/key-prefix: the bucket is the store's own
        value = value[5:].split("/", 1)[1] if "/" in value[5:] else ""
    value = value.rstrip("/")
    if not value:
        raise InvalidRequest(f"{what} is empty; give an object-store prefix such as raw/<session_id>/")
    try:
        validate_prefix(value)
    except InvalidKey as exc:
        raise InvalidRequest(f"{what}: {exc}") from None
    return value + "/"


def check_request(session_id: str, raw_uri: str, output_uri: str, attempt_id: str) -> tuple[str, str]:
    """Validates a request's fields; returns the (raw, output) prefixes, each ending in '/'."""
    if not _IDENTIFIER.fullmatch(session_id or ""):
        raise InvalidRequest(f"session_id {session_id!a} is not a session identifier (1-128 letters, digits, "
                             "'.', '_' or '-', starting with a letter or digit)")
    if not _ATTEMPT.fullmatch(attempt_id or ""):
        raise InvalidRequest(f"attempt_id {attempt_id!a} must be 1-128 printable ASCII characters")
    raw = _prefix(raw_uri, "raw_uri")
    out = _prefix(output_uri, "output_uri")
    if raw.startswith(out) or out.startswith(raw):
        raise InvalidRequest(f"output_uri {out!a} overlaps raw_uri {raw!a}; outputs never go inside the raw "
                             "upload (use processed/<session_id>/)")
    return raw, out


class StoreSink:
    """Outputs written through the object store under a prefix, from the pipeline's worker thread.

    The store interface has no delete, so a run cannot remove what an earlier run with another
    configuration wrote; segments.json lists the folders that belong to the latest run.
    """

    def __init__(self, store: ObjectStore, prefix: str, loop: asyncio.AbstractEventLoop) -> None:
        self.store, self.prefix, self.loop = store, prefix, loop

    def begin(self) -> None:
        """Nothing to prepare."""

    def finish(self, keys: set[str]) -> None:
        """Nothing to remove (see the class docstring)."""

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Stores the items concurrently and waits for all of them."""
        async def put_all() -> None:
            await asyncio.gather(*(self._put(self.prefix + key, data) for key, data in items))
        try:
            asyncio.run_coroutine_threadsafe(put_all(), self.loop).result()
        except ObjectStoreError as exc:
            raise StoreUnavailable(f"writing outputs under {self.prefix!a} failed: {exc}") from exc


    async def _put(self, key: str, data: bytes) -> None:
        content_type = _CONTENT_TYPES.get(os.path.splitext(key)[1], "application/octet-stream")
        await self.store.put_bytes(key, data, content_type=content_type)


async def _fetch(store: ObjectStore, raw_prefix: str, folder: Path) -> None:
    objects = [info async for info in store.list(raw_prefix)]
    if not objects:
        raise RawSessionNotFound(f"no object is stored under {raw_prefix!a}")
    for count, info in enumerate(objects):
        rel = info.key[len(raw_prefix):]
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        limit = MANIFEST_MAX_BYTES if rel == MANIFEST_NAME else file_size_limit(rel)
        f = await asyncio.to_thread(open, path, "wb")
        try:
            if count >= MAX_FETCHED_OBJECTS or info.size_bytes > limit:
                await asyncio.to_thread(f.truncate, info.size_bytes)  # a sparse stand-in: its size is all
                continue  # the checks need; the bytes are never fetched
            async for chunk in store.iter_bytes(info.key):
                await asyncio.to_thread(f.write, chunk)
        finally:
            f.close()


async def process_from_store(store: ObjectStore, *, session_id: str | None, raw_prefix: str, sink: OutputSink,
                             config: ProcessorConfig, attempt_id: str, work_dir: Path | None = None,
                             progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                             processor_version: str | None = None) -> ProcessingResult:
    """Processes the raw session under ``raw_prefix`` (ending in '/') of ``store`` into ``sink``."""
    def run(folder: Path) -> ProcessingResult:
        return process_session(folder, sink, config=config, attempt_id=attempt_id, expected_session_id=session_id,
                               progress=progress, should_stop=should_stop, processor_version=processor_version)

    try:
        if isinstance(store, LocalObjectStore):
            folder = store.path_for(raw_prefix.rstrip("/"))
            if not folder.is_dir():
                raise RawSessionNotFound(f"no object is stored under {raw_prefix!a}")
            return await asyncio.to_thread(run, folder)
        if work_dir is not None:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="sd-processor-", dir=work_dir) as tmp:
            await _fetch(store, raw_prefix, Path(tmp))
            return await asyncio.to_thread(run, Path(tmp))
    except InvalidKey as exc:
        raise InvalidRequest(str(exc)) from None
    except ObjectStoreError as exc:
        raise StoreUnavailable(f"reading {raw_prefix!a} from the object store failed: {exc}") from exc


async def process_from_store_uri(uri: str, sink: DirectorySink, *, config: ProcessorConfig, attempt_id: str,
                                 expected_session_id: str | None = None) -> ProcessingResult:
    """``sdctl process`` on a store prefix (``raw/<id>`` or ``s3://bucket/raw/<id>``), outputs to a folder."""
    settings = StoreSettings()
    if uri.startswith("s3://"):
        bucket = uri[5:].split("/", 1)[0]
        settings = StoreSettings(backend="s3", bucket=bucket)
    raw = _prefix(uri, "source")
    store = make_store(settings)
    try:
        return await process_from_store(store, session_id=expected_session_id, raw_prefix=raw, sink=sink,
                                        config=config, attempt_id=attempt_id)
    finally:
        await store.close()
