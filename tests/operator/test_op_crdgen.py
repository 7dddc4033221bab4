"""The generated CRD: fresh, structural, and agreeing with the models on the examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from op_helpers import EXAMPLES, load_yaml
from pydantic import ValidationError
from tts_operator import crdgen
from tts_operator.models import TTSServiceSpec

# The OpenAPI v3 subset a CRD schema may use (apiextensions.k8s.io/v1 JSONSchemaProps).
OPENAPI_KEYS = {
    "type", "description", "properties", "required", "items", "additionalProperties",
    "default", "enum", "format", "pattern", "minimum", "maximum", "minLength", "maxLength",
    "minItems", "maxItems", "maxProperties", "minProperties", "anyOf", "nullable",
    "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
}  # fmt: skip
VALID = sorted(EXAMPLES.glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def schema() -> dict[str, Any]:
    committed = yaml.safe_load(crdgen.CRD_PATH.read_text())
    result: dict[str, Any] = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def structural_problems(node: dict[str, Any], path: str = "") -> list[str]:
    """What the API server's structural-schema check would reject, as paths."""
    problems = [f"{path}: {key}" for key in node if key not in OPENAPI_KEYS]
    if node.get("x-kubernetes-int-or-string"):
        if node.get("anyOf") != [{"type": "integer"}, {"type": "string"}] or "type" in node:
            problems.append(f"{path}: int-or-string must be exactly anyOf integer/string")
    elif "type" not in node:
        problems.append(f"{path}: no type")
    elif "anyOf" in node:
        problems.append(f"{path}: anyOf outside int-or-string")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties")
    if isinstance(node.get("additionalProperties"), bool):
        problems.append(f"{path}: boolean additionalProperties")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            problems += structural_problems(node[key], f"{path}.{key}")
    return problems


def test_committed_crd_is_fresh() -> None:
    assert crdgen.CRD_PATH.read_text() == crdgen.render(), (
        "crds/ttsservices.ttsoperator.io.yaml is stale: run `make crds`"
    )


def test_schema_is_structural() -> None:
    assert structural_problems(schema()) == []


def test_crd_names_subresources_and_columns() -> None:
    crd = crdgen.crd()
    assert crd["metadata"]["name"] == "ttsservices.ttsoperator.io"
    assert crd["spec"]["names"]["shortNames"] == ["tts"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Ready", "Replicas", "Endpoint", "Age"]


def test_cel_rules_are_emitted_with_messages() -> None:
    spec = schema()["properties"]["spec"]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("autoscaling.enabled" in r for r in rules)
    auto_rules = spec["properties"]["autoscaling"]["x-kubernetes-validations"]
    assert auto_rules[0]["rule"].endswith("self.minReplicas <= self.maxReplicas")
    assert all(r["message"] for r in auto_rules)


def test_descriptions_and_defaults_come_from_the_models() -> None:
    batching = schema()["properties"]["spec"]["properties"]["runtime"]["properties"]["batching"]
    max_batch = batching["properties"]["maxBatchSize"]
    assert max_batch["default"] == 8 and max_batch["maximum"] == 256
    assert "TTS_MAX_BATCH_SIZE" in max_batch["description"]


def test_structural_rewrite_rejects_unrepresentable_unions() -> None:
    with pytest.raises(ValueError, match="anyOf"):
        crdgen.structural({"anyOf": [{"type": "integer"}, {"type": "boolean"}]})


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_examples_pass_schema_and_models(path: Path) -> None:
    body = load_yaml(path)
    jsonschema.validate(body, schema())
    TTSServiceSpec.model_validate(body["spec"])


def expected_message(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# expect:"):
            return line.removeprefix("# expect:").strip()
    raise AssertionError(f"{path} has no '# expect:' line")


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_are_rejected(path: Path) -> None:
    """Each invalid sample fails the models with its expected message; those without a CEL
    rule (the API server checks CEL, jsonschema cannot) also fail the generated schema."""
    body = load_yaml(path)
    with pytest.raises(ValidationError, match=expected_message(path)):
        TTSServiceSpec.model_validate(body["spec"])
    cel_messages = {
        r["message"] for node in _walk(schema()) for r in node.get("x-kubernetes-validations", [])
    }
    if not any(expected_message(path) in m for m in cel_messages):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schema())


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [node]
    for child in node.get("properties", {}).values():
        nodes += _walk(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            nodes += _walk(node[key])
    return nodes
