"""values.yaml and values.schema.json: every value documented, the schema closed and in step."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from chart_helpers import CHART, Helm

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):")


def _schema_at(path: list[str]) -> dict[str, Any] | None:
    node: dict[str, Any] = SCHEMA
    for key in path:
        props = node.get("properties", {})
        if key not in props:
            return None
        node = props[key]
    return node


def _documented_keys() -> list[tuple[list[str], bool]]:
    """(path, has a comment line right above) for each key whose parent is a closed object
    of the chart's own (pass-through Kubernetes objects such as resources are left out)."""
    found: list[tuple[list[str], bool]] = []
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in VALUES_TEXT.splitlines():
        match = KEY_LINE.match(line)
        if match:
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = [k for _, k in stack] + [match["key"]]
            parent = _schema_at(path[:-1])
            if parent is not None and parent.get("additionalProperties") is False:
                found.append((path, previous.lstrip().startswith("#")))
            stack.append((indent, match["key"]))
        if line.strip():
            previous = line
    return found


def test_every_chart_value_has_a_comment() -> None:
    keys = _documented_keys()
    assert len(keys) > 40, "the values walk found too few keys: the parser is broken"
    undocumented = [".".join(path) for path, commented in keys if not commented]
    assert not undocumented, f"values without a comment line above them: {undocumented}"


def test_values_yaml_satisfies_its_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(VALUES, SCHEMA)


def _closed_objects(node: dict[str, Any], path: str = "") -> list[str]:
    out = [path] if node.get("additionalProperties") is False else []
    for key, child in node.get("properties", {}).items():
        out += _closed_objects(child, f"{path}.{key}")
    return out


def test_schema_is_closed_wherever_the_chart_defines_the_keys() -> None:
    closed = _closed_objects(SCHEMA)
    for path in [
        "",
        ".image",
        ".crds",
        ".operator",
        ".policy",
        ".monitoring.podMonitor",
        ".keda",
        ".grafana",
        ".networkPolicy",
        ".networkPolicy.operator",
        ".networkPolicy.operator.egress",
        ".networkPolicy.runtime",
    ]:
        assert path in closed, f"{path or 'top level'} accepts unknown keys"


def test_every_value_is_in_the_schema() -> None:
    def walk(values: dict[str, Any], path: list[str]) -> None:
        for key, value in values.items():
            node = _schema_at([*path, key])
            assert node is not None, f"{'.'.join([*path, key])} is not in values.schema.json"
            if isinstance(value, dict) and node.get("additionalProperties") is False:
                walk(value, [*path, key])

    walk(VALUES, [])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "replicaCont=3"], "replicaCont"),
        (["--set", "crds.instal=false"], "instal"),
        (["--set", "monitoring.podMonitor.enabeld=true"], "enabeld"),
        (["--set", "scope=cluster-wide"], "scope"),
        (["--set-json", 'replicaCount="two"'], "replicaCount"),
        (["--set", "operator.logFormat=xml"], "logFormat"),
        (["--set", "prometheusAdapter.rateWindow=1 minute"], "rateWindow"),
        # The chart no longer renders ScaledObjects (the operator does): old values fail loudly.
        (["--set", "keda.enabled=true"], "enabled"),
        (["--set", "policy.allowTolerationWildcard=true"], "allowTolerationWildcard"),
        (["--set-json", 'policy.allowedServiceTypes=["ExternalName"]'], "allowedServiceTypes"),
        (["--set-json", 'policy.allowedHostPaths=["srv/voices"]'], "allowedHostPaths"),
        (["--set-json", 'policy.allowedHostPaths=["/srv/../etc"]'], "allowedHostPaths"),
        (["--set-json", 'policy.allowedEnvValueFrom=["secretRef"]'], "allowedEnvValueFrom"),
        (["--set", "policy.allowedImagePrefixes=ghcr.io/acme/"], "allowedImagePrefixes"),
        (["--set", "policy.allowHttpModelUri=true"], "allowHttpModelUri"),
        (["--set", "policy.maxModelDownloadBytes=2GB"], "maxModelDownloadBytes"),
        (["--set", "policy.maxModelDownloadBytes=1000"], "maxModelDownloadBytes"),
        (["--set", "policy.modelDownloadDeadlineSeconds=0"], "modelDownloadDeadlineSeconds"),
        (["--set-json", 'policy.requireModelSha256="yes"'], "requireModelSha256"),
        (["--set-json", 'policy.allowedSecretNames=[""]'], "allowedSecretNames"),
        (["--set", "operator.hfEndpoint=huggingface.co"], "hfEndpoint"),
        (["--set", "scope=Namespaced"], "scope"),
        (["--set", "networkPolicy.runtime.enable=true"], "enable"),
        # A peer key the API server would drop, leaving a selector that selects everything.
        (
            ["--set-json", 'networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabel":{}}}]'],
            "matchLabel",
        ),
        (["--set-json", "networkPolicy.runtime.clientsFrom=[{}]"], "clientsFrom"),
        (["--set-json", 'networkPolicy.runtime.extraIngress=[{"form":[]}]'], "form"),
        (["--set", "networkPolicy.operator.egress.apiServerCIDRs={10.0.0.1}"], "apiServerCIDRs"),
        (["--set-json", "networkPolicy.operator.egress.apiServerPorts=[]"], "apiServerPorts"),
        (["--set", "networkPolicy.runtime.namespaces={Voices}"], "namespaces"),
    ],
)
def test_schema_rejects_typos_and_wrong_types(helm: Helm, args: list[str], expected: str) -> None:
    error = helm.template_error(*args)
    assert "values don't meet the specifications of the schema" in error, error
    assert expected in error, error


def test_policy_values_are_the_operators_safe_defaults() -> None:
    """values.yaml's policy is exactly what the operator does with no policy set, so the
    chart neither widens nor narrows it by accident."""
    from tts_operator.policy import Policy

    assert Policy.model_validate(VALUES["policy"]) == Policy()
    assert set(VALUES["policy"]) == {f.alias for f in Policy.model_fields.values()}
    schema = _schema_at(["policy"])
    assert schema is not None and set(schema["properties"]) == set(VALUES["policy"])
