"""What the browser tests share: where the game is, what they need installed, the drive's settings."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = [Path("/usr/lib/chromium/chromium"), Path("/usr/bin/chromium")]
DRIVE_S = 32
SIZE = (640, 360)
MULTIPART_BYTES = 5 * 1024 * 1024  # the smallest threshold the store allows, so the video goes in parts
# The stack's diffusion backend takes this long per frame: every picture the game shows is at least
# this old, so the state it shows is known to differ from the state on screen at the time.
DIFFUSION_DELAY_MS = 200.0
# The hosted provider's stand-in (tests/e2e/conftest.py): the gateway's server-side key, and its latency.
HOSTED_KEY = "e2e-hosted-provider-key-5d1c"
HOSTED_DELAY_MS = 120.0
# The processor's output for the 32 s drive must appear within this many seconds of the upload; the
# margin is for a loaded 2-core CI machine. Not appearing in time is a failure, never a skip.
PROCESSED_TIMEOUT_S = float(os.environ.get("SD_E2E_PROCESSED_TIMEOUT_S", "240"))
IN_CI = os.environ.get("CI", "").lower() == "true"


def missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        return "web/node_modules is missing (npm --prefix web ci)"
    if not any(p.exists() for p in CHROMIUM) and not os.environ.get("SD_CHROMIUM"):
        return "Chromium is not installed (apt-get install chromium)"
    return None


MISSING = missing()


def build_web() -> None:
    """Builds web/dist unless it is newer than every source file."""
    dist = WEB / "dist" / "index.html"
    sources = [p for d in ("src", "index.html", "package.json", "vite.config.ts") for p in
               ((WEB / d).rglob("*") if (WEB / d).is_dir() else [WEB / d])]
    if dist.exists() and dist.stat().st_mtime >= max(p.stat().st_mtime for p in sources if p.is_file()):
        return
    subprocess.run(["npm", "--prefix", str(WEB), "run", "build"], check=True, capture_output=True, timeout=180)
