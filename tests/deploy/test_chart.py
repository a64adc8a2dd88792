"""The Helm chart, rendered offline and checked the way an operator would read it.

There is no Kubernetes API server here: manifests are rendered with Helm's own engine (helm-python-sdk),
validated against the Kubernetes OpenAPI schemas in strict mode (kubernetes-validate), and the
PodMonitor against a schema written below for the fields the chart uses. What only a live cluster would
show (scheduling on H100 nodes, probes against running pods, IRSA, Ingress controllers) is listed in
docs/operations.md.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import signal
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
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
    "gateway": {
        "replicas": 3,
        "corsOrigins": ["https://play.example.com", "https://beta.example.com"],
        "tokenSecret": {"existingSecret": "gw-token", "existingSecretKey": "key"},
        "database": {"existingSecret": "gw-db", "existingSecretKey": "url"},
        "env": {"SD_GATEWAY_EXTRA": 7},
        "extraEnv": [{"name": "FROM_FIELD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "podAnnotations": {"team": "play"},
        "ingress": {
            "enabled": True, "className": "nginx", "host": "play.example.com",
            "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
            "tls": {"enabled": True, "secretName": "play-tls"},
            "grpc": {"enabled": True},
        },
    },
    "ingest": {"database": {"existingSecret": "ingest-db"}},
    "diffusion": {
        "replicas": 2,
        # Helm merges maps with the defaults: null removes the default label.
        "nodeSelector": {"nvidia.com/gpu.product": None, "pool": "h100"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        "model": {"dir": "/weights", "volume": {"type": "hostPath", "hostPath": "/srv/weights"}},
    },
    "trainer": {"gpu": {"count": 1}},
}
SECRETS_AS_VALUES: dict[str, Any] = {
    "aws": {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "s3cr3t"},
    "gateway": {"tokenSecret": {"value": "a-device-token-signing-key-of-40-bytes!!"},
                "database": {"url": "postgresql+psycopg://gw:pw@db:5432/gateway"}},
    "ingest": {"database": {"url": "postgresql+psycopg://in:pw@db:5432/ingest"}},
}
SCENARIOS: dict[str, tuple[dict[str, Any], str, str]] = {
    # name: (values, release name, namespace)
    "defaults": ({}, "sd", "default"),
    "everything": (EVERYTHING, "sd", "default"),
    "secrets-as-values": (SECRETS_AS_VALUES, "sd", "default"),
    "no-trainer-evaluator": (
        {"trainer": {"enabled": False}, "evaluator": {"enabled": False}}, "sd", "default"),
    "custom-release": ({}, "scale-diffusion-prod", "sd-prod"),
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

def render_files(values: dict[str, Any], name: str = "sd", namespace: str = "default") -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would print it."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(copy.deepcopy(values), name=name, namespace=namespace)


def render(values: dict[str, Any], name: str = "sd", namespace: str = "default") -> list[dict[str, Any]]:
    """Every object the chart renders, in template order."""
    docs = []
    for path, text in sorted(render_files(values, name, namespace).items()):
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
    report = helm.lint(CHART, copy.deepcopy(SCENARIOS[key][0]), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("key", list(SCENARIOS))
@pytest.mark.parametrize("version", [RECENT_KUBERNETES, oldest_supported_kubernetes()])
def test_every_manifest_is_valid_kubernetes(key, version):
    docs, _, _ = scenario(key)
    assert docs
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
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
    for kind in ("Deployment", "Service", "ConfigMap"):
        assert set(by_component(docs, kind)) == expected, kind


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
    assert "SD_STORE_ENDPOINT_URL" not in env and "SD_STORE_QUEUE_URL" not in env
    assert env["SD_STORE_BACKEND"] == "s3"


@pytest.mark.parametrize("key", ["defaults", "custom-release"])
def test_gateway_and_ingest_are_pointed_at_this_releases_services(key):
    docs, _, namespace = scenario(key)
    services = {s["metadata"]["name"]: s for s in objects(docs, "Service")}
    deployments = by_component(docs, "Deployment")
    for svc, var, target_svc in [("gateway", "SD_GATEWAY_DIFFUSION_TARGET", "diffusion"),
                                 ("ingest", "SD_INGEST_PROCESSOR_TARGET", "processor")]:
        host, port = env_of(docs, deployments[svc])[var].rsplit(":", 1)
        name, ns, suffix = host.split(".")
        assert (ns, suffix) == (namespace, "svc")
        assert component(services[name]) == target_svc
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
    docs = render({svc: {"enabled": False}})
    assert not [f"{d['kind']}/{d['metadata']['name']}" for d in docs if component(d) == svc]
    others = set(SERVICES) - {svc}
    assert set(by_component(docs, "Deployment")) == others
    if svc == "diffusion":
        gateway = by_component(docs, "Deployment")["gateway"]
        assert "SD_GATEWAY_DIFFUSION_TARGET" not in env_of(docs, gateway)


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
    assert ingest["SD_INGEST_DATABASE_URL"] == {"secretKeyRef": {"name": "ingest-db", "key": "database-url"}}


def test_secrets_given_as_values_are_stored_in_chart_secrets_and_referenced():
    docs, _, _ = scenario("secrets-as-values")
    deployments = by_component(docs, "Deployment")
    for svc, var, value_key in [
        ("gateway", "SD_GATEWAY_TOKEN_SECRET", ("gateway", "tokenSecret", "value")),
        ("gateway", "SD_GATEWAY_DATABASE_URL", ("gateway", "database", "url")),
        ("ingest", "SD_INGEST_DATABASE_URL", ("ingest", "database", "url")),
        ("processor", "AWS_SECRET_ACCESS_KEY", ("aws", "secretAccessKey")),
    ]:
        ref = env_of(docs, deployments[svc])[var]["secretKeyRef"]
        want: Any = SECRETS_AS_VALUES
        for part in value_key:
            want = want[part]
        assert secret_data(docs, ref["name"])[ref["key"]] == want, var


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

def test_each_service_starts_with_its_pod_settings_and_stops_within_the_grace_period(tmp_path):
    """What the kubelet would see: each service started with its pod's environment (ConfigMap and
    Secrets as rendered; only the ports moved, since six pods' 50051 cannot share loopback) answers the
    gRPC health probe SERVING, and exits cleanly on SIGTERM before terminationGracePeriodSeconds."""
    docs, _, _ = scenario("secrets-as-values")
    secrets = {s["metadata"]["name"]: s for s in objects(docs, "Secret")}
    running = {}
    for svc, d in by_component(docs, "Deployment").items():
        env: dict[str, str] = {}
        for key, value in env_of(docs, d).items():
            if isinstance(value, str):
                env[key] = value
            elif "secretKeyRef" in value:
                ref = value["secretKeyRef"]
                env[key] = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
        p = f"SD_{svc.upper()}_"
        grpc_port = free_port()
        env |= {p + "GRPC_PORT": str(grpc_port), p + "METRICS_PORT": str(free_port()),
                # Nothing here answers for S3; a closed local port fails fast instead of timing out.
                "SD_STORE_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
        if svc == "gateway":
            env |= {p + "HTTP_PORT": str(free_port()), p + "STATE_DIR": str(tmp_path / "gateway"),
                    p + "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}"}
        if svc == "ingest":
            env[p + "DATABASE_URL"] = f"sqlite:///{tmp_path / 'ingest.db'}"
        proc = subprocess.Popen([sys.executable, "-m", f"sd_{svc}"], cwd=tmp_path, env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        running[svc] = (proc, grpc_port, pod_spec(d)["terminationGracePeriodSeconds"])
    try:
        for svc, (proc, port, _) in running.items():
            deadline, status = time.monotonic() + 30, None
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while status is None and proc.poll() is None and time.monotonic() < deadline:
                    try:
                        status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    except grpc.RpcError:
                        time.sleep(0.2)
            output = proc.stdout.read() if proc.poll() is not None else ""
            assert status == health_pb2.HealthCheckResponse.SERVING, f"{svc} did not answer health:\n{output}"
        for svc, (proc, _, grace_s) in running.items():
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            out, _ = proc.communicate(timeout=grace_s)
            assert proc.returncode == 0, f"{svc} exited {proc.returncode} on SIGTERM:\n{out[-2000:]}"
            assert time.monotonic() - started < grace_s
    finally:
        for proc, _, _ in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
