"""The operator's objects checked against the schemas a cluster would apply: Kubernetes' own (strict,
offline, kubernetes-validate) for Jobs and Services, the CRDs' openAPIV3Schema (jsonschema) for custom
resources. Unknown fields, which an API server would prune silently, are errors here."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[3]
CRDS = REPO / "charts" / "scale-diffusion" / "crds"
KUBERNETES = "1.33.0"


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema in which an object with listed properties admits no others (pruning made visible)."""
    s = copy.deepcopy(schema)
    if "properties" in s and not s.get("x-kubernetes-preserve-unknown-fields"):
        s.setdefault("additionalProperties", False)
        s["properties"] = {k: _closed(v) for k, v in s["properties"].items()}
    if isinstance(s.get("items"), dict):
        s["items"] = _closed(s["items"])
    return s


@cache
def crd(kind: str) -> dict[str, Any]:
    """The CRD of a kind, from the chart's crds/."""
    for path in CRDS.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if doc["spec"]["names"]["kind"] == kind:
            return doc
    raise KeyError(kind)


def validate_custom(obj: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError unless ``obj`` fits its CRD's schema."""
    definition = crd(obj["kind"])
    (version,) = definition["spec"]["versions"]
    assert obj["apiVersion"] == f"{definition['spec']['group']}/{version['name']}"
    jsonschema.Draft7Validator(_closed(version["schema"]["openAPIV3Schema"]),
                               format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER).validate(obj)


def validate_kubernetes(obj: dict[str, Any]) -> None:
    """Raises kubernetes_validate.ValidationError unless ``obj`` fits Kubernetes' schema (strict)."""
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def merge_patch(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with a JSON merge patch applied (RFC 7386: null removes a key), as the API server does."""
    out = copy.deepcopy(obj)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
