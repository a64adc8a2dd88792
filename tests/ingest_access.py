"""What the cross-service tests do around a running ingest: put a session into the store as the
gateway's uploads do, and read the catalog's view of it over the ingest's gRPC API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
from scale_diffusion.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings


async def put_session(store_settings: StoreSettings, session_dir: Path, sid: str, player_id: str) -> None:
    """Writes the session's files and its manifest (renamed to ``sid``) into the store; events included."""
    store = make_store(store_settings)
    try:
        doc = json.loads((session_dir / "manifest.json").read_text())
        doc["session_id"], doc["player_id"] = sid, player_id
        for f in doc["files"]:
            await store.put_bytes(f"raw/{sid}/{f['path']}", (session_dir / f["path"]).read_bytes(),
                                  content_type=f["content_type"])
        await store.put_bytes(f"raw/{sid}/manifest.json", json.dumps(doc).encode(), content_type="application/json")
    finally:
        await store.close()


def put_session_locally(store_root: Path, session_dir: Path, sid: str, player_id: str = "p-test") -> None:
    """put_session into the embedded store at ``store_root``, from synchronous test code."""
    asyncio.run(put_session(StoreSettings(backend="local", root=store_root), session_dir, sid, player_id))


def catalog_session(port: int, sid: str):
    """The ingest's record of ``sid`` (GetSessionStatus), or None while it does not answer or know it."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            return ingest_pb2_grpc.IngestServiceStub(ch).GetSessionStatus(
                ingest_pb2.GetSessionStatusRequest(session_id=sid), timeout=5).session
        except grpc.RpcError:
            return None
