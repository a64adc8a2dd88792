"""The local stack's per-service environment: the ingest checks wallet links for the sign-in fields the
gateway issues, on any port and whatever the gateway was given."""

from __future__ import annotations

from sd_common.cli.services import SERVICES
from sd_common.cli.stack import stack_env

SPECS = {spec.name: spec for spec in SERVICES}


def _siws(env: dict[str, str], prefix: str) -> tuple:
    return tuple(env.get(f"{prefix}SIWS_{f}") for f in ("DOMAIN", "URI", "CHAIN_ID"))


def test_the_ingest_expects_the_gateways_sign_in_fields(tmp_path):
    for base in ({}, {"SD_GATEWAY_SIWS_DOMAIN": "play.example.com", "SD_GATEWAY_SIWS_URI": "https://play.example.com",
                      "SD_GATEWAY_SIWS_CHAIN_ID": "testnet"}):
        gateway, ingest = (stack_env(tmp_path, 8180, SPECS[name], base, diffusion_port=50154)
                           for name in ("gateway", "ingest"))
        assert _siws(ingest, "SD_INGEST_") == _siws(gateway, "SD_GATEWAY_")
    assert _siws(stack_env(tmp_path, 8180, SPECS["ingest"], {}, 50154), "SD_INGEST_")[:2] == (
        "127.0.0.1:8180", "http://127.0.0.1:8180")
