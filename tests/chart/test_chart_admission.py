"""The chart's ValidatingAdmissionPolicy (issue 22, item 5): the API server judges each
TTSService with its author's own rights. What it asks is rendered here; that the API server
enforces it, for two real users, is e2e/test_15_admission_identity.py."""

from __future__ import annotations

import json
import re
from typing import Any

from chart_helpers import NAMESPACE, Helm


def _policy(helm: Helm, *args: str) -> tuple[dict[str, Any], str]:
    r = helm.template(*args)
    vap = r.one("ValidatingAdmissionPolicy")
    return vap, json.dumps(vap["spec"])


def _served(*names: str) -> dict[str, Any]:
    return {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(names)}
            ]
        }
    }


def test_the_policy_is_on_by_default_and_bound_to_the_namespaces_served(helm: Helm) -> None:
    """Bound to what this release's operator serves, so two releases with different policy
    lists never judge each other's TTSServices; every namespace with scope cluster."""
    r = helm.template()
    vap = r.one("ValidatingAdmissionPolicy")
    binding = r.one("ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"] == _served(NAMESPACE)
    watched = helm.template("--set", "watchNamespaces={voices,staging}")
    assert watched.one("ValidatingAdmissionPolicyBinding")["spec"]["matchResources"] == _served(
        "voices", "staging"
    )
    cluster = helm.template("--set", "scope=cluster")
    assert "matchResources" not in cluster.one("ValidatingAdmissionPolicyBinding")["spec"]
    spec = vap["spec"]
    assert spec["failurePolicy"] == "Fail"
    [rule] = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["ttsservices"] and set(rule["operations"]) == {"CREATE", "UPDATE"}
    off = helm.template("--set", "admissionPolicy.enabled=false")
    assert "ValidatingAdmissionPolicy" not in off.kinds()


def test_it_asks_the_authorizer_for_the_authors_get_on_secrets_and_claims(helm: Helm) -> None:
    """Each Secret field and the claim is one validation whose expression asks the authorizer
    (a messageExpression has no `authorizer`: the API server found that) and whose message
    names the field and the missing permission."""
    vap, text = _policy(helm)
    validations = vap["spec"]["validations"]
    by_field = {
        field: [v for v in validations if field in v["messageExpression"]]
        for field in (
            "spec.auth.apiKeysSecretRef", "spec.model.tokenSecretRef",
            "spec.cache.redis.urlSecretRef", "spec.runtime.env[].valueFrom.secretKeyRef",
            "spec.model.uri",
        )
    }  # fmt: skip
    for field, found in by_field.items():
        [validation] = found
        resource = "persistentvolumeclaims" if field == "spec.model.uri" else "secrets"
        assert re.search(
            rf"authorizer\.group\(''\)\.resource\('{resource}'\)\s*"
            r"\.namespace\(request\.namespace\)\.name\((n|variables\.\w+)\)"
            r"\.check\('get'\)\.allowed\(\)",
            validation["expression"],
        ), field
        assert f"(missing permission: get {resource})" in validation["messageExpression"]
        assert "authorizer" not in validation["messageExpression"]
        assert validation["reason"] == "Forbidden"
    for field in ("apiKeysSecretRef", "tokenSecretRef", "urlSecretRef", "secretKeyRef", "pvc://"):
        assert field in text, field


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
