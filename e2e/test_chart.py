"""The Helm chart on the real local cluster.

- `helm template` output is accepted by the API server (server-side dry run), both scopes.
- install -> upgrade (a changed value) -> uninstall leaves nothing but the kept CRD.
- A chart upgrade that adds a CRD field updates the served schema (the CRD is a template).
- RBAC is enough: the operator, run with the chart's ServiceAccount token instead of the
  cluster admin, reconciles TTSServices through the scenarios that need each permission, and
  never hits a 403.
- RBAC is not more: that token cannot read Secrets or do anything the operator does not do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubeapi import E2EKube, condition, tts_body, wait_for
from operatorproc import OperatorProcess
from tts_cluster import REPO_ROOT, Binaries, ClusterError, locate_binaries

CHART = REPO_ROOT / "charts" / "tts-operator"
CRD_NAME = "ttsservices.ttsoperator.io"
# The field the "previous chart version" lacks in the CRD upgrade test: optional, no default,
# used by no other test, so removing it for a moment changes no stored object.
ADDED_FIELD = "runtimeClassName"
# Operator pods of the chart may land on the stub GPU nodes (kwok runs them as fakes).
TOLERATE_STUB_NODES = [
    "--set", "tolerations[0].key=nvidia.com/gpu",
    "--set", "tolerations[0].operator=Exists",
    "--set", "tolerations[0].effect=NoSchedule",
]  # fmt: skip


class Helm:
    """The helm binary built by hack/cluster-binaries.sh, pointed at the e2e cluster."""

    def __init__(self, binary: Path, kubeconfig: Path, cluster: Any) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.cluster = cluster

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and proc.returncode != 0:
            state = self.cluster.kubectl(
                "get", "pods,deployments,events", "--all-namespaces", "-o", "wide", check=False
            ).stdout  # fmt: skip
            raise AssertionError(
                f"helm {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}\ncluster:\n{state}"
            )
        return proc

    def install(self, release: str, namespace: str, *args: str, chart: Path = CHART) -> None:
        # --take-ownership: the session may already have the CRD (server-side applied by the
        # e2e fixtures, or kept by an earlier release); the chart adopts it.
        self(
            "upgrade", "--install", release, str(chart), "--namespace", namespace,
            "--take-ownership", "--wait", "--timeout", "120s", *args,
        )  # fmt: skip

    def manifest(self, release: str, namespace: str) -> list[dict[str, Any]]:
        out = self("get", "manifest", release, "--namespace", namespace).stdout
        return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def helm(cluster: Any) -> Helm:
    return Helm(_binaries(cluster).helm, Path(cluster.kubeconfig), cluster)


def _binaries(cluster: Any) -> Binaries:
    """helm and kubectl from hack/cluster-binaries.sh (the kind provider has them too)."""
    binaries = getattr(cluster, "binaries", None)
    if binaries is None:
        try:
            binaries = locate_binaries()
        except ClusterError as missing:
            pytest.skip(f"helm and kubectl from hack/cluster-binaries.sh are needed: {missing}")
    return cast(Binaries, binaries)


@pytest.fixture(scope="module")
def peering_crds(cluster: Any) -> None:
    """The chart's crds/ (kopf peering), as `helm install` would put them before templates."""
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=tts-e2e",
        "-f", str(CHART / "crds"),
    )  # fmt: skip


def _kubectl_json(cluster: Any, *args: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl(*args, "-o", "json").stdout))


def _served_spec_properties(cluster: Any) -> dict[str, Any]:
    crd = _kubectl_json(cluster, "get", "crd", CRD_NAME)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"]["properties"])


# ---------------------------------------------------------------- template, install, upgrade


@pytest.mark.parametrize("scope", ["cluster", "namespaced"])
def test_rendered_chart_is_accepted_by_the_api_server(
    cluster: Any, helm: Helm, peering_crds: None, namespace: str, scope: str
) -> None:
    rendered = helm(
        "template", f"dry-{scope}", str(CHART), "--namespace", namespace,
        "--set", f"scope={scope}", "--set", f"watchNamespaces={{{namespace}}}",
    ).stdout  # fmt: skip
    kinds = re.findall(r"^kind: (\w+)", rendered, flags=re.MULTILINE)
    assert "Deployment" in kinds and "CustomResourceDefinition" in kinds, kinds
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered, check=False)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == len(kinds), result.stdout


def test_install_upgrade_uninstall_leaves_only_the_kept_crd(
    cluster: Any, kube: E2EKube, helm: Helm, namespace: str
) -> None:
    release = "tts-life"
    helm.install(release, namespace, "--set", "replicaCount=1", *TOLERATE_STUB_NODES)
    deployment = kube.deployment(namespace, f"{release}-tts-operator")
    assert deployment["status"].get("readyReplicas") == 1  # --wait saw the (kwok) pod Ready
    objects = helm.manifest(release, namespace)
    kinds = sorted(o["kind"] for o in objects)
    # The default scope: the release namespace only, nothing cluster-scoped but the CRD.
    for kind in ("Role", "RoleBinding", "KopfPeering", "ServiceAccount"):
        assert kind in kinds
    assert not {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"} & set(kinds), kinds
    crd = _kubectl_json(cluster, "get", "crd", CRD_NAME)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    notes = helm("get", "notes", release, "-n", namespace).stdout
    assert f"deployment/{release}-tts-operator" in notes
    assert "kind: TTSService" in notes and "/v1/audio/speech" in notes
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release

    helm.install(release, namespace, "--reuse-values", "--set", "operator.logLevel=debug")
    env = {
        e["name"]: e.get("value")
        for e in kube.deployment(namespace, f"{release}-tts-operator")["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert env["TTS_OPERATOR_LOG_LEVEL"] == "debug"
    history = json.loads(helm("history", release, "-n", namespace, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]
    assert history[-1]["status"] == "deployed"

    helm("uninstall", release, "--namespace", namespace, "--wait")
    left = []
    for obj in objects:
        meta = obj["metadata"]
        args = ["get", obj["kind"], meta["name"], "--ignore-not-found", "-o", "name"]
        if meta.get("namespace"):
            args += ["-n", meta["namespace"]]
        if cluster.kubectl(*args).stdout.strip():
            left.append(f"{obj['kind']}/{meta['name']}")
    assert left == [f"CustomResourceDefinition/{CRD_NAME}"]
    assert release not in helm("list", "-A", "-q").stdout.split()


def test_chart_upgrade_adds_a_crd_field(
    cluster: Any, helm: Helm, namespace: str, tmp_path: Path
) -> None:
    # The "previous release" of the chart: the same chart whose CRD lacks one field.
    old_chart = tmp_path / "tts-operator"
    shutil.copytree(CHART, old_chart)
    crd_file = old_chart / "files" / f"{CRD_NAME}.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    del spec["properties"]["scheduling"]["properties"][ADDED_FIELD]
    crd_file.write_text(yaml.safe_dump(crd, sort_keys=False))
    chart_yaml = old_chart / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("version: 0.1.0", "version: 0.0.9"))

    body = tts_body("crd-upgrade", {"scheduling": {ADDED_FIELD: "nvidia"}})
    body["metadata"]["namespace"] = namespace
    strict_dry_run = ["apply", "--dry-run=server", "--validate=strict", "-f", "-"]
    release = "tts-crd"
    try:
        helm.install(release, namespace, "--set", "replicaCount=0", chart=old_chart)
        assert ADDED_FIELD not in _served_spec_properties(cluster)["scheduling"]["properties"]
        refused = cluster.kubectl(*strict_dry_run, stdin=json.dumps(body), check=False)
        assert refused.returncode != 0
        assert ADDED_FIELD in refused.stderr

        helm.install(release, namespace, "--reuse-values")
        assert ADDED_FIELD in _served_spec_properties(cluster)["scheduling"]["properties"]
        accepted = cluster.kubectl(*strict_dry_run, stdin=json.dumps(body), check=False)
        assert accepted.returncode == 0, accepted.stderr
    finally:
        # Whatever happened, leave the session with the current CRD.
        helm("upgrade", release, str(CHART), "-n", namespace, "--reuse-values", check=False)
        helm("uninstall", release, "--namespace", namespace, "--wait", check=False)
    assert ADDED_FIELD in _served_spec_properties(cluster)["scheduling"]["properties"]


# ---------------------------------------------------------------- monitoring wiring, real CRDs

# The Prometheus Operator's own CRDs, from its Go module (the Go module proxy is the one
# registry these machines reach); version pinned here. Never KEDA's: the local cluster
# installs its own KEDA's, which another version here (deleted after the test) would break.
THIRD_PARTY_CRDS = [
    (
        "github.com/prometheus-operator/prometheus-operator@v0.80.1",
        [
            "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        ],
    ),
]


def _go_module_dir(module: str) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("the go toolchain is needed to fetch the Prometheus Operator CRDs")
    proc = subprocess.run(
        [go, "mod", "download", "-json", module],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"},
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(
            f"cannot download {module} from the Go module proxy: {proc.stdout}{proc.stderr}"
        )
    return Path(json.loads(proc.stdout)["Dir"])


@pytest.fixture
def monitoring_crds(cluster: Any) -> Iterator[None]:
    """PodMonitor and ServiceMonitor served by the API server, for one test."""
    files = [_go_module_dir(module) / f for module, paths in THIRD_PARTY_CRDS for f in paths]
    names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
    for path in files:
        cluster.kubectl("apply", "--server-side", "--field-manager=tts-e2e", "-f", str(path))
    for name in names:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    yield
    # Wait until they are gone: a helm install that discovers a CRD still being deleted
    # renders its objects and then fails to POST them (seen once in CI).
    cluster.kubectl("delete", "crd", *names, "--ignore-not-found", "--timeout=120s", check=False)


def test_monitoring_objects_render_when_their_crds_exist_and_the_server_accepts_them(
    cluster: Any, helm: Helm, crds: None, monitoring_crds: None, namespace: str
) -> None:
    release = "tts-mon"
    helm.install(
        release, namespace, "--set", "replicaCount=0", "--set", "crds.install=false",
        "--set", "monitoring.serviceMonitor.enabled=true",
    )  # fmt: skip
    try:
        kinds = sorted(o["kind"] for o in helm.manifest(release, namespace))
        for kind in ("PodMonitor", "ServiceMonitor"):
            assert kind in kinds, kinds  # .Capabilities saw the live CRDs
        monitor = _kubectl_json(
            cluster, "get", "podmonitor", f"{release}-tts-operator-runtime", "-n", namespace
        )  # fmt: skip
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    finally:
        helm("uninstall", release, "--namespace", namespace, "--wait", check=False)


# ---------------------------------------------------------------- RBAC: enough, and no more


def _token_kubeconfig(cluster: Any, service_account: str, namespace: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a TokenRequest token)."""
    token = cluster.kubectl(
        "create", "token", service_account, "-n", namespace, "--duration=2h"
    ).stdout.strip()  # fmt: skip
    admin = json.loads(Path(cluster.kubeconfig).read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [
            {
                "name": "chart-sa",
                "context": {"cluster": admin["clusters"][0]["name"], "user": service_account},
            }
        ],
        "current-context": "chart-sa",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


class ChartOperator:
    """The operator process running as the chart's ServiceAccount, and that identity."""

    def __init__(self, process: OperatorProcess, kubeconfig: Path, cluster: Any) -> None:
        self.process = process
        self.kubeconfig = kubeconfig
        self.cluster = cluster

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(_binaries(self.cluster).kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def can_i(self, *args: str) -> bool:
        return self.kubectl("auth", "can-i", *args).stdout.strip() == "yes"


@pytest.fixture(scope="module")
def chart_operator(
    cluster: Any,
    helm: Helm,
    operator: OperatorProcess,
    workdir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ChartOperator]:
    """Install the chart (cluster scope, no in-cluster replicas), then run the operator on the
    host with its ServiceAccount's token. The session's admin operator is paused meanwhile, so
    everything that happens is this identity's doing."""
    release, namespace = "tts-rbac", "tts-rbac-system"
    peering = "tts-rbac-e2e"
    helm.install(
        release, namespace, "--create-namespace", "--set", "replicaCount=0",
        "--set", "scope=cluster", "--set", f"peering.name={peering}",
    )  # fmt: skip
    kubeconfig = _token_kubeconfig(
        cluster, f"{release}-tts-operator", namespace,
        tmp_path_factory.mktemp("rbac") / "chart-sa.kubeconfig",
    )  # fmt: skip
    admin_was_running = operator.running
    operator.stop()
    process = OperatorProcess(
        kubeconfig,
        workdir / "logs" / "chart-operator.log",
        name="chart-operator",
        extra_env={"TTS_OPERATOR_PEERING_NAME": peering},
    )
    process.start()
    try:
        yield ChartOperator(process, kubeconfig, cluster)
    finally:
        process.stop()
        helm("uninstall", release, "--namespace", namespace, "--wait", check=False)
        if admin_was_running:
            operator.start()


def test_chart_identity_reconciles_a_ttsservice_through_its_lifecycle(
    chart_operator: ChartOperator, kube: E2EKube, namespace: str
) -> None:
    name = "rbac-voice"
    kube.create_tts(namespace, tts_body(name, {"autoscaling": {"enabled": True}}))
    ready = kube.wait_tts_ready(namespace, name, timeout=120)
    uid = ready["metadata"]["uid"]
    children: dict[str, Callable[[], dict[str, Any]]] = {
        "Deployment": lambda: kube.deployment(namespace, name),
        "Service": lambda: kube.service(namespace, name),
        "HorizontalPodAutoscaler": lambda: kube.hpa(namespace, name),
        "PodDisruptionBudget": lambda: kube.pdb(namespace, name),
        "ConfigMap": lambda: kube.configmap(namespace, f"{name}-runtime"),
    }
    for kind, read in children.items():
        owners = read()["metadata"].get("ownerReferences") or []
        assert [o["uid"] for o in owners] == [uid], kind

    # Drift: a child deleted by hand comes back (get/watch/create on services).
    kube.core.delete_namespaced_service(name, namespace)
    wait_for("the Service to be restored", lambda: kube.exists(children["Service"]), 60)

    # Autoscaling off: the HPA is deleted and the operator owns replicas (delete verb).
    kube.patch_tts(namespace, name, {"spec": {"replicas": 2, "autoscaling": {"enabled": False}}})
    kube.wait_gone("the HPA", children["HorizontalPodAutoscaler"], 60)
    wait_for(
        "Deployment replicas 2",
        lambda: kube.deployment(namespace, name)["spec"]["replicas"] == 2,
        60,
    )

    # Deletion: the garbage collector removes every child.
    kube.delete_tts(namespace, name)
    for kind, read in children.items():
        if kind != "HorizontalPodAutoscaler":
            kube.wait_gone(kind, read, 90)


def test_chart_identity_reports_insufficient_gpu_from_pending_pods(
    chart_operator: ChartOperator, kube: E2EKube, namespace: str
) -> None:
    # No stub node has 16 GPUs: the pod stays Pending/Unschedulable (reads pods: list/watch).
    name = "rbac-big"
    kube.create_tts(namespace, tts_body(name, {"runtime": {"gpu": {"count": 16}}}))
    degraded = kube.wait_tts_condition(namespace, name, "Degraded", "True", timeout=120)
    cond = condition(degraded, "Degraded") or {}
    assert cond.get("reason") == "InsufficientGPU", cond
    assert "nvidia.com/gpu" in cond.get("message", "")


def test_chart_identity_reports_a_missing_model_claim(
    chart_operator: ChartOperator, kube: E2EKube, namespace: str
) -> None:
    # pvc:// URIs: the operator reads the claim (persistentvolumeclaims: get).
    name = "rbac-pvc"
    kube.create_tts(namespace, tts_body(name, {"model": {"uri": "pvc://no-such-claim/voice"}}))
    degraded = kube.wait_tts_condition(namespace, name, "Degraded", "True", timeout=90)
    cond = condition(degraded, "Degraded") or {}
    assert "no-such-claim" in cond.get("message", ""), cond
    assert "forbidden" not in cond.get("message", "").lower(), cond


def test_chart_identity_never_hit_a_permission_error(chart_operator: ChartOperator) -> None:
    log = chart_operator.process.log_text()
    assert "rbac-voice" in log, "the scenarios above did not run with this operator"
    # An RBAC denial reads: ... is forbidden: User "system:serviceaccount:NS:NAME" cannot VERB
    # resource ... (other 403s, e.g. a namespace being deleted under a test, are not RBAC).
    denied = [line for line in log.splitlines() if re.search(r"cannot \w+ resource", line)]
    assert not denied, "\n".join(denied[:20])


@pytest.mark.parametrize(
    ("verb", "resource"),
    [
        ("get", "secrets"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("get", "nodes"),
        ("create", "pods"),
        ("delete", "pods"),
        ("create", "pods/exec"),
        ("delete", "ttsservices.ttsoperator.io"),
        ("create", "ttsservices.ttsoperator.io"),
        ("patch", "ttsservices.ttsoperator.io"),  # only its status: kopf writes nothing there
        ("update", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("create", "serviceaccounts/token"),
        ("list", "events.events.k8s.io"),
        ("delete", "namespaces"),
    ],
)
def test_chart_identity_is_denied_what_the_operator_does_not_need(
    chart_operator: ChartOperator, verb: str, resource: str
) -> None:
    assert not chart_operator.can_i(verb, resource, "--all-namespaces")


def test_chart_identity_cannot_read_secrets(chart_operator: ChartOperator, kube: E2EKube) -> None:
    result = chart_operator.kubectl("get", "secrets", "--all-namespaces")
    assert result.returncode != 0
    assert "forbidden" in result.stderr.lower(), result.stderr
    # ... while what it does need is allowed (the denials above are not a broken token).
    assert chart_operator.can_i(
        "patch", "ttsservices.ttsoperator.io", "--subresource=status", "--all-namespaces"
    )
    assert chart_operator.can_i("create", "deployments.apps", "--all-namespaces")


def test_namespaced_install_serves_its_namespace_with_roles_only(
    cluster: Any,
    kube: E2EKube,
    helm: Helm,
    chart_operator: ChartOperator,
    namespace: str,
    workdir: Path,
    tmp_path: Path,
) -> None:
    """scope=namespaced: one Role per watched namespace and nothing cluster-scoped is enough
    for the operator to serve that namespace, and the identity cannot reach any other."""
    release = "tts-ns"
    helm.install(
        release, namespace, "--set", "scope=namespaced", "--set", "replicaCount=0",
        "--set", "crds.install=false",
    )  # fmt: skip
    manifest_kinds = {o["kind"] for o in helm.manifest(release, namespace)}
    assert not {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"} & manifest_kinds
    kubeconfig = _token_kubeconfig(
        cluster, f"{release}-tts-operator", namespace, tmp_path / "ns.kubeconfig"
    )  # fmt: skip
    scoped = OperatorProcess(
        kubeconfig,
        workdir / "logs" / "namespaced-operator.log",
        name="namespaced-operator",
        extra_env={
            "TTS_OPERATOR_NAMESPACES": namespace,
            "TTS_OPERATOR_PEERING_NAME": f"{release}-tts-operator",
        },
    )
    chart_operator.process.stop()  # the cluster-wide one would serve this namespace too
    scoped.start()
    try:
        kube.create_tts(namespace, tts_body("ns-voice"))
        kube.wait_tts_ready(namespace, "ns-voice", timeout=120)
        assert kube.deployment(namespace, "ns-voice")["metadata"]["ownerReferences"]
        log = scoped.log_text()
        assert "ns-voice" in log
        assert "Failed to post an event" not in log

        identity = ChartOperator(scoped, kubeconfig, cluster)
        assert identity.can_i("watch", "ttsservices.ttsoperator.io", "-n", namespace)
        assert not identity.can_i("list", "ttsservices.ttsoperator.io", "-n", "default")
        assert not identity.can_i("list", "ttsservices.ttsoperator.io", "--all-namespaces")
        assert not identity.can_i("list", "customresourcedefinitions.apiextensions.k8s.io")
        assert not identity.can_i("get", "secrets", "-n", namespace)
    finally:
        scoped.stop()
        chart_operator.process.start()
        helm("uninstall", release, "--namespace", namespace, "--wait", check=False)
