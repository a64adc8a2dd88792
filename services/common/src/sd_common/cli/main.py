"""`sdctl`: run the local stack, check service health, upload and inspect sessions."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from sd_common.cli.services import health_status, services_at


def _cmd_stack_up(a: argparse.Namespace) -> int:
    from sd_common.cli.stack import run_stack
    return asyncio.run(run_stack(a.state_dir, a.http_port + a.port_offset, a.port_offset))


def _cmd_status(a: argparse.Namespace) -> int:
    async def check() -> list[tuple[str, str, str]]:
        targets = [(s.name, f"{a.host}:{s.grpc_port}") for s in services_at(a.port_offset)]
        states = await asyncio.gather(*(health_status(t) for _, t in targets))
        return [(n, t, st) for (n, t), st in zip(targets, states)]

    rows = asyncio.run(check())
    if a.json:
        print(json.dumps([{"service": n, "target": t, "status": s} for n, t, s in rows], indent=1))
    else:
        for n, t, s in rows:
            print(f"{n:<10} {t:<22} {s}")
    return 0 if all(s == "SERVING" for _, _, s in rows) else 1


def _client(a: argparse.Namespace):
    from sd_common.upload_client import GatewayClient
    return GatewayClient(a.gateway, token=a.token or os.environ.get("SD_DEVICE_TOKEN"))


def _cmd_upload(a: argparse.Namespace) -> int:
    from sd_common.upload_client import GatewayHttpError

    async def go() -> int:
        client = _client(a)
        try:
            r = await client.upload_session(a.session_dir)
        except GatewayHttpError as e:
            print(f"upload failed: {e}", file=sys.stderr)
            for p in (e.body or {}).get("error", {}).get("problems", []) if isinstance(e.body, dict) else []:
                print(f"  {p['path']}: {p['message']}", file=sys.stderr)
            return 1
        finally:
            await client.close()
        print(json.dumps({"session_id": r.session_id, "accepted": r.accepted, "problems": r.problems,
                          "device_token": client.token}, indent=1))
        return 0 if r.accepted else 1
    return asyncio.run(go())


def _cmd_sessions(a: argparse.Namespace) -> int:
    async def go() -> int:
        client = _client(a)
        try:
            path = f"/v1/sessions/{a.session_id}" if a.session_id else "/v1/sessions"
            print(json.dumps(await client.get(path), indent=1))
        finally:
            await client.close()
        return 0
    return asyncio.run(go())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sdctl command."""
    p = argparse.ArgumentParser(prog="sdctl", description="Operate a Scale Diffusion stack.")
    sub = p.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="the local stack").add_subparsers(dest="action", required=True)
    up = stack.add_parser("up", help="start all six services on loopback and serve the game")
    up.add_argument("--state-dir", type=Path, default=Path(".run"), help="store, databases, secrets (default .run)")
    up.add_argument("--http-port", type=int, default=8080)
    up.add_argument("--port-offset", type=int, default=0, help="shift every port, to run beside another stack")
    up.set_defaults(fn=_cmd_stack_up)

    st = sub.add_parser("status", help="health of every service (gRPC health protocol)")
    st.add_argument("--host", default="127.0.0.1")
    st.add_argument("--json", action="store_true")
    st.add_argument("--port-offset", type=int, default=0)
    st.set_defaults(fn=_cmd_status)

    for name, fn, helptext in (("upload", _cmd_upload, "upload a recorded session directory through the gateway"),
                               ("sessions", _cmd_sessions, "list the player's sessions, or show one")):
        c = sub.add_parser(name, help=helptext)
        if name == "upload":
            c.add_argument("session_dir", type=Path)
        else:
            c.add_argument("session_id", nargs="?")
        c.add_argument("--gateway", default="http://127.0.0.1:8080", help="gateway HTTP URL")
        c.add_argument("--token", help="device token (default $SD_DEVICE_TOKEN; upload creates a player if unset)")
        c.set_defaults(fn=fn)

    # Commands of other packages (`sdctl synth`, `sdctl process`, …) register themselves through the
    # "sdctl.commands" entry-point group; a package that is not installed simply adds none.
    for ep in sorted(entry_points(group="sdctl.commands"), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError:  # e.g. the media extra (PyAV, OpenCV) is not in this image
            continue
        register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of sdctl."""
    a = build_parser().parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
