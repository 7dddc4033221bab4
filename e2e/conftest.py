"""Session fixtures for the e2e tests: one cluster and one operator per session.

E2E_PROVIDER=local (default) runs the control plane built from Go modules with kwok stub GPU
nodes (e2e/localcluster.py); E2E_PROVIDER=kind runs a kind cluster (e2e/kindcluster.py).
Missing prerequisites skip every e2e test with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubeapi
import pytest
import realnode
from e2e_provider import PROVIDER
from kubeapi import E2EKube
from kubernetes import client
from operatorproc import OperatorProcess
from tts_cluster import REPO_ROOT, Binaries, ClusterError, LocalCluster, deploy, locate_binaries
from tts_cluster.images import Images, locate_images
from tts_cluster.node import REAL_NODE_TAINT, RealNode, missing_host_tools

CRD_DIR = REPO_ROOT / "crds"
WORK_ROOT = REPO_ROOT / ".cache" / "e2e"
# The chart's policy for the in-cluster operator: the model-over-http scenario serves the
# voice from a plain-http Service inside the cluster (a ClusterIP: a private address).
# What the in-cluster operator allows beyond the chart's defaults: the model-over-http
# scenario's in-cluster server, the Secrets (named tts-*) the auth and cache scenario
# refers to, and the real node's taint, which the real-node scenarios tolerate (set when
# stub nodes share the cluster) and the default policy refuses (issue 22).
E2E_POLICY = {
    "allowHttpModelUris": True,
    "allowPrivateModelHosts": True,
    "allowedSecretNames": ["tts-*"],
    "allowedTolerationKeys": [REAL_NODE_TAINT["key"]],
}
# The in-cluster release's admission policy judges the namespaces labelled so (each
# voice_namespace: the real-node scenarios go through it, as a chart install's TTSServices
# do). Other scenarios' namespaces stay outside it whatever the order the tests run in:
# test_11 shows the operator's own refusal, which is what covers clusters without the
# policy, and would otherwise meet the API server's refusal first whenever the in-cluster
# operator was installed earlier in the session. test_15 binds the policy for itself.
ADMISSION_LABEL = "tts-e2e/admission-policy"
ADMISSION_NAMESPACES = {"matchLabels": {ADMISSION_LABEL: "chart"}}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e_dir = Path(__file__).parent
    for item in items:
        if e2e_dir in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def workdir() -> Path:
    """Per-session files (PKI, etcd data, logs); kept for debugging until a later session."""
    for old in WORK_ROOT.glob("session-*"):
        pid = old.name.removeprefix("session-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    path = WORK_ROOT / f"session-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def binaries() -> Binaries:
    """The binaries hack/cluster-binaries.sh built; skip (naming what is missing) without them."""
    try:
        return locate_binaries()
    except ClusterError as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, workdir: Path) -> Iterator[Any]:
    """The running cluster (LocalCluster, or KindCluster with E2E_PROVIDER=kind)."""
    if PROVIDER == "kind":
        from kindcluster import KIND_BASE_SPEC, KindCluster, kind_prerequisites

        missing = kind_prerequisites()
        if missing:
            pytest.skip(missing)
        kind = KindCluster(workdir / "kind")
        kind.start()
        kubeapi.BASE_SPEC = KIND_BASE_SPEC
        yield kind
        kind.stop()
        return
    if PROVIDER != "local":
        pytest.fail(f"E2E_PROVIDER must be local or kind, not {PROVIDER!r}")
    if os.geteuid() != 0:
        pytest.skip(
            "the local cluster first routes its pod and Service ranges to local devices: "
            "run as root (CI does)"
        )
    local = LocalCluster(request.getfixturevalue("binaries"), workdir / "cluster")
    local.start(gpu_nodes=["gpu-node-1", "gpu-node-2"], gpus_per_node=2)
    yield local
    local.stop()


@pytest.fixture(scope="session")
def images() -> Images:
    """The images hack/build-images.sh built; skip (naming what is missing) without them."""
    try:
        return locate_images()
    except ClusterError as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def real_node(cluster: Any, images: Images) -> RealNode:
    """containerd + kubelet + kube-proxy + CoreDNS beside the stub nodes, started once."""
    if PROVIDER != "local":
        pytest.skip("the real node is part of the local cluster (E2E_PROVIDER=local)")
    missing = missing_host_tools()
    if missing:
        pytest.skip(f"the real node needs {', '.join(missing)} (apt-get install ...)")
    local: LocalCluster = cluster
    return local.node or local.add_real_node(images)


@pytest.fixture(scope="session")
def in_cluster_operator(
    cluster: Any, real_node: RealNode, images: Images, kube: E2EKube, operator: OperatorProcess
) -> str:
    """The chart's operator from its image on the real node (two replicas, one acting);
    returns the release's namespace. The host operator stops first: both would act."""
    operator.stop()
    # The host operator made the ClusterKopfPeering "tts-operator" the chart would create:
    # join it, so a host operator started again later pauses instead of acting too.
    peering_exists = (
        cluster.kubectl("get", "clusterkopfpeering", deploy.RELEASE, check=False).returncode == 0
    )
    # The session applied the CRD itself (as GitOps would): let the release adopt it.
    deploy.let_release_adopt(cluster, "crd/ttsservices.ttsoperator.io")
    deploy.install_operator(
        cluster,
        images,
        replicas=2,
        create_peering=not peering_exists,
        policy=E2E_POLICY,
        admission_namespaces=ADMISSION_NAMESPACES,
    )
    return deploy.RELEASE_NAMESPACE


@pytest.fixture(scope="session")
def voices(workdir: Path) -> Path:
    """The real Piper voice, staged as a hostPath folder for the voice PersistentVolume."""
    directory = workdir / "voices"
    deploy.stage_voice(directory)
    return directory


@pytest.fixture
def voice_namespace(cluster: Any, kube: E2EKube, namespace: str, voices: Path) -> Iterator[str]:
    """A fresh namespace holding the claim `tts-voices` with the real voice on it, judged by
    the in-cluster release's admission policy."""
    kube.core.patch_namespace(namespace, {"metadata": {"labels": {ADMISSION_LABEL: "chart"}}})
    cluster.apply(*deploy.voice_claim_objects(namespace, "tts-voices", voices))
    yield namespace
    cluster.kubectl("delete", "pv", f"{namespace}-tts-voices", "--wait=false", check=False)


@pytest.fixture
def stage(
    cluster: Any, kube: E2EKube, images: Images, in_cluster_operator: str, voice_namespace: str
) -> realnode.Stage:
    """Everything a realnode scenario needs, in one argument."""
    return realnode.Stage(cluster, kube, images, voice_namespace)


TTS_ONLY_USER = "tts-only-user"


@pytest.fixture
def tts_user(kube: E2EKube, namespace: str) -> E2EKube:
    """API access as a user who may only manage TTSServices in the test's namespace (a Role
    granting `ttsservices` and nothing else), to show what such an author can make happen."""
    rbac: Any = client.RbacAuthorizationV1Api(kube.api_client)
    role = {
        "metadata": {"name": "ttsservices-only"},
        "rules": [
            {
                "apiGroups": [kubeapi.GROUP],
                "resources": [kubeapi.PLURAL],
                "verbs": ["create", "get", "list", "watch", "patch", "delete"],
            }
        ],
    }
    rbac.create_namespaced_role(namespace, role)
    binding = {
        "metadata": {"name": "ttsservices-only"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "ttsservices-only",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TTS_ONLY_USER}
        ],
    }
    rbac.create_namespaced_role_binding(namespace, binding)
    return kube.as_user(TTS_ONLY_USER)


@pytest.fixture(scope="session")
def kube(cluster: Any) -> E2EKube:
    return E2EKube(Path(cluster.kubeconfig))


@pytest.fixture(scope="session")
def crds(cluster: Any, kube: E2EKube) -> None:
    """Install the project's CRDs by server-side apply, as a GitOps tool would."""
    for path in sorted(CRD_DIR.glob("*.yaml")):
        cluster.kubectl(
            "apply", "--server-side", "--field-manager=tts-e2e", "-f", str(path)
        )  # fmt: skip
    kube.wait_crd_established("ttsservices.ttsoperator.io")
    kube.wait_gc_tracks_ttsservices()


@pytest.fixture(scope="session")
def operator(cluster: Any, crds: None, workdir: Path) -> Iterator[OperatorProcess]:
    """The operator as a real process, shared by the session; tests may kill and restart it."""
    process = OperatorProcess(Path(cluster.kubeconfig), workdir / "logs" / "operator.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def running_operator(operator: OperatorProcess) -> OperatorProcess:
    """The session operator, started again if an earlier test left it stopped."""
    if not operator.running:
        operator.start()
    return operator


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube: E2EKube) -> Iterator[str]:
    """A fresh namespace per test, deleted (without waiting) afterwards."""
    slug = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"e2e-{slug}-{uuid.uuid4().hex[:5]}"
    kube.create_namespace(name)
    yield name
    kube.delete_namespace(name)
