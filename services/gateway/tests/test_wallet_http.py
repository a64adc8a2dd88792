"""Wallet linking and the rewards views through the gateway's HTTP API, against a real gRPC ingest on
loopback: the ingest's own WalletService over a real WalletStore (SQLite). The RewardsService there is
a stand-in written for these tests that answers fixed protos: it only lets us check how the gateway
maps them (the ledger behind the real one is tested with the ingest)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import base58
import httpx
import pytest
from nacl.signing import SigningKey
from scale_diffusion.common.v1 import common_pb2
from scale_diffusion.ingest.v1 import ingest_pb2 as pb
from scale_diffusion.ingest.v1 import ingest_pb2_grpc
from sqlalchemy import text

from sd_common.grpc_runtime import GrpcRuntime
from sd_common.siws import SiwsAudience, build_message, parse_message
from sd_gateway.http_api import OPERATION_ERRORS
from sd_ingest.errors import ERRORS as INGEST_ERRORS
from sd_ingest.errors import NotFound as IngestNotFound
from sd_ingest.settings import IngestSettings
from sd_ingest.wallet_server import register_wallets
from sd_ingest.wallets import WalletStore

from .test_uploads import new_player

CH, LINK, WG, WD = (("POST", "/v1/wallet/challenge"), ("POST", "/v1/wallet/link"), ("GET", "/v1/wallet"),
                    ("DELETE", "/v1/wallet"))
OUT, CONTRIB, LB = (("GET", "/v1/sessions/{session_id}/outcome"), ("GET", "/v1/players/me/contributions"),
                    ("GET", "/v1/leaderboard"))
OPERATIONS = (CH, LINK, WG, WD, OUT, CONTRIB, LB)
NO_SESSION = "20260101T000000Z-0000000000000000"


class FixedRewards(ingest_pb2_grpc.RewardsServiceServicer):
    """Answers fixed protos and records what it was asked (to check the gateway names its player)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, pb.GetSessionOutcomeResponse] = {}
        self.asked: list = []

    async def GetSessionOutcome(self, request, context):
        self.asked.append(request)
        if request.session_id not in self.outcomes:
            raise IngestNotFound(f"no session {request.session_id} in the catalog")
        return self.outcomes[request.session_id]

    async def GetContributions(self, request, context):
        self.asked.append(request)
        return pb.GetContributionsResponse(
            player_id=request.player_id, pending_millipoints=12_345, in_epoch_millipoints=1_000,
            paid_millipoints=500, today_millipoints=2_250, daily_cap_millipoints=100_000, accepted_s=42.5,
            wallet_address="", next_page_token="next", credits=[pb.Credit(
                entry_id="e1", player_id=request.player_id, session_id="s1", segment_id="s1-0000",
                millipoints=1_500, gross_millipoints=2_000, rule="segment-v1", factors={"seconds": 5.0},
                created_at="2026-12-02T10:00:00Z", status="pending", note="daily cap reached")])

    async def GetLeaderboard(self, request, context):
        self.asked.append(request)
        return pb.GetLeaderboardResponse(week=request.week or "2026-W49", your_rank=0, rows=[
            pb.LeaderboardRow(rank=1, player_label="p-7f3a", millipoints=9_999, accepted_s=60.0, you=False)])


@dataclass
class Ingest:
    port: int
    store: WalletStore
    rewards: FixedRewards
    rt: GrpcRuntime = field(repr=False)

    def rows(self) -> tuple:
        with self.store._engine.connect() as conn:
            return tuple(tuple(r) for t in ("wallet_links", "wallet_events")
                         for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1")))


@pytest.fixture
async def ingest(tmp_path):
    settings = IngestSettings(grpc_port=0, metrics_port=0, state_dir=tmp_path / "ingest", shutdown_grace_s=0)
    rt = GrpcRuntime("ingest", settings)
    rt.map_errors(INGEST_ERRORS)
    # The ingest's SIWS defaults are the gateway's, as the chart sets both from one value.
    store = WalletStore(f"sqlite:///{tmp_path / 'catalog.db'}",
                        audience=SiwsAudience(settings.siws_domain, settings.siws_uri, settings.siws_chain_id))
    register_wallets(rt, store)
    rewards = FixedRewards()
    rt.add(ingest_pb2_grpc.add_RewardsServiceServicer_to_server, rewards, "scale_diffusion.ingest.v1.RewardsService")
    await rt.start()
    yield Ingest(rt.grpc_port, store, rewards, rt)
    await rt.stop()
    store.close()


@pytest.fixture
async def linked_gw(start_gw, ingest):
    return await start_gw(ingest_target=f"127.0.0.1:{ingest.port}")


def address_of(key: SigningKey) -> str:
    return base58.b58encode(bytes(key.verify_key)).decode()


def sign(key: SigningKey, message: str) -> str:
    return base58.b58encode(key.sign(message.encode()).signature).decode()


async def challenge(http, headers, key: SigningKey) -> dict:
    r = await http.post("/v1/wallet/challenge", json={"address": address_of(key)}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def consumed(gw, nonce: str) -> bool | None:
    n = gw._db.get_wallet_nonce(nonce)
    return None if n is None else n.consumed_s is not None


async def test_a_wallet_is_linked_from_its_signed_challenge_unlinked_and_relinked(linked_gw, ingest):
    key, other = SigningKey.generate(), SigningKey.generate()
    async with httpx.AsyncClient(base_url=linked_gw.base_url) as http:
        me = await new_player(http)
        assert (await http.get("/v1/wallet", headers=me)).json() == {"wallet": None, "events": []}
        c = await challenge(http, me, key)
        m = parse_message(c["message"])
        assert (m.domain, m.uri, m.chain_id, m.address, m.nonce) == (
            "127.0.0.1:8080", "http://127.0.0.1:8080", "devnet", address_of(key), c["nonce"])
        assert datetime.fromisoformat(c["expires_at"]) == m.expiration_time
        assert (m.expiration_time - m.issued_at).total_seconds() == 600
        r = await http.post("/v1/wallet/link", json={"message": c["message"], "signature": sign(key, c["message"])},
                            headers=me)
        assert r.status_code == 200, r.text
        assert r.json()["address"] == address_of(key) and r.json()["chain_id"] == "devnet"
        assert consumed(linked_gw, c["nonce"]) is True
        state = (await http.get("/v1/wallet", headers=me)).json()
        assert state["wallet"]["address"] == address_of(key)
        assert (await http.delete("/v1/wallet", headers=me)).status_code == 204
        assert (await http.get("/v1/wallet", headers=me)).json()["wallet"] is None
        c2 = await challenge(http, me, other)
        r = await http.post("/v1/wallet/link", json={"message": c2["message"], "signature": sign(other, c2["message"])},
                            headers=me)
        assert r.status_code == 200, r.text
        events = (await http.get("/v1/wallet", headers=me)).json()["events"]
    assert [(e["action"], e["address"]) for e in events] == [
        ("link", address_of(key)), ("unlink", address_of(key)), ("link", address_of(other))]
    player_id = next(iter(ingest.store.active_wallets()))
    assert ingest.store.active_wallets() == {player_id: address_of(other)}


async def test_every_refused_link_leaves_the_links_and_the_nonce_as_they_were(linked_gw, ingest):
    key, thief = SigningKey.generate(), SigningKey.generate()
    async with httpx.AsyncClient(base_url=linked_gw.base_url) as http:
        me, other = await new_player(http), await new_player(http)
        c = await challenge(http, me, key)
        m = parse_message(c["message"])
        before = ingest.rows()

        async def refused(status: int, message: str, signature: str, headers=me, nonce: str = c["nonce"],
                          nonce_consumed: bool = False) -> str:
            r = await http.post("/v1/wallet/link", json={"message": message, "signature": signature}, headers=headers)
            assert r.status_code == status, (status, r.text)
            assert ingest.rows() == before  # no link, no event
            assert consumed(linked_gw, nonce) is nonce_consumed
            return r.json()["error"]["message"]

        def variant(**fields) -> str:
            return build_message(**{"domain": m.domain, "address": m.address, "statement": m.statement, "uri": m.uri,
                                    "chain_id": m.chain_id, "nonce": m.nonce, "issued_at": m.issued_at,
                                    "expiration_time": m.expiration_time, **fields}).text()

        msg = c["message"]
        assert "signature" in await refused(400, msg, sign(thief, msg))  # signed by another key
        await refused(400, msg, base58.b58encode(b"\x01" * 64).decode())
        await refused(400, msg, "not-base58!")
        assert "domain" in await refused(400, (v := variant(domain="evil.example")), sign(key, v))
        assert "URI" in await refused(400, (v := variant(uri="https://evil.example")), sign(key, v))
        assert "chain id" in await refused(400, (v := variant(chain_id="mainnet")), sign(key, v))
        await refused(400, (v := variant(issued_at=m.issued_at.replace(year=2025))), sign(key, v))
        await refused(400, (v := variant(address=address_of(thief))), sign(thief, v))  # another wallet, my nonce
        await refused(400, (v := variant(nonce="Unissued0000Nonce")), sign(key, v))
        assert "not issued to this player" in await refused(400, msg, sign(key, msg), headers=other)
        await refused(400, msg + "\nRequest ID: 1", sign(key, msg + "\nRequest ID: 1"))
        # an expired challenge (as if issued 20 minutes ago): refused, and still not consumed
        old = await challenge(http, me, key)
        now = int(time.time())
        with linked_gw._db._engine.begin() as conn:
            conn.execute(text("UPDATE wallet_nonces SET issued_s = :i, expires_s = :e WHERE nonce = :n"),
                         {"i": now - 1200, "e": now - 600, "n": old["nonce"]})
        om = parse_message(old["message"])
        stale = build_message(domain=om.domain, address=om.address, statement=om.statement, uri=om.uri,
                              chain_id=om.chain_id, nonce=om.nonce,
                              issued_at=datetime.fromtimestamp(now - 1200, UTC),
                              expiration_time=datetime.fromtimestamp(now - 600, UTC)).text()
        assert "expired" in await refused(409, stale, sign(key, stale), nonce=old["nonce"])
        # the real challenge, signed by its wallet, still links: none of the above spent it
        ok = await http.post("/v1/wallet/link", json={"message": msg, "signature": sign(key, msg)}, headers=me)
        assert ok.status_code == 200, ok.text
        before = ingest.rows()
        # the same signed message again: its nonce is used
        assert "already used" in await refused(409, msg, sign(key, msg), nonce_consumed=True)
        # another player claiming the same wallet (they hold its key too): the ingest refuses it, the
        # gateway had consumed that player's nonce, the links are as they were
        theirs = await challenge(http, other, key)
        assert "another player" in await refused(409, theirs["message"], sign(key, theirs["message"]), headers=other,
                                                 nonce=theirs["nonce"], nonce_consumed=True)
        # a second wallet for a player who has one
        second = await challenge(http, me, thief)
        assert "unlink it first" in await refused(409, second["message"], sign(thief, second["message"]),
                                                  nonce=second["nonce"], nonce_consumed=True)


async def test_the_rewards_views_map_the_ingests_answers_for_the_player_only(linked_gw, ingest):
    async with httpx.AsyncClient(base_url=linked_gw.base_url) as http:
        me = await new_player(http)
        player_id = (await http.get("/v1/players/me", headers=me)).json()["player_id"]
        sid = (await http.post("/v1/sessions", json={}, headers=me)).json()["session_id"]
        waiting = (await http.get(f"/v1/sessions/{sid}/outcome", headers=me)).json()
        assert waiting == {"session_id": sid, "state": "waiting", "final": False, "accepted_s": 0.0,
                           "rejected_s": 0.0, "points": 0.0, "segments": [], "problems": []}
        ingest.rewards.outcomes[sid] = pb.GetSessionOutcomeResponse(
            session_id=sid, state=pb.CATALOG_STATE_PROCESSED, final=True, accepted_s=10.0, rejected_s=5.0,
            millipoints=2_750, segments=[
                pb.SegmentOutcome(segment_id=f"{sid}-0000", index=0, accepted=True, duration_s=10.0, millipoints=2_750),
                pb.SegmentOutcome(segment_id=f"{sid}-0001", index=1, accepted=False, reasons=["stationary"],
                                  duration_s=5.0)],
            problems=[common_pb2.Problem(code="short", path="video.webm", message="short")])
        out = (await http.get(f"/v1/sessions/{sid}/outcome", headers=me)).json()
        assert (out["state"], out["final"], out["points"]) == ("processed", True, 2.75)
        assert out["segments"][1] == {"segment_id": f"{sid}-0001", "index": 1, "accepted": False,
                                      "reasons": ["stationary"], "duration_s": 5.0, "points": 0.0}
        assert out["problems"] == [{"code": "short", "path": "video.webm", "message": "short"}]
        c = (await http.get("/v1/players/me/contributions?page_size=10&page_token=t", headers=me)).json()
        assert (c["pending_points"], c["in_epoch_points"], c["paid_points"], c["today_points"],
                c["daily_cap_points"], c["accepted_s"]) == (12.345, 1.0, 0.5, 2.25, 100.0, 42.5)
        assert c["credits"][0]["points"] == 1.5 and c["credits"][0]["gross_points"] == 2.0
        assert c["credits"][0]["factors"] == {"seconds": 5.0} and c["next_page_token"] == "next"
        lb = (await http.get("/v1/leaderboard?week=2026-W48", headers=me)).json()
        assert lb == {"week": "2026-W48", "your_rank": None, "rows": [
            {"rank": 1, "player_label": "p-7f3a", "points": 9.999, "accepted_s": 60.0, "you": False}]}
    asked = ingest.rewards.asked
    assert {r.player_id for r in asked} == {player_id}  # never anyone else's data
    contrib = next(r for r in asked if isinstance(r, pb.GetContributionsRequest))
    assert (contrib.page_size, contrib.page_token) == (10, "t")


async def test_documented_statuses_of_wallet_and_rewards_are_exactly_those_answered(start_gw, ingest, tmp_path):
    seen: dict[tuple[str, str], set[int]] = {op: set() for op in OPERATIONS}
    gw = await start_gw(ingest_target=f"127.0.0.1:{ingest.port}", max_json_body_bytes=4096,
                        wallet_challenges_burst=3, wallet_challenges_per_minute=0.1)
    off = await start_gw(state_dir=tmp_path / "gw-off")
    key = SigningKey.generate()
    big = b'{"address": "' + b"1" * 5000 + b'"}'

    async def call(http, op, status, *, path=None, headers=None, **kw):
        r = await http.request(op[0], path or op[1], headers=headers, **kw)
        assert r.status_code == status, (op, status, r.status_code, r.text)
        if status >= 400:
            assert set(r.json()["error"]) == {"code", "message", "problems"}
        seen[op].add(status)
        return r

    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        me, other, disabled = [await new_player(http) for _ in range(3)]
        gw._db.set_player_disabled((await http.get("/v1/players/me", headers=disabled)).json()["player_id"], True)
        sid = (await http.post("/v1/sessions", json={}, headers=me)).json()["session_id"]
        at = lambda op, s=sid: op[1].replace("{session_id}", s)  # noqa: E731
        body = {CH: {"address": address_of(key)}, LINK: {"message": "m", "signature": "s"}}
        for op in OPERATIONS:
            for headers, status in ((None, 401), ({"Authorization": "Bearer forged"}, 401), (disabled, 403)):
                await call(http, op, status, path=at(op), headers=headers, json=body.get(op))
        c = (await call(http, CH, 200, json=body[CH], headers=me)).json()
        await call(http, CH, 400, json={"address": "0OIl"}, headers=me)
        await call(http, CH, 413, content=big, headers={**me, "Content-Type": "application/json"})
        await call(http, LINK, 413, content=big, headers={**me, "Content-Type": "application/json"})
        await call(http, LINK, 400, json={"message": c["message"], "signature": sign(SigningKey.generate(), "x")},
                   headers=me)
        await call(http, WD, 404, headers=me)
        signed = {"message": c["message"], "signature": sign(key, c["message"])}
        await call(http, LINK, 200, json=signed, headers=me)
        await call(http, LINK, 409, json=signed, headers=me)
        await call(http, WG, 200, headers=me)
        await call(http, WD, 204, headers=me)
        await call(http, CH, 200, json=body[CH], headers=me)
        await call(http, CH, 429, json=body[CH], headers=me)  # its burst of three is spent
        await call(http, OUT, 200, path=at(OUT), headers=me)
        await call(http, OUT, 400, path=at(OUT, "-bad"), headers=me)
        await call(http, OUT, 403, path=at(OUT), headers=other)
        await call(http, OUT, 404, path=at(OUT, NO_SESSION), headers=me)
        await call(http, CONTRIB, 200, headers=me)
        await call(http, CONTRIB, 400, path=CONTRIB[1] + "?page_size=0", headers=me)
        await call(http, LB, 200, headers=me)
        await call(http, LB, 400, path=LB[1] + "?week=last", headers=me)
        doc = (await http.get("/openapi.json")).json()
    async with httpx.AsyncClient(base_url=off.base_url) as http:  # no SD_GATEWAY_INGEST_TARGET
        me = await new_player(http)
        sid = (await http.post("/v1/sessions", json={}, headers=me)).json()["session_id"]
        for op in OPERATIONS:
            r = await call(http, op, 503, path=at(op, sid), headers=me, json=body.get(op))
            assert "SD_GATEWAY_INGEST_TARGET" in r.json()["error"]["message"]
    for op in OPERATIONS:
        documented = {int(s) for s in doc["paths"][op[1]][op[0].lower()]["responses"]}
        assert documented == {204 if op == WD else 200, *OPERATION_ERRORS[op]}, op
        assert seen[op] == documented, (op, sorted(seen[op]), sorted(documented))


async def test_an_ingest_that_went_away_answers_503_with_a_deadline(start_gw, ingest):
    gw = await start_gw(ingest_target=f"127.0.0.1:{ingest.port}", ingest_timeout_s=1.0)
    await ingest.rt.stop()
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as http:
        me = await new_player(http)
        t0 = time.monotonic()
        r = await http.get("/v1/wallet", headers=me)
    assert r.status_code == 503 and "ingest" in r.json()["error"]["message"]
    assert time.monotonic() - t0 < 5
