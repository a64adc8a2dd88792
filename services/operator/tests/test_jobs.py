"""The Jobs and Services the operator creates, adopted as the handlers adopt them, validated against
Kubernetes 1.33's schemas (strict); the CRDs' examples and defaults against the CRDs' own schemas."""

from __future__ import annotations

import copy

import jsonschema
import kopf
import kubernetes_validate
import pytest
import yaml
from sd_operator.datasetversion import child_name, evaluation, training_run
from sd_operator.jobs import evaluation_job, rendezvous_service, training_job
from sd_operator.settings import OperatorSettings

from tests.kube_api import REPO, crd, validate_custom, validate_kubernetes

EXAMPLES = sorted((REPO / "charts" / "scale-diffusion" / "examples").glob("*.yaml"))
DATASET = "3f" * 32
SETTINGS = OperatorSettings(trainer_image="registry.example.com/sd/trainer:1.2.3", trainer_config_map="sd-trainer",
                            aws_secret="sd-aws", image_pull_secrets="regcred, other",
                            job_service_account="sd-trainer")
OWNER = {"apiVersion": "scalediffusion.io/v1alpha1", "kind": "TrainingRun",
         "metadata": {"name": "r1", "namespace": "ml", "uid": "0d6c2f3e-1111-4c1e-9a77-2f3e0d6c2f3e",
                      "labels": {"team": "driving"}}}


def adopted(obj):
    obj = copy.deepcopy(obj)
    kopf.adopt(obj, owner=OWNER)
    return obj


def pod_of(job):
    return job["spec"]["template"]["spec"]


def test_a_single_gpu_run_is_one_pod_running_the_training_process():
    spec = {"datasetVersion": DATASET, "configOverrides": {"optim": {"max_steps": 5}},
            "resources": {"gpus": 1, "cpu": "8", "memory": "32Gi", "nodeSelector": {"pool": "h100"},
                          "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
            "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 60}
    job = adopted(training_job("r1", spec, 0, SETTINGS))
    validate_kubernetes(job)
    assert job["metadata"]["name"] == "r1-0" and job["metadata"]["namespace"] == "ml"
    (ref,) = job["metadata"]["ownerReferences"]
    assert ref["uid"] == OWNER["metadata"]["uid"] and ref["kind"] == "TrainingRun" and ref["controller"]
    js = job["spec"]
    assert js["backoffLimit"] == 0 and js["activeDeadlineSeconds"] == 3600 and js["ttlSecondsAfterFinished"] == 60
    assert "completionMode" not in js and js["completions"] == 1
    exit2 = js["podFailurePolicy"]["rules"][0]
    assert exit2["action"] == "FailJob" and exit2["onExitCodes"]["values"] == [2]
    pod = pod_of(job)
    (c,) = pod["containers"]
    assert c["command"] == ["python", "-m", "sd_trainer.train", "--run-id", "r1", "--dataset", DATASET,
                            "--out", "/tmp/run", "--config-json", '{"optim":{"max_steps":5}}']
    assert c["image"] == SETTINGS.trainer_image and c["envFrom"] == [{"configMapRef": {"name": "sd-trainer"}}]
    assert c["resources"] == {"requests": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
                              "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"}}
    assert {e["name"] for e in c["env"]} >= {"SD_TRAINER_TERMINATION_LOG", "AWS_ACCESS_KEY_ID"}
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert pod["nodeSelector"] == {"pool": "h100"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "sd-trainer"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]
    assert pod["securityContext"]["runAsUser"] == 10001 and c["securityContext"]["readOnlyRootFilesystem"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["scalediffusion.io/owner-name"] == "r1" and labels["scalediffusion.io/attempt"] == "0"


def test_several_gpus_on_one_node_run_under_torchrun_standalone():
    job = adopted(training_job("r1", {"datasetVersion": DATASET, "resources": {"gpus": 4}}, 1, SETTINGS))
    validate_kubernetes(job)
    cmd = pod_of(job)["containers"][0]["command"]
    assert cmd[:6] == ["torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", "4"]
    assert job["metadata"]["name"] == "r1-1"


def test_several_nodes_are_an_indexed_job_with_a_headless_service_for_the_rendezvous():
    spec = {"datasetVersion": DATASET, "resources": {"gpus": 8, "nodes": 3}}
    job = adopted(training_job("r1", spec, 2, SETTINGS))
    svc = adopted(rendezvous_service("r1", 2, SETTINGS))
    validate_kubernetes(job)
    validate_kubernetes(svc)
    js = job["spec"]
    assert js["completionMode"] == "Indexed" and js["completions"] == js["parallelism"] == 3
    pod = pod_of(job)
    assert pod["subdomain"] == "r1-2" == svc["metadata"]["name"]
    cmd = pod["containers"][0]["command"]
    assert cmd[cmd.index("--nnodes") + 1] == "3" and cmd[cmd.index("--nproc-per-node") + 1] == "8"
    assert cmd[cmd.index("--rdzv-backend") + 1] == "c10d"
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == "r1-2-0.r1-2:29400"
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    # The Service selects exactly this attempt's pods.
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels[k] == v for k, v in svc["spec"]["selector"].items())
    assert svc["metadata"]["ownerReferences"][0]["uid"] == OWNER["metadata"]["uid"]


def test_an_evaluation_runs_carla_as_a_sidecar_beside_the_evaluator():
    spec = {"trainingRun": "r1", "benchmark": "leaderboard-2.0-validation", "carlaImage": "carlasim/carla:0.9.16",
            "resources": {"gpus": 1, "memory": "32Gi"}, "pendingTimeoutSeconds": 60}
    job = adopted(evaluation_job("r1-eval", spec, "s3://b/ckpt.pt", 0, SETTINGS))
    validate_kubernetes(job)
    pod = pod_of(job)
    (carla,) = pod["initContainers"]
    assert carla["restartPolicy"] == "Always" and carla["image"] == "carlasim/carla:0.9.16"
    assert carla["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (ev,) = pod["containers"]
    assert ev["command"][:3] == ["python", "-m", "sd_evaluator.evaluate"]
    assert ev["command"][ev["command"].index("--checkpoint") + 1] == "s3://b/ckpt.pt"
    assert ev["command"][ev["command"].index("--evaluation-id") + 1] == "r1-eval"  # its store prefix
    assert "--agents" not in ev["command"]  # the evaluator's default: the model and every baseline
    job = evaluation_job("r1-eval", {**spec, "agents": ["model", "constant-throttle"]}, "s3://b/ckpt.pt", 0, SETTINGS)
    (ev,) = pod_of(job)["containers"]
    assert ev["command"][ev["command"].index("--agents") + 1] == "model,constant-throttle"


def test_the_strict_check_rejects_a_misspelt_field():
    job = adopted(training_job("r1", {"datasetVersion": DATASET}, 0, SETTINGS))
    job["spec"]["template"]["spec"]["containers"][0]["comand"] = ["x"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_kubernetes(job)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_fits_its_crd(path):
    doc = yaml.safe_load(path.read_text())
    validate_custom(doc)
    assert path.read_text().lstrip().startswith("#"), "an example says what it does"


def test_the_crd_schemas_reject_what_they_must():
    good = yaml.safe_load((REPO / "charts/scale-diffusion/examples/trainingrun.yaml").read_text())
    for bad in ({"datasetVersion": "not-hex"}, {"datasetVersion": DATASET, "backoffLimit": -1},
                {"datasetVersion": DATASET, "resources": {"nodes": 0}}, {"datasetVersion": DATASET, "speling": 1},
                {}):
        with pytest.raises(jsonschema.ValidationError):
            validate_custom({**good, "spec": bad})
    ev = yaml.safe_load((REPO / "charts/scale-diffusion/examples/evaluation.yaml").read_text())
    for bad in ({k: v for k, v in ev["spec"].items() if k != "trainingRun"},
                {**ev["spec"], "checkpointUri": "s3://b/c.pt"}):
        with pytest.raises(jsonschema.ValidationError):
            validate_custom({**ev, "spec": bad})


def test_the_crds_are_structural_namespaced_with_status_and_printer_columns():
    for kind in ("DatasetVersion", "TrainingRun", "Evaluation"):
        doc = crd(kind)
        validate_kubernetes(doc)
        (version,) = doc["spec"]["versions"]
        assert doc["spec"]["scope"] == "Namespaced" and version["subresources"] == {"status": {}}
        assert any(c["jsonPath"] == ".metadata.creationTimestamp" for c in version["additionalPrinterColumns"])
    columns = {c["name"]: c["jsonPath"] for c in crd("TrainingRun")["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Dataset"] == ".spec.datasetVersion"
    assert columns["Retries"] == ".status.retryCount" and columns["Val-MAE"] == ".status.valMae"


def test_a_dataset_version_policy_makes_a_run_and_an_evaluation_that_fit_their_crds():
    dv = yaml.safe_load((REPO / "charts/scale-diffusion/examples/datasetversion.yaml").read_text())
    name = dv["metadata"]["name"]
    run, ev = training_run(name, dv["spec"]), evaluation(name, dv["spec"])
    assert run["metadata"]["name"] == f"{name}-train" and ev["spec"]["trainingRun"] == run["metadata"]["name"]
    assert run["spec"]["datasetVersion"] == dv["spec"]["datasetId"]
    validate_custom(run)
    validate_custom(ev)
    off = {**dv["spec"], "policy": {}}
    assert training_run(name, off) is None and evaluation(name, off) is None
    long = child_name("x" * 80, "train")
    assert len(long) <= 52 and long.endswith("-train") and long != child_name("x" * 79 + "y", "train")
