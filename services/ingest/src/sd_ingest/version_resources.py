"""DatasetVersion resources: in a cluster with the operator, every dataset version the ingest makes is
also announced as a ``DatasetVersion`` custom resource (``SD_INGEST_DATASET_VERSION_RESOURCES=true``), whose
policy can train and evaluate it (docs/operator.md). Off by default; the catalog stays the record.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import structlog
from sd_common.kube_config import client_configuration

from sd_ingest.catalog import DatasetRecord

log = structlog.get_logger()

GROUP, VERSION, PLURAL = "scalediffusion.io", "v1alpha1", "datasetversions"
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class PolicyInvalid(ValueError):
    """SD_INGEST_DATASET_VERSION_POLICY is not a JSON object."""


def resource_name(dataset_id: str) -> str:
    """The resource's name: ``ds-`` and the first 12 hex digits of the version's id."""
    return f"ds-{dataset_id[:12]}"


def parse_policy(text: str) -> dict[str, Any]:
    """The policy every new version gets (spec.policy), from its JSON setting ("" = none)."""
    if not text.strip():
        return {}
    try:
        policy = json.loads(text)
    except ValueError as exc:
        raise PolicyInvalid(f"SD_INGEST_DATASET_VERSION_POLICY is not JSON: {exc}") from None
    if not isinstance(policy, dict):
        raise PolicyInvalid("SD_INGEST_DATASET_VERSION_POLICY must be a JSON object such as "
                            '{"train": {"enabled": true}}')
    return policy


def dataset_version_resource(rec: DatasetRecord, namespace: str, policy: dict[str, Any]) -> dict[str, Any]:
    """The DatasetVersion resource of a dataset version (pure)."""
    spec: dict[str, Any] = {
        "datasetId": rec.dataset_id, "displayName": rec.name, "manifestUri": rec.manifest_uri,
        "statsUri": rec.stats_uri, "lerobotUri": rec.lerobot_uri,
        "createdAt": rec.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "hours": rec.hours,
        "segments": rec.segments, "sessions": rec.sessions, "players": rec.players, "frames": rec.frames,
        "trainSegments": rec.train_segments, "valSegments": rec.val_segments,
    }
    if policy:
        spec["policy"] = policy
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DatasetVersion",
            "metadata": {"name": resource_name(rec.dataset_id), "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "scale-diffusion",
                                    "app.kubernetes.io/managed-by": "sd-ingest"}},
            "spec": spec}


def default_namespace() -> str:
    """The pod's own namespace, or "default" outside a cluster."""
    try:
        return POD_NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


class DatasetVersionPublisher:
    """Creates the DatasetVersion resource of each version, once (a second create finds it and stops)."""

    def __init__(self, namespace: str, policy: dict[str, Any]) -> None:
        import kubernetes  # only a cluster installation needs the client

        self._api = kubernetes.client.ApiClient(client_configuration())
        self._custom = kubernetes.client.CustomObjectsApi(self._api)
        self._exception = kubernetes.client.exceptions.ApiException
        self.namespace = namespace
        self.policy = policy

    def _create(self, body: dict[str, Any]) -> bool:
        try:
            self._custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body,
                                                         _preload_content=False)
        except self._exception as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def publish(self, rec: DatasetRecord) -> bool:
        """Creates the version's resource; False when it already exists."""
        body = dataset_version_resource(rec, self.namespace, self.policy)
        created = await asyncio.to_thread(self._create, body)
        log.info("dataset version resource", dataset_id=rec.dataset_id, name=body["metadata"]["name"],
                 namespace=self.namespace, created=created)
        return created

    async def close(self) -> None:
        """Closes the client's connection pool."""
        await asyncio.to_thread(self._api.close)
