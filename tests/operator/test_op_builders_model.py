"""Model delivery: PVC mount, init-container download, hostPath."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from builder_helpers import IMAGE, children, kind, pod, spec_of
from tts_operator.builders import build_children
from tts_operator.builders.common import MODEL_MOUNT
from tts_operator.builders.model import (
    FETCH_COMMAND,
    FETCH_CONTAINER,
    DownloadRules,
    byte_quantity,
    model_delivery,
)
from tts_operator.status import pod_problem

SHA = "ab" * 32


def test_pvc_delivery_mounts_the_claim_read_only() -> None:
    d = model_delivery("pvc://voices/a/b.onnx", IMAGE)
    assert d.model_path == "/models/a/b.onnx"
    assert d.volume["persistentVolumeClaim"] == {"claimName": "voices", "readOnly": True}
    assert model_delivery("pvc://voices", IMAGE).model_path == "/models"


def test_http_delivery_downloads_in_an_init_container_within_the_default_limits() -> None:
    spec = spec_of(model={"uri": "https://h/v/en.onnx"})
    p = pod(spec)
    [init] = p["initContainers"]
    assert init["name"] == FETCH_CONTAINER and init["image"] == IMAGE
    # Kubernetes copies the log's tail (the fetch's failure line) into terminated.message.
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert init["command"] == ["python3", "-m", "tts_runtime.fetch"]
    assert init["args"] == [
        "https://h/v/en.onnx", "/models",
        "--max-bytes", str(2 << 30),  # policy.maxModelDownloadBytes' default, 2Gi
        "--deadline-seconds", "900",
    ]  # fmt: skip
    # The download's disk is bounded: the cap plus a margin, so a node's disk cannot fill.
    assert {"name": "model", "emptyDir": {"sizeLimit": "2112Mi"}} in p["volumes"]
    data = kind(children(spec), "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tmp", "emptyDir": {}} in data
    assert kind(children(spec), "ConfigMap")["data"]["TTS_MODEL_PATH"] == "/models"


def test_the_fetch_carries_the_digests_and_the_policys_limits() -> None:
    spec = spec_of(
        model={"uri": "http://models.svc/v/en.onnx", "sha256": SHA.upper(), "configSha256": SHA}
    )
    rules = DownloadRules(
        max_bytes=500 << 20, deadline_seconds=120, allow_http=True, allow_private_hosts=True
    )
    kids = build_children("voice", "speech", spec, IMAGE, rules)
    template = kind(kids, "Deployment")["spec"]["template"]["spec"]
    [init] = template["initContainers"]
    assert init["args"] == [
        "http://models.svc/v/en.onnx", "/models",
        "--max-bytes", str(500 << 20), "--deadline-seconds", "120",
        "--sha256", SHA, "--config-sha256", SHA,
        "--allow-http", "--allow-private-hosts",
    ]  # fmt: skip
    assert {"name": "model", "emptyDir": {"sizeLimit": "564Mi"}} in template["volumes"]


@pytest.mark.parametrize(
    ("uri", "allow_http", "flag"),
    [
        ("https://h/v.onnx", True, False),  # nothing to allow: a redirect to http is refused
        ("http://h/v.onnx", True, True),
        ("http://h/v.onnx", False, False),  # the policy refuses it first; the fetch would too
    ],
)
def test_allow_http_reaches_the_fetch_only_for_an_http_uri_the_policy_allows(
    uri: str, allow_http: bool, flag: bool
) -> None:
    d = model_delivery(uri, IMAGE, DownloadRules(allow_http=allow_http))
    assert ("--allow-http" in d.init_containers[0]["args"]) is flag


@pytest.mark.parametrize(
    ("n", "quantity"),
    [(2112 << 20, "2112Mi"), (3 << 30, "3Gi"), (3072, "3Ki"), (1536, "1536"), (1000, "1000")],
)
def test_byte_quantity_is_exact(n: int, quantity: str) -> None:
    assert byte_quantity(n) == quantity


@pytest.mark.parametrize(
    ("uri", "host", "path"),
    [
        ("file:///data/v/en.onnx", "/data/v", "/models/en.onnx"),
        ("file:///data/v/", "/data/v", "/models"),
    ],
)
def test_file_delivery_uses_host_path(uri: str, host: str, path: str) -> None:
    d = model_delivery(uri, IMAGE)
    assert d.volume["hostPath"]["path"] == host and d.model_path == path


# ---- the init container as built, run against a real HTTP server on 127.0.0.1 ----

FILES = {"/v/en.onnx": b"onnx-bytes", "/v/en.onnx.json": b'{"audio": {}}'}
MODEL_SHA = hashlib.sha256(FILES["/v/en.onnx"]).hexdigest()


class _Files(BaseHTTPRequestHandler):
    """Serves FILES; anything else is a 404."""

    def do_GET(self) -> None:
        body = FILES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    """http://127.0.0.1:PORT of a server started for this test on a free port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# What an in-cluster http model server needs from the policy (allowHttpModelUris,
# allowPrivateModelHosts); 127.0.0.1 stands for the server's cluster address.
IN_CLUSTER = DownloadRules(max_bytes=1 << 20, deadline_seconds=30, allow_http=True,
                           allow_private_hosts=True)  # fmt: skip


def run_init_container(
    uri: str, dest: Path, rules: DownloadRules = IN_CLUSTER, sha256: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The model-fetch container's command and args as built, with this interpreter for the
    image's python3 and `dest` for the emptyDir mount."""
    [init] = model_delivery(uri, IMAGE, rules, sha256).init_containers
    assert init["command"] == FETCH_COMMAND
    argv = [sys.executable, *init["command"][1:]]
    argv += [str(dest) if a == MODEL_MOUNT else a for a in init["args"]]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


def condition_message(done: subprocess.CompletedProcess[str]) -> str:
    """What the TTSService's Degraded condition says when the pod's init container failed
    with this output as its termination message (FallbackToLogsOnError)."""
    pod = {
        "status": {
            "initContainerStatuses": [
                {
                    "name": FETCH_CONTAINER,
                    "state": {
                        "terminated": {
                            "exitCode": done.returncode,
                            "message": done.stdout + done.stderr,
                        }
                    },
                }
            ]
        }
    }
    problem = pod_problem([pod], "nvidia.com/gpu")
    assert problem is not None and problem.reason == "ModelDownloadFailed"
    return problem.message


def test_the_init_container_downloads_both_files(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    done = run_init_container(f"{server}/v/en.onnx", dest, sha256=MODEL_SHA)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["model.onnx", "model.onnx.json"]
    assert (dest / "model.onnx").read_bytes() == FILES["/v/en.onnx"]
    assert (dest / "model.onnx.json").read_bytes() == FILES["/v/en.onnx.json"]
    assert done.stdout.strip().splitlines()[-1] == "model ready"


def test_a_failed_download_says_why_in_the_condition(server: str, tmp_path: Path) -> None:
    uri = f"{server}/v/missing.onnx"
    done = run_init_container(uri, tmp_path / "models")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert condition_message(done) == (
        f"1 pod(s) failed to download the model: HTTP 404 Not Found for {uri} "
        "(see the model-fetch init container's logs)"
    )


def test_a_wrong_digest_says_so_in_the_condition(server: str, tmp_path: Path) -> None:
    uri = f"{server}/v/en.onnx"
    done = run_init_container(uri, tmp_path / "models", sha256=SHA)
    assert done.returncode != 0
    assert f"sha256 of model.onnx is {MODEL_SHA}, expected {SHA} for {uri}" in (
        condition_message(done)
    )
    assert list((tmp_path / "models").iterdir()) == []


def test_the_policy_defaults_refuse_an_in_cluster_http_server_in_the_pod_too(
    server: str, tmp_path: Path
) -> None:
    """Should a spec get past the policy check, the fetch still refuses what the policy did
    not allow: without --allow-http nothing is downloaded."""
    uri = f"{server}/v/en.onnx"
    done = run_init_container(uri, tmp_path / "models", DownloadRules())
    assert done.returncode != 0
    assert "plain http:// is not allowed" in condition_message(done)
    assert not (tmp_path / "models" / "model.onnx").exists()


# ---- hf:// URIs: the same init container, pointed at the hub's resolve layout ----

HF_URI = "hf://rhasspy/piper-voices@v1.0.0/en/en.onnx"


def test_an_hf_uri_downloads_from_the_operators_endpoint() -> None:
    d = model_delivery(HF_URI, IMAGE, DownloadRules(hf_endpoint="https://hub.example/mirror"))
    [init] = d.init_containers
    assert init["args"] == [
        HF_URI, "/models", "--max-bytes", str(2 << 30), "--deadline-seconds", "900",
        "--hf-endpoint", "https://hub.example/mirror",
    ]  # fmt: skip
    assert init["volumeMounts"] == [{"name": "model", "mountPath": "/models"}]
    assert d.extra_volumes == []  # no token: no Secret
    assert d.model_path == "/models" and "emptyDir" in d.volume


def test_an_hf_token_is_mounted_into_the_fetch_only() -> None:
    spec = spec_of(model={"uri": HF_URI, "tokenSecretRef": {"name": "hf", "key": "hf_token"}})
    p = pod(spec)
    [init] = p["initContainers"]
    path = "/var/run/secrets/ttsoperator.io/hf-token/token"
    assert init["args"][-2:] == ["--token-file", path]
    assert {"name": "hf-token", "mountPath": "/var/run/secrets/ttsoperator.io/hf-token",
            "readOnly": True} in init["volumeMounts"]  # fmt: skip
    volume = next(v for v in p["volumes"] if v["name"] == "hf-token")
    assert volume["secret"] == {
        "secretName": "hf",
        "items": [{"key": "hf_token", "path": "token"}],
        "defaultMode": 0o440,
    }
    # The runtime never sees the token.
    runtime = p["containers"][0]
    assert all(m["name"] != "hf-token" for m in runtime["volumeMounts"])
    assert "hf" not in str(runtime.get("env"))


@pytest.mark.parametrize(
    ("endpoint", "allow_http", "flag"),
    [
        ("http://hub.svc", True, True),  # the endpoint's scheme decides, not hf://
        ("http://hub.svc", False, False),
        ("https://huggingface.co", True, False),
    ],
)
def test_allow_http_reaches_an_hf_fetch_only_for_an_http_endpoint(
    endpoint: str, allow_http: bool, flag: bool
) -> None:
    rules = DownloadRules(allow_http=allow_http, hf_endpoint=endpoint)
    d = model_delivery(HF_URI, IMAGE, rules)
    assert ("--allow-http" in d.init_containers[0]["args"]) is flag


def test_the_init_container_downloads_an_hf_uri_from_the_endpoint(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container as built, its endpoint the local server serving the resolve layout."""
    resolve = "/rhasspy/piper-voices/resolve/v1.0.0/en/en.onnx"
    monkeypatch.setitem(FILES, resolve, FILES["/v/en.onnx"])
    monkeypatch.setitem(FILES, resolve + ".json", FILES["/v/en.onnx.json"])
    dest = tmp_path / "models"
    rules = DownloadRules(
        max_bytes=1 << 20, deadline_seconds=30, allow_http=True, allow_private_hosts=True,
        hf_endpoint=server,
    )  # fmt: skip
    done = run_init_container(HF_URI, dest, rules, sha256=MODEL_SHA)
    assert done.returncode == 0, done.stderr
    assert (dest / "model.onnx").read_bytes() == FILES["/v/en.onnx"]
    assert (dest / "model.onnx.json").read_bytes() == FILES["/v/en.onnx.json"]
    missing = run_init_container("hf://rhasspy/piper-voices/en/en.onnx", dest, rules)
    assert condition_message(missing) == (
        "1 pod(s) failed to download the model: HTTP 404 Not Found for "
        f"{server}/rhasspy/piper-voices/resolve/main/en/en.onnx "
        "(see the model-fetch init container's logs)"
    )
