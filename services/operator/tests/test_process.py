"""`python -m sd_operator` as its own process, logged in through a kubeconfig to kmock: it reports SERVING
on the gRPC health service once kopf watches, turns a TrainingRun into its Job, counts it in its
Prometheus metrics, and exits cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.kube_api import ApiServer, write_kubeconfig
from tests.ports import free_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.kmock(cls=ApiServer)]
NS = "ml"


async def health(port: int) -> int | None:
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
            return resp.status
    except grpc.RpcError:
        return None


async def test_the_operator_process_serves_health_and_metrics_runs_a_job_and_stops_on_sigterm(cluster, tmp_path):
    url = str(cluster.url).rstrip("/")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, NS)
    grpc_port, metrics_port = free_port(), free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "SD_OPERATOR_GRPC_PORT": str(grpc_port),
           "SD_OPERATOR_METRICS_PORT": str(metrics_port), "SD_OPERATOR_NAMESPACES": NS,
           "SD_OPERATOR_RECONCILE_INTERVAL_S": "0.2", "SD_OPERATOR_LOG_FORMAT": "json",
           "SD_OPERATOR_SHUTDOWN_GRACE_S": "5", "SD_OPERATOR_TRAINER_IMAGE": "registry.example.com/trainer:9"}
    proc = subprocess.Popen([sys.executable, "-m", "sd_operator"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60  # imports on a loaded 2-core machine take seconds
        while await health(grpc_port) != health_pb2.HealthCheckResponse.SERVING:
            assert proc.poll() is None, "the operator exited during startup"
            assert time.monotonic() < deadline, "the operator did not report SERVING within 60 s"
            await asyncio.sleep(0.2)
        run = {"apiVersion": "scalediffusion.io/v1alpha1", "kind": "TrainingRun",
               "metadata": {"name": "p1", "namespace": NS}, "spec": {"datasetVersion": "ef" * 32}}
        async with cluster.post(f"/apis/scalediffusion.io/v1alpha1/namespaces/{NS}/trainingruns", json=run) as r:
            assert r.status in (200, 201)
        while True:
            async with cluster.get(f"/apis/batch/v1/namespaces/{NS}/jobs/p1-0") as r:
                if r.status == 200:
                    job = await r.json()
                    break
            assert time.monotonic() < deadline + 10, "no Job for the TrainingRun"
            await asyncio.sleep(0.1)
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/trainer:9"
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert 'sd_operator_jobs_created_total{kind="TrainingRun"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0, out
        events = [json.loads(line).get("event") for line in out.splitlines() if line.startswith("{")]
        assert "operator watching" in events and "stopped" in events
    finally:
        if proc.poll() is None:
            proc.kill()
            print(proc.communicate()[0][-6000:])


def test_without_credentials_the_operator_fails_at_startup_and_names_why(tmp_path):
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "missing"), "SD_OPERATOR_GRPC_PORT": str(free_port()),
           "SD_OPERATOR_NAMESPACES": NS, "SD_OPERATOR_LOG_FORMAT": "json", "SD_OPERATOR_SHUTDOWN_GRACE_S": "2"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = subprocess.run([sys.executable, "-m", "sd_operator"], env=env, capture_output=True, text=True, check=False,
                          timeout=60)
    out = proc.stdout + proc.stderr
    # A pod without usable credentials crash-loops with the reason in its log, rather than idling healthy.
    assert proc.returncode != 0, out
    assert "NoCredentials: no Kubernetes credentials" in out and "kubeconfig" in out
