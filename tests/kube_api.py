"""What the tests of the cluster code paths (the operator, the ingest's DatasetVersion resources) use in
place of a Kubernetes API server, which cannot run here:

- kmock, a Kubernetes API emulator on loopback, plus what a real API server writes into every new object
  (uid, resourceVersion, creation time), the resources declared for discovery, and a kubeconfig for it;
- the schemas a cluster would apply: Kubernetes' own (strict, offline, kubernetes-validate) for Jobs and
  Services, the CRDs' openAPIV3Schema (jsonschema) for custom resources. Unknown fields, which an API
  server would prune silently, are errors here.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kmock as km
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "charts" / "scale-diffusion" / "crds"
KUBERNETES = "1.33.0"


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema in which an object with listed properties admits no others (pruning made visible)."""
    s = copy.deepcopy(schema)
    if "properties" in s and not s.get("x-kubernetes-preserve-unknown-fields"):
        s.setdefault("additionalProperties", False)
        s["properties"] = {k: _closed(v) for k, v in s["properties"].items()}
    if isinstance(s.get("items"), dict):
        s["items"] = _closed(s["items"])
    return s


@cache
def crd(kind: str) -> dict[str, Any]:
    """The CRD of a kind, from the chart's crds/."""
    for path in CRDS.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if doc["spec"]["names"]["kind"] == kind:
            return doc
    raise KeyError(kind)


def validate_custom(obj: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError unless ``obj`` fits its CRD's schema."""
    definition = crd(obj["kind"])
    (version,) = definition["spec"]["versions"]
    assert obj["apiVersion"] == f"{definition['spec']['group']}/{version['name']}"
    jsonschema.Draft7Validator(_closed(version["schema"]["openAPIV3Schema"]),
                               format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER).validate(obj)


def validate_kubernetes(obj: dict[str, Any]) -> None:
    """Raises kubernetes_validate.ValidationError unless ``obj`` fits Kubernetes' schema (strict)."""
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def merge_patch(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with a JSON merge patch applied (RFC 7386: null removes a key), as the API server does."""
    out = copy.deepcopy(obj)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiServer(km.KubernetesEmulator):
    """kmock plus what an API server writes into every new object: uid, resourceVersion, creation time."""

    async def _handle(self, request):
        if request.action == km.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", "1")
            meta.setdefault("creationTimestamp", _rfc3339(datetime.now(UTC)))
        return await super()._handle(request)


RESOURCES = (("scalediffusion.io/v1alpha1/trainingruns", "TrainingRun", {"status"}, True),
             ("scalediffusion.io/v1alpha1/evaluations", "Evaluation", {"status"}, True),
             ("scalediffusion.io/v1alpha1/datasetversions", "DatasetVersion", {"status"}, True),
             ("batch/v1/jobs", "Job", {"status"}, True), ("v1/pods", "Pod", {"status"}, True),
             ("v1/services", "Service", set(), True), ("v1/events", "Event", set(), True),
             ("v1/namespaces", "Namespace", set(), False),
             ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", set(), False))


def declare_resources(kmock) -> None:
    """Declares the resources the operator watches and creates, for kopf's and the client's discovery."""
    for key, kind, sub, namespaced in RESOURCES:
        kmock.resources[key] = km.ResourceInfo(
            kind=kind, namespaced=namespaced, subresources=sub,
            verbs={"list", "watch", "get", "create", "patch", "update", "delete"})


def write_kubeconfig(path: Path, server: str, namespace: str) -> Path:
    """A kubeconfig pointing at ``server`` with a token (kmock accepts any)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "test", "user": {"token": "test"}}],
        "contexts": [{"name": "test", "context": {"cluster": "kmock", "user": "test", "namespace": namespace}}]}))
    return path
