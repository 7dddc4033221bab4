"""docs/operator.md and the README: the generated spec-field reference is fresh and lists
every field and every CEL rule."""

from __future__ import annotations

from typing import Any

from tts_operator import docgen
from tts_operator.crdgen import openapi_schema


def leaf_paths(node: dict[str, Any], path: str) -> list[str]:
    paths = [path]
    for name, child in node.get("properties", {}).items():
        paths += leaf_paths(child, f"{path}.{name}")
    for name, child in node.get("items", {}).get("properties", {}).items():
        paths += leaf_paths(child, f"{path}[].{name}")
    return paths


def test_generated_reference_is_fresh_in_every_document() -> None:
    for path in docgen.DOC_PATHS:
        current = path.read_text()
        assert docgen.render(current) == current, f"{path.name} is stale: run `make crds`"


def test_every_spec_field_is_documented() -> None:
    table = docgen.field_table()
    spec = openapi_schema()["properties"]["spec"]
    for name, child in spec["properties"].items():
        for path in leaf_paths(child, f"spec.{name}"):
            assert f"| `{path}` |" in table, path
    assert "| `spec.autoscaling.targetQueueLatencyMs` | integer | `150` |" in table


def test_every_cel_rule_is_listed() -> None:
    table = docgen.field_table()
    messages = []
    stack = [openapi_schema()["properties"]["spec"]]
    while stack:
        node = stack.pop()
        messages += [rule["message"] for rule in node.get("x-kubernetes-validations", [])]
        stack += list(node.get("properties", {}).values())
        if "items" in node:
            stack.append(node["items"])
    assert messages
    for message in messages:
        assert " ".join(message.split()) in table
