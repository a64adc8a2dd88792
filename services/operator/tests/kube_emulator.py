"""kmock, the Kubernetes API emulator, as these tests use it: plus what a real API server writes into every
new object (uid, resourceVersion, creation time; kopf and the client rely on them), and the resources
the operator watches and creates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import kmock as km
import pytest
from sd_operator.lifecycle import rfc3339


class ApiServer(km.KubernetesEmulator):
    """kmock plus what an API server writes into every new object: uid, resourceVersion, creation time."""

    async def _handle(self, request):
        if request.action == km.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", "1")
            meta.setdefault("creationTimestamp", rfc3339(datetime.now(UTC)))
        return await super()._handle(request)


RESOURCES = (("scalediffusion.io/v1alpha1/trainingruns", "TrainingRun", {"status"}, True),
             ("scalediffusion.io/v1alpha1/evaluations", "Evaluation", {"status"}, True),
             ("scalediffusion.io/v1alpha1/datasetversions", "DatasetVersion", {"status"}, True),
             ("batch/v1/jobs", "Job", {"status"}, True), ("v1/pods", "Pod", {"status"}, True),
             ("v1/services", "Service", set(), True), ("v1/events", "Event", set(), True),
             ("v1/namespaces", "Namespace", set(), False),
             ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", set(), False))


@pytest.fixture
async def cluster(kmock):
    """kmock with the resources the operator watches and creates declared for discovery."""
    for key, kind, sub, namespaced in RESOURCES:
        kmock.resources[key] = km.ResourceInfo(
            kind=kind, namespaced=namespaced, subresources=sub,
            verbs={"list", "watch", "get", "create", "patch", "update", "delete"})
    yield kmock
