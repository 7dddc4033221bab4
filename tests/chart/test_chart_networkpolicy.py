"""The optional NetworkPolicies: what `helm template` renders lets in (and out) exactly what the
README's "Network policies" says, they select the pods the chart and the operator really make,
and every object is one the Kubernetes API types accept field for field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from chart_helpers import CHART, NAMESPACE, Helm, Rendered
from kubernetes.client import ApiClient

OPERATOR = ["--set", "networkPolicy.operator.enabled=true"]
RUNTIME = ["--set", "networkPolicy.runtime.enabled=true"]
API_SERVER = "10.0.0.10/32"
EGRESS = [
    *OPERATOR,
    "--set", "networkPolicy.operator.egress.enabled=true",
    "--set", f"networkPolicy.operator.egress.apiServerCIDRs={{{API_SERVER}}}",
]  # fmt: skip
MONITORING = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
KUBE_DNS = [
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
]


def _policies(helm: Helm, *args: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The rendered NetworkPolicies by (namespace, name)."""
    return {
        (p["metadata"]["namespace"], p["metadata"]["name"]): p
        for p in helm.template(*args).all("NetworkPolicy")
    }


def _operator_policy(helm: Helm, *args: str) -> dict[str, Any]:
    policies = _policies(helm, *args)
    return policies[(NAMESPACE, "tts-tts-operator")]


def _runtime_policies(helm: Helm, *args: str) -> dict[str, dict[str, Any]]:
    """The runtime policies by namespace."""
    found = _policies(helm, *args)
    return {ns: p for (ns, name), p in found.items() if name == "tts-tts-operator-runtime"}


def _tcp(port: int) -> list[dict[str, Any]]:
    return [{"port": port, "protocol": "TCP"}]


def _runtime_pod_template() -> dict[str, Any]:
    """The pod template the operator's own builders make for a TTSService."""
    from tts_operator.builders import build_children
    from tts_operator.models import TTSServiceSpec

    spec = TTSServiceSpec.model_validate({"model": {"uri": "pvc://voices/en"}})
    children = build_children("voice", "speech", spec, "localhost/tts-runtime:dev")
    (deployment,) = [c for c in children.desired if c["kind"] == "Deployment"]
    return dict(deployment["spec"]["template"])


def test_no_network_policy_unless_asked(helm: Helm) -> None:
    assert not helm.template().all("NetworkPolicy")
    assert not helm.template("--set", "scope=cluster").all("NetworkPolicy")


# ---------------------------------------------------------------- the operator pods


def test_operator_policy_lets_only_the_scraper_reach_the_metrics_port(helm: Helm) -> None:
    r = helm.template(*OPERATOR)
    policy = r.one("NetworkPolicy")
    assert policy["metadata"]["namespace"] == NAMESPACE
    deployment = r.one("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["podSelector"] == {"matchLabels": selector}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    # Ingress only (egress is opt-in); one rule: the scraper, on the metrics port.
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert "egress" not in policy["spec"]
    assert policy["spec"]["ingress"] == [{"from": MONITORING, "ports": _tcp(9090)}]
    # The liveness port has no rule: only the kubelet (from the pod's node) reaches it.
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 8080, "metrics": 9090}
    allowed = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert ports["healthz"] not in allowed

    moved = _operator_policy(helm, *OPERATOR, "--set", "operator.metricsPort=9100")
    assert moved["spec"]["ingress"][0]["ports"] == _tcp(9100)
    scraper = [{"namespaceSelector": {"matchLabels": {"team": "obs"}}}]
    narrowed = _operator_policy(
        helm, *OPERATOR, "--set-json", f"networkPolicy.metricsFrom={json.dumps(scraper)}"
    )
    assert narrowed["spec"]["ingress"] == [{"from": scraper, "ports": _tcp(9090)}]


def test_operator_egress_goes_only_to_the_api_server_and_dns(helm: Helm) -> None:
    policy = _operator_policy(helm, *EGRESS)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": API_SERVER}}], "ports": _tcp(443) + _tcp(6443)},
        {"to": KUBE_DNS, "ports": [{"port": 53, "protocol": "UDP"}, *_tcp(53)]},
    ]
    no_dns = _operator_policy(
        helm, *EGRESS, "--set-json", "networkPolicy.operator.egress.dnsTo=[]",
        "--set-json", "networkPolicy.operator.egress.apiServerPorts=[6443]",
    )  # fmt: skip
    assert no_dns["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": API_SERVER}}], "ports": _tcp(6443)}
    ]


def test_operator_egress_without_the_api_server_address_fails_to_render(helm: Helm) -> None:
    # An egress policy without the API server would cut the operator off: refuse it, and say
    # how to find the address.
    error = helm.template_error(*OPERATOR, "--set", "networkPolicy.operator.egress.enabled=true")
    assert "networkPolicy.operator.egress.apiServerCIDRs" in error
    assert "endpointslices" in error


# ---------------------------------------------------------------- the runtime pods


def test_runtime_policy_selects_the_pods_the_operator_makes_on_their_port(helm: Helm) -> None:
    from tts_operator.models import RUNTIME_PORT

    policies = _runtime_policies(helm, *RUNTIME)
    assert list(policies) == [NAMESPACE]  # the served namespace (the default scope)
    spec = policies[NAMESPACE]["spec"]
    template = _runtime_pod_template()
    selector = spec["podSelector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    # It selects every runtime pod of the namespace, not one TTSService's.
    assert "app.kubernetes.io/instance" not in selector
    (container,) = template["spec"]["containers"]
    (port,) = container["ports"]
    assert port["containerPort"] == RUNTIME_PORT == 8000
    assert spec["policyTypes"] == ["Ingress"]  # egress left open: models download anywhere
    assert spec["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": _tcp(RUNTIME_PORT)},
        {"from": MONITORING, "ports": _tcp(RUNTIME_PORT)},
    ]


def test_runtime_policies_follow_the_served_namespaces(helm: Helm) -> None:
    served = ["--set", "watchNamespaces={voices,staging}"]
    assert sorted(_runtime_policies(helm, *RUNTIME, *served)) == ["staging", "voices"]
    listed = ["--set", "networkPolicy.runtime.namespaces={voices}"]
    assert list(_runtime_policies(helm, *RUNTIME, *served, *listed)) == ["voices"]
    cluster = ["--set", "scope=cluster"]
    assert list(_runtime_policies(helm, *RUNTIME, *cluster, *listed)) == ["voices"]
    # Cluster scope serves namespaces made later, which the chart cannot put a policy in.
    error = helm.template_error(*RUNTIME, *cluster)
    assert "networkPolicy.runtime.namespaces" in error


def test_an_empty_peer_list_lets_nobody_in(helm: Helm) -> None:
    """In Kubernetes a rule with no `from` lets everybody in; an empty list in the values must
    mean the opposite."""
    nobody = [
        "--set-json", "networkPolicy.metricsFrom=[]",
        "--set-json", "networkPolicy.runtime.clientsFrom=[]",
    ]  # fmt: skip
    assert _operator_policy(helm, *OPERATOR, *nobody)["spec"]["ingress"] == []
    assert _runtime_policies(helm, *RUNTIME, *nobody)[NAMESPACE]["spec"]["ingress"] == []
    scraper_only = _runtime_policies(
        helm, *RUNTIME, "--set-json", "networkPolicy.runtime.clientsFrom=[]"
    )[NAMESPACE]  # fmt: skip
    assert scraper_only["spec"]["ingress"] == [{"from": MONITORING, "ports": _tcp(8000)}]


def test_extra_rules_are_added_as_given(helm: Helm) -> None:
    nodes = {"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}], "ports": _tcp(8000)}
    registry = {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": _tcp(443)}
    r = helm.template(
        *EGRESS, *RUNTIME,
        "--set-json", f"networkPolicy.runtime.extraIngress=[{json.dumps(nodes)}]",
        "--set-json", f"networkPolicy.operator.extraIngress=[{json.dumps(nodes)}]",
        "--set-json", f"networkPolicy.operator.egress.extraEgress=[{json.dumps(registry)}]",
    )  # fmt: skip
    for policy in r.all("NetworkPolicy"):
        assert policy["spec"]["ingress"][-1] == nodes
    operator = [p for p in r.all("NetworkPolicy") if not p["metadata"]["name"].endswith("-runtime")]
    assert operator[0]["spec"]["egress"][-1] == registry


NETWORK_POLICY_VARIANTS = [
    [*OPERATOR, *RUNTIME],
    [*EGRESS, *RUNTIME, "--set", "watchNamespaces={a,b}"],
    [*EGRESS, *RUNTIME, "--set-json", "networkPolicy.metricsFrom=[]"],
    [*OPERATOR, *RUNTIME, "--set-json", "networkPolicy.runtime.clientsFrom=[]"],
    [*RUNTIME, "--set", "scope=cluster", "--set", "networkPolicy.runtime.namespaces={voices}"],
]


@pytest.mark.parametrize("args", NETWORK_POLICY_VARIANTS)
def test_no_rendered_rule_lets_everybody_through(helm: Helm, args: list[str]) -> None:
    policies = helm.template(*args).all("NetworkPolicy")
    assert policies
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), f"rule without peers (everybody): {rule}"
            assert rule.get("ports"), f"rule without ports (every port): {rule}"
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), f"rule without peers (everywhere): {rule}"
            assert rule.get("ports"), f"rule without ports (every port): {rule}"


# ---------------------------------------------------------------- the API types, NOTES


def _round_trip(doc: dict[str, Any]) -> Any:
    """doc through the Kubernetes client's model of its kind: a field the API type lacks (a
    misspelt key) is dropped, so the result differs from doc."""
    api: Any = ApiClient()  # untyped; its deserializer is private (name-mangled)
    group_version = doc["apiVersion"].split("/")[-1].capitalize()
    model = api._ApiClient__deserialize(doc, f"{group_version}{doc['kind']}")
    return api.sanitize_for_serialization(model)


@pytest.mark.parametrize(
    "args",
    [*NETWORK_POLICY_VARIANTS, ["--set", "scope=cluster"], []],
)
def test_policies_and_roles_are_valid_api_objects(helm: Helm, args: list[str]) -> None:
    r = helm.template(*args)
    checked = r.all("NetworkPolicy") + r.all("Role") + r.all("ClusterRole")
    checked += r.all("RoleBinding") + r.all("ClusterRoleBinding")
    assert checked
    for doc in checked:
        assert _round_trip(doc) == doc


def test_round_trip_catches_a_misspelt_field() -> None:
    """The check above can fail."""
    good = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
    }
    assert _round_trip(good) == good
    bad = json.loads(json.dumps(good).replace('"from"', '"form"'))
    assert _round_trip(bad) != bad


def _notes(helm: Helm, tmp_path: Path, *args: str) -> str:
    """NOTES.txt as helm renders it after an install (`helm template` leaves it out): a copy of
    the chart renders it through tpl into a ConfigMap."""
    chart = tmp_path / "tts-operator"
    shutil.copytree(CHART, chart)  # follows the links to crds/
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
        '{{ tpl (.Files.Get "files/notes.txt") . | indent 4 }}\n'
    )
    rendered: Rendered = helm.template(*args, chart=chart)
    (notes,) = [c for c in rendered.all("ConfigMap") if c["metadata"]["name"] == "notes"]
    return str(notes["data"]["notes"])


def test_notes_say_what_is_served_and_which_policies_exist(helm: Helm, tmp_path: Path) -> None:
    default = _notes(helm, tmp_path / "default")
    assert f"It serves TTSServices in: {NAMESPACE} (a Role in each" in default
    assert "scope=cluster" in default and "watchNamespaces" in default
    assert "NetworkPolicies" not in default
    assert "every namespace." in _notes(helm, tmp_path / "cluster", "--set", "scope=cluster")
    both = _notes(helm, tmp_path / "both", *EGRESS, *RUNTIME)
    assert "- tts-tts-operator: only networkPolicy.metricsFrom" in both
    assert "egress goes only to the API server and DNS." in both
    assert f"- tts-tts-operator-runtime in {NAMESPACE}: only" in both
    assert "port 8000." in both
