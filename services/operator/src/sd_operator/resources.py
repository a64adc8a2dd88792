"""Names the operator and its custom resources share: API group, kinds, labels."""

from __future__ import annotations

GROUP = "scalediffusion.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DATASET_VERSIONS = "datasetversions"
TRAINING_RUNS = "trainingruns"
EVALUATIONS = "evaluations"

# Every child Job, its pods and Services carry these, so that the operator's indices find them.
OWNER_KIND_LABEL = f"{GROUP}/owner-kind"
OWNER_NAME_LABEL = f"{GROUP}/owner-name"
ATTEMPT_LABEL = f"{GROUP}/attempt"
MANAGED_BY = {"app.kubernetes.io/managed-by": "sd-operator", "app.kubernetes.io/part-of": "scale-diffusion"}

# A Job's name is "<owner>-<attempt>" and its pods "<job>-<index>-<random>"; a pod's hostname (and the
# headless Service's DNS label) must stay within 63 characters, so owners are kept short.
MAX_OWNER_NAME = 52

# Phases of TrainingRun and Evaluation (status.phase).
PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = "Pending", "Running", "Succeeded", "Failed", "Cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
