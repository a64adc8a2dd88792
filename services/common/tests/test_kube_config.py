"""Kubernetes credentials outside a pod: the kubeconfig named by $KUBECONFIG when asked, or a named error."""

from __future__ import annotations

import kubernetes  # noqa: F401  imported first, as in a process that read $KUBECONFIG long ago
import pytest
import yaml
from sd_common.kube_config import NoCredentials, client_configuration


def test_the_kubeconfig_is_the_one_kubeconfig_names_now(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://api.example.test:6443"}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(path))
    cfg = client_configuration()
    assert cfg.host == "https://api.example.test:6443"
    assert "Bearer t0ken" in cfg.api_key.values()


def test_without_a_pod_or_a_kubeconfig_the_error_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(NoCredentials, match="not in a pod .* no usable kubeconfig"):
        client_configuration()
