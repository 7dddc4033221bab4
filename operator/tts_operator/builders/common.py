"""Names, labels and metadata every child of a TTSService shares."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tts_operator.kinds import Manifest

MANAGED_BY = "tts-operator"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
APP_NAME = "tts-runtime"
CONFIG_HASH_ANNOTATION = "ttsoperator.io/config-hash"
CONTAINER_NAME = "tts-runtime"
MODEL_MOUNT = "/models"
# Every container the operator builds (the runtime and the model-fetch init container).
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def selector_labels(name: str) -> dict[str, str]:
    """The pods' selector: stable for the life of the TTSService (Deployment selectors are
    immutable), so only name + instance."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: name}


def labels(name: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: "tts-server",
        LABEL_PART_OF: "tts-operator",
    }


def selector_string(name: str) -> str:
    """The selector as a label-selector string (status.selector, for the scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def configmap_name(name: str) -> str:
    return f"{name}-runtime"


def metadata(owner: str, namespace: str, name: str | None = None) -> Manifest:
    """A child's metadata: named after its TTSService unless `name` says otherwise, and
    labelled with the TTSService's instance either way."""
    return {"name": name or owner, "namespace": namespace, "labels": labels(owner)}


def content_hash(data: Any) -> str:
    """A short, stable hash of JSON-able data (key order does not matter)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
