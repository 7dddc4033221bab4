"""The chart's ValidatingAdmissionPolicy (issue 22, item 5): the API server judges each
TTSService with its author's own rights. What it asks is rendered here; that the API server
enforces it, for two real users, is e2e/test_15_admission_identity.py."""

from __future__ import annotations

import json
import re
from typing import Any

from chart_helpers import Helm


def _policy(helm: Helm, *args: str) -> tuple[dict[str, Any], str]:
    r = helm.template(*args)
    vap = r.one("ValidatingAdmissionPolicy")
    return vap, json.dumps(vap["spec"])


def test_the_policy_is_on_by_default_and_bound_to_every_namespace(helm: Helm) -> None:
    r = helm.template()
    vap = r.one("ValidatingAdmissionPolicy")
    binding = r.one("ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"]
    spec = vap["spec"]
    assert spec["failurePolicy"] == "Fail"
    [rule] = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["ttsservices"] and set(rule["operations"]) == {"CREATE", "UPDATE"}
    off = helm.template("--set", "admissionPolicy.enabled=false")
    assert "ValidatingAdmissionPolicy" not in off.kinds()


def test_it_asks_the_authorizer_for_the_authors_get_on_secrets_and_claims(helm: Helm) -> None:
    _, text = _policy(helm)
    for resource in ("secrets", "persistentvolumeclaims"):
        assert re.search(
            rf"authorizer\.group\(''\)\.resource\('{resource}'\)\s*"
            r"\.namespace\(request\.namespace\)\.name\(n\)\.check\('get'\)\.allowed\(\)",
            text,
        ), resource
    for field in ("apiKeysSecretRef", "tokenSecretRef", "urlSecretRef", "secretKeyRef", "pvc://"):
        assert field in text, field
    assert "get secrets" in text and "get persistentvolumeclaims" in text


def _refused_tolerations(vap: dict[str, Any]) -> str:
    spec: dict[str, Any] = vap["spec"]
    [expr] = [v["expression"] for v in spec["variables"] if v["name"] == "refusedTolerations"]
    return str(expr)


def test_tolerations_follow_the_chart_lists(helm: Helm) -> None:
    default = _refused_tolerations(_policy(helm)[0])
    assert "[].exists(p, t.key.matches(p))" in default  # nothing but the GPU taint
    assert "(true" in default  # a wildcard toleration is refused
    listed = _refused_tolerations(
        _policy(
            helm,
            "--set-json", 'policy.allowedTolerationKeys=["dedicated", "pool.example/*"]',
            "--set", "policy.allowTolerationWildcards=true",
        )[0]
    )  # fmt: skip
    # Glob patterns as anchored RE2 (CEL's matches), each "\\" a CEL string escape.
    assert '["^dedicated$","^pool\\\\.example/.*$"].exists' in listed
    assert "(false" in listed


def test_a_namespace_selector_narrows_the_binding(helm: Helm) -> None:
    r = helm.template("--set-json", 'admissionPolicy.namespaceSelector={"matchLabels":{"a":"b"}}')
    binding = r.one("ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["matchResources"] == {"namespaceSelector": {"matchLabels": {"a": "b"}}}
