"""TTSService spec and status: the single source of truth for the CRD schema.

Field docstrings become the CRD's descriptions, pydantic constraints its ranges and enums,
and each `CelRule` both a CRD `x-kubernetes-validations` entry (the API server enforces it)
and a Python check in the model validator (unit tests and the operator enforce it).
CRD field names are camelCase (aliases); Python uses snake_case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from tts_runtime.fetch import HF_URI_PATTERN

GROUP = "ttsoperator.io"
VERSION = "v1alpha1"
KIND = "TTSService"
PLURAL = "ttsservices"
SINGULAR = "ttsservice"
SHORT_NAME = "tts"

DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_METRIC_NAME = "tts_queue_latency_seconds"
RUNTIME_PORT = 8000

# Kubernetes resource.Quantity as the API server accepts it (ints are accepted too).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
PERCENT_PATTERN = r"^[0-9]{1,3}%$"
MODEL_URI_PATTERN = (
    r"^(pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/.*)?|https?://.+|file:///.*"
    rf"|{HF_URI_PATTERN})$"
)
# URI schemes a model is downloaded from (by the model-fetch init container).
DOWNLOAD_SCHEMES = ("http://", "https://", "hf://")
# A Secret's name (DNS-1123 subdomain) and one of its keys (no leading "..": the kubelet
# writes the key as a file of that name in the volume).
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"
METRIC_NAME_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# Extended resource names: an optional DNS prefix, then a name (nvidia.com/gpu,
# nvidia.com/mig-1g.10gb, amd.com/gpu ...).
RESOURCE_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)

Quantity = Annotated[
    int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=64)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
IntOrPercent = Annotated[
    Annotated[int, Field(ge=0)]
    | Annotated[str, StringConstraints(pattern=PERCENT_PATTERN, max_length=4)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
# A byte count: an integer or a whole number with a unit (256Mi, 4Mi, 1G).
BYTE_SIZE_PATTERN = r"^[0-9]+(k|M|G|T|Ki|Mi|Gi|Ti)?$"
ByteSize = Annotated[
    Annotated[int, Field(ge=0, le=1 << 40)]
    | Annotated[str, StringConstraints(pattern=BYTE_SIZE_PATTERN, max_length=16)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
StringMap = dict[str, str]
_PRESERVED_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _preserve_unknown(description: str) -> Any:
    """A pass-through Kubernetes object (affinity, valueFrom ...) the API server validates later."""
    return Field(
        default=None,
        description=description,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


@dataclass(frozen=True)
class CelRule:
    """One cross-field rule, enforced by the API server (CEL) and by the model (Python)."""

    rule: str
    message: str
    check: Callable[[Any], bool]

    def crd(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


def cel_rules(*rules: CelRule) -> dict[str, Any]:
    return {"x-kubernetes-validations": [r.crd() for r in rules]}


def enforce(obj: Any, rules: tuple[CelRule, ...]) -> None:
    for r in rules:
        if not r.check(obj):
            raise ValueError(r.message)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        validate_default=True,
        # Types as the API server checks them: "3" or true is no integer, 1 or "yes" no
        # boolean (lax pydantic would take them, and disagree with the CRD).
        strict=True,
    )


class SecretKeyRef(_Model):
    """One key of a Secret in the TTSService's namespace, mounted into the pods as a file
    (never put in the environment) and updated there when the Secret changes. The
    operator's policy names the Secrets a TTSService may refer to (policy.allowedSecretNames;
    default: none)."""

    name: str = Field(pattern=SECRET_NAME_PATTERN, max_length=253)
    """Secret name, in the TTSService's namespace."""
    key: str = Field(pattern=SECRET_KEY_PATTERN, max_length=253)
    """Key within the Secret."""


# ---------------------------------------------------------------- model


class ModelSpec(_Model):
    """The voice to serve: a Piper-format ONNX model and its JSON config."""

    uri: str = Field(pattern=MODEL_URI_PATTERN, max_length=2048)
    """Where the model lives. pvc://CLAIM/sub/path mounts the claim read-only at /models;
    http(s)://.../voice.onnx is downloaded (with voice.onnx.json beside it) by an init
    container; hf://OWNER/REPO[@REVISION]/PATH.onnx is a file of a Hugging Face repository,
    downloaded the same way from the hub's resolve URL (with PATH.onnx.json; REVISION: a
    branch, tag or commit, default main; the hub is the operator's TTS_OPERATOR_HF_ENDPOINT,
    chart value operator.hfEndpoint), its size and SHA-256 verified where the hub lists
    them; file:///host/path mounts a hostPath (development only; the operator refuses it
    unless its policy lists the directory: chart value policy.allowedHostPaths). The
    operator's policy refuses plain http:// (policy.allowHttpModelUris) and hosts at
    internal addresses (policy.allowPrivateModelHosts) unless it allows them."""
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    """SHA-256 of the model file an http(s) or hf URI downloads (64 hex digits, as sha256sum
    prints them): the download fails when the file differs. Required for downloaded models
    where the operator's policy says so (policy.requireModelSha256). http(s) and hf URIs
    only."""
    config_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    """SHA-256 of the voice config (the URI with .json added) an http(s) or hf URI
    downloads; optional. http(s) and hf URIs only."""
    token_secret_ref: SecretKeyRef | None = None
    """A Secret key holding a Hugging Face token, for gated or private repositories: mounted
    into the model-fetch init container only, and sent as Authorization: Bearer to the hub's
    own host only (never over plain http, never on to the CDN a download is redirected
    to). hf URIs only; the operator's policy must allow the Secret (policy.allowedSecretNames)."""
    format: Literal["piper-onnx"] = "piper-onnx"
    """Model format: a Piper-style ONNX voice plus its .onnx.json config."""
    name: str = Field(default="tts-1", min_length=1, max_length=128)
    """Model id the runtime serves on /v1/models (TTS_MODEL_NAME)."""
    precision: Literal["fp16", "fp32"] = "fp16"
    """Inference precision (TTS_PRECISION)."""
    voices: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, max_length=256)
    """Voice name -> speaker id (TTS_VOICES). Empty: the voice config's speaker map."""

    cel: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "(!has(self.sha256) && !has(self.configSha256))"
            " || self.uri.startsWith('http://') || self.uri.startsWith('https://')"
            " || self.uri.startsWith('hf://')",
            "model.sha256 and model.configSha256 apply to downloaded (http(s)://, hf://) URIs "
            "only (nothing verifies a pvc:// or file:// model)",
            lambda m: (
                (m.sha256 is None and m.config_sha256 is None) or m.uri.startswith(DOWNLOAD_SCHEMES)
            ),
        ),
        CelRule(
            "!has(self.tokenSecretRef) || self.uri.startsWith('hf://')",
            "model.tokenSecretRef applies to hf:// URIs only",
            lambda m: m.token_secret_ref is None or m.uri.startswith("hf://"),
        ),
    )
    model_config = ConfigDict(json_schema_extra=cel_rules(*cel))

    @field_validator("uri")
    @classmethod
    def _splits(cls, uri: str) -> str:
        # The pattern cannot tell a [IPv6] host from "http://[" or "https://[::::]", which
        # the policy, the builders and the download cannot split: the one place the models
        # refuse what the API server took (the operator reports InvalidSpec).
        try:
            urlsplit(uri)
        except ValueError as err:
            raise ValueError(f"not a URL: {err}") from None
        return uri

    @model_validator(mode="after")
    def _cross_checks(self) -> ModelSpec:
        enforce(self, self.cel)
        return self


# ---------------------------------------------------------------- runtime


class Batching(_Model):
    """Dynamic batching inside one pod: each request's text is split into sentence segments,
    and segments of concurrent requests are queued and run together."""

    max_batch_size: int = Field(default=8, ge=1, le=256)
    """Upper bound on the segments run in one inference call (TTS_MAX_BATCH_SIZE). The
    runtime's warm-up calibration may lower the limit it uses where bigger batches do not pay
    (typically on a CPU); it reports the limit as batch_limit on /readyz."""
    max_queue_delay_ms: int = Field(default=10, ge=0, le=10_000)
    """How long a partial batch is held for more segments, counted from its oldest segment's
    arrival, and only while other requests are still being prepared; an idle server runs a
    lone request at once (TTS_MAX_QUEUE_DELAY_MS)."""
    max_queue_size: int = Field(default=256, ge=1, le=100_000)
    """Most sentence segments queued at once; a long input counts as several
    (TTS_MAX_QUEUE_SIZE). A request whose segments do not all fit is refused at once with
    429; one that alone splits into more than this gets 400."""
    request_timeout_seconds: int = Field(default=30, ge=1, le=3600)
    """How long a segment may wait in the queue before it starts (TTS_REQUEST_TIMEOUT_S):
    passing it while still queued fails the request with 504 and the segment never runs; a
    segment already running finishes. In a stream each segment's wait counts from when the
    previous one started."""


class ComputeResources(_Model):
    """CPU and memory amounts."""

    cpu: Quantity | None = None
    """CPU cores, e.g. 2 or 500m."""
    memory: Quantity | None = None
    """Memory, e.g. 4Gi."""


def _default_requests() -> ComputeResources:
    return ComputeResources(cpu="1", memory="2Gi")


def _default_limits() -> ComputeResources:
    return ComputeResources(memory="4Gi")


class Resources(_Model):
    """CPU and memory for the runtime container (the GPU is set in runtime.gpu)."""

    requests: ComputeResources = Field(
        default_factory=_default_requests,
        json_schema_extra={"default": {"cpu": "1", "memory": "2Gi"}},
    )
    """Requests; default cpu 1, memory 2Gi."""
    limits: ComputeResources = Field(
        default_factory=_default_limits, json_schema_extra={"default": {"memory": "4Gi"}}
    )
    """Limits; default memory 4Gi, no CPU limit."""


class Gpu(_Model):
    """GPUs per pod, as an extended resource limit."""

    count: int = Field(default=1, ge=0, le=16)
    """GPUs per pod; 0 runs on CPU (no GPU limit, no GPU toleration)."""
    resource_name: str = Field(
        default=DEFAULT_GPU_RESOURCE, pattern=RESOURCE_NAME_PATTERN, max_length=253
    )
    """Extended resource to request, e.g. nvidia.com/gpu, nvidia.com/mig-1g.10gb or a
    time-sliced name."""


class EnvVar(_Model):
    """An extra environment variable for the runtime container."""

    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=253)
    """Variable name."""
    value: str | None = Field(default=None, max_length=32_768)
    """Literal value."""
    value_from: dict[str, Any] | None = _preserve_unknown(
        "A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef ...)."
    )

    cel: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!(has(self.value) && has(self.valueFrom))",
            "env: set value or valueFrom, not both",
            lambda e: not (e.value is not None and e.value_from is not None),
        ),
    )
    model_config = ConfigDict(json_schema_extra=cel_rules(*cel))

    @model_validator(mode="after")
    def _cross_checks(self) -> EnvVar:
        enforce(self, self.cel)
        return self


class RuntimeSpec(_Model):
    """The runtime container: image, batching, resources and GPUs."""

    image: str | None = Field(default=None, max_length=512)
    """Runtime image; empty: the operator's default (TTS_OPERATOR_RUNTIME_IMAGE). Its
    registry host and repository must be allowed by the operator's
    policy.allowedImagePrefixes (default: the default image's repository)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    """Image pull policy; empty: the Kubernetes default."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Execution provider choice (TTS_DEVICE): auto uses CUDA when present."""
    batching: Batching = Field(default_factory=Batching, json_schema_extra={"default": {}})
    """Dynamic batching settings: requests are split into sentence segments, and segments of
    concurrent requests share inference calls."""
    max_input_chars: int = Field(default=4096, ge=1, le=1_000_000)
    """Longest accepted input text (TTS_MAX_INPUT_CHARS)."""
    pre_stop_sleep_seconds: int = Field(default=5, ge=0, le=300)
    """How long a stopping pod keeps serving normally before the runtime gets SIGTERM (a
    preStop sleep hook), so requests routed to it while Kubernetes removes it from the
    Service's endpoints are still answered rather than refused. 0: no hook."""
    drain_timeout_seconds: int = Field(default=25, ge=1, le=3600)
    """How long a stopping pod keeps serving queued requests after SIGTERM
    (TTS_DRAIN_TIMEOUT_S); the pod's terminationGracePeriodSeconds is preStopSleepSeconds
    plus this plus 15."""
    startup_timeout_seconds: int = Field(default=600, ge=10, le=7200)
    """How long a pod may take to load its model before it is restarted (startup probe)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Runtime log level (TTS_LOG_LEVEL)."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Extra environment variables. The operator's policy allows only the runtime's tuning
    knobs (TTS_MAX_CONNECTIONS, TTS_MEMORY_MODE ...) and the names the cluster admin lists
    (policy.allowedEnvNames), and refuses valueFrom sources it does not allow (secretKeyRef
    by default: policy.allowedEnvValueFrom)."""
    resources: Resources = Field(default_factory=Resources, json_schema_extra={"default": {}})
    """CPU and memory requests and limits."""
    gpu: Gpu = Field(default_factory=Gpu, json_schema_extra={"default": {}})
    """GPUs per pod."""


# ---------------------------------------------------------------- autoscaling


class ScalingPolicy(_Model):
    """One HPA scaling policy."""

    type: Literal["Pods", "Percent"]
    """Pods: change by a number of pods; Percent: by a percentage of the current count."""
    value: int = Field(ge=1, le=10_000)
    """How many pods (or percent) per period."""
    period_seconds: int = Field(ge=1, le=1800)
    """The window the value applies to."""


class ScalingRules(_Model):
    """How fast the HPA may scale up."""

    stabilization_window_seconds: int = Field(default=0, ge=0, le=3600)
    """Seconds of past recommendations considered before scaling up."""
    select_policy: Literal["Max", "Min", "Disabled"] | None = None
    """Which policy wins when several apply; Disabled turns scaling this way off."""
    policies: list[ScalingPolicy] = Field(default_factory=list, max_length=10)
    """Rate limits; empty: the Kubernetes defaults."""


class ScaleDownRules(ScalingRules):
    """How fast the HPA may scale down."""

    stabilization_window_seconds: int = Field(default=300, ge=0, le=3600)
    """Seconds of past recommendations considered before scaling down (avoids flapping)."""


class Autoscaling(_Model):
    """Scale pods on the per-pod queue latency the runtime reports."""

    enabled: bool = False
    """Scale the Deployment on queue latency; the operator then never sets its replicas
    (spec.replicas must be unset)."""
    provider: Literal["hpa", "keda"] = "hpa"
    """hpa: a HorizontalPodAutoscaler on the per-pod custom metric `metricName` (served by
    a metrics adapter such as prometheus-adapter). keda: a KEDA ScaledObject whose Prometheus
    trigger runs the same queue-latency query against the Prometheus the operator is
    configured with (chart value keda.prometheusServerAddress); KEDA must be installed."""
    min_replicas: int = Field(default=1, ge=1, le=1000)
    """Fewest pods."""
    max_replicas: int = Field(default=4, ge=1, le=1000)
    """Most pods."""
    target_queue_latency_ms: int = Field(default=150, ge=1, le=600_000)
    """Target average queue wait per pod in milliseconds (the HPA averageValue, e.g. 150m)."""
    metric_name: str = Field(
        default=DEFAULT_METRIC_NAME, pattern=METRIC_NAME_PATTERN, max_length=253
    )
    """Per-pod custom metric (Pods metric) served by the metrics adapter."""
    scale_up: ScalingRules = Field(default_factory=ScalingRules, json_schema_extra={"default": {}})
    """Scale-up behaviour."""
    scale_down: ScaleDownRules = Field(
        default_factory=ScaleDownRules, json_schema_extra={"default": {}}
    )
    """Scale-down behaviour."""

    cel: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            # has(): the API server also checks this rule on the `default: {}` of autoscaling.
            "!has(self.minReplicas) || !has(self.maxReplicas)"
            " || self.minReplicas <= self.maxReplicas",
            "autoscaling.minReplicas must be <= autoscaling.maxReplicas",
            lambda a: a.min_replicas <= a.max_replicas,
        ),
    )
    model_config = ConfigDict(json_schema_extra=cel_rules(*cel))

    @model_validator(mode="after")
    def _cross_checks(self) -> Autoscaling:
        enforce(self, self.cel)
        return self


# ---------------------------------------------------------------- service, scheduling


class ServiceSpec(_Model):
    """The Service in front of the pods."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Service type; types other than ClusterIP need the operator's policy to allow them
    (policy.allowedServiceTypes)."""
    port: int = Field(default=RUNTIME_PORT, ge=1, le=65535)
    """Service port (the pods listen on 8000)."""
    session_affinity: Literal["ClientIP", "None"] = "ClientIP"
    """ClientIP keeps a client on one pod (warm batches, ordered streams)."""
    session_affinity_timeout_seconds: int = Field(default=300, ge=1, le=86_400)
    """How long ClientIP affinity sticks."""
    annotations: StringMap = Field(default_factory=dict, max_length=64)
    """Annotations for the Service (load-balancer settings ...); each key must match the
    operator's policy.allowedServiceAnnotations (default: none)."""


class Toleration(_Model):
    """A pod toleration."""

    key: str | None = Field(default=None, max_length=317)
    """Taint key; empty with operator Exists tolerates everything (refused unless the
    operator's policy.allowTolerationWildcards)."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (the Kubernetes default)."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value for Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect; empty matches all effects."""
    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays after the taint appears."""


class Scheduling(_Model):
    """Where the pods may run. A toleration for the GPU resource name (effect NoSchedule) is
    always added when runtime.gpu.count > 0."""

    node_selector: StringMap = Field(default_factory=dict, max_length=64)
    """Node labels the pods require."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Extra tolerations. Keys other than the GPU taint (runtime.gpu.resourceName) must be
    allowed by the operator's policy.allowedTolerationKeys."""
    affinity: dict[str, Any] | None = _preserve_unknown("A Kubernetes Affinity object.")
    priority_class_name: str | None = Field(default=None, max_length=253)
    """PriorityClass of the pods; must be in the operator's policy.allowedPriorityClasses."""
    runtime_class_name: str | None = Field(default=None, max_length=253)
    """RuntimeClass of the pods (e.g. nvidia); must be in the operator's
    policy.allowedRuntimeClasses."""
    topology_spread_constraints: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        },
    )
    """Kubernetes TopologySpreadConstraints; labelSelector defaults to the pods' selector."""


class Disruption(_Model):
    """The PodDisruptionBudget."""

    enabled: bool = True
    """Create a PodDisruptionBudget."""
    max_unavailable: IntOrPercent = 1
    """Pods that voluntary disruptions (drains) may take down at once."""


class Rollout(_Model):
    """The Deployment's rolling update."""

    max_surge: IntOrPercent = 1
    """Extra pods during a rollout (a new GPU pod loads before an old one leaves)."""
    max_unavailable: IntOrPercent = 0
    """Pods that may be missing during a rollout."""


class AuthSpec(_Model):
    """Who may call the API."""

    api_keys_secret_ref: SecretKeyRef | None = None
    """A Secret key holding API keys, one per line (blank lines and lines starting with #
    are ignored). When set, every request but /healthz, /readyz and /metrics needs
    Authorization: Bearer KEY (the openai client's api_key): a missing or wrong key gets 401.
    Mounted into the runtime as a file (TTS_API_KEYS_FILE); an updated Secret takes effect in
    running pods once the kubelet refreshes the volume (about a minute), without a restart.
    Unset: no key needed. The operator's policy must allow the Secret
    (policy.allowedSecretNames)."""


class RedisCache(_Model):
    """A Redis every replica shares, so a response one pod made is a hit on all of them."""

    url_secret_ref: SecretKeyRef
    """A Secret key holding the Redis URL: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB],
    rediss://... for TLS. Mounted into the runtime as a file (TTS_CACHE_REDIS_URL_FILE) and
    read when a pod starts: after changing the Secret, restart the pods (kubectl rollout
    restart). The operator's policy must allow the Secret (policy.allowedSecretNames)."""
    timeout_ms: int = Field(default=100, ge=1, le=10_000)
    """Longest one Redis call may take (TTS_CACHE_REDIS_TIMEOUT_MS). A Redis that is slower,
    down or refusing is never worth a failed request: the pod serves from the model, counts
    it in tts_cache_redis_errors_total, and leaves Redis alone for 1 s, doubling to 30 s
    while it keeps failing."""
    ttl_seconds: int = Field(default=86_400, ge=1, le=31_536_000)
    """How long Redis keeps a response (TTS_CACHE_REDIS_TTL_S)."""


class CacheSpec(_Model):
    """A cache of whole (non-streamed) responses, keyed by everything that makes their bytes:
    the model's files, voice, input text (its sentences), speed, format and sample rate. A
    hit answers in about a millisecond with X-TTS-Cache: hit and runs nothing on the GPU.
    Streamed responses are never served from it."""

    enabled: bool = False
    """Cache responses (TTS_CACHE_MAX_BYTES, TTS_CACHE_REDIS_URL_FILE)."""
    max_bytes: ByteSize | None = None
    """Bytes of responses each pod keeps in its own memory (an LRU), e.g. 256Mi; 0: none
    (Redis only). Unset: an eighth of the container's memory request (256Mi with the default
    2Gi), else of its memory limit, else 64Mi. It counts against the pod's memory: keep
    room for it under the limit."""
    max_entry_bytes: ByteSize = "4Mi"
    """Largest response cached (in memory and in Redis); 4Mi holds about 95 s of 22 kHz
    WAV."""
    redis: RedisCache | None = None
    """A Redis shared by all replicas; unset: each pod caches on its own."""
    share_across_services: bool = False
    """Share cached responses with every other TTSService of the same model whose cache
    also opts in (through a shared Redis). Off: the cache key holds this TTSService's
    namespace and name (TTS_CACHE_SCOPE), so no other service's callers are answered from
    it, and X-TTS-Cache: hit tells a caller only that a caller of this same service asked
    for the same speech before. On: a hit may also mean another opted-in service's caller
    did."""


# ---------------------------------------------------------------- spec


class TTSServiceSpec(_Model):
    """A text-to-speech service on GPU nodes."""

    model: ModelSpec
    """The voice to serve."""
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, json_schema_extra={"default": {}})
    """The runtime container."""
    replicas: int | None = Field(default=None, ge=0, le=1000)
    """Pods when autoscaling is off (unset: 1). Must be unset when autoscaling is on."""
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, json_schema_extra={"default": {}})
    """Queue-latency autoscaling."""
    service: ServiceSpec = Field(default_factory=ServiceSpec, json_schema_extra={"default": {}})
    """The Service."""
    auth: AuthSpec = Field(default_factory=AuthSpec, json_schema_extra={"default": {}})
    """Who may call the API."""
    cache: CacheSpec = Field(default_factory=CacheSpec, json_schema_extra={"default": {}})
    """The response cache."""
    scheduling: Scheduling = Field(default_factory=Scheduling, json_schema_extra={"default": {}})
    """Node selection, tolerations, affinity, priority, spreading."""
    disruption: Disruption = Field(default_factory=Disruption, json_schema_extra={"default": {}})
    """The PodDisruptionBudget."""
    rollout: Rollout = Field(default_factory=Rollout, json_schema_extra={"default": {}})
    """The rolling update."""

    cel: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!has(self.replicas) || !has(self.autoscaling) || !has(self.autoscaling.enabled)"
            " || !self.autoscaling.enabled",
            "replicas and autoscaling.enabled are mutually exclusive: "
            "unset spec.replicas when autoscaling is on",
            lambda s: s.replicas is None or not s.autoscaling.enabled,
        ),
    )
    model_config = ConfigDict(json_schema_extra=cel_rules(*cel))

    @model_validator(mode="after")
    def _cross_checks(self) -> TTSServiceSpec:
        enforce(self, self.cel)
        return self

    @property
    def effective_replicas(self) -> int:
        return 1 if self.replicas is None else self.replicas


# ---------------------------------------------------------------- status


class Condition(_Model):
    """A Kubernetes-style condition."""

    type: str = Field(max_length=64)
    """Ready, Progressing or Degraded."""
    status: Literal["True", "False", "Unknown"]
    """Condition status."""
    reason: str = Field(default="", max_length=128)
    """CamelCase reason a person can act on (InsufficientGPU, ModelClaimNotFound ...)."""
    message: str = Field(default="", max_length=4096)
    """Human-readable detail."""
    last_transition_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    """When status last changed."""
    observed_generation: int | None = None
    """The spec generation the condition was computed for."""


class TTSServiceStatus(_Model):
    """Observed state, computed from the children."""

    observed_generation: int | None = None
    """The spec generation last reconciled."""
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    """Ready, Progressing and Degraded."""
    replicas: int = 0
    """Pods of the Deployment (all versions)."""
    ready_replicas: int = 0
    """Pods ready to serve."""
    updated_replicas: int = 0
    """Pods running the current template."""
    endpoint: str | None = None
    """In-cluster URL: http://NAME.NAMESPACE.svc.cluster.local:PORT."""
    selector: str | None = None
    """Label selector of the pods (for the scale subresource)."""
