"""DatasetVersion: a dataset version the ingest made (or one applied by hand), and its policy.

With ``spec.policy.train.enabled`` the operator creates one TrainingRun for the version, named
``<version>-train``; with ``spec.policy.evaluate.enabled`` also an Evaluation ``<version>-eval`` of that
run, which waits until the run has succeeded. Names are deterministic, so a re-run of the handler (or the
operator restarting) creates nothing twice.
"""

from __future__ import annotations

import hashlib
from typing import Any

import kopf

from sd_operator.context import CHILDREN_CREATED, OperatorContext
from sd_operator.resources import API_VERSION, DATASET_VERSIONS, GROUP, MAX_OWNER_NAME, VERSION

RUN_FIELDS = ("configOverrides", "resources", "backoffLimit", "activeDeadlineSeconds", "pendingTimeoutSeconds",
              "ttlSecondsAfterFinished")
EVAL_FIELDS = ("benchmark", "carlaImage", "evaluatorImage", "resources", "backoffLimit", "activeDeadlineSeconds",
               "pendingTimeoutSeconds", "ttlSecondsAfterFinished")


def child_name(parent: str, suffix: str) -> str:
    """``<parent>-<suffix>``, shortened with a hash of the parent when it would be too long for a Job owner."""
    name = f"{parent}-{suffix}"
    if len(name) <= MAX_OWNER_NAME:
        return name
    digest = hashlib.sha256(parent.encode()).hexdigest()[:8]
    keep = MAX_OWNER_NAME - len(suffix) - len(digest) - 2
    return f"{parent[:keep].rstrip('-')}-{digest}-{suffix}"


def training_run(name: str, spec: dict) -> dict[str, Any] | None:
    """The TrainingRun the policy asks for (not yet adopted), or None."""
    train = (spec.get("policy") or {}).get("train") or {}
    if not train.get("enabled"):
        return None
    run_spec = {"datasetVersion": spec["datasetId"], **{k: train[k] for k in RUN_FIELDS if k in train}}
    return {"apiVersion": API_VERSION, "kind": "TrainingRun",
            "metadata": {"name": child_name(name, "train")}, "spec": run_spec}


def evaluation(name: str, spec: dict) -> dict[str, Any] | None:
    """The Evaluation of the policy's TrainingRun (not yet adopted), or None."""
    policy = spec.get("policy") or {}
    ev = policy.get("evaluate") or {}
    if not ev.get("enabled") or not (policy.get("train") or {}).get("enabled"):
        return None
    ev_spec = {"trainingRun": child_name(name, "train"), **{k: ev[k] for k in EVAL_FIELDS if k in ev}}
    return {"apiVersion": API_VERSION, "kind": "Evaluation",
            "metadata": {"name": child_name(name, "eval")}, "spec": ev_spec}


async def apply_policy(body: kopf.Body, spec: kopf.Spec, name: str, patch: kopf.Patch, memo: OperatorContext,
                       **_: Any) -> None:
    """Creates what the policy asks for, once (create, resume, and a change of spec.policy)."""
    spec_d = dict(spec)
    for key, child in (("trainingRun", training_run(name, spec_d)), ("evaluation", evaluation(name, spec_d))):
        if child is None:
            continue
        kopf.adopt(child, owner=body)
        _, created = await memo.kube.ensure(child)
        if created:
            CHILDREN_CREATED.labels(child["kind"]).inc()
        patch.status[key] = child["metadata"]["name"]
    generation = body["metadata"].get("generation")
    if generation is not None:
        patch.status["observedGeneration"] = generation


def register(registry: kopf.OperatorRegistry) -> None:
    """Adds the DatasetVersion handlers to a registry."""
    for on in (kopf.on.create, kopf.on.resume):
        on(GROUP, VERSION, DATASET_VERSIONS, registry=registry, id=f"policy-{on.__name__}")(apply_policy)
    kopf.on.field(GROUP, VERSION, DATASET_VERSIONS, field="spec.policy", registry=registry,
                  id="policy-changed")(apply_policy)
