"""The ICE servers the game's peer connection uses to reach a diffusion pod (GET /v1/diffusion/ice-servers).

Host candidates need nothing; STUN servers are passed on as configured; a TURN relay gets credentials of
the asking player's own that expire (sd_common.ice), so the TURN secret never leaves the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sd_common.ice import IceServer, ice_servers_for


@dataclass(frozen=True)
class IceConfig:
    static: list[IceServer] = field(default_factory=list)
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str | None = None
    ttl_s: int = 3600

    @classmethod
    def from_settings(cls, settings) -> IceConfig:
        secret = settings.turn_secret.get_secret_value() if settings.turn_secret else None
        return cls(list(settings.diffusion_ice_servers), list(settings.turn_urls), secret, settings.turn_ttl_s)

    def for_player(self, player_id: str) -> tuple[list[IceServer], int | None]:
        """The servers for this player, and when its TURN credentials expire (unix s; None without TURN)."""
        return ice_servers_for(self.static, self.turn_urls, self.turn_secret, player_id, self.ttl_s)
