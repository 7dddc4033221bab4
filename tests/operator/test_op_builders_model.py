"""Model delivery: PVC mount, init-container download, hostPath."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from builder_helpers import IMAGE, children, kind, pod, spec_of
from tts_operator.builders.model import FETCH_CONTAINER, FETCH_SCRIPT, model_delivery


def test_pvc_delivery_mounts_the_claim_read_only() -> None:
    d = model_delivery("pvc://voices/a/b.onnx", IMAGE, {})
    assert d.claim == "voices" and d.model_path == "/models/a/b.onnx"
    assert d.volume["persistentVolumeClaim"] == {"claimName": "voices", "readOnly": True}
    assert model_delivery("pvc://voices", IMAGE, {}).model_path == "/models"


def test_http_delivery_downloads_in_an_init_container() -> None:
    spec = spec_of(model={"uri": "https://h/v/en.onnx"})
    p = pod(spec)
    [init] = p["initContainers"]
    assert init["name"] == FETCH_CONTAINER and init["image"] == IMAGE
    # Kubernetes copies the log's tail (the script's failure line) into terminated.message.
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "https://h/v/en.onnx" in init["command"]
    assert {"name": "model", "emptyDir": {}} in p["volumes"]
    data = kind(children(spec), "ConfigMap")["data"]
    assert data["TTS_MODEL_PATH"] == "/models"


def test_fetch_script_downloads_model_and_config(tmp_path: Any) -> None:
    """The init container's script, run for real against file:// URLs."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "v.onnx").write_bytes(b"onnx")
    (src / "v.onnx.json").write_text("{}")
    dest = tmp_path / "models"
    dest.mkdir()
    d = model_delivery("https://unused/v.onnx", IMAGE, {})
    script = d.init_containers[0]["command"][2]
    subprocess.run([sys.executable, "-c", script, (src / "v.onnx").as_uri(), str(dest)], check=True)
    assert (dest / "model.onnx").read_bytes() == b"onnx"
    assert (dest / "model.onnx.json").read_text() == "{}"
    assert sorted(p.name for p in dest.iterdir()) == ["model.onnx", "model.onnx.json"]


@pytest.mark.parametrize(
    ("uri", "host", "path"),
    [
        ("file:///data/v/en.onnx", "/data/v", "/models/en.onnx"),
        ("file:///data/v/", "/data/v", "/models"),
    ],
)
def test_file_delivery_uses_host_path(uri: str, host: str, path: str) -> None:
    d = model_delivery(uri, IMAGE, {})
    assert d.volume["hostPath"]["path"] == host and d.model_path == path


# ---- FETCH_SCRIPT against a real HTTP server on 127.0.0.1 (no network beyond loopback) ----

FILES = {"/v/en.onnx": b"onnx-bytes", "/v/en.onnx.json": b'{"audio": {}}'}


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
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def fetch(uri: str, dest: Path) -> subprocess.CompletedProcess[str]:
    """Run the init container's script as it runs in the pod (python3 -c SCRIPT URI DEST)."""
    dest.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        [sys.executable, "-c", FETCH_SCRIPT, uri, str(dest)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stdout + done.stderr).strip().splitlines()[-1]


def test_fetch_script_downloads_both_files_over_http(server: str, tmp_path: Path) -> None:
    done = fetch(f"{server}/v/en.onnx", tmp_path / "models")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "model.onnx",
        "model.onnx.json",
    ]
    assert (tmp_path / "models" / "model.onnx").read_bytes() == FILES["/v/en.onnx"]
    assert (tmp_path / "models" / "model.onnx.json").read_bytes() == FILES["/v/en.onnx.json"]
    assert last_line(done) == "model ready"


def test_fetch_script_says_which_url_gave_an_http_error(server: str, tmp_path: Path) -> None:
    done = fetch(f"{server}/v/missing.onnx", tmp_path / "models")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert last_line(done) == (
        f"model download failed: HTTP 404 Not Found for {server}/v/missing.onnx"
    )
    assert not (tmp_path / "models" / "model.onnx").exists()


def test_fetch_script_names_the_missing_config_file(server: str, tmp_path: Path) -> None:
    FILES["/v/noconfig.onnx"] = b"onnx"
    try:
        done = fetch(f"{server}/v/noconfig.onnx", tmp_path / "models")
    finally:
        del FILES["/v/noconfig.onnx"]
    assert done.returncode != 0
    assert last_line(done) == (
        f"model download failed: HTTP 404 Not Found for {server}/v/noconfig.onnx.json"
    )
    assert not (tmp_path / "models" / "model.onnx.json").exists()


def test_fetch_script_says_the_connection_was_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}/v/en.onnx"
    done = fetch(uri, tmp_path / "models")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert last_line(done) == f"model download failed: connection refused for {uri}"
    assert list((tmp_path / "models").iterdir()) == []
