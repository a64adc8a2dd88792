"""Every service, started as its own process, speaks health, reflection and metrics, and drains on SIGTERM."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sd_common.cli.services import SERVICES
from scale_diffusion.diffusion.v1 import diffusion_pb2, diffusion_pb2_grpc
from scale_diffusion.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from scale_diffusion.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from scale_diffusion.trainer.v1 import trainer_pb2, trainer_pb2_grpc

from tests.ports import free_port

def start_service(name: str, tmp_path, extra_env=None):
    """Starts `python -m sd_<name>` on free ports; returns (process, grpc_port, metrics_port, http_port)."""
    grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
    prefix = f"SD_{name.upper()}_"
    env = {**os.environ, prefix + "GRPC_PORT": str(grpc_port), prefix + "METRICS_PORT": str(metrics_port),
           prefix + "LOG_FORMAT": "json", prefix + "SHUTDOWN_GRACE_S": "2",
           "SD_STORE_ROOT": str(tmp_path / "store"), "SD_INGEST_STATE_DIR": str(tmp_path / "ingest"),
           "SD_PROCESSOR_WORK_DIR": str(tmp_path / "work"), "SD_TRAINER_STATE_DIR": str(tmp_path / "trainer"),
           "SD_EVALUATOR_STATE_DIR": str(tmp_path / "evaluator"), **(extra_env or {})}
    if name == "gateway":
        env |= {prefix + "HTTP_PORT": str(http_port), prefix + "STATE_DIR": str(tmp_path / "gw")}
    proc = subprocess.Popen([sys.executable, "-m", f"sd_{name}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        while True:
            try:
                resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"{name} did not become healthy:\n{proc.communicate()[0]}")
            time.sleep(0.1)
    return proc, grpc_port, metrics_port, http_port


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_service_health_reflection_metrics_and_graceful_stop(name, tmp_path):
    proc, grpc_port, metrics_port, http_port = start_service(name, tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            # reflection lists the service's own API and the health service
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            resp = next(iter(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                list_services="")]), timeout=5)))
            names = {s.name for s in resp.list_services_response.service}
            assert f"scale_diffusion.{name}.v1.{name.capitalize()}Service" in names
            assert "grpc.health.v1.Health" in names
            svc_health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(
                service=f"scale_diffusion.{name}.v1.{name.capitalize()}Service"), timeout=5)
            assert svc_health.status == health_pb2.HealthCheckResponse.SERVING
            if name == "ingest":  # implemented: an empty catalog answers with no datasets
                assert list(ingest_pb2_grpc.IngestServiceStub(ch).ListDatasets(
                    ingest_pb2.ListDatasetsRequest(), timeout=10).datasets) == []
            if name == "trainer":  # implemented: no runs yet
                assert list(trainer_pb2_grpc.TrainerServiceStub(ch).ListTrainingRuns(
                    trainer_pb2.ListTrainingRunsRequest(), timeout=10).runs) == []
            if name == "diffusion":  # implemented: every slot free, the CPU look backend by default
                cap = diffusion_pb2_grpc.DiffusionServiceStub(ch).GetCapacity(diffusion_pb2.GetCapacityRequest(),
                                                                              timeout=10)
                assert (cap.streams_active, cap.peer_connections, cap.backend) == (0, 0, "look")
                assert cap.streams_max >= 1
            if name == "evaluator":  # implemented: no evaluations yet
                assert list(evaluator_pb2_grpc.EvaluatorServiceStub(ch).ListEvaluations(
                    evaluator_pb2.ListEvaluationsRequest(), timeout=10).evaluations) == []
        if name == "gateway":
            req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/players", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
            assert urllib.request.urlopen(req, timeout=5).status == 201
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert "sd_grpc_server_handled_total" in metrics
        if name == "gateway":
            # counted right after the response is sent, so a scrape may briefly precede it
            want = 'sd_http_requests_total{method="POST",route="/v1/players",service="gateway",status="201"} 1.0'
            for _ in range(50):
                if want in metrics:
                    break
                time.sleep(0.05)
                metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            assert want in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    # structured logs: JSON lines, and the shutdown was logged
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert any('"event": "stopped"' in line for line in lines), out
