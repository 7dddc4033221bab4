"""Generate the TTSService CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema with $defs/$ref, `anyOf [.., null]` for optional fields, `const`
and `title`; a CRD needs a *structural* OpenAPI v3 schema: every $ref inlined, no nullable
anyOf, no `additionalProperties: false`. `structural()` rewrites one into the other.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tts_operator.models import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAME,
    SINGULAR,
    VERSION,
    TTSServiceSpec,
    TTSServiceStatus,
)

CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / f"{CRD_NAME}.yaml"
HEADER = "# Generated from operator/tts_operator/models.py by `make crds`; do not edit.\n"

# JSON Schema keywords the Kubernetes OpenAPI v3 subset does not accept.
_DROPPED = {"title", "$defs", "propertyNames"}
Schema = dict[str, Any]


def _resolve(ref: str, defs: Schema) -> Schema:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError(f"unsupported $ref {ref!r}")
    return copy.deepcopy(defs[ref[len(prefix) :]])


def _is_null(schema: Schema) -> bool:
    return schema.get("type") == "null"


def _int_or_string(node: Schema, branches: list[Schema]) -> Schema:
    """The API server accepts exactly `anyOf: [{type: integer}, {type: string}]` beside
    x-kubernetes-int-or-string, so value checks (minimum, pattern) move up a level: each
    applies only to values of its own type."""
    if sorted(b.get("type", "") for b in branches) != ["integer", "string"]:
        raise ValueError(f"int-or-string needs one integer and one string branch: {branches!r}")
    for branch in branches:
        node.update({k: v for k, v in branch.items() if k != "type"})
    node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return node


def structural(schema: Schema, defs: Schema | None = None) -> Schema:
    """Return `schema` rewritten into a structural CRD schema (recursively)."""
    defs = schema.get("$defs", {}) if defs is None else defs
    node: Schema = dict(schema)
    if "$ref" in node:
        target = _resolve(node.pop("$ref"), defs)
        # The field's own keys (its description, default) win over the model's.
        node = {**target, **node}
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if not _is_null(b)]
        if node.get("default", 0) is None:
            del node["default"]
        if len(branches) == 1:
            node = {**structural(branches[0], defs), **node}
        elif node.get("x-kubernetes-int-or-string"):
            node = _int_or_string(node, [structural(b, defs) for b in branches])
        else:
            raise ValueError(f"a CRD cannot express anyOf {branches!r}")
    if node.get("default", 0) is None:
        del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("additionalProperties") is False or (
        node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" in node
    ):
        del node["additionalProperties"]
    for key in _DROPPED & node.keys():
        del node[key]
    if "description" in node:
        node["description"] = " ".join(node["description"].split())
    if "properties" in node:
        node["properties"] = {k: structural(v, defs) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = structural(node["items"], defs)
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = structural(node["additionalProperties"], defs)
    return node


def openapi_schema() -> Schema:
    """The TTSService's openAPIV3Schema."""
    spec = structural(TTSServiceSpec.model_json_schema(by_alias=True))
    status = structural(TTSServiceStatus.model_json_schema(by_alias=True))
    return {
        "type": "object",
        "description": "TTSService runs a text-to-speech model on GPU nodes: a Deployment of "
        "the batching runtime, a Service, a queue-latency HorizontalPodAutoscaler and a "
        "PodDisruptionBudget.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd() -> Schema:
    """The full CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/part-of": "tts-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": ["all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
                        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def render() -> str:
    """The CRD as committed YAML text."""
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)


def write(path: Path = CRD_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path
