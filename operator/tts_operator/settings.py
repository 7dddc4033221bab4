"""Operator process settings: env vars with the TTS_OPERATOR_ prefix, validated at start."""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from tts_runtime.fetch import DEFAULT_HF_ENDPOINT

from tts_operator.builders.scaledobject import PrometheusSource
from tts_operator.policy import Policy

DEFAULT_RUNTIME_IMAGE = "ghcr.io/tts-operator/tts-runtime:0.1.0"
FIELD_MANAGER = "tts-operator"


class OperatorSettings(BaseSettings):
    """How the operator process runs (not what it builds: that is the TTSService spec)."""

    model_config = SettingsConfigDict(env_prefix="TTS_OPERATOR_", extra="ignore")

    namespaces: str = ""
    """Comma-separated namespaces to watch; empty watches the whole cluster."""
    runtime_image: str = Field(default=DEFAULT_RUNTIME_IMAGE, min_length=1)
    """Runtime image for TTSServices that do not set spec.runtime.image."""
    log_format: Literal["json", "text"] = "json"
    """json: one JSON object per line with the object's namespace/name; text: kopf's format."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Operator log level."""
    liveness_host: str = Field(default="0.0.0.0", min_length=1)
    """Address of kopf's liveness endpoint."""
    liveness_port: int = Field(default=8080, ge=0, le=65535)
    """Port of the liveness endpoint (GET /healthz); 0 turns it off."""
    metrics_host: str = Field(default="0.0.0.0", min_length=1)
    """Address of the Prometheus /metrics endpoint (all interfaces, for in-cluster scraping)."""
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    """Port of the Prometheus /metrics endpoint; 0 turns it off."""
    peering_name: str = Field(default="tts-operator", min_length=1, max_length=253)
    """kopf peering object (leader election): replicas sharing it never act at once."""
    peering_create: bool = True
    """Create the peering object when it is missing (a developer's operator). The chart sets
    false: the release owns that object, and a replica that started before helm created it
    would otherwise create it first and make `helm install` fail. With false the operator
    waits for the object (up to peering_wait_seconds) instead."""
    peering_wait_seconds: float = Field(default=120.0, ge=0.0, le=3600.0)
    """How long to wait for a peering object someone else creates; then exit with an error."""
    standalone: bool = False
    """Run without peering (one replica, development)."""
    priority: int = Field(default_factory=lambda: secrets.randbelow(1 << 30) + 1)
    """kopf peering priority: the highest-priority live replica acts, the others pause. kopf
    pauses on equal priorities too, so the default is random per process."""
    retry_seconds: float = Field(default=15.0, ge=1.0, le=3600.0)
    """Delay before retrying a TTSService that is not ready to reconcile (e.g. PVC missing);
    also the longest backoff step between retries of a failed event-triggered pass."""
    api_timeout_seconds: float = Field(default=30.0, gt=0.0, le=600.0)
    """Longest one request to the API server may take; then it fails and is retried."""
    pass_workers: int = Field(default=16, ge=1, le=256)
    """How many passes run at once (worker threads, each with its own connection to the API
    server). A pass spends nearly all its time waiting on the API server, so a burst of new
    TTSServices goes as fast as the API server allows only with more workers than CPUs."""
    status_delay_seconds: float = Field(default=1.0, ge=0.0, le=60.0)
    """How long a status refresh asked by a Deployment or pod event waits, so the events of
    one rollout step (they come in bursts) share one refresh."""
    hf_endpoint: str = Field(
        default=DEFAULT_HF_ENDPOINT, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
    )
    """The Hugging Face hub hf:// model URIs download from (its resolve URL layout): the
    hub itself, or a mirror of it. Judged by the policy like any model URL (an http:// or
    internal one needs policy.allowHttpModelUris / allowPrivateModelHosts)."""
    keda_prometheus_address: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090", pattern=r"^https?://[^\s]+$"
    )
    """Prometheus URL that KEDA queries for TTSServices with autoscaling.provider keda. An
    operator setting, not a spec field: a TTSService author cannot point KEDA elsewhere."""
    keda_rate_window: str = Field(default="1m", pattern=r"^[1-9][0-9]{0,4}[smh]$")
    """PromQL rate window of the queue-latency query (keep it >= 4 scrape intervals)."""
    keda_polling_interval: int = Field(default=15, ge=1, le=3600)
    """Seconds between KEDA's queries (ScaledObject pollingInterval)."""
    policy: Policy = Field(default_factory=Policy)
    """What a TTSService may ask for (images, host paths, env, Service type, scheduling): one
    JSON object with the chart's `policy` keys, e.g. TTS_OPERATOR_POLICY='{"allowedImagePrefixes":
    ["registry.example/tts/"]}'; keys left out keep their safe defaults (see policy.py)."""

    @field_validator("hf_endpoint")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("namespaces")
    @classmethod
    def _clean_namespaces(cls, value: str) -> str:
        return ",".join(n.strip() for n in value.split(",") if n.strip())

    @property
    def namespace_list(self) -> list[str]:
        return [n for n in self.namespaces.split(",") if n]

    @property
    def clusterwide(self) -> bool:
        return not self.namespace_list

    @property
    def prometheus_source(self) -> PrometheusSource:
        return PrometheusSource(
            self.keda_prometheus_address, self.keda_rate_window, self.keda_polling_interval
        )

    @property
    def liveness_endpoint(self) -> str | None:
        if self.liveness_port == 0:
            return None
        return f"http://{self.liveness_host}:{self.liveness_port}/healthz"
