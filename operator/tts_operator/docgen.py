"""The spec-field reference in docs/operator.md, generated from the CRD schema.

Only the block between the markers is generated; the prose around it is written by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tts_operator.crdgen import openapi_schema

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "operator.md"
BEGIN = "<!-- BEGIN GENERATED: spec fields (make crds) -->"
END = "<!-- END GENERATED: spec fields -->"


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = str(node.get("type", ""))
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type(node['additionalProperties'])}"
    return kind


def _default(node: dict[str, Any]) -> str:
    if "default" not in node or node["default"] == {}:
        return ""
    return f"`{json.dumps(node['default'])}`"


def _rows(node: dict[str, Any], path: str, required: bool) -> list[str]:
    limits = [
        f"{label} {node[key]}"
        for key, label in (("minimum", "min"), ("maximum", "max"), ("maxItems", "max items"))
        if key in node
    ]
    text = node.get("description", "").replace("|", "\\|")
    if limits:
        text += f" ({', '.join(limits)})"
    if required:
        text = "**Required.** " + text
    rows = [f"| `{path}` | {_type(node)} | {_default(node)} | {text} |"]
    needed = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        rows += _rows(child, f"{path}.{name}", name in needed)
    items = node.get("items", {})
    for name, child in items.get("properties", {}).items():
        rows += _rows(child, f"{path}[].{name}", name in set(items.get("required", [])))
    return rows


def field_table() -> str:
    spec = openapi_schema()["properties"]["spec"]
    lines = ["| Field | Type | Default | What it does |", "| --- | --- | --- | --- |"]
    needed = set(spec.get("required", []))
    for name, child in spec["properties"].items():
        lines += _rows(child, f"spec.{name}", name in needed)
    return "\n".join(lines)


def render(current: str) -> str:
    """`current` with the generated block replaced."""
    head, rest = current.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{field_table()}\n{END}{tail}"


def write(path: Path = DOC_PATH) -> Path:
    path.write_text(render(path.read_text()))
    return path
