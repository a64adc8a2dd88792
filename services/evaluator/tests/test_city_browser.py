"""The city page's settings and the named errors when the game cannot run (no browser needed)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

import pytest

from sd_evaluator.city.benchmarks import city_benchmark
from sd_evaluator.city.browser import GameUnavailable, PageConfig, StaticServer, chromium_path
from sd_evaluator.city.runner import page_config


@dataclass
class Camera:
    width: int = 640
    height: int = 360
    fov_deg: float = 64.5
    mount: tuple = (1.3, 0.0, 2.3, -5.0, 0.0, 0.0)


def test_the_page_url_carries_the_benchmark_or_the_camera():
    bench = city_benchmark("city-smoke")
    q = parse_qs(page_config(bench, None).query())
    assert q == {"agent": ["1"], "city": ["east-village"], "size": ["320x180"]}
    q = parse_qs(page_config(bench, Camera()).query())
    assert q["size"] == ["640x360"] and q["fov"] == ["64.5"]
    assert q["mount"] == ["1.3,0.0,2.3,-5.0,0.0,0.0"]
    assert PageConfig("grid", 10, 10).query().startswith("agent=1&city=grid")


def test_a_missing_build_and_a_missing_chromium_are_named(tmp_path, monkeypatch):
    with pytest.raises(GameUnavailable, match=r"the game is not built: .*index.html is missing"):
        StaticServer(tmp_path)
    monkeypatch.setenv("SD_CHROMIUM", str(tmp_path / "nope"))
    monkeypatch.setattr("sd_evaluator.city.browser.CHROMIUM_CANDIDATES", (str(tmp_path / "none"),))
    with pytest.raises(GameUnavailable, match="no Chromium found"):
        chromium_path("")


def test_the_server_serves_the_build_on_loopback(tmp_path):
    import urllib.request

    (tmp_path / "index.html").write_text("<html>agent</html>")
    server = StaticServer(tmp_path)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert urllib.request.urlopen(server.url + "/index.html", timeout=5).read() == b"<html>agent</html>"
    finally:
        server.close()
