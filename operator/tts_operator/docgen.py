"""The TTSService spec-field reference, generated from the CRD schema (itself generated from
the pydantic models), so no document can drift from what the API server accepts.

The same block goes into docs/operator.md and the README; only the part between the markers
is generated, the prose around it is written by hand (`make crds` refreshes both).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tts_operator.crdgen import openapi_schema

ROOT = Path(__file__).resolve().parents[2]
DOC_PATHS = (ROOT / "docs" / "operator.md", ROOT / "README.md")
BEGIN = "<!-- BEGIN GENERATED: TTSService spec fields (make crds) -->"
END = "<!-- END GENERATED: TTSService spec fields -->"


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = str(node.get("type", "object"))
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type(node['additionalProperties'])}"
    return kind


def _default(node: dict[str, Any]) -> str:
    if "default" not in node or node["default"] in ({}, []):
        return ""
    value = node["default"]
    return f"`{value if isinstance(value, str) else json.dumps(value)}`"


def _allowed(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append(" \\| ".join(f"`{v}`" for v in node["enum"]))
    if "minimum" in node or "maximum" in node:
        parts.append(f"{node.get('minimum', '')}..{node.get('maximum', '')}")
    if "maxItems" in node:
        parts.append(f"at most {node['maxItems']} items")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(node: dict[str, Any], path: str, required: bool) -> list[str]:
    text = _cell(node.get("description", ""))
    if required:
        text = "**Required.** " + text
    rows = [f"| `{path}` | {_type(node)} | {_default(node)} | {_allowed(node)} | {text} |"]
    needed = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        rows += _rows(child, f"{path}.{name}", name in needed)
    items = node.get("items", {})
    for name, child in items.get("properties", {}).items():
        rows += _rows(child, f"{path}[].{name}", name in set(items.get("required", [])))
    return rows


def _cel_rules(node: dict[str, Any], path: str) -> list[str]:
    found = [f"`{path}`: {_cell(r['message'])}" for r in node.get("x-kubernetes-validations", [])]
    for name, child in node.get("properties", {}).items():
        found += _cel_rules(child, f"{path}.{name}")
    if "items" in node:
        found += _cel_rules(node["items"], f"{path}[]")
    return found


def field_table() -> str:
    spec = openapi_schema()["properties"]["spec"]
    lines = [
        "| Field | Type | Default | Allowed | What it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    needed = set(spec.get("required", []))
    for name, child in spec["properties"].items():
        lines += _rows(child, f"spec.{name}", name in needed)
    lines += ["", "Cross-field rules the API server enforces (CEL):", ""]
    lines += [f"- {rule}" for rule in _cel_rules(spec, "spec")]
    return "\n".join(lines)


def render(current: str) -> str:
    """`current` with the generated block replaced."""
    head, rest = current.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{field_table()}\n{END}{tail}"


def write(path: Path) -> Path:
    path.write_text(render(path.read_text()))
    return path
