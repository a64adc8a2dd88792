"""The Helm chart, rendered offline and checked the way an operator would read it.

There is no Kubernetes API server here: manifests are rendered with Helm's own engine (helm-python-sdk),
validated against the Kubernetes OpenAPI schemas in strict mode (kubernetes-validate), and the
PodMonitor against a schema written below for the fields the chart uses. NetworkPolicies are evaluated
by a small model of an enforcing network plugin below; the rendered settings are given to the real
services, the database URLs against a real PostgreSQL (tests/pg.py). What only a live cluster would
show (scheduling on H100 nodes, probes against running pods, IRSA, Ingress controllers) is listed in
docs/operations.md.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import signal
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import helm_python as helm
import httpx
import jsonschema
import kubernetes_validate
import psycopg
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.pg import start_postgres
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "scale-diffusion"
SERVICES = ("gateway", "ingest", "processor", "diffusion", "trainer", "evaluator")
STORE_SERVICES = ("gateway", "ingest", "processor")
# A recent release, and the oldest one Chart.yaml's kubeVersion admits (read from it below).
RECENT_KUBERNETES = "1.33.0"

EVERYTHING: dict[str, Any] = {
    "global": {"imageRegistry": "registry.example.com/sd", "imageTag": "1.2.3",
               "imagePullSecrets": [{"name": "regcred"}], "logLevel": "DEBUG"},
    "store": {"bucket": "raw", "endpointUrl": "https://s3.example.com", "region": "eu-west-1",
              "queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/raw-created"},
    "aws": {"existingSecret": "aws-keys", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"},
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/sd"}},
    "metrics": {"podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "networkPolicy": {"enabled": True, "egress": {"enabled": True, "external": [
        {"ipBlock": {"cidr": "10.0.0.0/8"}}, {"namespaceSelector": {"matchLabels": {"team": "data"}}}]}},
    "gateway": {
        "replicas": 3,
        "corsOrigins": ["https://play.example.com", "https://beta.example.com"],
        "tokenSecret": {"existingSecret": "gw-token", "existingSecretKey": "key"},
        "database": {"existingSecret": "gw-db", "existingSecretKey": "url"},
        "hostedDiffusion": {"provider": "mirage", "apiKey": {"existingSecret": "decart", "existingSecretKey": "key"}},
        "env": {"SD_GATEWAY_EXTRA": 7},
        "extraEnv": [{"name": "FROM_FIELD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "podAnnotations": {"team": "play"},
        "networkPolicy": {"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress-nginx"}}}]},
        "ingress": {
            "enabled": True, "className": "nginx", "host": "play.example.com",
            "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
            "tls": {"enabled": True, "secretName": "play-tls"},
            "grpc": {"enabled": True},
        },
    },
    "ingest": {"database": {"existingSecret": "ingest-db"},
               "reprocess": {"enabled": True, "runId": "crop-fix-2026-12", "shards": 8, "parallelism": 3,
                             "processorVersion": "1.2.2", "receivedSince": "2026-11-01T00:00:00Z",
                             "states": ["PROCESSED", "FAILED"], "activeDeadlineSeconds": 86400}},
    "diffusion": {
        "replicas": 2,
        # Helm merges maps with the defaults: null removes the default label.
        "nodeSelector": {"nvidia.com/gpu.product": None, "pool": "h100"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        "model": {"dir": "/weights", "volume": {"type": "hostPath", "hostPath": "/srv/weights"}},
    },
    "trainer": {"gpu": {"count": 1}},
    "processor": {"autoscaling": {"enabled": True, "maxReplicas": 20,
                                  "prometheus": {"serverAddress": "http://prometheus.monitoring.svc:9090"}}},
}
SECRETS_AS_VALUES: dict[str, Any] = {
    "aws": {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "s3cr3t"},
    "gateway": {"tokenSecret": {"value": "a-device-token-signing-key-of-40-bytes!!"},
                "database": {"url": "postgresql+psycopg://gw:pw@db:5432/gateway"},
                "hostedDiffusion": {"provider": "mirage", "apiKey": {"value": "dk-example-key"}}},
    "ingest": {"database": {"url": "postgresql+psycopg://in:pw@db:5432/ingest"},
               "reprocess": {"enabled": True, "runId": "all-again", "shards": 3}},
}
# What every installation must give: with the default S3 store, the queue of its object-created events
# (the chart refuses to render without it). Merged under every value set below unless a test says not.
REQUIRED: dict[str, Any] = {"store": {"queueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/sd-raw"}}
SCENARIOS: dict[str, tuple[dict[str, Any], str, str]] = {
    # name: (values, release name, namespace)
    "defaults": ({}, "sd", "default"),
    "everything": (EVERYTHING, "sd", "default"),
    "secrets-as-values": (SECRETS_AS_VALUES, "sd", "default"),
    "no-trainer-evaluator": (
        {"trainer": {"enabled": False}, "evaluator": {"enabled": False}}, "sd", "default"),
    "custom-release": ({}, "scale-diffusion-prod", "sd-prod"),
    "network-policies": ({"networkPolicy": {"enabled": True}}, "sd", "default"),
    "operator": ({"operator": {"enabled": True}, "global": {"imagePullSecrets": [{"name": "regcred"}]},
                  "ingest": {"datasetVersionResources": {"enabled": True, "policy": {"train": {"enabled": True}}}},
                  "aws": {"existingSecret": "aws-keys", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"}},
                 "sd", "ml"),
}

# The PodMonitor fields the chart writes (monitoring.coreos.com/v1), closed to anything else so that a
# misspelt field fails here rather than being dropped by the API server.
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
PODMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                           "namespace": {"type": "string"}, "labels": LABELS},
        },
        "spec": {
            "type": "object", "required": ["selector", "podMetricsEndpoints"], "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "additionalProperties": False, "required": ["matchLabels"],
                             "properties": {"matchLabels": LABELS}},
                "podMetricsEndpoints": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["port"], "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                        },
                    },
                },
            },
        },
    },
}


# --- rendering --------------------------------------------------------------------------------------

def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, maps key by key (as Helm merges values files)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_files(values: dict[str, Any], name: str = "sd", namespace: str = "default", *,
                 required: bool = True) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would print it (REQUIRED merged under values)."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(merged(REQUIRED, values) if required else copy.deepcopy(values),
                            name=name, namespace=namespace)


def render(values: dict[str, Any], name: str = "sd", namespace: str = "default", *,
           required: bool = True) -> list[dict[str, Any]]:
    """Every object the chart renders, in template order."""
    docs = []
    for path, text in sorted(render_files(values, name, namespace, required=required).items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


@cache
def scenario(key: str) -> tuple[tuple[dict[str, Any], ...], str, str]:
    values, name, namespace = SCENARIOS[key]
    return tuple(render(values, name, namespace)), name, namespace


def objects(docs, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def component(obj: dict[str, Any]) -> str | None:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def by_component(docs, kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for obj in objects(docs, kind):
        svc = component(obj)
        assert svc not in found, f"two {kind}s for {svc}"
        found[svc] = obj
    return found


def pod_spec(deployment) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def container(deployment) -> dict[str, Any]:
    (only,) = pod_spec(deployment)["containers"]
    return only


def port_of(c: dict[str, Any], name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    assert name in ports, f"container {c['name']} has no port named {name}: {ports}"
    return ports[name]


def selects(match_labels: dict[str, str], deployment) -> bool:
    """Whether a label selector picks the Deployment's pods."""
    return match_labels.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def env_of(docs, deployment) -> dict[str, Any]:
    """The container's environment as the kubelet would build it: envFrom ConfigMaps, then env entries
    (plain values as strings, valueFrom as the reference itself)."""
    cms = {cm["metadata"]["name"]: cm for cm in objects(docs, "ConfigMap")}
    c = container(deployment)
    env: dict[str, Any] = {}
    for source in c.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        assert ref in cms, f"{c['name']} loads ConfigMap {ref}, which the chart does not render"
        env.update(cms[ref].get("data", {}))
    for entry in c.get("env", []):
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def enabled_services(values: dict[str, Any]) -> list[str]:
    return [s for s in SERVICES if values.get(s, {}).get("enabled", True)]


def oldest_supported_kubernetes() -> str:
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    m = re.fullmatch(r">=\s*(\d+\.\d+)\.\d+(-0)?", constraint)
    assert m, f"Chart.yaml kubeVersion {constraint!r} is not a plain lower bound"
    return m.group(1) + ".0"


# --- lint and schema validation --------------------------------------------------------------------

@pytest.mark.parametrize("key", ["defaults", "everything", "secrets-as-values"])
def test_helm_lint_finds_no_errors_or_warnings(key):
    report = helm.lint(CHART, merged(REQUIRED, SCENARIOS[key][0]), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("key", list(SCENARIOS))
@pytest.mark.parametrize("version", [RECENT_KUBERNETES, oldest_supported_kubernetes()])
def test_every_manifest_is_valid_kubernetes(key, version):
    docs, _, _ = scenario(key)
    assert docs
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc["apiVersion"].startswith("keda.sh/"):
            ((kind, error),) = keda_errors([doc])
            assert error is None, f"{where} is not a valid KEDA {kind}: {error}"
            continue
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            try:
                jsonschema.validate(doc, PODMONITOR_SCHEMA)
            except jsonschema.ValidationError as e:
                pytest.fail(f"{where}: {e.message} at {list(e.absolute_path)}")
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where} is not valid Kubernetes {version}: {e.message} at {list(e.absolute_path)}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{where}: {e.message}")


def keda_errors(docs: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(kind, error or None) per KEDA object, checked against KEDA's published CRD schema (the
    @kubernetes-models/keda models that `make crd-schemas` installs under tests/deploy/crd-schemas)."""
    tool = REPO / "tests" / "deploy" / "crd-schemas"
    assert (tool / "node_modules" / "@kubernetes-models" / "keda").is_dir(), \
        "KEDA's schemas are not installed: run `make crd-schemas` (make test does)"
    run = subprocess.run(["node", str(tool / "validate.mjs")], input=json.dumps(docs), capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return [(r["kind"], r["error"]) for r in map(json.loads, run.stdout.splitlines())]


def test_validation_rejects_a_broken_manifest():
    """The validator in use does reject what the API server would: a probe on a named port."""
    docs, _, _ = scenario("defaults")
    deployment = copy.deepcopy(objects(docs, "Deployment")[0])
    container(deployment)["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, RECENT_KUBERNETES, strict=True)


# --- what every service gets -----------------------------------------------------------------------

@pytest.mark.parametrize("key", list(SCENARIOS))
def test_every_enabled_service_has_a_deployment_service_and_configmap(key):
    docs, _, _ = scenario(key)
    expected = set(enabled_services(SCENARIOS[key][0]))
    # The operator has a Deployment and settings but no Service: nothing calls it (it calls the API server).
    operator = {"operator"} if SCENARIOS[key][0].get("operator", {}).get("enabled") else set()
    for kind in ("Deployment", "ConfigMap"):
        assert set(by_component(docs, kind)) == expected | operator, kind
    assert set(by_component(docs, "Service")) == expected


@pytest.mark.parametrize("key", list(SCENARIOS))
def test_services_and_selectors_reach_their_own_pods(key):
    docs, _, _ = scenario(key)
    deployments = by_component(docs, "Deployment")
    for svc, service in by_component(docs, "Service").items():
        selector = service["spec"]["selector"]
        matching = [s for s, d in deployments.items() if selects(selector, d)]
        assert matching == [svc], f"Service {service['metadata']['name']} selects {matching}"
        c = container(deployments[svc])
        named = {p["name"] for p in c["ports"]}
        for p in service["spec"]["ports"]:
            assert p["targetPort"] in named, f"{svc} Service port {p['name']} targets a port the pod lacks"
    for d in deployments.values():
        assert selects(d["spec"]["selector"]["matchLabels"], d)


@pytest.mark.parametrize("key", list(SCENARIOS))
def test_probes_call_grpc_health_on_the_grpc_port(key):
    docs, _, _ = scenario(key)
    for svc, d in by_component(docs, "Deployment").items():
        c = container(d)
        grpc_port = port_of(c, "grpc")
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe in c, f"{svc} has no {probe}"
            assert c[probe].get("grpc", {}).get("port") == grpc_port, f"{svc} {probe}: {c[probe]}"
        if "startupProbe" in c:
            assert c["startupProbe"]["grpc"]["port"] == grpc_port


@pytest.mark.parametrize("key", list(SCENARIOS))
def test_containers_run_as_non_root_on_a_read_only_root(key):
    docs, _, _ = scenario(key)
    for svc, d in by_component(docs, "Deployment").items():
        pod, c = pod_spec(d), container(d)
        sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        assert sc.get("runAsNonRoot") is True, svc
        assert sc.get("runAsUser", 0) != 0, svc
        assert sc.get("allowPrivilegeEscalation") is False, svc
        assert sc.get("readOnlyRootFilesystem") is True, svc
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], svc
        volumes = {v["name"]: v for v in pod["volumes"]}
        tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{svc} has no writable /tmp"


@pytest.mark.parametrize("key", list(SCENARIOS))
def test_containers_declare_cpu_and_memory(key):
    docs, _, _ = scenario(key)
    for svc, d in by_component(docs, "Deployment").items():
        res = container(d).get("resources", {})
        assert {"cpu", "memory"} <= res.get("requests", {}).keys(), svc
        assert "memory" in res.get("limits", {}), svc


@pytest.mark.parametrize("key", list(SCENARIOS))
def test_every_service_listens_on_all_interfaces_at_its_declared_ports(key):
    docs, _, _ = scenario(key)
    for svc, d in by_component(docs, "Deployment").items():
        env, c, p = env_of(docs, d), container(d), f"SD_{svc.upper()}_"
        assert env[p + "GRPC_HOST"] == "0.0.0.0", svc
        assert env[p + "METRICS_HOST"] == "0.0.0.0", svc
        assert int(env[p + "GRPC_PORT"]) == port_of(c, "grpc") == 50051, svc
        assert int(env[p + "METRICS_PORT"]) == port_of(c, "metrics"), svc
        assert env[p + "LOG_FORMAT"] == "json", svc
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == port_of(c, "metrics")
        assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("key", list(SCENARIOS))
def test_kubernetes_waits_longer_than_the_service_drains(key):
    docs, _, _ = scenario(key)
    for svc, d in by_component(docs, "Deployment").items():
        grace_s = float(env_of(docs, d)[f"SD_{svc.upper()}_SHUTDOWN_GRACE_S"])
        c = container(d)
        pre_stop_s = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert pod_spec(d)["terminationGracePeriodSeconds"] > pre_stop_s + grace_s, svc


def test_store_settings_reach_only_the_services_that_use_the_store():
    docs, _, _ = scenario("everything")
    for svc, d in by_component(docs, "Deployment").items():
        env = env_of(docs, d)
        if svc in STORE_SERVICES:
            assert env["SD_STORE_BACKEND"] == "s3"
            assert env["SD_STORE_BUCKET"] == "raw"
            assert env["SD_STORE_REGION"] == "eu-west-1"
            assert env["SD_STORE_ENDPOINT_URL"] == "https://s3.example.com"
            assert env["SD_STORE_QUEUE_URL"].endswith("/raw-created")
            assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "aws-keys", "key": "id"}}
            assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "aws-keys", "key": "secret"}}
        else:
            assert not any(k.startswith(("SD_STORE_", "AWS_")) for k in env), svc


def test_optional_store_settings_are_unset_rather_than_empty():
    docs, _, _ = scenario("defaults")
    env = env_of(docs, by_component(docs, "Deployment")["ingest"])
    assert "SD_STORE_ENDPOINT_URL" not in env and env["SD_STORE_QUEUE_URL"] == REQUIRED["store"]["queueUrl"]
    assert env["SD_STORE_BACKEND"] == "s3"
    docs = render({"store": {"backend": "local"}}, required=False)
    env = env_of(docs, by_component(docs, "Deployment")["ingest"])
    assert "SD_STORE_QUEUE_URL" not in env and env["SD_STORE_BACKEND"] == "local"


@pytest.mark.parametrize("store", [{}, {"queueUrl": ""}, {"backend": "s3", "endpointUrl": "https://s3.example.com"}])
def test_an_s3_store_without_an_event_queue_is_refused_at_template_time(store):
    """Without the queue, ingest would start, serve its catalog and never hear of an upload."""
    # What `helm template` / `helm install` stop with (Helm's lint mode only logs a `fail`).
    with pytest.raises(helm.HelmRenderError, match=r"store\.queueUrl is required with store\.backend s3.*"
                                                   r"Set store\.queueUrl, or ingest\.enabled false"):
        render({"store": store}, required=False)


def test_without_ingest_or_with_the_local_store_no_queue_is_needed():
    for values in ({"ingest": {"enabled": False}}, {"store": {"backend": "local"}}):
        docs = render(values, required=False)
        assert by_component(docs, "Deployment"), values


@pytest.mark.parametrize("key", ["defaults", "custom-release"])
def test_gateway_and_ingest_are_pointed_at_this_releases_services(key):
    docs, _, namespace = scenario(key)
    services = {s["metadata"]["name"]: s for s in objects(docs, "Service")}
    deployments = by_component(docs, "Deployment")
    for svc, var, target_svc in [("gateway", "SD_GATEWAY_DIFFUSION_TARGET", "diffusion"),
                                 ("gateway", "SD_GATEWAY_INGEST_TARGET", "ingest"),
                                 ("ingest", "SD_INGEST_PROCESSOR_TARGET", "processor")]:
        target = env_of(docs, deployments[svc])[var]
        if target_svc in ("diffusion", "processor"):  # every pod, from the headless Service's DNS
            assert target.startswith("dns:///"), target
            target = target[len("dns:///"):]
        host, port = target.rsplit(":", 1)
        name, ns, suffix = host.split(".")
        assert (ns, suffix) == (namespace, "svc")
        assert component(services[name]) == target_svc
        assert services[name]["spec"].get("clusterIP") == ("None" if target_svc in ("diffusion", "processor") else None)
        grpc = [p for p in services[name]["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc and grpc[0]["port"] == int(port)


def test_a_config_change_rolls_the_pods():
    def checksum(values):
        d = by_component(render(values), "Deployment")["ingest"]
        return d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"ingest": {"logLevel": "DEBUG"}})


# --- diffusion on H100 nodes -----------------------------------------------------------------------

@pytest.mark.parametrize("key", ["defaults", "everything"])
def test_diffusion_pods_get_a_gpu_on_the_configured_nodes(key):
    values = SCENARIOS[key][0]
    docs, _, _ = scenario(key)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["diffusion"]
    want = {**defaults, **values.get("diffusion", {})}
    want["nodeSelector"] = {k: v for k, v in want["nodeSelector"].items() if v is not None}
    d = by_component(docs, "Deployment")["diffusion"]
    pod, c = pod_spec(d), container(d)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == want["nodeSelector"]
    assert pod["tolerations"] == want["tolerations"]
    assert c["startupProbe"]["grpc"]["port"] == port_of(c, "grpc")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    model_dir = env_of(docs, d)["SD_DIFFUSION_MODEL_DIR"]
    assert mounts[model_dir]["readOnly"] is True
    model = volumes[mounts[model_dir]["name"]]
    if want["model"]["volume"]["type"] == "pvc":
        assert model["persistentVolumeClaim"] == {"claimName": "scale-diffusion-models", "readOnly": True}
    else:
        assert model["hostPath"]["path"] == "/srv/weights"
    # One GPU each and none spare: a rolling update must not surge.
    assert d["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_only_services_asked_to_get_a_gpu():
    docs, _, _ = scenario("everything")
    with_gpu = {svc for svc, d in by_component(docs, "Deployment").items()
                if "nvidia.com/gpu" in container(d)["resources"].get("limits", {})}
    assert with_gpu == {"diffusion", "trainer"}


def test_an_unknown_model_volume_type_is_refused_with_its_name():
    with pytest.raises(helm.HelmRenderError, match="pvc or hostPath"):
        render({"diffusion": {"model": {"volume": {"type": "nfs"}}}})


# --- switching services off ------------------------------------------------------------------------

@pytest.mark.parametrize("svc", SERVICES)
def test_disabling_a_service_removes_all_its_objects(svc):
    docs = render({svc: {"enabled": False}, "networkPolicy": {"enabled": True}})
    assert not [f"{d['kind']}/{d['metadata']['name']}" for d in docs if component(d) == svc]
    others = set(SERVICES) - {svc}
    assert set(by_component(docs, "Deployment")) == others
    if svc in ("diffusion", "ingest"):
        gateway = by_component(docs, "Deployment")["gateway"]
        assert f"SD_GATEWAY_{svc.upper()}_TARGET" not in env_of(docs, gateway)


def test_disabling_the_gateway_also_removes_its_ingress_pdb_and_secret():
    values = copy.deepcopy(SECRETS_AS_VALUES)
    values["gateway"].update(enabled=False, ingress={"enabled": True})
    docs = render(values)
    assert not {d["kind"] for d in docs if component(d) == "gateway"}
    secrets = {s["metadata"]["name"] for s in objects(docs, "Secret")}
    assert secrets == {"sd-scale-diffusion-ingest", "sd-scale-diffusion-aws"}
    assert not objects(docs, "Ingress") and not objects(docs, "PodDisruptionBudget")


# --- gateway exposure ------------------------------------------------------------------------------

def test_ingress_routes_browsers_to_the_gateway_http_port_with_tls():
    docs, _, _ = scenario("everything")
    gateway = by_component(docs, "Deployment")["gateway"]
    service = by_component(docs, "Service")["gateway"]
    ingresses = {i["metadata"]["name"]: i for i in objects(docs, "Ingress")}
    http = ingresses[service["metadata"]["name"]]
    assert http["spec"]["ingressClassName"] == "nginx"
    assert http["spec"]["tls"] == [{"hosts": ["play.example.com"], "secretName": "play-tls"}]
    (rule,) = http["spec"]["rules"]
    assert rule["host"] == "play.example.com"
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    (sport,) = [p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"]]
    c = container(gateway)
    http_port = port_of(c, sport["targetPort"])
    assert sport["targetPort"] == "http"
    assert int(env_of(docs, gateway)["SD_GATEWAY_HTTP_PORT"]) == http_port
    assert env_of(docs, gateway)["SD_GATEWAY_HTTP_HOST"] == "0.0.0.0"


def test_grpc_ingress_routes_the_gateway_service_path_to_the_grpc_port():
    docs, _, _ = scenario("everything")
    service = by_component(docs, "Service")["gateway"]
    grpc = {i["metadata"]["name"]: i for i in objects(docs, "Ingress")}[service["metadata"]["name"] + "-grpc"]
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    # The certificate is issued once, through the HTTP Ingress; both use its secret.
    assert "cert-manager.io/cluster-issuer" not in grpc["metadata"]["annotations"]
    assert grpc["spec"]["tls"] == [{"hosts": ["play.example.com"], "secretName": "play-tls"}]
    (path,) = grpc["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/scale_diffusion.gateway.v1.GatewayService"
    assert path["backend"]["service"] == {"name": service["metadata"]["name"], "port": {"name": "grpc"}}


def test_no_ingress_unless_asked():
    docs, _, _ = scenario("defaults")
    assert not objects(docs, "Ingress")


def test_gateway_pdb_selects_gateway_pods_only():
    docs, _, _ = scenario("defaults")
    (pdb,) = objects(docs, "PodDisruptionBudget")
    deployments = by_component(docs, "Deployment")
    selected = [svc for svc, d in deployments.items() if selects(pdb["spec"]["selector"]["matchLabels"], d)]
    assert selected == ["gateway"]


def test_cors_origins_are_comma_separated():
    docs, _, _ = scenario("everything")
    env = env_of(docs, by_component(docs, "Deployment")["gateway"])
    assert env["SD_GATEWAY_CORS_ORIGINS"] == "https://play.example.com,https://beta.example.com"
    assert env["SD_GATEWAY_EXTRA"] == "7"
    assert env["FROM_FIELD"] == {"fieldRef": {"fieldPath": "metadata.name"}}


# --- templates a reader can follow ----------------------------------------------------------------

# Named templates whose output is one scalar (a name, a label value, an address): the only templates whose
# output may be used as a value. Everything else a per-service template hands to a shared one is data
# (maps and lists), never a YAML fragment rendered by one template and pasted by another.
SCALAR_TEMPLATES = {"sd.name", "sd.fullname", "sd.componentName", "sd.grpcTarget", "sd.chart", "sd.image",
                  "sd.serviceAccountName", "sd.envPrefix", "sd.awsSecretName", "sd.hostedDiffusion"}


def test_templates_pass_data_between_them_not_yaml_text():
    used_as_value = set()
    for path in (CHART / "templates").iterdir():
        text = path.read_text()
        used_as_value |= set(re.findall(r'(?:\(|:?= )include "([\w.]+)"', text))
    assert "sd.componentName" in used_as_value  # the scan does see the includes
    assert used_as_value <= SCALAR_TEMPLATES, f"templates used as values: {used_as_value - SCALAR_TEMPLATES}"


# --- network policies -----------------------------------------------------------------------------

def labels_match(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions with In/NotIn/Exists/DoesNotExist)."""
    selector = selector or {}
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        value, present = labels.get(e["key"]), e["key"] in labels
        ok = {"In": present and value in e.get("values", []), "NotIn": not present or value not in e.get("values", []),
              "Exists": present, "DoesNotExist": not present}[e["operator"]]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    namespace_labels: dict[str, str]
    ports: dict[str, int]  # container port name -> number


def peer_matches(peer: dict[str, Any], pod: Pod, policy_namespace: str) -> bool:
    """NetworkPolicy peer semantics: podSelector alone is the policy's namespace; both selectors AND."""
    if "ipBlock" in peer:
        return False  # the pods here have no IPs; ipBlock peers stand for places outside the cluster
    if "namespaceSelector" in peer:
        if not labels_match(peer["namespaceSelector"], pod.namespace_labels):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return labels_match(peer.get("podSelector"), pod.labels)


def port_matches(rule_ports: list[dict[str, Any]] | None, pod: Pod, port: str, protocol: str) -> bool:
    if rule_ports is None:
        return True
    for rp in rule_ports:
        if rp.get("protocol", "TCP") != protocol:
            continue
        if rp.get("port") in (port, pod.ports.get(port)):
            return True
    return False


def allowed(policies, src: Pod, dst: Pod, port: str, protocol: str = "TCP") -> bool:
    """Whether a connection from src to dst's named port gets through, as a NetworkPolicy enforcer decides:
    the destination's Ingress policies and the source's Egress policies, each only if any selects the pod."""
    def rules(pod: Pod, kind: str):
        selecting = [p for p in policies if p["metadata"]["namespace"] == pod.namespace
                     and kind in p["spec"].get("policyTypes", ["Ingress"])
                     and labels_match(p["spec"]["podSelector"], pod.labels)]
        return selecting, [(p["metadata"]["namespace"], r) for p in selecting for r in p["spec"].get(kind.lower(), [])]

    selecting, ingress = rules(dst, "Ingress")
    if selecting and not any(port_matches(r.get("ports"), dst, port, protocol)
                             and ("from" not in r or any(peer_matches(x, src, ns) for x in r["from"]))
                             for ns, r in ingress):
        return False
    selecting, egress = rules(src, "Egress")
    if selecting and not any(port_matches(r.get("ports"), dst, port, protocol)
                             and ("to" not in r or any(peer_matches(x, dst, ns) for x in r["to"]))
                             for ns, r in egress):
        return False
    return True


def release_pods(docs, namespace: str) -> dict[str, Pod]:
    """The pods of every Deployment and Job (the reprocessing run's, when on) of the release."""
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    workloads = {**by_component(docs, "Deployment"), **by_component(docs, "Job")}
    return {svc: Pod(svc, namespace, d["spec"]["template"]["metadata"]["labels"], ns_labels,
                     {p["name"]: p["containerPort"] for p in container(d).get("ports", [])})
            for svc, d in workloads.items()}


def outside_pods(namespace: str) -> dict[str, Pod]:
    return {
        "prometheus": Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"},
                          {"kubernetes.io/metadata.name": "monitoring"}, {}),
        "ingress-controller": Pod("ingress-controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"},
                                  {"kubernetes.io/metadata.name": "ingress-nginx"}, {}),
        # Another workload in the release's own namespace, which must not reach the internal services.
        "neighbour": Pod("neighbour", namespace, {"app": "something-else"},
                         {"kubernetes.io/metadata.name": namespace}, {}),
        "dns": Pod("dns", "kube-system", {"k8s-app": "kube-dns"}, {"kubernetes.io/metadata.name": "kube-system"},
                   {"dns": 53}),
    }


def calls_in_the_code() -> set[tuple[str, str]]:
    """(caller, callee) for every gRPC stub a service's own code opens, found in its sources. Modules that
    are sdctl commands (the `sdctl.commands` entry points) run on an operator's machine, not in a pod."""
    found = set()
    for svc in SERVICES:
        pyproject = (REPO / "services" / svc / "pyproject.toml").read_text()
        cli = set(re.findall(r"= \"sd_\w+\.(\w+):register\"", pyproject))
        for path in (REPO / "services" / svc / "src" / f"sd_{svc}").glob("*.py"):
            if path.stem in cli:
                continue
            for callee in re.findall(r"(\w+)_pb2_grpc\.\w+ServiceStub\(", path.read_text()):
                found.add((svc, callee))
    return found


def calls_in_the_settings(docs, namespace: str) -> set[tuple[str, str]]:
    """(caller, callee) for every *_TARGET setting that names a Service of this release."""
    services = {s["metadata"]["name"]: component(s) for s in objects(docs, "Service")}
    edges = set()
    for svc, d in by_component(docs, "Deployment").items():
        for key, value in env_of(docs, d).items():
            if key.endswith("_TARGET") and isinstance(value, str):
                host = value.removeprefix("dns:///").rsplit(":", 1)[0]
                name, ns, _ = host.split(".")
                assert ns == namespace and name in services, value
                edges.add((svc, services[name]))
    return edges


def test_no_network_policy_unless_asked():
    assert not objects(scenario("defaults")[0], "NetworkPolicy")


@pytest.mark.parametrize("key", ["network-policies", "everything"])
def test_network_policies_admit_exactly_the_calls_the_code_makes(key):
    docs, _, namespace = scenario(key)
    policies = objects(docs, "NetworkPolicy")
    pods = release_pods(docs, namespace)
    assert set(by_component(docs, "NetworkPolicy")) == set(pods)  # one per service
    outside = outside_pods(namespace)
    everyone = {**pods, **outside}
    # The call graph, twice: from the stubs in the code and from the targets the chart sets.
    code_calls = calls_in_the_code()
    assert code_calls == calls_in_the_settings(docs, namespace) == {("gateway", "diffusion"), ("gateway", "ingest"),
                                                                          ("ingest", "processor")}

    admitted = {(s, d, port) for s, src in everyone.items() for d, dst in pods.items() if s != d
                for port in dst.ports if allowed(policies, src, dst, port)}
    want = {(caller, callee, "grpc") for caller, callee in code_calls}
    want |= {("prometheus", svc, "metrics") for svc, pod in pods.items() if "metrics" in pod.ports}
    gateway_public = not SCENARIOS[key][0].get("gateway", {}).get("networkPolicy", {}).get("from")
    gateway_callers = [s for s in everyone if s != "gateway"] if gateway_public else ["ingress-controller"]
    want |= {(s, "gateway", port) for s in gateway_callers for port in ("http", "grpc")}
    assert admitted == want, f"admitted but not wanted: {admitted - want}; wanted but refused: {want - admitted}"


def test_egress_policies_let_pods_reach_dns_their_callees_and_the_store_only():
    docs, _, namespace = scenario("everything")
    policies = objects(docs, "NetworkPolicy")
    assert all(p["spec"]["policyTypes"] == ["Ingress", "Egress"] for p in policies)
    pods = release_pods(docs, namespace)
    dns = outside_pods(namespace)["dns"]
    for svc, pod in pods.items():
        assert allowed(policies, pod, dns, "dns", "UDP") and allowed(policies, pod, dns, "dns", "TCP"), svc
        assert not allowed(policies, pod, outside_pods(namespace)["neighbour"], "grpc"), svc
    # The processor reaches no service of the release; the gateway not the processor; diffusion nothing.
    assert not allowed(policies, pods["processor"], pods["ingest"], "grpc")
    assert not allowed(policies, pods["gateway"], pods["processor"], "grpc")
    # The reprocessing Job's pods work on the catalog's database and call no service of the release.
    assert all(not allowed(policies, pods["reprocess"], pod, port) for svc, pod in pods.items() if svc != "gateway"
               for port in pod.ports)
    # The store and the databases: only the services that use them get the configured destinations.
    external = SCENARIOS["everything"][0]["networkPolicy"]["egress"]["external"]
    by_svc = by_component(docs, "NetworkPolicy")
    for svc, policy in by_svc.items():
        has_external = any(r.get("to") == external for r in policy["spec"]["egress"])
        assert has_external == (svc in (*STORE_SERVICES, "reprocess")), svc


def test_the_policy_check_would_see_an_open_policy():
    """The evaluator above is not blind: a policy admitting everyone on every port is caught."""
    docs, _, namespace = scenario("network-policies")
    policies = copy.deepcopy(objects(docs, "NetworkPolicy"))
    processor = next(p for p in policies if component(p) == "processor")
    processor["spec"]["ingress"].append({})
    pods = release_pods(docs, namespace)
    assert allowed(policies, outside_pods(namespace)["neighbour"], pods["processor"], "grpc")
    assert not allowed(objects(docs, "NetworkPolicy"), outside_pods(namespace)["neighbour"], pods["processor"], "grpc")


# --- secrets and credentials -----------------------------------------------------------------------

def secret_data(docs, name: str) -> dict[str, str]:
    (secret,) = [s for s in objects(docs, "Secret") if s["metadata"]["name"] == name]
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_existing_secrets_are_referenced_and_not_created():
    docs, _, _ = scenario("everything")
    assert not objects(docs, "Secret")
    deployments = by_component(docs, "Deployment")
    gw, ingest = env_of(docs, deployments["gateway"]), env_of(docs, deployments["ingest"])
    assert gw["SD_GATEWAY_TOKEN_SECRET"] == {"secretKeyRef": {"name": "gw-token", "key": "key"}}
    assert gw["SD_GATEWAY_DATABASE_URL"] == {"secretKeyRef": {"name": "gw-db", "key": "url"}}
    assert gw["SD_GATEWAY_MIRAGE_API_KEY"] == {"secretKeyRef": {"name": "decart", "key": "key"}}
    assert ingest["SD_INGEST_DATABASE_URL"] == {"secretKeyRef": {"name": "ingest-db", "key": "database-url"}}


def test_secrets_given_as_values_are_stored_in_chart_secrets_and_referenced():
    docs, _, _ = scenario("secrets-as-values")
    deployments = by_component(docs, "Deployment")
    for svc, var, value_key in [
        ("gateway", "SD_GATEWAY_TOKEN_SECRET", ("gateway", "tokenSecret", "value")),
        ("gateway", "SD_GATEWAY_DATABASE_URL", ("gateway", "database", "url")),
        ("gateway", "SD_GATEWAY_MIRAGE_API_KEY", ("gateway", "hostedDiffusion", "apiKey", "value")),
        ("ingest", "SD_INGEST_DATABASE_URL", ("ingest", "database", "url")),
        ("processor", "AWS_SECRET_ACCESS_KEY", ("aws", "secretAccessKey")),
    ]:
        ref = env_of(docs, deployments[svc])[var]["secretKeyRef"]
        want: Any = SECRETS_AS_VALUES
        for part in value_key:
            want = want[part]
        assert secret_data(docs, ref["name"])[ref["key"]] == want, var


def test_hosted_diffusion_is_off_by_default_and_on_needs_a_key():
    plain = scenario("defaults")[0]
    defaults = env_of(plain, by_component(plain, "Deployment")["gateway"])
    assert not any(k.startswith("SD_GATEWAY_MIRAGE") or k == "SD_GATEWAY_HOSTED_DIFFUSION" for k in defaults)
    unquoted = render({"gateway": {"hostedDiffusion": {"provider": False}}})  # YAML's `provider: off`
    assert "SD_GATEWAY_HOSTED_DIFFUSION" not in env_of(unquoted, by_component(unquoted, "Deployment")["gateway"])
    with pytest.raises(helm.HelmRenderError, match="hostedDiffusion.apiKey"):
        render({"gateway": {"hostedDiffusion": {"provider": "mirage"}}})
    docs, _, _ = scenario("secrets-as-values")
    gw = env_of(docs, by_component(docs, "Deployment")["gateway"])
    assert (gw["SD_GATEWAY_HOSTED_DIFFUSION"], gw["SD_GATEWAY_MIRAGE_MODEL"], gw["SD_GATEWAY_MIRAGE_REALTIME_URL"]) == (
        "mirage", "mirage_v2", "wss://api3.decart.ai/v1/stream")
    assert not any("dk-example-key" in str(cm["data"]) for cm in objects(docs, "ConfigMap"))  # only in the Secret


def test_a_token_secret_too_short_for_the_gateway_is_refused():
    with pytest.raises(helm.HelmRenderError, match="at least 32 bytes"):
        render({"gateway": {"tokenSecret": {"value": "sign-me"}}})


def test_without_a_token_secret_one_is_generated():
    docs, name, _ = scenario("defaults")
    gw = env_of(docs, by_component(docs, "Deployment")["gateway"])
    ref = gw["SD_GATEWAY_TOKEN_SECRET"]["secretKeyRef"]
    assert len(secret_data(docs, ref["name"])[ref["key"]]) >= 32
    assert "SD_GATEWAY_DATABASE_URL" not in gw
    assert not any(k.startswith("AWS_") for k in gw)


def test_irsa_role_is_annotated_on_the_account_every_pod_uses():
    docs, _, _ = scenario("everything")
    (account,) = objects(docs, "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/sd")
    for d in objects(docs, "Deployment"):
        assert pod_spec(d)["serviceAccountName"] == account["metadata"]["name"]
        assert pod_spec(d)["automountServiceAccountToken"] is False
        assert pod_spec(d)["imagePullSecrets"] == [{"name": "regcred"}]
        assert container(d)["image"].startswith("registry.example.com/sd/scale-diffusion/")
        assert container(d)["image"].endswith(":1.2.3")


# --- monitoring ------------------------------------------------------------------------------------

def test_podmonitor_is_off_by_default_and_scrapes_every_pod_when_on():
    assert not [d for d in scenario("defaults")[0] if d["kind"] == "PodMonitor"]
    docs, _, _ = scenario("everything")
    (pm,) = objects(docs, "PodMonitor")
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = pm["spec"]["selector"]["matchLabels"]
    deployments = by_component(docs, "Deployment")
    for svc, d in deployments.items():
        assert selects(selector, d), svc
        for endpoint in pm["spec"]["podMetricsEndpoints"]:
            port_of(container(d), endpoint["port"])


def test_podmonitor_schema_rejects_a_misspelt_field():
    docs, _, _ = scenario("everything")
    (pm,) = copy.deepcopy(objects(docs, "PodMonitor"))
    pm["spec"]["podMetricsEndpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(pm, PODMONITOR_SCHEMA)


# --- names and namespaces --------------------------------------------------------------------------

def test_release_name_and_namespace_are_used_throughout():
    docs, name, namespace = scenario("custom-release")
    for d in docs:
        meta = d["metadata"]
        assert meta["namespace"] == namespace, f"{d['kind']}/{meta['name']}"
        # A release name that already contains the chart name is not repeated.
        assert meta["name"].startswith(name) and "scale-diffusion-scale-diffusion" not in meta["name"]
        assert meta["labels"]["app.kubernetes.io/instance"] == name
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert len(meta["name"]) <= 63


def test_long_release_names_still_give_valid_service_names():
    docs = render({}, name="a-very-long-release-name-for-the-scale-diffusion-system-x", namespace="ns")
    for svc in objects(docs, "Service"):
        kubernetes_validate.validate(svc, RECENT_KUBERNETES, strict=True)
        assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", svc["metadata"]["name"])
    assert len({s["metadata"]["name"] for s in objects(docs, "Service")}) == len(SERVICES)


# --- the rendered settings, given to the real services ---------------------------------------------

def pod_environment(docs, deployment) -> dict[str, str]:
    """The container's environment with every secretKeyRef resolved from the Secrets the chart renders."""
    secrets = {s["metadata"]["name"]: s for s in objects(docs, "Secret")}
    env: dict[str, str] = {}
    for key, value in env_of(docs, deployment).items():
        if isinstance(value, str):
            env[key] = value
        elif "secretKeyRef" in value:
            ref = value["secretKeyRef"]
            assert ref["name"] in secrets, f"{key} reads Secret {ref['name']}, which the chart does not render"
            env[key] = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
    return env


def start_pod_process(svc: str, env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen, int, int]:
    """Starts ``python -m sd_<svc>`` with a pod's environment, only its ports moved to free loopback ones
    (six pods' 50051 cannot share one host); returns (process, grpc port, http port or 0)."""
    p = f"SD_{svc.upper()}_"
    grpc_port, http_port = free_port(), free_port() if svc == "gateway" else 0
    env = {**env, p + "GRPC_PORT": str(grpc_port), p + "METRICS_PORT": str(free_port()),
           # Nothing here answers for S3; a closed local port fails fast instead of timing out.
           "SD_STORE_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    if http_port:
        env[p + "HTTP_PORT"] = str(http_port)
    proc = subprocess.Popen([sys.executable, "-m", f"sd_{svc}"], cwd=cwd, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, grpc_port, http_port


def wait_serving(svc: str, proc: subprocess.Popen, port: int, timeout_s: float = 60) -> None:
    """Waits for the gRPC health service to answer SERVING, as the readiness probe does."""
    deadline, status = time.monotonic() + timeout_s, None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while status is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
            except grpc.RpcError:
                time.sleep(0.2)
    output = proc.stdout.read() if proc.poll() is not None else ""
    assert status == health_pb2.HealthCheckResponse.SERVING, f"{svc} did not answer health:\n{output}"


def stop_all(running) -> None:
    for proc in running:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_each_service_starts_with_its_pod_settings_and_stops_within_the_grace_period(tmp_path):
    """What the kubelet would see: each service started with its pod's environment (ConfigMap and
    Secrets as rendered; only the ports moved, since six pods' 50051 cannot share loopback) answers the
    gRPC health probe SERVING, and exits cleanly on SIGTERM before terminationGracePeriodSeconds."""
    docs, _, _ = scenario("secrets-as-values")
    running = {}
    for svc, d in by_component(docs, "Deployment").items():
        env = pod_environment(docs, d)
        p = f"SD_{svc.upper()}_"
        # The databases named in the values do not exist here (the next test runs a real PostgreSQL).
        if svc == "gateway":
            env |= {p + "STATE_DIR": str(tmp_path / "gateway"), p + "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}"}
        if svc == "ingest":
            env[p + "DATABASE_URL"] = f"sqlite:///{tmp_path / 'ingest.db'}"
        proc, grpc_port, _ = start_pod_process(svc, env, tmp_path)
        running[svc] = (proc, grpc_port, pod_spec(d)["terminationGracePeriodSeconds"])
    try:
        for svc, (proc, port, _) in running.items():
            wait_serving(svc, proc, port)
        for svc, (proc, _, grace_s) in running.items():
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            out, _ = proc.communicate(timeout=grace_s)
            assert proc.returncode == 0, f"{svc} exited {proc.returncode} on SIGTERM:\n{out[-2000:]}"
            assert time.monotonic() - started < grace_s
    finally:
        stop_all(proc for proc, _, _ in running.values())


@pytest.mark.parametrize("driver", ["postgresql+psycopg", "postgresql"])
def test_gateway_and_ingest_keep_their_records_in_postgresql_with_the_rendered_settings(tmp_path, driver):
    """The database URLs go through the chart as an operator gives them (values → the chart's Secrets →
    secretKeyRef), and the real services, started with exactly that environment, keep their records in a
    real PostgreSQL: their tables are created there and a player created over HTTP is a row there, with
    no SQLite fallback written to the pods' /tmp."""
    with start_postgres() as pg:
        urls = {svc: pg.new_database().replace("postgresql+psycopg://", f"{driver}://", 1)
                for svc in ("gateway", "ingest")}
        docs = render({svc: {"database": {"url": url}} for svc, url in urls.items()})
        deployments = by_component(docs, "Deployment")
        running = []
        try:
            ports = {}
            for svc in ("gateway", "ingest"):
                env = pod_environment(docs, deployments[svc])
                assert env[f"SD_{svc.upper()}_DATABASE_URL"] == urls[svc]
                # The pod's /tmp (the gateway's fallback state dir) is this test's own folder.
                env = {k: v.replace("/tmp/", f"{tmp_path}/") if k.endswith("_STATE_DIR") else v for k, v in env.items()}
                proc, grpc_port, http_port = start_pod_process(svc, env, tmp_path)
                running.append(proc)
                wait_serving(svc, proc, grpc_port)
                ports[svc] = http_port
            made = httpx.post(f"http://127.0.0.1:{ports['gateway']}/v1/players", json={"client_build": "chart-pg"},
                              timeout=30)
            assert made.status_code == 201, made.text
            player_id = made.json()["player_id"]

            def tables(url: str) -> set[str]:
                libpq = url.replace(f"{driver}://", "postgresql://", 1)
                with psycopg.connect(libpq) as conn:
                    rows = conn.execute("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_schema = 'public'").fetchall()
                    return {r[0] for r in rows}

            assert {"players", "sessions"} <= tables(urls["gateway"])
            assert {"catalog_sessions", "catalog_objects", "catalog_datasets"} <= tables(urls["ingest"])
            with psycopg.connect(urls["gateway"].replace(f"{driver}://", "postgresql://", 1)) as conn:
                assert conn.execute("SELECT player_id FROM players").fetchall() == [(player_id,)]
            assert not list(tmp_path.rglob("*.db")), "a service fell back to SQLite"
        finally:
            stop_all(running)


# --- the operator ------------------------------------------------------------------------------------

def test_the_operator_is_off_by_default_and_the_trainer_keeps_its_subprocess_launcher():
    docs, _, _ = scenario("defaults")
    assert "operator" not in by_component(docs, "Deployment")
    assert not objects(docs, "Role") and not objects(docs, "RoleBinding")
    assert "SD_TRAINER_LAUNCHER" not in env_of(docs, by_component(docs, "Deployment")["trainer"])


def test_the_operator_runs_once_with_its_own_account_and_settings_the_real_settings_class_reads():
    from sd_operator.settings import OperatorSettings

    docs, _, namespace = scenario("operator")
    dep = by_component(docs, "Deployment")["operator"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = pod_spec(dep)
    assert pod["serviceAccountName"] == "sd-scale-diffusion-operator" and pod["automountServiceAccountToken"] is True
    accounts = {sa["metadata"]["name"]: sa for sa in objects(docs, "ServiceAccount")}
    assert pod["serviceAccountName"] in accounts
    env = env_of(docs, dep)
    settings = OperatorSettings.model_validate(
        {k.removeprefix("SD_OPERATOR_").lower(): v for k, v in env.items() if k.startswith("SD_OPERATOR_")})
    assert settings.namespace_list() == [namespace]
    assert settings.trainer_image == "scale-diffusion/trainer:0.1.0"
    configmaps = {cm["metadata"]["name"] for cm in objects(docs, "ConfigMap")}
    assert settings.trainer_config_map in configmaps and settings.evaluator_config_map in configmaps
    assert settings.job_service_account in accounts
    assert (settings.aws_secret, settings.aws_access_key_id_key, settings.aws_secret_access_key_key) == \
        ("aws-keys", "id", "secret")
    assert settings.pull_secrets() == ["regcred"]


def _allowed(role, group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in role["rules"])


def test_rbac_gives_the_operator_and_the_trainer_exactly_what_they_call():
    docs, _, namespace = scenario("operator")
    roles = {r["metadata"]["name"]: r for r in objects(docs, "Role")}
    bindings = {b["roleRef"]["name"]: b for b in objects(docs, "RoleBinding")}
    op, tr = roles["sd-scale-diffusion-operator"], roles["sd-scale-diffusion-trainer"]
    g = "scalediffusion.io"
    for res in ("datasetversions", "trainingruns", "evaluations"):
        assert all(_allowed(op, g, res, v) for v in ("get", "list", "watch", "create", "patch"))
        assert _allowed(op, g, f"{res}/status", "patch")
    assert all(_allowed(op, "batch", "jobs", v) for v in ("watch", "create", "delete"))
    assert all(_allowed(op, "", "pods", v) for v in ("get", "list", "watch"))
    assert not any(_allowed(op, "", "pods", v) for v in ("create", "delete", "patch")), "pods are read only"
    assert _allowed(op, "", "services", "create") and _allowed(op, "", "events", "create")
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in op["rules"] + tr["rules"])
    assert all(_allowed(tr, g, "trainingruns", v) for v in ("create", "get", "list", "patch"))
    assert not _allowed(tr, "batch", "jobs", "create")
    for role in (op, tr):
        (subject,) = bindings[role["metadata"]["name"]]["subjects"]
        assert subject["name"] == role["metadata"]["name"] and subject["namespace"] == namespace
    trainer = by_component(docs, "Deployment")["trainer"]
    assert pod_spec(trainer)["serviceAccountName"] == "sd-scale-diffusion-trainer"
    env = env_of(docs, trainer)
    assert env["SD_TRAINER_LAUNCHER"] == "kubernetes" and env["SD_TRAINER_NAMESPACE"] == namespace
    assert env["SD_STORE_BUCKET"], "training Jobs read dataset versions from the store"


def test_with_the_operator_the_evaluator_creates_evaluations_and_nothing_else():
    from sd_evaluator.settings import EvaluatorSettings

    docs, _, namespace = scenario("operator")
    roles = {r["metadata"]["name"]: r for r in objects(docs, "Role")}
    bindings = {b["roleRef"]["name"]: b for b in objects(docs, "RoleBinding")}
    ev = roles["sd-scale-diffusion-evaluator"]
    assert all(_allowed(ev, "scalediffusion.io", "evaluations", v) for v in ("create", "get", "list", "patch"))
    assert not _allowed(ev, "scalediffusion.io", "trainingruns", "create")
    assert not _allowed(ev, "scalediffusion.io", "evaluations/status", "patch"), "the operator writes the status"
    assert not _allowed(ev, "batch", "jobs", "create") and not any("*" in r["verbs"] for r in ev["rules"])
    (subject,) = bindings["sd-scale-diffusion-evaluator"]["subjects"]
    assert subject["name"] == "sd-scale-diffusion-evaluator" and subject["namespace"] == namespace
    dep = by_component(docs, "Deployment")["evaluator"]
    assert pod_spec(dep)["serviceAccountName"] == "sd-scale-diffusion-evaluator"
    env = env_of(docs, dep)
    settings = EvaluatorSettings.model_validate(
        {k.removeprefix("SD_EVALUATOR_").lower(): v for k, v in env.items() if k.startswith("SD_EVALUATOR_")})
    assert (settings.launcher, settings.namespace) == ("kubernetes", namespace)
    assert env["SD_STORE_BUCKET"], "the API reads a running evaluation's progress.json from the store"
    defaults, _, _ = scenario("defaults")
    assert "SD_EVALUATOR_LAUNCHER" not in env_of(defaults, by_component(defaults, "Deployment")["evaluator"])


def test_the_crds_shipped_with_the_chart_are_valid_kubernetes():
    crds = sorted((CHART / "crds").glob("*.yaml"))
    assert [p.stem for p in crds] == ["datasetversions", "evaluations", "trainingruns"]
    for path in crds:
        kubernetes_validate.validate(yaml.safe_load(path.read_text()), RECENT_KUBERNETES, strict=True)


def test_ingest_announces_dataset_versions_under_its_own_account_when_asked():
    from sd_ingest.settings import IngestSettings
    from sd_ingest.version_resources import parse_policy

    docs, _, namespace = scenario("operator")
    ingest = by_component(docs, "Deployment")["ingest"]
    assert pod_spec(ingest)["serviceAccountName"] == "sd-scale-diffusion-ingest"
    assert pod_spec(ingest)["automountServiceAccountToken"] is True
    env = {k: v for k, v in env_of(docs, ingest).items() if k.startswith("SD_INGEST_") and isinstance(v, str)}
    settings = IngestSettings.model_validate({k.removeprefix("SD_INGEST_").lower(): v for k, v in env.items()})
    assert settings.dataset_version_resources and settings.dataset_version_namespace == namespace
    assert parse_policy(settings.dataset_version_policy) == {"train": {"enabled": True}}
    role = {r["metadata"]["name"]: r for r in objects(docs, "Role")}["sd-scale-diffusion-ingest"]
    assert role["rules"] == [{"apiGroups": ["scalediffusion.io"], "resources": ["datasetversions"],
                              "verbs": ["create", "get"]}]
    defaults, _, _ = scenario("defaults")
    assert "SD_INGEST_DATASET_VERSION_RESOURCES" not in env_of(defaults, by_component(defaults, "Deployment")["ingest"])


def test_diffusion_settings_come_from_values_and_parse_as_the_service_reads_them(monkeypatch):
    from sd_diffusion.settings import DiffusionSettings

    ice = [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "c"}]
    for values, want in (({}, ("look", 2, [])), ({"diffusion": {"maxStreams": 3, "iceServers": ice}}, ("look", 3, ice))):
        docs = render(values)
        env = {k: v for k, v in env_of(docs, by_component(docs, "Deployment")["diffusion"]).items()
               if k.startswith("SD_DIFFUSION_") and isinstance(v, str)}
        for k, v in env.items():  # the pod's environment, read as the service reads it
            monkeypatch.setenv(k, v)
        settings = DiffusionSettings()
        got = (settings.backend, settings.max_streams, [s.model_dump(exclude_none=True) for s in settings.ice_servers])
        assert got == want


def test_turn_comes_to_the_gateway_and_the_pods_with_its_secret_from_a_secret(monkeypatch):
    from sd_diffusion.settings import DiffusionSettings
    from sd_gateway.settings import GatewaySettings

    stun = [{"urls": ["stun:stun.example.org:3478"]}]
    turn = {"urls": ["turn:turn.example.org:3478", "turns:turn.example.org:5349"], "existingSecret": "coturn",
            "ttlSeconds": 900}
    docs = render({"diffusion": {"iceServers": stun, "turn": turn}})
    deployments = by_component(docs, "Deployment")
    for svc, prefix, cls in (("gateway", "SD_GATEWAY_", GatewaySettings), ("diffusion", "SD_DIFFUSION_", DiffusionSettings)):
        env = env_of(docs, deployments[svc])
        assert env[f"{prefix}TURN_SECRET"] == {"secretKeyRef": {"name": "coturn", "key": "turn-secret"}}, svc
        with monkeypatch.context() as m:
            for k, v in env.items():
                if k.startswith(prefix) and isinstance(v, str):
                    m.setenv(k, v)
            m.setenv(f"{prefix}TURN_SECRET", "from-the-secret")
            settings = cls()
        assert settings.turn_urls == turn["urls"] and settings.turn_ttl_s == 900
        ice = settings.diffusion_ice_servers if svc == "gateway" else settings.ice_servers
        assert [s.model_dump(exclude_none=True) for s in ice] == stun
    # the chart makes no Secret of its own for it: the value never passes through values or the release
    assert not [d for d in objects(docs, "Secret") if "turn-secret" in (d.get("data") or {})]
    defaults = render({})
    for svc in ("gateway", "diffusion"):
        assert not [k for k in env_of(defaults, by_component(defaults, "Deployment")[svc]) if "TURN" in k]
    with pytest.raises(Exception, match="diffusion.turn.existingSecret is required"):
        render({"diffusion": {"turn": {"urls": ["turn:x:3478"]}}})


@pytest.mark.parametrize("gateway_values, store", [
    ({}, "memory"),                                                      # no database: per replica
    ({"database": {"existingSecret": "gw-db"}}, "database"),             # shared through the database
    ({"database": {"url": "postgresql://gw@db/gw"}}, "database"),
    ({"database": {"url": "postgresql://gw@db/gw"}, "rateLimitStore": "memory"}, "memory"),
])
def test_gateway_replicas_share_rate_limits_when_they_share_a_database(gateway_values, store):
    docs = render({"gateway": gateway_values})
    assert env_of(docs, by_component(docs, "Deployment")["gateway"])["SD_GATEWAY_RATE_LIMIT_STORE"] == store


def test_the_ingest_checks_wallet_links_against_the_gateways_sign_in_fields():
    siws = {"domain": "play.example.com", "uri": "https://play.example.com", "chainId": "mainnet"}
    for values, want in (({}, None), ({"gateway": {"siws": siws}}, siws)):
        docs = render(values)
        deployments = by_component(docs, "Deployment")
        gateway, ingest = (env_of(docs, deployments[svc]) for svc in ("gateway", "ingest"))
        for field in ("DOMAIN", "URI", "CHAIN_ID"):
            assert ingest.get(f"SD_INGEST_SIWS_{field}") == gateway.get(f"SD_GATEWAY_SIWS_{field}")
        if want is not None:
            assert ingest["SD_INGEST_SIWS_DOMAIN"] == "play.example.com" and ingest["SD_INGEST_SIWS_CHAIN_ID"] == "mainnet"


def test_an_unknown_rate_limit_store_is_refused():
    with pytest.raises(helm.HelmRenderError, match="rateLimitStore must be auto, memory or database"):
        render({"gateway": {"rateLimitStore": "redis"}})


@pytest.mark.parametrize("values, slots, concurrency", [
    ({}, 1, 2),
    ({"processor": {"replicas": 4, "maxConcurrentSessions": 2}}, 2, 8),
    ({"processor": {"replicas": 4}, "ingest": {"concurrency": 3}}, 1, 3),
])
def test_the_ingest_gives_each_processor_pod_the_slots_it_processes_at_once(values, slots, concurrency):
    docs = render(values)
    deployments = by_component(docs, "Deployment")
    ingest, processor = env_of(docs, deployments["ingest"]), env_of(docs, deployments["processor"])
    assert processor["SD_PROCESSOR_MAX_CONCURRENT_SESSIONS"] == str(slots)
    assert ingest["SD_INGEST_PROCESSOR_SLOTS_PER_POD"] == str(slots)
    assert ingest["SD_INGEST_CONCURRENCY"] == str(concurrency)


# --- processor autoscaling (KEDA) --------------------------------------------------------------------

AUTOSCALING = {"processor": {"replicas": 3, "maxConcurrentSessions": 2, "autoscaling": {
    "enabled": True, "minReplicas": 2, "maxReplicas": 12,
    "prometheus": {"serverAddress": "http://prometheus.monitoring.svc:9090"}}}}


def test_with_autoscaling_a_scaled_object_owns_the_processor_replicas():
    docs = render(AUTOSCALING, namespace="sd-prod")
    (scaled,) = objects(docs, "ScaledObject")
    processor = by_component(docs, "Deployment")["processor"]
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": processor["metadata"]["name"]}
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (2, 12)
    assert "replicas" not in processor["spec"]  # KEDA's HPA sets it; a rendered one would fight it
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    # the metric the ingest exports, read once (every ingest replica reports the same catalog count)
    assert trigger["metadata"]["query"] == 'max(sd_ingest_dispatch_backlog{namespace="sd-prod"})'
    assert trigger["metadata"]["threshold"] == "2"  # one pod per maxConcurrentSessions sessions
    # the ingest may keep every slot of the largest pool busy
    assert env_of(docs, by_component(docs, "Deployment")["ingest"])["SD_INGEST_CONCURRENCY"] == "24"
    # a scale-down stops a pod only after its session: the grace covers the processor's drain
    grace = pod_spec(processor)["terminationGracePeriodSeconds"]
    assert grace > int(env_of(docs, processor)["SD_PROCESSOR_SHUTDOWN_GRACE_S"])
    assert keda_errors([scaled]) == [("ScaledObject", None)]


def test_the_keda_schema_check_refuses_a_broken_scaled_object():
    (scaled,) = objects(render(AUTOSCALING), "ScaledObject")
    broken = copy.deepcopy(scaled)
    del broken["spec"]["scaleTargetRef"]["name"]
    broken["spec"]["triggers"] = "prometheus"
    ((_, error),) = keda_errors([broken])
    assert error and "scaleTargetRef" in error and "triggers" in error, error


def test_without_autoscaling_nothing_keda_is_rendered():
    docs = render({"processor": {"replicas": 3}})
    assert not [d for d in docs if d["apiVersion"].startswith("keda.sh/")]
    assert "keda" not in "".join(render_files({"processor": {"replicas": 3}}).values()).lower()
    assert by_component(docs, "Deployment")["processor"]["spec"]["replicas"] == 3


@pytest.mark.parametrize("autoscaling, message", [
    ({"enabled": True}, "prometheus.serverAddress is required"),
    ({"enabled": True, "minReplicas": 5, "maxReplicas": 2,
      "prometheus": {"serverAddress": "http://p:9090"}}, "minReplicas .5. is above maxReplicas .2."),
])
def test_autoscaling_settings_that_cannot_work_are_refused(autoscaling, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        render({"processor": {"autoscaling": autoscaling}})


# --- reprocessing the corpus (ingest.reprocess) ----------------------------------------------------

def test_no_reprocessing_job_unless_asked():
    assert not objects(scenario("defaults")[0], "Job")


def test_the_reprocessing_job_gives_each_completion_index_its_shard_and_the_catalogs_database():
    docs, _, _ = scenario("everything")
    (job,) = objects(docs, "Job")
    spec, c = job["spec"], container(job)
    assert job["metadata"]["name"] == "sd-scale-diffusion-reprocess-crop-fix-2026-12"
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["activeDeadlineSeconds"]) == (
        "Indexed", 8, 3, 86400)
    assert pod_spec(job)["restartPolicy"] == "Never" and pod_spec(job)["automountServiceAccountToken"] is False
    assert c["image"] == "registry.example.com/sd/scale-diffusion/ingest:1.2.3"  # the ingest's image
    assert c["command"] == ["sdctl"] and c["args"][:3] == ["catalog", "reprocess", "--verbose"]
    assert list(zip(c["args"][3::2], c["args"][4::2])) == [
        ("--shard", "$(JOB_COMPLETION_INDEX)"), ("--shards", "8"), ("--run-id", "crop-fix-2026-12"),
        ("--window", "4"), ("--log-format", "json"), ("--state", "PROCESSED"), ("--state", "FAILED"),
        ("--processor-version", "1.2.2"), ("--since", "2026-11-01T00:00:00Z")]
    ingest = by_component(docs, "Deployment")["ingest"]
    assert env_of(docs, job) == {"SD_INGEST_DATABASE_URL": env_of(docs, ingest)["SD_INGEST_DATABASE_URL"]}
    # No Service of the release sends calls to the Job's pods.
    assert not [s for s in objects(docs, "Service") if selects(s["spec"]["selector"], job)]
    # The processor names its image tag in what it writes, which the catalog records per session.
    assert env_of(docs, by_component(docs, "Deployment")["processor"])["SD_PROCESSOR_VERSION"] == "1.2.3"


@pytest.mark.parametrize("reprocess, message", [
    ({"enabled": True}, "runId .. must be lowercase letters"),
    ({"enabled": True, "runId": "Fix_Crop"}, "runId .Fix_Crop. must be"),
    ({"enabled": True, "runId": "x" * 60}, "longer than 63 characters"),
])
def test_a_reprocessing_job_without_a_usable_run_id_is_refused(reprocess, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        render({"ingest": {"database": {"existingSecret": "db"}, "reprocess": reprocess}})


def test_a_reprocessing_job_without_a_catalog_database_is_refused():
    with pytest.raises(helm.HelmRenderError, match="needs ingest.database"):
        render({"ingest": {"reprocess": {"enabled": True, "runId": "again"}}})


def test_the_rendered_reprocessing_command_runs_its_shard(tmp_path):
    """The Job's command as the kubelet runs it (index 2 of 3, the database URL from the chart's Secret)
    selects exactly the sessions of shard 2: a dry run, on a real catalog with PROCESSED sessions."""
    from sd_ingest.catalog import Catalog
    from sd_ingest.reprocessing import shard_of
    from sqlalchemy import create_engine, text

    docs, _, _ = scenario("secrets-as-values")
    (job,) = objects(docs, "Job")
    env = pod_environment(docs, job)
    assert env == {"SD_INGEST_DATABASE_URL": SECRETS_AS_VALUES["ingest"]["database"]["url"]}
    url = f"sqlite:///{tmp_path / 'catalog.db'}"  # the URL in the values names no server that runs here
    catalog = Catalog(url)
    ids = [f"sess-{i}" for i in range(12)]
    for sid in ids:
        catalog.record_object(key=f"raw/{sid}/manifest.json", session_id=sid, raw_prefix=f"raw/{sid}/",
                              size_bytes=1, etag="e", sequencer=None)
    catalog.close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE catalog_sessions SET state = 'PROCESSED'"))
    engine.dispose()
    c = container(job)
    args = [a.replace("$(JOB_COMPLETION_INDEX)", "2") for a in c["args"]]
    assert c["command"] == ["sdctl"]  # sdctl's entry point is sd_common.cli.main:main
    run = subprocess.run([sys.executable, "-m", "sd_common.cli.main", *args, "--dry-run", "--json"],
                         env={**os.environ, "SD_INGEST_DATABASE_URL": url, "JOB_COMPLETION_INDEX": "2"},
                         capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    (report,) = json.loads(run.stdout)["shards"]
    assert (report["shard"], report["shards"], report["run_id"]) == (2, 3, "all-again")
    assert report["session_ids"] == sorted(sid for sid in ids if shard_of(sid, 3) == 2) != []
