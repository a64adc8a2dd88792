"""DatasetVersion resources (SD_INGEST_DATASET_VERSION_RESOURCES): every dataset version the ingest makes
is announced once to the Kubernetes API (kmock here: no API server runs on this machine), in the shape
the operator's CRD admits; an API that cannot be reached loses nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sd_ingest.catalog import DatasetRecord, SessionState
from sd_ingest.version_resources import PolicyInvalid, dataset_version_resource, parse_policy
from test_pipeline import Harness

from conftest import put_session
from tests.kube_api import ApiServer, declare_resources, validate_custom, write_kubeconfig

NS = "ml"
RESOURCES = f"/apis/scalediffusion.io/v1alpha1/namespaces/{NS}/datasetversions"
REC = DatasetRecord(
    dataset_id="0123456789ab" + "c" * 52, name="v1", created_at=datetime(2026, 12, 1, 12, tzinfo=UTC), hours=0.5,
    segments=12, players=2, sessions=3, frames=1800, train_segments=8, val_segments=4, val_fraction=0.34,
    split_seed=3, manifest_uri="datasets/x/manifest.json", stats_uri="datasets/x/stats.json",
    lerobot_uri="datasets/x/lerobot/")


def test_the_resource_fits_the_operators_crd_and_carries_the_policy():
    policy = parse_policy('{"train": {"enabled": true, "backoffLimit": 1}}')
    res = dataset_version_resource(REC, NS, policy)
    validate_custom(res)
    assert res["metadata"]["name"] == "ds-0123456789ab" and res["metadata"]["namespace"] == NS
    assert res["spec"]["datasetId"] == REC.dataset_id and res["spec"]["policy"]["train"]["enabled"] is True
    assert res["spec"]["segments"] == 12 and res["spec"]["createdAt"] == "2026-12-01T12:00:00Z"
    assert "policy" not in dataset_version_resource(REC, NS, parse_policy(""))["spec"]


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_bad_policy_setting_is_named(text):
    with pytest.raises(PolicyInvalid, match="SD_INGEST_DATASET_VERSION_POLICY"):
        parse_policy(text)


@pytest.mark.kmock(cls=ApiServer)
async def test_a_new_dataset_version_is_announced_once_and_an_unreachable_api_loses_nothing(
        kmock, tmp_path, session_6s, monkeypatch):
    declare_resources(kmock)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"), NS)))
    h = Harness(tmp_path, f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        await h.start_processor(["ok"])
        ingest = await h.start_ingest(dataset_version_resources=True, dataset_version_namespace=NS,
                                      dataset_version_policy='{"train": {"enabled": true}}')
        for sid, player in (("sess-1", "alice"), ("sess-2", "bob")):
            await put_session(h.store, session_6s, sid, player)
        for sid in ("sess-1", "sess-2"):
            rec = await h.wait_state(sid, SessionState.PROCESSED, SessionState.FAILED)
            assert rec.state == SessionState.PROCESSED
        rec, created = await ingest.service.create_dataset("first", 0.5, 3)
        assert created
        async with kmock.get(RESOURCES) as resp:
            items = (await resp.json())["items"]
        assert [i["metadata"]["name"] for i in items] == [f"ds-{rec.dataset_id[:12]}"]
        validate_custom(items[0])
        assert items[0]["spec"]["datasetId"] == rec.dataset_id and items[0]["spec"]["policy"]["train"]["enabled"]
        # The same version again: the resource exists, nothing is created twice, no error.
        again, created = await ingest.service.create_dataset("first", 0.5, 3)
        assert not created and again.dataset_id == rec.dataset_id
        async with kmock.get(RESOURCES) as resp:
            assert len((await resp.json())["items"]) == 1
        await ingest.stop()

        # An API server that does not answer: the version is still made and kept in the catalog.
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "gone", "http://127.0.0.1:9", NS)))
        ingest2 = await h.start_ingest(dataset_version_resources=True, dataset_version_namespace=NS)
        other, created = await ingest2.service.create_dataset("second", 0.0, 3)
        assert created and other.dataset_id != rec.dataset_id
        assert (await ingest2.service.get_dataset(other.dataset_id)).name == "second"
    finally:
        await h.close()
