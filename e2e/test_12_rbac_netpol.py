"""Scenario 12 (issue 11, item 3): the chart's RBAC and network defaults on a real API server.

- The default install (scope namespaced) gives its ServiceAccount the operator's rights in the
  release namespace and nowhere else, and nothing cluster-scoped (asked of the API server's
  authorizer with the ServiceAccount's own token).
- The optional NetworkPolicies are valid: the API server accepts them with strict field
  validation and stores them as rendered, and their pod selectors pick exactly the pods they
  are for, the runtime pods the operator made and the operator's own pods.

Enforcement is not tested: the local cluster connects pods with the CNI bridge plugin, which
does not implement NetworkPolicy (tests/chart checks what the policies allow).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from kubeapi import E2EKube, tts_body, wait_for
from operatorproc import OperatorProcess
from test_chart import CHART, TOLERATE_STUB_NODES, Helm, _binaries, _token_kubeconfig

# What the operator does in a namespace it serves (README "RBAC").
OPERATOR_RIGHTS = [
    ("watch", "ttsservices.ttsoperator.io"),
    ("patch", "ttsservices.ttsoperator.io", "--subresource=status"),
    ("create", "deployments.apps"),
    ("patch", "services"),
    ("create", "configmaps"),
    ("delete", "horizontalpodautoscalers.autoscaling"),
    ("list", "pods"),
    ("patch", "kopfpeerings.kopf.dev"),
]


def _helm(cluster: Any) -> Helm:
    return Helm(_binaries(cluster).helm, Path(cluster.kubeconfig), cluster)


def _can_i(cluster: Any, kubeconfig: Path, *args: str) -> bool:
    result = subprocess.run(
        [str(_binaries(cluster).kubectl), f"--kubeconfig={kubeconfig}", "auth", "can-i", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() == "yes"


def test_default_install_grants_nothing_outside_the_release_namespace(
    cluster: Any, crds: None, namespace: str, tmp_path: Path
) -> None:
    helm = _helm(cluster)
    release = "tts-scope"
    helm.install(release, namespace, "--set", "replicaCount=0", "--set", "crds.install=false")
    try:
        manifest = helm.manifest(release, namespace)
        kinds = {o["kind"] for o in manifest}
        assert {"Role", "RoleBinding", "KopfPeering"} <= kinds, kinds
        assert not {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"} & kinds, kinds
        # The admission policy and its binding are the only cluster-scoped objects: they
        # grant nothing, and judge TTSServices of the release namespace only.
        cluster_scoped = [o for o in manifest if "namespace" not in o["metadata"]]
        assert sorted(o["kind"] for o in cluster_scoped) == [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ], cluster_scoped
        [binding] = [o for o in cluster_scoped if o["kind"] == "ValidatingAdmissionPolicyBinding"]
        assert binding["spec"]["matchResources"]["namespaceSelector"] == {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]}
            ]
        }
        namespaced = [o for o in manifest if o not in cluster_scoped]
        assert {o["metadata"]["namespace"] for o in namespaced} == {namespace}

        sa = _token_kubeconfig(
            cluster, f"{release}-tts-operator", namespace, tmp_path / "sa.kubeconfig"
        )  # fmt: skip
        for right in OPERATOR_RIGHTS:
            assert _can_i(cluster, sa, *right, "-n", namespace), right
            for elsewhere in (["-n", "default"], ["-n", "kube-system"], ["--all-namespaces"]):
                assert not _can_i(cluster, sa, *right, *elsewhere), (right, elsewhere)
        assert not _can_i(cluster, sa, "list", "customresourcedefinitions.apiextensions.k8s.io")
        assert not _can_i(cluster, sa, "patch", "clusterkopfpeerings.kopf.dev")
        assert not _can_i(cluster, sa, "get", "secrets", "-n", namespace)
    finally:
        helm("uninstall", release, "--namespace", namespace, "--wait", check=False)


def _api_server(cluster: Any) -> tuple[list[str], list[int]]:
    """The API server's addresses (as CIDRs) and ports: the endpoints of default/kubernetes,
    as README "Network policies" tells an installer to find them."""
    out = cluster.kubectl(
        "get", "endpointslices", "-n", "default",
        "-l", "kubernetes.io/service-name=kubernetes", "-o", "json",
    ).stdout  # fmt: skip
    slices = json.loads(out)["items"]
    addresses = {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}
    ports = sorted({p["port"] for s in slices for p in s.get("ports") or []})
    assert addresses and ports, slices
    return [f"{a}/128" if ":" in a else f"{a}/32" for a in sorted(addresses)], ports


def _selected(policy: dict[str, Any], pods: list[dict[str, Any]]) -> set[str]:
    """The pods the policy's podSelector (matchLabels only) picks."""
    wanted = policy["spec"]["podSelector"]["matchLabels"].items()
    return {p["metadata"]["name"] for p in pods if wanted <= p["metadata"]["labels"].items()}


def _instance(pods: list[dict[str, Any]], instance: str) -> set[str]:
    return {
        p["metadata"]["name"]
        for p in pods
        if p["metadata"]["labels"].get("app.kubernetes.io/instance") == instance
    }


def test_network_policies_are_accepted_and_select_their_pods(
    cluster: Any, kube: E2EKube, running_operator: OperatorProcess, namespace: str
) -> None:
    helm = _helm(cluster)
    cidrs, ports = _api_server(cluster)
    values = [
        "--set", "networkPolicy.operator.enabled=true",
        "--set", "networkPolicy.operator.egress.enabled=true",
        "--set-json", f"networkPolicy.operator.egress.apiServerCIDRs={json.dumps(cidrs)}",
        "--set-json", f"networkPolicy.operator.egress.apiServerPorts={json.dumps(ports)}",
        "--set", "networkPolicy.runtime.enabled=true",
    ]  # fmt: skip

    # Every field is one the API server knows (strict validation refuses unknown fields).
    rendered = helm(
        "template", "np-dry", str(CHART), "--namespace", namespace, *values,
        "--show-only", "templates/networkpolicy-operator.yaml",
        "--show-only", "templates/networkpolicy-runtime.yaml",
    ).stdout  # fmt: skip
    dry = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=rendered, check=False
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert len(dry.stdout.strip().splitlines()) == 2, dry.stdout

    release = "tts-np"
    helm.install(
        release, namespace, "--set", "replicaCount=1", "--set", "crds.install=false",
        *TOLERATE_STUB_NODES, *values,
    )  # fmt: skip
    try:
        expected = {
            o["metadata"]["name"]: o
            for o in helm.manifest(release, namespace)
            if o["kind"] == "NetworkPolicy"
        }
        assert sorted(expected) == [f"{release}-tts-operator", f"{release}-tts-operator-runtime"]
        stored = json.loads(
            cluster.kubectl("get", "networkpolicies", "-n", namespace, "-o", "json").stdout
        )["items"]  # fmt: skip
        live = {p["metadata"]["name"]: p for p in stored}
        for name, policy in expected.items():
            assert live[name]["spec"] == policy["spec"], name  # stored as rendered

        # The runtime policy picks the pods the operator made for a TTSService; the
        # operator's policy picks the operator pod; neither picks the other's.
        kube.create_tts(namespace, tts_body("np-voice"))
        wait_for(
            "the TTSService's pods",
            lambda: kube.pods(namespace, "app.kubernetes.io/instance=np-voice"),
            120,
        )
        pods = kube.pods(namespace, "")  # one listing: both policies judged on the same pods
        runtime, operator = _instance(pods, "np-voice"), _instance(pods, release)
        assert runtime and len(operator) == 1, [p["metadata"]["labels"] for p in pods]
        assert _selected(live[f"{release}-tts-operator-runtime"], pods) == runtime
        assert _selected(live[f"{release}-tts-operator"], pods) == operator
    finally:
        helm("uninstall", release, "--namespace", namespace, "--wait", check=False)
