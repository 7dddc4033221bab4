"""How the model reaches the pod: a PVC mount, an init-container download, or a hostPath."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tts_operator.builders.common import MODEL_MOUNT, Manifest

VOLUME = "model"
FETCH_CONTAINER = "model-fetch"

# Runs in the runtime image (it has python3): download URI and URI.json next to each other,
# atomically (a half-written model never looks complete), then exit. A failure ends with one
# line saying what went wrong (the pod's termination message, which status.py reports).
FETCH_SCRIPT = """\
import os, shutil, sys, urllib.error, urllib.request
uri, dest = sys.argv[1], sys.argv[2]
for src, name in ((uri, "model.onnx"), (uri + ".json", "model.onnx.json")):
    part = os.path.join(dest, name + ".part")
    print(f"fetching {src}", flush=True)
    try:
        with urllib.request.urlopen(src, timeout=60) as rsp, open(part, "wb") as out:
            shutil.copyfileobj(rsp, out, 1 << 20)
    except urllib.error.HTTPError as e:
        why = f"HTTP {e.code} {e.reason}"
    except Exception as e:
        r = getattr(e, "reason", e)
        why = ("connection refused" if isinstance(r, ConnectionRefusedError)
               else "timed out" if isinstance(r, TimeoutError) else f"{r}" or type(r).__name__)
    else:
        os.replace(part, os.path.join(dest, name))
        continue
    sys.exit(f"model download failed: {why} for {src}")
print("model ready", flush=True)
"""


@dataclass(frozen=True)
class ModelDelivery:
    """The pod-spec pieces one model URI needs."""

    scheme: str
    model_path: str
    volume: Manifest
    read_only: bool
    init_containers: list[Manifest] = field(default_factory=list)
    claim: str | None = None


def pvc_claim(uri: str) -> str | None:
    parts = urlsplit(uri)
    return parts.netloc if parts.scheme == "pvc" else None


def file_mount(uri: str) -> tuple[str, str]:
    """(host directory mounted, model path in the pod) for a file:// URI: a .onnx file mounts
    its directory and points at the file; anything else mounts the path itself."""
    path = urlsplit(uri).path.rstrip("/") or "/"
    if path.endswith(".onnx"):
        return posixpath.dirname(path), posixpath.join(MODEL_MOUNT, posixpath.basename(path))
    return path, MODEL_MOUNT


def model_delivery(uri: str, image: str, security_context: dict[str, Any]) -> ModelDelivery:
    parts = urlsplit(uri)
    if parts.scheme == "pvc":
        sub = parts.path.strip("/")
        return ModelDelivery(
            scheme="pvc",
            model_path=posixpath.join(MODEL_MOUNT, sub) if sub else MODEL_MOUNT,
            volume={
                "name": VOLUME,
                "persistentVolumeClaim": {"claimName": parts.netloc, "readOnly": True},
            },
            read_only=True,
            claim=parts.netloc,
        )
    if parts.scheme in ("http", "https"):
        fetch = {
            "name": FETCH_CONTAINER,
            "image": image,
            "command": ["python3", "-c", FETCH_SCRIPT, uri, MODEL_MOUNT],
            # On a failure Kubernetes copies the log's tail (the script's last line says why)
            # into the container's terminated.message, where pod_problem finds it.
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": VOLUME, "mountPath": MODEL_MOUNT}],
            "securityContext": security_context,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        }
        return ModelDelivery(
            scheme=parts.scheme,
            model_path=MODEL_MOUNT,
            volume={"name": VOLUME, "emptyDir": {}},
            read_only=True,
            init_containers=[fetch],
        )
    if parts.scheme == "file":
        host_dir, model_path = file_mount(uri)
        return ModelDelivery(
            scheme="file",
            model_path=model_path,
            volume={"name": VOLUME, "hostPath": {"path": host_dir, "type": "Directory"}},
            read_only=True,
        )
    raise ValueError(f"unsupported model URI scheme in {uri!r}")
