"""Credentials for the Kubernetes API, for the services that call it (the operator; the ingest and the
trainer in a cluster): the pod's service account, else a kubeconfig. Those services depend on the
`kubernetes` client themselves; it is imported here only when called."""

from __future__ import annotations

import os
from typing import Any


class NoCredentials(Exception):
    """Neither a pod's service account nor a kubeconfig gives access to an API server."""


def client_configuration() -> Any:
    """A ``kubernetes.client.Configuration``: in a pod its service account, elsewhere $KUBECONFIG or
    ~/.kube/config (read now: the client reads $KUBECONFIG only once, at its import)."""
    import kubernetes

    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException as in_cluster:
        try:
            kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg)
        except (kubernetes.config.ConfigException, OSError) as kubeconfig:
            raise NoCredentials(f"no Kubernetes credentials: not in a pod ({in_cluster}) and no usable "
                                f"kubeconfig ({kubeconfig})") from None
    return cfg
