"""In-memory indices of the operator's Jobs, pods and TrainingRuns, kept current by kopf's watches.

Handlers read their children from here instead of calling the API: a reconcile costs no request.
"""

from __future__ import annotations

from typing import Any

import kopf

from sd_operator.resources import GROUP, OWNER_KIND_LABEL, OWNER_NAME_LABEL, TRAINING_RUNS, VERSION

_SELECTED = {OWNER_KIND_LABEL: kopf.PRESENT, OWNER_NAME_LABEL: kopf.PRESENT}


def _snapshot(body: kopf.Body) -> dict[str, Any]:
    meta = body.get("metadata", {})
    return {"metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                         "labels": dict(meta.get("labels") or {}),
                         "creationTimestamp": meta.get("creationTimestamp")},
            "status": _plain(body.get("status") or {})}


def _plain(value: Any) -> Any:
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def owned_jobs(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    """Jobs by (namespace, owner kind, owner name)."""
    return {(namespace, labels[OWNER_KIND_LABEL], labels[OWNER_NAME_LABEL]): _snapshot(body)}


def owned_pods(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    """Pods by (namespace, owner kind, owner name)."""
    return {(namespace, labels[OWNER_KIND_LABEL], labels[OWNER_NAME_LABEL]): _snapshot(body)}


def training_runs(name: str, namespace: str, status: kopf.Status, **_: Any) -> dict:
    """TrainingRuns' phase and checkpoint by (namespace, name), for the Evaluations that wait on them."""
    return {(namespace, name): {"phase": status.get("phase"), "checkpointUri": status.get("checkpointUri"),
                                "message": status.get("message", "")}}


def register(registry: kopf.OperatorRegistry) -> None:
    """Adds the indices to a registry."""
    kopf.index("batch", "v1", "jobs", labels=_SELECTED, registry=registry, id="owned_jobs")(owned_jobs)
    kopf.index("v1", "pods", labels=_SELECTED, registry=registry, id="owned_pods")(owned_pods)
    kopf.index(GROUP, VERSION, TRAINING_RUNS, registry=registry, id="training_runs")(training_runs)


def children(index: kopf.Index, namespace: str, kind: str, owner: str) -> list[dict[str, Any]]:
    """The indexed children of one owner."""
    return list(index.get((namespace, kind, owner), []))
