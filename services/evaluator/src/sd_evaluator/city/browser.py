"""The game in headless Chromium: web/dist served on loopback, the page opened in agent mode.

The server is the standard library's, in a thread; Chromium is the system's (Debian's), driven by the
`playwright` package with the launch flags of web/e2e/browser.mjs. No browser is ever downloaded.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

from sd_evaluator.city.settings import CitySettings

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
# The flags web/e2e/browser.mjs launches Chromium with: software GL, nothing in the background.
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
)


class GameUnavailable(RuntimeError):
    """The game cannot be driven here: no build, no Chromium, no playwright, or the page failed."""


@dataclass(frozen=True)
class PageConfig:
    """The URL parameters of the agent-mode page, as the game's own URL config reads them."""

    city: str
    width: int
    height: int
    fov_deg: float | None = None
    # x, y, z (m), pitch, yaw, roll (deg)
    mount: tuple[float, float, float, float, float, float] | None = None

    def query(self) -> str:
        """The page's query string."""
        q: dict[str, str] = {"agent": "1", "city": self.city, "size": f"{self.width}x{self.height}"}
        if self.fov_deg is not None:
            q["fov"] = repr(float(self.fov_deg))
        if self.mount is not None:
            q["mount"] = ",".join(repr(float(v)) for v in self.mount)
        return urlencode(q)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


class StaticServer:
    """web/dist over HTTP on 127.0.0.1 (an ephemeral port), in a daemon thread."""

    def __init__(self, root: Path):
        root = Path(root)
        if not (root / "index.html").is_file():
            raise GameUnavailable(
                f"the game is not built: {root}/index.html is missing (run `make install`, or `npm run build` in web/; "
                f"SD_EVALUATOR_CITY_WEB_DIST points elsewhere)"
            )
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="city-web", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The server's base URL."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        """Stops serving."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def chromium_path(configured: str = "") -> str:
    """The Chromium binary to launch: the configured one, SD_CHROMIUM, or the first system one found."""
    candidates = [c for c in (configured, os.environ.get("SD_CHROMIUM", ""), *CHROMIUM_CANDIDATES) if c]
    for c in candidates:
        if Path(c).is_file():
            return c
    raise GameUnavailable(f"no Chromium found (tried {', '.join(candidates)}); apt-get install chromium")


def decode_frame(b64: str) -> np.ndarray:
    """A frame from the page (PNG or JPEG, base64) as an H x W x 3 uint8 RGB array."""
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


class GamePage:
    """One agent-mode page in headless Chromium: `reset` and `step` call the page's `window.__sdAgent`."""

    def __init__(self, page_config: PageConfig, settings: CitySettings | None = None):
        self.settings = settings or CitySettings()
        self.config = page_config
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as exc:
            raise GameUnavailable(f"the playwright package is not installed ({exc}); pip install playwright") from exc
        executable = chromium_path(self.settings.chromium)
        self._server = StaticServer(self.settings.web_dist)
        self._pw = None
        self._browser = None
        try:
            self._pw = sync_playwright().start()
            self._browser = self._pw.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_ARGS))
            self._page = self._browser.new_page(viewport={"width": page_config.width, "height": page_config.height})
            self._errors: list[str] = []
            self._page.on("pageerror", lambda e: self._errors.append(str(e)))
            self._page.goto(f"{self._server.url}/?{page_config.query()}")
            timeout_ms = self.settings.load_timeout_s * 1000
            self._page.wait_for_function(
                "() => window.__sdAgent && (window.__sdAgent.ready || window.__sdAgent.error)", timeout=timeout_ms
            )
            error = self._page.evaluate("() => window.__sdAgent.error")
            if error:
                raise GameUnavailable(f"the game's agent mode failed to start: {error}")
            self.info: dict[str, Any] = self._page.evaluate("() => window.__sdAgent.info")
        except GameUnavailable:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise GameUnavailable(f"the game page did not start in agent mode: {exc}") from exc

    def reset(self, options: dict[str, Any]) -> dict[str, Any]:
        """A new route in a new world: the route's id, length, commands and global plan."""
        return self._page.evaluate("(o) => window.__sdAgent.reset(o)", options)

    def step(self, action: dict[str, Any], ticks: int, render: bool | str) -> dict[str, Any]:
        """One agent step; with `render` (True or "png", or "jpeg"), `frame_b64` holds the front camera's frame."""
        return self._page.evaluate("([a, t, r]) => window.__sdAgent.step(a, t, r)", [action, ticks, render])

    def history(self) -> list[dict[str, Any]]:
        """The game's own infraction log of the current route (its World.history)."""
        return self._page.evaluate("() => window.__sdAgent.history()")

    def close(self) -> None:
        """Closes the browser and stops the server."""
        if self._browser is not None:
            self._browser.close()
            self._browser = None
        if self._pw is not None:
            self._pw.stop()
            self._pw = None
        self._server.close()

    def __enter__(self) -> GamePage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
