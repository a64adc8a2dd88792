"""The city page's settings and the named errors when the game cannot run (no browser needed)."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from sd_evaluator.camera_input import CameraMount, CameraSpec, Crop
from sd_evaluator.city.benchmarks import city_benchmark
from sd_evaluator.city.browser import GameUnavailable, PageConfig, StaticServer, chromium_path
from sd_evaluator.city.runner import page_config


# A dataset's camera: the city renders at its recording size, field of view and mount.
CAMERA = CameraSpec(recording_width=640, recording_height=360, fov_deg=64.5,
                    mount=CameraMount(1.3, 0.0, 2.3, -5.0, 0.0, 0.0), crop=Crop(140, 0, 360, 360),
                    output_width=64, output_height=64, input_width=64, input_height=64)


def test_the_page_url_carries_the_benchmark_or_the_camera():
    bench = city_benchmark("city-smoke")
    q = parse_qs(page_config(bench, None).query())
    assert q == {"agent": ["1"], "city": ["east-village"], "size": ["320x180"]}
    q = parse_qs(page_config(bench, CAMERA).query())
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
