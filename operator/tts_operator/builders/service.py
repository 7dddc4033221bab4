"""Service NAME: ClientIP-affine by default, so a client keeps hitting one warm pod."""

from __future__ import annotations

from tts_operator.builders.common import metadata, selector_labels
from tts_operator.kinds import SERVICE, Manifest
from tts_operator.models import TTSServiceSpec


def build_service(name: str, namespace: str, spec: TTSServiceSpec) -> Manifest:
    svc = spec.service
    meta = metadata(name, namespace)
    if svc.annotations:
        meta["annotations"] = dict(svc.annotations)
    body: Manifest = {
        "type": svc.type,
        "selector": selector_labels(name),
        "ports": [{"name": "http", "port": svc.port, "targetPort": "http", "protocol": "TCP"}],
        "sessionAffinity": svc.session_affinity,
    }
    if svc.session_affinity == "ClientIP":
        body["sessionAffinityConfig"] = {
            "clientIP": {"timeoutSeconds": svc.session_affinity_timeout_seconds}
        }
    return {**SERVICE.header(), "metadata": meta, "spec": body}


def endpoint(name: str, namespace: str, spec: TTSServiceSpec) -> str:
    return f"http://{name}.{namespace}.svc.cluster.local:{spec.service.port}"
