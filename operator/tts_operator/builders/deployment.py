"""Deployment NAME: the GPU runtime pods."""

from __future__ import annotations

import math
from typing import Any

from tts_operator.builders.common import (
    CONFIG_HASH_ANNOTATION,
    CONTAINER_NAME,
    CONTAINER_SECURITY_CONTEXT,
    MODEL_MOUNT,
    configmap_name,
    labels,
    metadata,
    selector_labels,
)
from tts_operator.builders.model import VOLUME, ModelDelivery
from tts_operator.builders.secrets import runtime_secret_files
from tts_operator.kinds import DEPLOYMENT, Manifest
from tts_operator.models import RUNTIME_PORT, TTSServiceSpec

RUN_AS_USER = 10001
# Time after the drain window for uvicorn to close connections and the process to exit.
GRACE_MARGIN_SECONDS = 15
STARTUP_PROBE_PERIOD_SECONDS = 10
# The runtime's TTS_POD_NAME: sent back in its X-TTS-Pod response header.
POD_NAME_ENV = "TTS_POD_NAME"
# NVIDIA's container toolkit exposes the GPUs this variable names; the nvidia/cuda base image
# sets it to `all`, so on a node whose container runtime is NVIDIA's a container that asks
# the device plugin for nothing would still see every GPU of the node (outside the device
# plugin and any GPU ResourceQuota). `void` is the toolkit's documented "no GPU".
NVIDIA_VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
NO_GPU = {"name": NVIDIA_VISIBLE_DEVICES, "value": "void"}
NVIDIA_RESOURCE_PREFIX = "nvidia.com/"

POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _quantities(amounts: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in amounts.items() if v is not None}


def resources(spec: TTSServiceSpec) -> Manifest:
    res = spec.runtime.resources
    requests = _quantities(res.requests.model_dump())
    limits = _quantities(res.limits.model_dump())
    gpu = spec.runtime.gpu
    if gpu.count > 0:
        # Extended resources: the request defaults to the limit.
        limits[gpu.resource_name] = str(gpu.count)
    out: Manifest = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def tolerations(spec: TTSServiceSpec) -> list[Manifest]:
    """The user's tolerations, plus one for the GPU taint unless they already cover its key."""
    user = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.scheduling.tolerations]
    gpu = spec.runtime.gpu
    if gpu.count > 0 and not any(t.get("key") == gpu.resource_name for t in user):
        user.insert(0, {"key": gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"})
    return user


def probes(spec: TTSServiceSpec) -> Manifest:
    def http(path: str, period: int, timeout: int, failures: int) -> Manifest:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": timeout,
            "failureThreshold": failures,
        }

    startup_failures = math.ceil(
        spec.runtime.startup_timeout_seconds / STARTUP_PROBE_PERIOD_SECONDS
    )
    return {
        # Model loads (and fp16 conversion, CUDA init) can take minutes: liveness only
        # starts once this succeeds, so a slow load is not mistaken for a hung pod.
        "startupProbe": http("/healthz", STARTUP_PROBE_PERIOD_SECONDS, 5, startup_failures),
        "readinessProbe": http("/readyz", 5, 3, 3),
        "livenessProbe": http("/healthz", 10, 5, 3),
    }


def lifecycle(spec: TTSServiceSpec) -> Manifest:
    """A preStop sleep: the runtime gets SIGTERM only after it, and an idle runtime exits
    at once on SIGTERM, so without it requests sent during the endpoint-removal lag
    would be refused. The native sleep action (Kubernetes >= 1.30) needs no shell or
    sleep binary in the image."""
    seconds = spec.runtime.pre_stop_sleep_seconds
    if seconds == 0:
        return {}
    return {"lifecycle": {"preStop": {"sleep": {"seconds": seconds}}}}


def termination_grace_period(spec: TTSServiceSpec) -> int:
    """The kubelet counts the preStop hook inside the grace period, so it covers the
    sleep, then the drain, then the margin for the process to exit."""
    runtime = spec.runtime
    return runtime.pre_stop_sleep_seconds + runtime.drain_timeout_seconds + GRACE_MARGIN_SECONDS


def topology_spread(spec: TTSServiceSpec, name: str) -> list[Manifest]:
    out = []
    for constraint in spec.scheduling.topology_spread_constraints:
        c = dict(constraint)
        c.setdefault("labelSelector", {"matchLabels": selector_labels(name)})
        out.append(c)
    return out


def asks_nvidia_gpu(spec: TTSServiceSpec) -> bool:
    """Whether the runtime container gets NVIDIA GPUs from the device plugin (which then
    sets NVIDIA_VISIBLE_DEVICES to exactly the devices it allocated)."""
    gpu = spec.runtime.gpu
    return gpu.count > 0 and gpu.resource_name.startswith(NVIDIA_RESOURCE_PREFIX)


def without_gpus(container: Manifest) -> Manifest:
    """An init container (which never asks for a GPU) with NVIDIA_VISIBLE_DEVICES=void."""
    env = [e for e in container.get("env", []) if e["name"] != NVIDIA_VISIBLE_DEVICES]
    return {**container, "env": [NO_GPU, *env]}


def container_env(spec: TTSServiceSpec) -> list[Manifest]:
    """The operator's variables, then `spec.runtime.env`. The user's entries win, as they
    do over the ConfigMap: an operator variable the user sets too is left out, never
    listed twice (two entries of one name would leave it to the kubelet's last-wins rule,
    and server-side apply refuses duplicate keys in the env list). The operator's come
    first, so a user value can refer to them, e.g. `$(TTS_POD_NAME)`. Without an NVIDIA GPU
    request, NVIDIA_VISIBLE_DEVICES=void: no GPU past the device plugin."""
    user = [e.model_dump(by_alias=True, exclude_none=True) for e in spec.runtime.env]
    taken = {e["name"] for e in user}
    own: list[Manifest] = [
        {
            "name": POD_NAME_ENV,
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        }
    ]
    if not asks_nvidia_gpu(spec):
        own.append(NO_GPU)
    return [e for e in own if e["name"] not in taken] + user


def pod_spec(name: str, spec: TTSServiceSpec, image: str, delivery: ModelDelivery) -> Manifest:
    secrets = runtime_secret_files(spec)
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": image,
        "ports": [{"name": "http", "containerPort": RUNTIME_PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": configmap_name(name)}}],
        "env": container_env(spec),
        "resources": resources(spec),
        **probes(spec),
        **lifecycle(spec),
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "volumeMounts": [
            {"name": VOLUME, "mountPath": MODEL_MOUNT, "readOnly": delivery.read_only},
            {"name": "tmp", "mountPath": "/tmp"},
            *(secret.mount for secret in secrets),
        ],
    }
    if spec.runtime.image_pull_policy:
        container["imagePullPolicy"] = spec.runtime.image_pull_policy

    sched = spec.scheduling
    pod: Manifest = {
        "terminationGracePeriodSeconds": termination_grace_period(spec),
        "securityContext": POD_SECURITY_CONTEXT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [
            delivery.volume,
            {"name": "tmp", "emptyDir": {}},
            *delivery.extra_volumes,
            *(secret.volume for secret in secrets),
        ],
    }
    if delivery.init_containers:
        pod["initContainers"] = [without_gpus(c) for c in delivery.init_containers]
    optional: dict[str, Any] = {
        "nodeSelector": sched.node_selector,
        "tolerations": tolerations(spec),
        "affinity": sched.affinity,
        "priorityClassName": sched.priority_class_name,
        "runtimeClassName": sched.runtime_class_name,
        "topologySpreadConstraints": topology_spread(spec, name),
    }
    pod.update({k: v for k, v in optional.items() if v})
    return pod


def build_deployment(
    name: str,
    namespace: str,
    spec: TTSServiceSpec,
    image: str,
    delivery: ModelDelivery,
    config_hash: str,
) -> Manifest:
    deployment_spec: Manifest = {
        "selector": {"matchLabels": selector_labels(name)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {
                "maxSurge": spec.rollout.max_surge,
                "maxUnavailable": spec.rollout.max_unavailable,
            },
        },
        "template": {
            "metadata": {
                "labels": labels(name),
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(RUNTIME_PORT),
                    "prometheus.io/path": "/metrics",
                    # The ConfigMap is not part of the template: its hash is, so a
                    # settings change rolls the pods.
                    CONFIG_HASH_ANNOTATION: config_hash,
                },
            },
            "spec": pod_spec(name, spec, image, delivery),
        },
    }
    if not spec.autoscaling.enabled:
        # With autoscaling on, replicas is left out entirely: the HPA owns it (and with
        # server-side apply, leaving it out is what releases our ownership of the field).
        deployment_spec = {"replicas": spec.effective_replicas, **deployment_spec}
    return {
        **DEPLOYMENT.header(),
        "metadata": metadata(name, namespace),
        "spec": deployment_spec,
    }
