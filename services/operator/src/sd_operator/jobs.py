"""The Jobs and Services the operator creates, built from a resource's spec. Pure functions of their
inputs: no client, no kopf; the handlers adopt the objects (owner references) and create them.

A training Job runs ``python -m sd_trainer.train`` (docs/training.md): directly on one node with at most
one GPU, under ``torchrun --standalone`` for several GPUs on one node, and as an Indexed Job under
torchrun's c10d rendezvous on a headless Service for several nodes. An evaluation Job runs the CARLA
server as a native sidecar (an init container that keeps running) beside ``python -m
sd_evaluator.evaluate``.
"""

from __future__ import annotations

import json
from typing import Any

from sd_operator.lifecycle import job_name
from sd_operator.resources import ATTEMPT_LABEL, MANAGED_BY, OWNER_KIND_LABEL, OWNER_NAME_LABEL
from sd_operator.settings import OperatorSettings

TRAINER_CONTAINER = "trainer"
EVALUATOR_CONTAINER = "evaluator"
CARLA_CONTAINER = "carla"
GPU_RESOURCE = "nvidia.com/gpu"
TERMINATION_LOG = "/dev/termination-log"
CARLA_PORT = 2000
RUN_DIR = "/tmp/run"


def labels(kind: str, owner: str, attempt: int) -> dict[str, str]:
    """Labels of one attempt's Job, pods and Service."""
    return {**MANAGED_BY, OWNER_KIND_LABEL: kind, OWNER_NAME_LABEL: owner, ATTEMPT_LABEL: str(attempt)}


def _resources(res: dict[str, Any], gpus: int) -> dict[str, Any]:
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if res.get("cpu"):
        requests["cpu"] = str(res["cpu"])
    if res.get("memory"):
        requests["memory"] = limits["memory"] = str(res["memory"])
    if gpus > 0:  # extended resources: requests must equal limits
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus)  # quantities are strings
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _container_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}}


def _pod_security(settings: OperatorSettings) -> dict[str, Any]:
    uid = settings.run_as_user
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _store_env(settings: OperatorSettings) -> list[dict[str, Any]]:
    if not settings.aws_secret:
        return []
    return [{"name": var, "valueFrom": {"secretKeyRef": {"name": settings.aws_secret, "key": key}}}
            for var, key in (("AWS_ACCESS_KEY_ID", settings.aws_access_key_id_key),
                             ("AWS_SECRET_ACCESS_KEY", settings.aws_secret_access_key_key))]


def _pod_spec(settings: OperatorSettings, spec: dict[str, Any], containers: list[dict], *,
              init_containers: list[dict] | None = None, subdomain: str | None = None,
              shm: bool = True) -> dict[str, Any]:
    res = spec.get("resources") or {}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(settings),
        "containers": containers,
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": settings.scratch_size}}],
    }
    if shm:
        pod["volumes"].append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}})
    if init_containers:
        pod["initContainers"] = init_containers
    if settings.job_service_account:
        pod["serviceAccountName"] = settings.job_service_account
    if settings.pull_secrets():
        pod["imagePullSecrets"] = [{"name": n} for n in settings.pull_secrets()]
    if res.get("nodeSelector"):
        pod["nodeSelector"] = dict(res["nodeSelector"])
    if res.get("tolerations"):
        pod["tolerations"] = [dict(t) for t in res["tolerations"]]
    if subdomain:
        pod["subdomain"] = subdomain
    return pod


def _job(name: str, lab: dict[str, str], spec: dict[str, Any], pod: dict[str, Any], main: str, *,
         nodes: int = 1) -> dict[str, Any]:
    job_spec: dict[str, Any] = {
        # One attempt per Job: the operator makes the next attempt itself, with backoff, and reads
        # every attempt's exit code.
        "backoffLimit": 0,
        "completions": nodes,
        "parallelism": nodes,
        # Exit code 2 (bad configuration or dataset) ends the Job at once; a pod evicted by a node drain
        # or preemption is replaced without counting as a failure.
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": main, "operator": "In", "values": [2]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "template": {"metadata": {"labels": dict(lab)}, "spec": pod},
    }
    if nodes > 1:
        job_spec["completionMode"] = "Indexed"
    if spec.get("activeDeadlineSeconds"):
        job_spec["activeDeadlineSeconds"] = int(spec["activeDeadlineSeconds"])
    if spec.get("ttlSecondsAfterFinished") is not None:
        job_spec["ttlSecondsAfterFinished"] = int(spec["ttlSecondsAfterFinished"])
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": dict(lab)},
            "spec": job_spec}


def training_command(run: str, spec: dict[str, Any], job: str, settings: OperatorSettings) -> list[str]:
    """The command of a training pod: the training process, under torchrun for several GPUs or nodes."""
    res = spec.get("resources") or {}
    gpus, nodes = int(res.get("gpus", 0)), int(res.get("nodes", 1))
    args = ["--run-id", run, "--dataset", spec["datasetVersion"], "--out", RUN_DIR]
    if spec.get("configOverrides"):
        args += ["--config-json", json.dumps(spec["configOverrides"], sort_keys=True, separators=(",", ":"))]
    if nodes > 1:
        return ["torchrun", "--nnodes", str(nodes), "--nproc-per-node", str(max(gpus, 1)),
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{job}-0.{job}:{settings.rendezvous_port}",
                "--rdzv-id", job, "-m", "sd_trainer.train", *args]
    if gpus > 1:
        return ["torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", str(gpus),
                "-m", "sd_trainer.train", *args]
    return ["python", "-m", "sd_trainer.train", *args]


def training_job(run: str, spec: dict[str, Any], attempt: int, settings: OperatorSettings) -> dict[str, Any]:
    """The Job of one attempt of a TrainingRun (not yet adopted)."""
    name = job_name(run, attempt)
    res = spec.get("resources") or {}
    gpus, nodes = int(res.get("gpus", 0)), int(res.get("nodes", 1))
    lab = labels("TrainingRun", run, attempt)
    env = [{"name": "SD_TRAINER_TERMINATION_LOG", "value": TERMINATION_LOG},
           {"name": "HOME", "value": "/tmp"}, *_store_env(settings)]
    container: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": training_command(run, spec, name, settings),
        "env": env,
        "resources": _resources(res, gpus),
        "securityContext": _container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shm", "mountPath": "/dev/shm"}],
    }
    if settings.trainer_config_map:
        container["envFrom"] = [{"configMapRef": {"name": settings.trainer_config_map}}]
    if nodes > 1:
        container["ports"] = [{"name": "rendezvous", "containerPort": settings.rendezvous_port, "protocol": "TCP"}]
    pod = _pod_spec(settings, spec, [container], subdomain=name if nodes > 1 else None)
    return _job(name, lab, spec, pod, TRAINER_CONTAINER, nodes=nodes)


def rendezvous_service(run: str, attempt: int, settings: OperatorSettings) -> dict[str, Any]:
    """The headless Service through which a multi-node attempt's pods find pod 0 (``<job>-0.<job>``)."""
    name = job_name(run, attempt)
    lab = labels("TrainingRun", run, attempt)
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": dict(lab)},
        "spec": {
            "clusterIP": "None",
            # Pods resolve each other before they are ready: rendezvous happens before readiness.
            "publishNotReadyAddresses": True,
            "selector": {OWNER_KIND_LABEL: "TrainingRun", OWNER_NAME_LABEL: run, ATTEMPT_LABEL: str(attempt)},
            "ports": [{"name": "rendezvous", "port": settings.rendezvous_port,
                       "targetPort": settings.rendezvous_port, "protocol": "TCP"}],
        },
    }


def evaluation_command(spec: dict[str, Any], checkpoint_uri: str, name: str = "") -> list[str]:
    """The evaluator's command (docs/evaluation.md); the Evaluation's name is its id and store prefix."""
    command = ["python", "-m", "sd_evaluator.evaluate", "--checkpoint", checkpoint_uri,
               "--benchmark", spec["benchmark"], "--carla-host", "127.0.0.1", "--carla-port", str(CARLA_PORT),
               "--out", RUN_DIR]
    if name:
        command += ["--evaluation-id", name]
    if spec.get("agents"):
        command += ["--agents", ",".join(spec["agents"])]
    return command


def evaluation_job(name: str, spec: dict[str, Any], checkpoint_uri: str, attempt: int,
                   settings: OperatorSettings) -> dict[str, Any]:
    """The Job of one attempt of an Evaluation: CARLA as a sidecar, the evaluator as the main container."""
    job = job_name(name, attempt)
    res = spec.get("resources") or {}
    gpus = int(res.get("gpus", 1))
    lab = labels("Evaluation", name, attempt)
    carla = {
        "name": CARLA_CONTAINER,
        "image": spec["carlaImage"],
        "imagePullPolicy": settings.image_pull_policy,
        # A native sidecar: started before the evaluator, stopped when it exits, so the Job completes.
        "restartPolicy": "Always",
        "command": ["/bin/bash", "./CarlaUE4.sh", "-RenderOffScreen", "-nosound", f"-carla-rpc-port={CARLA_PORT}"],
        "ports": [{"name": "carla-rpc", "containerPort": CARLA_PORT, "protocol": "TCP"}],
        # The evaluator starts once the simulator answers on its RPC port.
        "startupProbe": {"tcpSocket": {"port": CARLA_PORT}, "periodSeconds": 5, "failureThreshold": 60},
        "resources": _resources(res, gpus),
        # CARLA writes under its own home inside the image: its root filesystem stays writable.
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    evaluator: dict[str, Any] = {
        "name": EVALUATOR_CONTAINER,
        "image": spec.get("evaluatorImage") or settings.evaluator_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": evaluation_command(spec, checkpoint_uri, name),
        "env": [{"name": "SD_EVALUATOR_TERMINATION_LOG", "value": TERMINATION_LOG},
                {"name": "HOME", "value": "/tmp"}, *_store_env(settings)],
        "securityContext": _container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if settings.evaluator_config_map:
        evaluator["envFrom"] = [{"configMapRef": {"name": settings.evaluator_config_map}}]
    pod = _pod_spec(settings, spec, [evaluator], init_containers=[carla], shm=False)
    return _job(job, lab, spec, pod, EVALUATOR_CONTAINER)
