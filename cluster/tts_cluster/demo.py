"""`make demo` / `make demo-down`: the whole product on this machine, in one command.

    python -m tts_cluster.demo up     local cluster with a real node -> helm install the chart
                                      (the operator runs in-cluster from its image) -> a Piper
                                      voice on a PersistentVolumeClaim -> the example TTSService
                                      -> a request from a client pod through the Service's DNS
                                      name -> out/demo/NAME.wav (+ NAME.txt, the text sent) ->
                                      what a speech recognizer hears in it
    python -m tts_cluster.demo down   stop everything `up` started and delete its state

Running `up` twice is fine: it first stops whatever an earlier `up` left running. The
cluster stays up after `up` (detached); the last line printed is KUBECONFIG=PATH.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tts_cluster import deploy
from tts_cluster.base import REPO_ROOT, ClusterError, wait_until
from tts_cluster.binaries import BINARIES_SCRIPT, locate_binaries
from tts_cluster.controlplane import LocalCluster
from tts_cluster.images import IMAGES_SCRIPT, locate_images

STATE = REPO_ROOT / ".cache" / "demo"  # the cluster, the voice, logs (ignored)
CLUSTER_DIR = STATE / "cluster"
OUT_DIR = REPO_ROOT / "out" / "demo"  # NAME.wav and NAME.txt (ignored)
EXAMPLE = REPO_ROOT / "docs" / "examples" / "minimal.yaml"
SPEECH_TOOL = REPO_ROOT / "tests" / "runtime" / "speech.py"
DEMO_NAMESPACE = "tts-demo"
CLIENT = "demo-client"
TEXT = (
    "Hello from the text to speech operator. This voice comes from a Piper model, and every "
    "word you hear went through the speech service."
)


class Steps:
    """Numbered progress lines, and on failure the step, a hint and where the logs are."""

    def __init__(self, total: int) -> None:
        self.total, self.number, self.hint = total, 0, ""
        self.started = time.monotonic()
        tty = sys.stdout.isatty()
        self.bold, self.green, self.red, self.reset = (
            ("\033[1m", "\033[32m", "\033[31m", "\033[0m") if tty else ("", "", "", "")
        )

    def next(self, name: str, hint: str = "") -> None:
        self.number += 1
        self.hint = hint
        elapsed = time.monotonic() - self.started
        print(f"\n{self.bold}[{self.number}/{self.total}] {name}{self.reset}  ({elapsed:.0f}s)")

    def info(self, text: str) -> None:
        for line in text.rstrip().splitlines():
            print(f"      {line}")

    def ok(self, text: str) -> None:
        print(f"      {self.green}{text}{self.reset}")

    def heading(self, text: str) -> None:
        print(f"\n{self.bold}== {text} =={self.reset}")

    def failed(self, error: BaseException) -> None:
        print(
            f"\n{self.red}demo failed at step {self.number}/{self.total}: {error}{self.reset}",
            file=sys.stderr,
        )
        if self.hint:
            print(self.hint, file=sys.stderr)
        print(f"Logs: {CLUSTER_DIR / 'logs'}   Tear down: make demo-down", file=sys.stderr)


def run_script(script: Path) -> None:
    """A build script, its progress lines (stderr) shown as they come; each names its log."""
    sys.stdout.flush()
    process = subprocess.run([str(script)], stdout=subprocess.DEVNULL, check=False)
    if process.returncode != 0:
        raise ClusterError(f"{script.name} failed (its log is named above)")


def down() -> None:
    stopped = LocalCluster.stop_from_state(CLUSTER_DIR)
    shutil.rmtree(STATE, ignore_errors=True)
    message = f"stopped {', '.join(stopped)}" if stopped else "nothing was running"
    print(f"demo down: {message}; state removed ({OUT_DIR.relative_to(REPO_ROOT)} is kept)")


def up() -> int:
    steps = Steps(9)
    try:
        return _up(steps)
    except (ClusterError, subprocess.CalledProcessError, TimeoutError) as error:
        steps.failed(error)
        return 1


def _up(steps: Steps) -> int:
    example = yaml.safe_load(EXAMPLE.read_text())
    name = example["metadata"]["name"]
    claim, _, voice_path = example["spec"]["model"]["uri"].removeprefix("pvc://").partition("/")

    steps.next("Clean up an earlier demo (if any)")
    if STATE.exists():
        down()
    STATE.mkdir(parents=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    steps.ok("clean")

    steps.next(
        "Cluster binaries: Kubernetes, etcd, CoreDNS, kwok, helm, the stub GPU device plugin",
        "hack/cluster-binaries.sh builds them from the Go module proxy; its log is named above.",
    )
    steps.info("cold: about 20 minutes on 2 cores (Kubernetes compiles from source); cached after")
    run_script(BINARIES_SCRIPT)
    binaries = locate_binaries()
    steps.ok(f"Kubernetes {binaries.k8s_version} in {binaries.bin_dir.relative_to(REPO_ROOT)}")

    steps.next("Images: tts-runtime and tts-operator from their Dockerfiles (no daemon)")
    run_script(IMAGES_SCRIPT)
    images = locate_images()
    for image in images.all:
        steps.info(f"{image.name}  ({image.archive.stat().st_size / 1e6:.0f} MB archive)")

    steps.next(
        "Local cluster: etcd, API server, controllers, scheduler, CoreDNS and a real node "
        "(containerd + kubelet + kube-proxy, 2 stub GPUs)",
        f"Component logs: {CLUSTER_DIR / 'logs'}",
    )
    cluster = LocalCluster(binaries, CLUSTER_DIR, detach=True)
    cluster.start(gpu_nodes=())
    try:
        cluster.add_real_node(images, gpus=2, tainted=False)
    except BaseException:
        cluster.stop()
        raise
    steps.info(cluster.kubectl("get", "nodes", "-o", "wide").stdout)

    steps.next("helm install the chart: the operator runs in-cluster from its image, 2 replicas")
    deploy.install_operator(cluster, images, replicas=2)
    steps.info(cluster.kubectl("get", "pods", "-n", deploy.RELEASE_NAMESPACE, "-o", "wide").stdout)

    steps.next(f"The Piper voice {deploy.VOICE} on PersistentVolumeClaim {claim}")
    voices = STATE / "voices"
    voice_dir = deploy.stage_voice(voices)
    if voice_dir.name != voice_path:
        raise ClusterError(f"{EXAMPLE} names {voice_path!r}, the demo stages {voice_dir.name!r}")
    cluster.kubectl("create", "namespace", DEMO_NAMESPACE)
    cluster.apply(*deploy.voice_claim_objects(DEMO_NAMESPACE, claim, voices))
    steps.ok(f"hostPath volume on {voices.relative_to(REPO_ROOT)}, bound to claim {claim}")

    steps.next(
        f"TTSService {name} from {EXAMPLE.relative_to(REPO_ROOT)}",
        f"kubectl --kubeconfig {cluster.kubeconfig} describe tts -n {DEMO_NAMESPACE}",
    )
    steps.info(cluster.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", str(EXAMPLE)).stdout)
    cluster.apply({**deploy.client_pod(CLIENT, images.runtime.name, tolerate_real_node=False),
                   "metadata": {"name": CLIENT, "namespace": DEMO_NAMESPACE}})  # fmt: skip
    _wait(steps, f"{name} Ready (its pod loads the voice; real probes)", 300,
          lambda: _ready(cluster, name))  # fmt: skip
    tts = json.loads(cluster.kubectl("get", "tts", "-n", DEMO_NAMESPACE, name, "-o", "json").stdout)
    endpoint = tts["status"]["endpoint"]

    steps.next(f"A request from pod {CLIENT} to {endpoint}/v1/audio/speech (OpenAI-compatible)")
    _wait(steps, f"pod {CLIENT} Running", 120, lambda: _phase(cluster, CLIENT) == "Running")
    wav = deploy.speak_from_pod(
        cluster, DEMO_NAMESPACE, CLIENT, f"{endpoint}/v1/audio/speech", TEXT
    )
    audio, text = OUT_DIR / f"{name}.wav", OUT_DIR / f"{name}.txt"
    audio.write_bytes(wav)
    text.write_text(TEXT + "\n")
    steps.ok(f"{len(wav)} bytes -> {audio.relative_to(REPO_ROOT)} (text: {text.name})")

    steps.next("What you would look at")
    steps.heading(f"kubectl get tts -n {DEMO_NAMESPACE}")
    print(cluster.kubectl("get", "tts", "-n", DEMO_NAMESPACE).stdout, end="")
    steps.heading("Objects the operator created, and the pods")
    print(cluster.kubectl(
        "get", "deployments,services,poddisruptionbudgets,configmaps,pods", "-n", DEMO_NAMESPACE,
        "-l", f"app.kubernetes.io/instance={name}", "-o", "wide",
    ).stdout, end="")  # fmt: skip
    steps.heading("What a speech recognizer hears (Whisper tiny.en, tests/runtime/speech.py)")
    subprocess.run([sys.executable, str(SPEECH_TOOL), str(audio), str(text)], check=False)
    steps.heading("Runtime metrics (from the pod's own /metrics)")
    print(_metrics(cluster, name), end="")
    steps.heading("Next")
    print(
        f"- Listen: {audio.relative_to(REPO_ROOT)}\n"
        f"- Use the cluster: export KUBECONFIG={cluster.kubeconfig}; kubectl get tts -A\n"
        f"- Tear down: make demo-down\n"
    )
    print(f"KUBECONFIG={cluster.kubeconfig}")
    return 0


def _wait(steps: Steps, what: str, timeout: float, check: Callable[[], Any]) -> None:
    start = time.monotonic()
    wait_until(what, check, timeout, interval=1)
    steps.info(f"{what}: {time.monotonic() - start:.0f}s")


def _ready(cluster: LocalCluster, name: str) -> bool:
    out = cluster.kubectl("get", "tts", "-n", DEMO_NAMESPACE, name, "-o", "json").stdout
    conditions = json.loads(out).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _phase(cluster: LocalCluster, pod: str) -> str:
    out = cluster.kubectl("get", "pod", "-n", DEMO_NAMESPACE, pod, "-o", "json").stdout
    return str(json.loads(out).get("status", {}).get("phase", ""))


def _metrics(cluster: LocalCluster, name: str) -> str:
    """The headline series, read straight from the pod's address (a local bridge)."""
    out = cluster.kubectl(
        "get", "pods", "-n", DEMO_NAMESPACE, "-l", f"app.kubernetes.io/instance={name}",
        "-o", "json",
    ).stdout  # fmt: skip
    pod_ip = json.loads(out)["items"][0]["status"]["podIP"]
    with urllib.request.urlopen(f"http://{pod_ip}:8000/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = ("tts_requests_total", "tts_audio_seconds_total", "tts_model_info",
              "tts_queue_wait_seconds_count", "tts_batch_size_count")  # fmt: skip
    return "".join(line + "\n" for line in text.splitlines() if line.startswith(wanted))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args(argv)
    if args.command == "down":
        down()
        return 0
    return up()


if __name__ == "__main__":
    sys.exit(main())
