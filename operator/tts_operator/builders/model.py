"""How the model reaches the pod: a PVC mount, an init-container download (http(s):// or
hf://), or a hostPath."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tts_runtime.fetch import DEFAULT_HF_ENDPOINT, download_urls, is_hf_uri

from tts_operator.builders.common import CONTAINER_SECURITY_CONTEXT, MODEL_MOUNT
from tts_operator.builders.secrets import secret_file
from tts_operator.kinds import Manifest
from tts_operator.models import SecretKeyRef

VOLUME = "model"
FETCH_CONTAINER = "model-fetch"
# The hf:// token (spec.model.tokenSecretRef): mounted into the model-fetch container only.
HF_TOKEN_VOLUME = "hf-token"
HF_TOKEN_FILE = "token"
# The init container runs the runtime package's downloader with the runtime image's python3
# (its venv is first on the image's PATH): https only unless allowed, size cap, sha256, one
# overall deadline, safe redirects (runtime/tts_runtime/fetch.py). It writes model.onnx and
# model.onnx.json atomically; a failure ends with one line saying what went wrong (the
# pod's termination message, which status.py reports as ModelDownloadFailed).
FETCH_COMMAND = ["python3", "-m", "tts_runtime.fetch"]
MI = 1 << 20
GI = 1 << 30
DEFAULT_MAX_DOWNLOAD_BYTES = 2 * GI
DEFAULT_DOWNLOAD_DEADLINE_SECONDS = 900
# What the emptyDir may hold beyond the download cap (filesystem blocks, the json config is
# inside the cap already): its sizeLimit is cap + margin, so the kubelet evicts a pod whose
# download somehow got past the cap before the node's disk fills.
EMPTYDIR_MARGIN_BYTES = 64 * MI


@dataclass(frozen=True)
class DownloadRules:
    """What the operator's policy lets a model download do (policy.download_rules)."""

    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    """Most bytes downloaded in all (model.onnx and model.onnx.json)."""
    deadline_seconds: int = DEFAULT_DOWNLOAD_DEADLINE_SECONDS
    """The whole download's deadline."""
    allow_http: bool = False
    """A plain http:// URI may be downloaded (the fetch refuses one otherwise)."""
    allow_private_hosts: bool = False
    """The URI's host may be a loopback, private or link-local address."""
    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    """Where hf:// URIs are downloaded from (the operator's TTS_OPERATOR_HF_ENDPOINT)."""


def download_url(uri: str, rules: DownloadRules) -> str:
    """The URL a downloaded model comes from: the URI itself, or an hf:// URI's resolve URL
    under rules.hf_endpoint (what the policy judges and the fetch connects to)."""
    return download_urls(uri, rules.hf_endpoint)[0]


def byte_quantity(n: int) -> str:
    """Bytes as a Kubernetes quantity, exactly (2214592512 -> "2112Mi")."""
    for suffix, unit in (("Gi", GI), ("Mi", MI), ("Ki", 1 << 10)):
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def fetch_args(
    uri: str,
    rules: DownloadRules,
    sha256: str | None = None,
    config_sha256: str | None = None,
    token_file: str | None = None,
) -> list[str]:
    """The downloader's arguments for one model URI (`token_file`: an hf:// token's path)."""
    args = [
        uri,
        MODEL_MOUNT,
        "--max-bytes",
        str(rules.max_bytes),
        "--deadline-seconds",
        str(rules.deadline_seconds),
    ]
    if sha256:
        args += ["--sha256", sha256.lower()]
    if config_sha256:
        args += ["--config-sha256", config_sha256.lower()]
    if is_hf_uri(uri):
        args += ["--hf-endpoint", rules.hf_endpoint]
        if token_file:
            args += ["--token-file", token_file]
    if rules.allow_http and urlsplit(download_url(uri, rules)).scheme == "http":
        args.append("--allow-http")
    if rules.allow_private_hosts:
        args.append("--allow-private-hosts")
    return args


@dataclass(frozen=True)
class ModelDelivery:
    """The pod-spec pieces one model URI needs."""

    scheme: str
    model_path: str
    volume: Manifest
    read_only: bool
    init_containers: list[Manifest] = field(default_factory=list)
    extra_volumes: list[Manifest] = field(default_factory=list)
    """Volumes the init containers need besides the model's (an hf:// token)."""


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


def model_delivery(
    uri: str,
    image: str,
    rules: DownloadRules | None = None,
    sha256: str | None = None,
    config_sha256: str | None = None,
    token: SecretKeyRef | None = None,
) -> ModelDelivery:
    """How the model at `uri` reaches the pod; `rules`, the digests and an hf:// `token`
    shape a download (default rules: the policy's defaults)."""
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
        )
    if parts.scheme in ("http", "https", "hf"):
        rules = rules or DownloadRules()
        secret = secret_file(HF_TOKEN_VOLUME, token, HF_TOKEN_FILE) if token else None
        fetch = {
            "name": FETCH_CONTAINER,
            "image": image,
            "command": list(FETCH_COMMAND),
            "args": fetch_args(uri, rules, sha256, config_sha256, secret.path if secret else None),
            # On a failure Kubernetes copies the log's tail (the fetch's last line says why)
            # into the container's terminated.message, where pod_problem finds it.
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [
                {"name": VOLUME, "mountPath": MODEL_MOUNT},
                *([secret.mount] if secret else []),
            ],
            "securityContext": CONTAINER_SECURITY_CONTEXT,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        }
        return ModelDelivery(
            scheme=parts.scheme,
            model_path=MODEL_MOUNT,
            volume={
                "name": VOLUME,
                "emptyDir": {"sizeLimit": byte_quantity(rules.max_bytes + EMPTYDIR_MARGIN_BYTES)},
            },
            read_only=True,
            init_containers=[fetch],
            extra_volumes=[secret.volume] if secret else [],
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
