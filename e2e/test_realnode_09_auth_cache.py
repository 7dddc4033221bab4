"""API keys and the response cache on real pods (issue 14), through the Service.

- spec.auth.apiKeysSecretRef: a request without a key, or with a wrong one, gets 401 from the
  runtime; the key in the Secret gets audio; /healthz stays open. Rotating the key in the
  Secret takes effect in the running pods (the kubelet swaps the mounted file) without a
  restart.
- spec.cache with a shared Redis: a real redis-server on the node's address (the cluster's
  own bridge), its URL (with a password) in a Secret. The first request for a text is a miss;
  every repeat is a hit with the same bytes, on both replicas: the one that did not make it
  reads it from Redis.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import realnode
from kubeapi import E2EKube, tts_body, wait_for
from tts_cluster import network
from tts_cluster.base import free_port
from tts_runtime.cache_bench import redis_server_command

pytestmark = pytest.mark.realnode

NAME = "guarded"
KEYS_SECRET = "tts-api-keys"
REDIS_SECRET = "tts-cache-redis"
REDIS_PASSWORD = "e2e-redis-password"
REDIS_REF = {"name": REDIS_SECRET, "key": "url"}

# Runs in the client pod: one request per (key, text) argument pair; a JSON line each with
# the status, which pod answered, the cache header and a digest of the body.
CALL_SCRIPT = """\
import hashlib, json, sys, urllib.request, urllib.error
url, calls = sys.argv[1], json.loads(sys.argv[2])
for key, text in calls:
    body = json.dumps({"model": "tts-1", "input": text, "voice": "default",
                       "response_format": "wav"}).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    request = urllib.request.Request(url, body, headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            data = response.read()
            status, got = response.status, response.headers
    except urllib.error.HTTPError as error:
        data, status, got = error.read(), error.code, error.headers
    print(json.dumps({"status": status, "pod": got.get("X-TTS-Pod"),
                      "cache": got.get("X-TTS-Cache"), "sha": hashlib.sha256(data).hexdigest(),
                      "error": data[:300].decode(errors="replace") if status != 200 else None}))
"""


def _calls(stage: realnode.Stage, url: str, *calls: tuple[str | None, str]) -> list[dict[str, Any]]:
    result = realnode.exec_in(
        stage.cluster, stage.namespace, "client", "python3", "-c", CALL_SCRIPT, url,
        json.dumps(calls),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _secret(kube: E2EKube, namespace: str, name: str, key: str, value: str) -> None:
    body = {"metadata": {"name": name}, "stringData": {key: value}}
    if kube.exists(lambda: kube.core.read_namespaced_secret(name, namespace)):
        kube.core.replace_namespaced_secret(name, namespace, body)
    else:
        kube.core.create_namespaced_secret(namespace, body)


@pytest.fixture
def redis_on_node(tmp_path: Path) -> Iterator[str]:
    """A redis-server on the node bridge's address (reachable from pods, from nothing off
    this machine), with a password; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package; make host-packages)")
    port = free_port()
    command = redis_server_command(binary, port, tmp_path)
    command[command.index("--bind") + 1] = network.NODE_IP
    command += ["--requirepass", REDIS_PASSWORD]
    with (tmp_path / "redis.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"redis://:{REDIS_PASSWORD}@{network.NODE_IP}:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_api_keys_and_a_shared_cache_on_real_pods(
    stage: realnode.Stage, redis_on_node: str
) -> None:
    kube, ns = stage.kube, stage.namespace
    _secret(kube, ns, KEYS_SECRET, "keys", "# e2e\nkey-one\n")
    _secret(kube, ns, REDIS_SECRET, "url", redis_on_node)
    kube.create_tts(
        ns,
        tts_body(NAME, realnode.spec(
            replicas=2,
            runtime=realnode.CPU_ONLY,
            service=realnode.SPREAD,
            auth={"apiKeysSecretRef": {"name": KEYS_SECRET, "key": "keys"}},
            cache={"enabled": True, "redis": {"urlSecretRef": REDIS_REF}},
        )),
    )  # fmt: skip
    realnode.start_clients(kube, ns, stage.images.runtime.name, "client")
    url = realnode.speech_url(realnode.wait_serving(kube, ns, NAME, 2))

    # Keys: checked before anything else.
    missing, wrong, right = _calls(
        stage, url, (None, "No key."), ("key-zero", "A wrong key."), ("key-one", "The key.")
    )
    assert missing["status"] == 401 and "missing_api_key" in missing["error"], missing
    assert wrong["status"] == 401 and "invalid_api_key" in wrong["error"], wrong
    assert right["status"] == 200, right
    health = realnode.exec_in(
        stage.cluster, ns, "client", "python3", "-c",
        "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).status)",
        url.replace("/v1/audio/speech", "/healthz"),
    )  # fmt: skip
    assert health.stdout.strip() == "200", health

    # The cache: one miss, then hits with the same bytes on both replicas.
    text = "Cached once, served by every replica."
    first, *repeats = _calls(stage, url, *[("key-one", text)] * 12)
    assert (first["status"], first["cache"]) == (200, "miss"), first
    assert all(r["status"] == 200 and r["cache"] == "hit" for r in repeats), repeats
    assert {r["sha"] for r in repeats} == {first["sha"]}
    pods = {r["pod"] for r in [first, *repeats]}
    assert len(pods) == 2, f"12 requests without affinity reached only {pods}"
    print(f"\ncache: 1 miss then {len(repeats)} hits across pods {sorted(pods)}")

    # Rotation: the new key works and the old one stops, in the same pods.
    before = {p["metadata"]["name"] for p in kube.pods(ns, f"app.kubernetes.io/instance={NAME}")}
    _secret(kube, ns, KEYS_SECRET, "keys", "key-two\n")
    started = time.monotonic()

    def rotated() -> bool:
        new, old = _calls(stage, url, ("key-two", "Rotated."), ("key-one", "Old key."))
        return bool(new["status"] == 200 and old["status"] == 401)

    wait_for("the rotated key to take effect", rotated, 180, every=5)
    after = {p["metadata"]["name"] for p in kube.pods(ns, f"app.kubernetes.io/instance={NAME}")}
    assert after == before, "rotation must not restart pods"
    print(f"key rotation took effect after {time.monotonic() - started:.0f} s")
