"""The diffusion pod's own ICE servers: the configured ones, and a TURN relay with credentials per stream."""

from __future__ import annotations

import base64
import hashlib
import hmac

from sd_diffusion.settings import DiffusionSettings
from sd_diffusion.streams import StreamManager

SECRET = "turn-shared-secret-7f3a9c"
STUN = '[{"urls": ["stun:stun.example.org:3478"]}]'


def _coturn_password(secret: str, username: str) -> str:
    """What a TURN server with use-auth-secret expects: base64(HMAC-SHA1(secret, username))."""
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def test_each_diffusion_stream_gets_turn_credentials_of_its_own(monkeypatch):
    monkeypatch.setenv("SD_DIFFUSION_TURN_URLS", "turn:turn.example.org:3478")
    monkeypatch.setenv("SD_DIFFUSION_TURN_SECRET", SECRET)
    monkeypatch.setenv("SD_DIFFUSION_ICE_SERVERS", STUN)
    manager = StreamManager(DiffusionSettings(), backend=None)
    one, two = manager._ice("a" * 32), manager._ice("b" * 32)
    assert [s.urls for s in one.iceServers] == [["stun:stun.example.org:3478"], ["turn:turn.example.org:3478"]]
    turn_one, turn_two = one.iceServers[1], two.iceServers[1]
    assert turn_one.username.endswith(":diffusion-" + "a" * 16) and turn_two.username.endswith(":diffusion-" + "b" * 16)
    assert turn_one.credential == _coturn_password(SECRET, turn_one.username)
    assert DiffusionSettings.model_fields["turn_secret"].annotation is not str  # a SecretStr: never printed
    assert SECRET not in repr(DiffusionSettings())
