"""Is a raw session complete in the store, and where can the validator read it.

Complete means: ``manifest.json`` parses, and every file it lists is present with the listed size and
SHA-256. The check asks the store (HEAD, then a streamed hash), never the events, so events arriving
late, twice, or out of order cannot change its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from sd_common.objectstore import LocalObjectStore, ObjectStore
from sd_common.problems import Problem, ProblemError
from sd_common.session_format import MANIFEST_MAX_BYTES, MANIFEST_NAME, Manifest, parse_manifest


@dataclass
class Completeness:
    """The answer of one check: complete, or the problems that say what is still missing or wrong."""

    complete: bool
    problems: list[Problem] = field(default_factory=list)
    manifest: Manifest | None = None
    manifest_sha256: str = ""


async def check_completeness(store: ObjectStore, prefix: str) -> Completeness:
    """Checks the session under ``prefix`` (``raw/<session_id>/``) against its manifest."""
    manifest_key = prefix + MANIFEST_NAME
    if await store.head(manifest_key) is None:
        return Completeness(False, [Problem("manifest_missing", MANIFEST_NAME,
                                            "waiting for manifest.json, which the client uploads last")])
    data = await store.get_bytes(manifest_key, max_bytes=MANIFEST_MAX_BYTES + 1)
    try:
        manifest = parse_manifest(data)
    except ProblemError as exc:
        return Completeness(False, exc.problems)
    problems: list[Problem] = []
    for entry in manifest.files:
        info = await store.head(prefix + entry.path)
        if info is None:
            problems.append(Problem("file_missing", entry.path, f"waiting for {entry.path}, listed in the manifest"))
        elif info.size_bytes != entry.size_bytes:
            problems.append(Problem("file_size_mismatch", entry.path,
                                    f"{entry.path} has {info.size_bytes} bytes; the manifest lists {entry.size_bytes}"))
    if not problems:  # hash only once every size is right: sizes are free, hashes read everything
        for entry in manifest.files:
            digest = await store.sha256(prefix + entry.path)
            if digest != entry.sha256:
                problems.append(Problem("file_sha256_mismatch", entry.path,
                                        f"{entry.path} has sha256 {digest}; the manifest lists {entry.sha256}"))
    if problems:
        return Completeness(False, problems, manifest)
    return Completeness(True, [], manifest, hashlib.sha256(data).hexdigest())


@contextlib.asynccontextmanager
async def staged_session(store: ObjectStore, prefix: str, scratch_dir: Path | None = None) -> AsyncIterator[Path]:
    """A local directory holding the session's files, for the validator (which reads files).

    The embedded store already keeps them as files, so its folder is used in place; from S3 they are
    streamed into a temporary folder that is removed afterwards.
    """
    if isinstance(store, LocalObjectStore):
        yield store.path_for(prefix.rstrip("/"))
        return
    if scratch_dir is not None:
        scratch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sd-ingest-", dir=scratch_dir) as tmp:
        root = Path(tmp) / "session"
        root.mkdir()
        async for info in store.list(prefix):
            relative = info.key[len(prefix):]
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            out = await asyncio.to_thread(open, target, "wb")
            try:
                async for chunk in store.iter_bytes(info.key):
                    await asyncio.to_thread(out.write, chunk)
            finally:
                await asyncio.to_thread(out.close)
        yield root
