"""Helpers for the scenarios on the real node: the TTSService spec they start from, calls
through the Service from a client pod, and reading which pod answered."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from kubeapi import E2EKube, condition, merged, tts_body, wait_for
from tts_cluster import LocalCluster
from tts_cluster.deploy import REAL_NODE_TOLERATION, VOICE, client_pod
from tts_cluster.images import Images

CLAIM = "tts-voices"


@dataclass(frozen=True)
class Stage:
    """What a realnode scenario works with: the cluster with its real node and in-cluster
    operator, the API client, the images, and a fresh namespace holding the voice claim."""

    cluster: LocalCluster
    kube: E2EKube
    images: Images
    namespace: str


# Small requests so three runtime pods and two clients fit the node's two CPUs; calibration
# off so a pod is Ready as soon as its model is loaded and warmed up. The preStop sleep stays
# at its default (5 s): with 2 s, a busy kube-proxy still routed new connections to a pod
# that had begun to shut down (6 refused in one CI run's rollout).
SPEC: dict[str, Any] = {
    "model": {"uri": f"pvc://{CLAIM}/{VOICE}"},
    "runtime": {
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "2Gi"},
        },
        "env": [{"name": "TTS_BATCH_CALIBRATION", "value": "false"}],
    },
    "scheduling": {"nodeSelector": {"type": "real"}, "tolerations": [REAL_NODE_TOLERATION]},
}

# Pods that need no GPU (the node has two stub GPUs; these scenarios are about traffic).
CPU_ONLY: dict[str, Any] = {"gpu": {"count": 0}}
# Affinity off, so traffic reaches every pod.
SPREAD: dict[str, Any] = {"sessionAffinity": "None"}

# Runs inside the client pod: N requests to URL, one JSON line each (status, pod, bytes).
CLIENT_SCRIPT = """\
import json, sys, urllib.request, urllib.error
url, count, text = sys.argv[1], int(sys.argv[2]), sys.argv[3]
body = json.dumps({"model": "tts-1", "input": text, "voice": "default",
                   "response_format": "wav"}).encode()
for _ in range(count):
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            data = response.read()
            print(json.dumps({"status": response.status, "pod": response.headers.get("X-TTS-Pod"),
                              "bytes": len(data)}), flush=True)
    except urllib.error.HTTPError as error:
        print(json.dumps({"status": error.code, "pod": error.headers.get("X-TTS-Pod"),
                          "bytes": 0}), flush=True)
    except Exception as error:
        print(json.dumps({"status": 0, "error": repr(error)}), flush=True)
"""


def spec(**override: Any) -> dict[str, Any]:
    return merged(SPEC, override)


def exec_in(
    cluster: LocalCluster, namespace: str, pod: str, *argv: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("exec", "-n", namespace, pod, "--", *argv, check=False, timeout=timeout)


def call_service(
    cluster: LocalCluster, namespace: str, client: str, url: str, count: int, text: str
) -> list[dict[str, Any]]:
    """`count` requests from the client pod, one after another; one dict per request."""
    result = exec_in(
        cluster, namespace, client, "python3", "-c", CLIENT_SCRIPT, url, str(count), text
    )
    if result.returncode != 0:
        raise AssertionError(f"client failed: {result.stderr}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


# Runs inside the client pod: `threads` clients send requests back to back for `seconds`
# (or until the file `stop` exists), then print one JSON line per request.
LOAD_SCRIPT = """\
import json, os, sys, threading, time, urllib.request, urllib.error
url, threads, seconds, stop = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
body = json.dumps({"model": "tts-1", "input": "Steady traffic while pods come and go.",
                   "voice": "default", "response_format": "wav"}).encode()
records, lock = [], threading.Lock()
deadline = time.monotonic() + seconds
def client():
    while time.monotonic() < deadline and not os.path.exists(stop):
        start = time.monotonic()
        record = {"start": start}
        try:
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
                record.update(status=response.status, pod=response.headers.get("X-TTS-Pod"))
        except urllib.error.HTTPError as error:
            record.update(status=error.code, pod=error.headers.get("X-TTS-Pod"))
        except Exception as error:
            record.update(status=0, error=repr(error)[:200])
        record["end"] = time.monotonic()
        with lock:
            records.append(record)
workers = [threading.Thread(target=client) for _ in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
for r in records: print(json.dumps(r))
"""


class Load:
    """Steady traffic from a client pod through `url` while a test changes the cluster."""

    def __init__(
        self, cluster: LocalCluster, namespace: str, client: str, url: str, threads: int = 2
    ) -> None:
        self.cluster, self.namespace, self.client = cluster, namespace, client
        argv = [
            str(cluster.binaries.kubectl), f"--kubeconfig={cluster.kubeconfig}",
            "exec", "-n", namespace, client, "--",
            "python3", "-c", LOAD_SCRIPT, url, str(threads), "600", "/tmp/stop-load",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def stop(self) -> list[dict[str, Any]]:
        """Ask the clients to finish their current requests; every request's record."""
        exec_in(self.cluster, self.namespace, self.client, "touch", "/tmp/stop-load")
        out, err = self.process.communicate(timeout=180)
        if self.process.returncode != 0:
            raise AssertionError(f"load client failed: {err}")
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def refused(record: dict[str, Any]) -> bool:
    """A connection refused: no server accepted the request (a client may simply retry)."""
    return "Connection refused" in str(record.get("error", ""))


def summary(records: list[dict[str, Any]]) -> dict[str, int]:
    """Requests by outcome: HTTP status as a string, or "error" for a failed connection."""
    counts: dict[str, int] = {}
    for record in records:
        key = str(record["status"]) if record["status"] else "error"
        counts[key] = counts.get(key, 0) + 1
    return counts


def start_clients(kube: E2EKube, namespace: str, image: str, *names: str) -> None:
    """Client pods on the real node, Running before this returns."""
    for name in names:
        kube.create_pod(namespace, client_pod(name, image))
    for name in names:
        wait_for(
            f"client pod {name} Running",
            lambda name=name: (
                kube.plain(kube.core.read_namespaced_pod(name, namespace))[  # type: ignore[misc]
                    "status"
                ].get("phase")
                == "Running"
            ),
            120,
        )


def wait_serving(kube: E2EKube, namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """The TTSService Ready with `replicas` ready pods; returns it."""

    def serving() -> dict[str, Any] | None:
        tts = kube.get_tts(namespace, name)
        ready = (condition(tts, "Ready") or {}).get("status") == "True"
        count = (tts.get("status") or {}).get("readyReplicas", 0)
        return tts if ready and count == replicas else None

    return wait_for(f"{name} serving with {replicas} ready pods", serving, 300)


def speech_url(tts: dict[str, Any]) -> str:
    return f"{tts['status']['endpoint']}/v1/audio/speech"


def serve(
    kube: E2EKube,
    namespace: str,
    image: str,
    name: str,
    replicas: int,
    clients: tuple[str, ...] = ("client",),
    **override: Any,
) -> str:
    """A TTSService from SPEC (+ override) with `replicas` pods and client pods beside it,
    all ready; returns its speech URL."""
    kube.create_tts(namespace, tts_body(name, spec(replicas=replicas, **override)))
    start_clients(kube, namespace, image, *clients)
    return speech_url(wait_serving(kube, namespace, name, replicas))
