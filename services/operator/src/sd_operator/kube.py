"""The few Kubernetes API calls the operator makes besides kopf's own: create a child, delete a Job.

The synchronous `kubernetes` client runs in worker threads so that no handler blocks the event loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from sd_common.kube_config import client_configuration

from sd_operator.resources import GROUP, VERSION


class ChildConflict(Exception):
    """A child with the deterministic name exists but belongs to another owner (a deleted namesake)."""


_PLURALS = {"TrainingRun": "trainingruns", "Evaluation": "evaluations", "DatasetVersion": "datasetversions"}


class Kube:
    """Creates the operator's children idempotently and deletes Jobs."""

    def __init__(self, cfg: kubernetes.client.Configuration | None = None) -> None:
        self._api = kubernetes.client.ApiClient(cfg or client_configuration())
        self._batch = kubernetes.client.BatchV1Api(self._api)
        self._core = kubernetes.client.CoreV1Api(self._api)
        self._custom = kubernetes.client.CustomObjectsApi(self._api)

    def _create(self, obj: dict[str, Any]) -> Any:
        ns, kind = obj["metadata"]["namespace"], obj["kind"]
        if kind == "Job":
            return self._batch.create_namespaced_job(ns, obj, _preload_content=False)
        if kind == "Service":
            return self._core.create_namespaced_service(ns, obj, _preload_content=False)
        return self._custom.create_namespaced_custom_object(GROUP, VERSION, ns, _PLURALS[kind], obj,
                                                            _preload_content=False)

    def _read(self, obj: dict[str, Any]) -> Any:
        ns, kind, name = obj["metadata"]["namespace"], obj["kind"], obj["metadata"]["name"]
        if kind == "Job":
            return self._batch.read_namespaced_job(name, ns, _preload_content=False)
        if kind == "Service":
            return self._core.read_namespaced_service(name, ns, _preload_content=False)
        return self._custom.get_namespaced_custom_object(GROUP, VERSION, ns, _PLURALS[kind], name,
                                                         _preload_content=False)

    def _ensure(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        try:
            return json.loads(self._create(obj).data), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = json.loads(self._read(obj).data)
        want = {r.get("uid") for r in obj["metadata"].get("ownerReferences", [])}
        have = {r.get("uid") for r in existing.get("metadata", {}).get("ownerReferences", [])}
        if want and not want & have:
            raise ChildConflict(f"{obj['kind']} {obj['metadata']['name']} exists and belongs to another owner")
        return existing, False

    async def ensure(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Creates ``obj``, or returns the one already there if it is ours: (object, created)."""
        return await asyncio.to_thread(self._ensure, obj)

    def _delete_job(self, namespace: str, name: str) -> bool:
        try:
            # Background: the Job goes at once, its pods after it (no orphans left running).
            self._batch.delete_namespaced_job(name, namespace, propagation_policy="Background",
                                              _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def delete_job(self, namespace: str, name: str) -> bool:
        """Deletes a Job and, in the background, its pods; False when it was already gone."""
        return await asyncio.to_thread(self._delete_job, namespace, name)

    def close(self) -> None:
        """Closes the connection pool."""
        self._api.close()
