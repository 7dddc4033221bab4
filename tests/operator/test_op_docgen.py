"""docs/operator.md: the generated spec-field table is fresh and lists every field."""

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


def test_operator_doc_is_fresh() -> None:
    current = docgen.DOC_PATH.read_text()
    assert docgen.render(current) == current, "docs/operator.md is stale: run `make crds`"


def test_every_spec_field_is_documented() -> None:
    table = docgen.field_table()
    spec = openapi_schema()["properties"]["spec"]
    for name, child in spec["properties"].items():
        for path in leaf_paths(child, f"spec.{name}"):
            assert f"| `{path}` |" in table, path
    assert "| `spec.autoscaling.targetQueueLatencyMs` | integer | `150` |" in table
