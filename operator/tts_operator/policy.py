"""What a TTSService may make the operator create on its author's behalf: the policy, and
a pure check of a spec against it.

The operator creates Deployments (so pods), Services and ConfigMaps with its own
ServiceAccount, so without a policy anyone who may create a TTSService could run any image,
read any Secret in the namespace through `env[].valueFrom.secretKeyRef` or a Secret reference
(`spec.auth.apiKeysSecretRef`, `spec.model.tokenSecretRef`,
`spec.cache.redis.urlSecretRef`), mount any host directory
(`file://`), schedule onto any tainted node, pick any PriorityClass or
RuntimeClass, expose the pods outside the cluster, and have every pod download whatever a
URI names: over plain http, from an internal address, of any size, for any time. The
policy names what is allowed; the defaults allow only what a TTS service needs. It is set
by the chart's `policy:` values, which reach the operator as one JSON variable,
TTS_OPERATOR_POLICY, with the same keys.

`check` returns one `Violation` per refused field; each names the spec field and the chart
value that would allow it. The reconcile refuses a spec with any violation before it
writes anything (reason `PolicyViolation`).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from tts_runtime.fetch import DEFAULT_HF_ENDPOINT, host_problem, is_hf_uri

from tts_operator.builders.model import (
    DEFAULT_DOWNLOAD_DEADLINE_SECONDS,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    MI,
    DownloadRules,
    download_url,
    file_mount,
)
from tts_operator.imageref import ImageRule, repository_rule
from tts_operator.imageref import parse as parse_image
from tts_operator.models import SecretKeyRef, TTSServiceSpec

POLICY_VIOLATION = "PolicyViolation"
CHART_KEY = "policy"
ValueFromSource = Literal["configMapKeyRef", "fieldRef", "resourceFieldRef", "secretKeyRef"]
ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]

# What spec.runtime.env may set without the admin's leave: the runtime's documented tuning
# knobs that have no spec field (docs/runtime.md; compared case-insensitively, as the runtime
# reads its settings). Everything else needs policy.allowedEnvNames: an allow-list, because
# a deny list cannot keep up with every library in the image that reads its own variables
# and loads code from a path they name (glibc's LD_* and GCONV_PATH, OpenSSL's OPENSSL_CONF
# and OPENSSL_MODULES, CUDA's CUDA_INJECTION64_PATH, Python's PYTHON*, NVIDIA_*, ...).
RUNTIME_TUNING_ENV_NAMES = (
    "TTS_BATCH_CALIBRATION",
    "TTS_MEMORY_MODE",
    "TTS_MAX_SEGMENT_CHARS",
    "TTS_WRITE_TIMEOUT_S",
    "TTS_MAX_AUDIO_SECONDS",
    "TTS_MAX_CONNECTIONS",
    "TTS_HEADER_TIMEOUT_S",
    "TTS_BODY_TIMEOUT_S",
    "TTS_FRONT_END_WORKERS",
)
DEFAULT_SERVICE_TYPES: tuple[ServiceType, ...] = ("ClusterIP",)
DEFAULT_ENV_VALUE_FROM: tuple[ValueFromSource, ...] = (
    "configMapKeyRef",
    "fieldRef",
    "resourceFieldRef",
)
_BYTE_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
}  # fmt: skip
_BYTES = re.compile(r"^([0-9]+)(|k|M|G|T|Ki|Mi|Gi|Ti)$")
MIN_DOWNLOAD_BYTES = MI
MAX_DOWNLOAD_BYTES = 1 << 40


def parse_bytes(value: object) -> object:
    """A byte count from an integer or a quantity string ("2Gi", "500M"); anything else is
    left for pydantic to refuse."""
    if isinstance(value, str):
        found = _BYTES.match(value.strip())
        if not found:
            raise ValueError(f"{value!r} is not a byte count such as 2147483648, 2Gi or 500M")
        return int(found.group(1)) * _BYTE_UNITS[found.group(2)]
    return value


ByteCount = Annotated[
    int, BeforeValidator(parse_bytes), Field(ge=MIN_DOWNLOAD_BYTES, le=MAX_DOWNLOAD_BYTES)
]


class Policy(BaseModel):
    """What a TTSService may ask for (chart values `policy.*`; TTS_OPERATOR_POLICY, JSON
    with the same camelCase keys). Name lists are glob patterns (`*` allows any)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    allowed_image_prefixes: list[str] = Field(default_factory=list)
    """Images spec.runtime.image may name, compared by registry host and repository path as
    the image reference grammar parses them (Docker Hub names normalised to
    docker.io/library/...). REGISTRY/PATH/ (ending in /) allows every repository under that
    path on that registry (ghcr.io/acme/ allows the whole org); a repository allows
    itself with any tag or digest; REPO@ only by digest; REPO:TAG and REPO@DIGEST exactly
    that image. Empty: the repository of the operator's default runtime image
    (TTS_OPERATOR_RUNTIME_IMAGE) only."""
    allowed_host_paths: list[str] = Field(default_factory=list)
    """Host directories a file:// model URI may mount (the directory itself or one under
    it). Empty: file:// URIs are refused."""
    allowed_env_names: list[str] = Field(default_factory=list)
    """spec.runtime.env names allowed besides the runtime's tuning knobs
    (RUNTIME_TUNING_ENV_NAMES), as glob patterns compared case-sensitively, as the C library
    compares them. Every other name is refused. Empty: the tuning knobs only."""
    allowed_env_value_from: list[ValueFromSource] = Field(
        default_factory=lambda: list(DEFAULT_ENV_VALUE_FROM)
    )
    """valueFrom sources spec.runtime.env may use. secretKeyRef lets a TTSService read any
    Secret in its namespace (the pod's env), whether or not its author may."""
    allowed_service_types: list[ServiceType] = Field(
        default_factory=lambda: list(DEFAULT_SERVICE_TYPES)
    )
    """Service types spec.service.type may choose."""
    allowed_service_annotations: list[str] = Field(default_factory=list)
    """Annotation keys spec.service.annotations may set (glob patterns, e.g.
    service.beta.kubernetes.io/*). Empty: none."""
    allowed_priority_classes: list[str] = Field(default_factory=list)
    """PriorityClasses spec.scheduling.priorityClassName may name. Empty: none."""
    allowed_runtime_classes: list[str] = Field(default_factory=list)
    """RuntimeClasses spec.scheduling.runtimeClassName may name (e.g. nvidia). Empty: none."""
    allowed_toleration_keys: list[str] = Field(default_factory=list)
    """Taint keys (glob patterns) spec.scheduling.tolerations may tolerate besides the GPU
    taint (the key spec.runtime.gpu.resourceName, nvidia.com/gpu by default, which the
    operator tolerates itself when the spec asks for GPUs). A toleration
    is how a pod lands on a tainted node (the control plane, a reserved pool), so every other
    key needs listing. Empty: the GPU taint only."""
    allowed_node_selector_keys: list[str] = Field(default_factory=lambda: ["*"])
    """Node label keys (glob patterns) spec.scheduling.nodeSelector may require. A selector
    alone cannot pass a taint (tolerations can): the default allows every key; narrow it to
    keep TTSServices off labelled pools."""
    allow_toleration_wildcards: bool = False
    """Allow a toleration with no key and operator Exists (it tolerates every taint: any
    tainted node, the control plane included)."""
    allowed_secret_names: list[str] = Field(default_factory=list)
    """Secrets (glob patterns of names) a spec may refer to: spec.auth.apiKeysSecretRef,
    spec.model.tokenSecretRef and any other *SecretRef. Such a Secret is mounted into the
    pods, which then act on its content (accept its API keys, send its token to the hub):
    the author need not be able to read it. Always the TTSService's own namespace (a
    reference names no other). Empty: none."""
    allow_http_model_uris: bool = False
    """Allow plain http:// model URIs (downloaded unencrypted and unauthenticated: anyone on
    the path can swap the model). A redirect from https to http is refused regardless."""
    allow_private_model_hosts: bool = False
    """Allow an http(s) model URI whose host is a loopback, private, link-local or other
    non-public address (an in-cluster model server; also every internal address the
    pods can reach). Refused at once for an IP literal or localhost, by the download for a
    name resolving to one. Redirects to other hosts never go to such addresses."""
    require_model_sha256: bool = False
    """Refuse an http(s) model URI without spec.model.sha256."""
    max_model_download_bytes: ByteCount = DEFAULT_MAX_DOWNLOAD_BYTES
    """Most bytes one pod's model download may fetch (model and config together; an integer
    or a quantity such as 2Gi). The download stops past it; the emptyDir it writes into gets
    this plus 64Mi as its sizeLimit."""
    model_download_deadline_seconds: int = Field(
        default=DEFAULT_DOWNLOAD_DEADLINE_SECONDS, ge=10, le=86_400
    )
    """The whole model download's deadline (redirects, slow servers included); the pod's
    init container fails past it (and is retried with back-off)."""

    @field_validator("allowed_host_paths")
    @classmethod
    def _absolute_dirs(cls, paths: list[str]) -> list[str]:
        out = []
        for path in paths:
            if not path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"{path!r} must be an absolute directory without '..'")
            out.append(posixpath.normpath(path))
        return out

    @field_validator("allowed_image_prefixes")
    @classmethod
    def _image_rules(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ImageRule.parse(entry)
            except ValueError as err:
                raise ValueError(f"allowedImagePrefixes entry {entry!r}: {err}") from None
        return entries

    @field_validator(
        "allowed_image_prefixes",
        "allowed_env_names",
        "allowed_toleration_keys",
        "allowed_node_selector_keys",
        "allowed_service_annotations",
        "allowed_priority_classes",
        "allowed_runtime_classes",
        "allowed_secret_names",
    )
    @classmethod
    def _no_empty_entries(cls, values: list[str]) -> list[str]:
        if any(not v.strip() for v in values):
            raise ValueError("entries must not be empty")
        return values


def download_rules(policy: Policy, hf_endpoint: str = DEFAULT_HF_ENDPOINT) -> DownloadRules:
    """What the model-fetch init container is told it may do, and where hf:// URIs
    download from (the operator's TTS_OPERATOR_HF_ENDPOINT)."""
    return DownloadRules(
        max_bytes=policy.max_model_download_bytes,
        deadline_seconds=policy.model_download_deadline_seconds,
        allow_http=policy.allow_http_model_uris,
        allow_private_hosts=policy.allow_private_model_hosts,
        hf_endpoint=hf_endpoint,
    )


def secret_refs(model: BaseModel, path: str = "spec") -> Iterator[tuple[str, SecretKeyRef]]:
    """Every Secret reference in a spec (or a part of one), with its field path
    (spec.auth.apiKeysSecretRef): each is a pod reading that Secret for the spec's author."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        where = f"{path}.{info.alias or name}"
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            at = where if i is None else f"{where}[{i}]"
            if isinstance(item, SecretKeyRef):
                yield at, item
            elif isinstance(item, BaseModel):
                yield from secret_refs(item, at)


def internal_host(host: str) -> str | None:
    """Why a model URI's host is internal as written ("a loopback address"), judged without
    resolving it: localhost and IP literals in every form the pod's resolver reads
    (0x7f000001, 2130706433, 127.1, 0177.0.0.1, IPv6). It is the download's own rule
    (tts_runtime.fetch.host_problem, a stdlib-only module of this distribution); names are
    checked by the download, in the pod, against every address they resolve to."""
    return host_problem(host)


def chart_value(field: str) -> str:
    """The chart value (`policy.allowedImagePrefixes`) of a Policy field."""
    return f"{CHART_KEY}.{to_camel(field)}"


@dataclass(frozen=True)
class Violation:
    """One spec field the policy refuses."""

    field: str
    """Where in the TTSService, e.g. spec.runtime.env[2].name."""
    problem: str
    """What is refused, e.g. "LD_PRELOAD is neither a runtime tuning knob ..."."""
    allowed_by: str
    """The chart value that would allow it, e.g. policy.allowedEnvNames."""

    def message(self) -> str:
        return f"{self.field}: {self.problem} (allowed by chart value {self.allowed_by})"


def image_prefixes(policy: Policy, default_image: str) -> list[str]:
    """The allowedImagePrefixes entries in force: the policy's, or the default runtime
    image's repository (registry host and path, normalised)."""
    return policy.allowed_image_prefixes or [repository_rule(default_image)]


def image_problem(image: str, prefixes: list[str]) -> str | None:
    """Why `image` is not allowed by `prefixes` (None: allowed)."""
    try:
        ref = parse_image(image)
    except ValueError as err:
        return f"image {image} is not a valid image reference ({err})"
    if any(ImageRule.parse(p).allows(ref) for p in prefixes):
        return None
    return (
        f"image {image} (registry {ref.registry}, repository {ref.path}) is not under an "
        f"allowed prefix ({_listed(prefixes)})"
    )


def image_allowed(image: str, prefixes: list[str]) -> bool:
    return image_problem(image, prefixes) is None


def env_name_allowed(name: str, policy: Policy) -> bool:
    """A runtime tuning knob (any case, as the runtime reads it) or a name the admin
    allows (case-sensitive)."""
    return _matches(name, list(RUNTIME_TUNING_ENV_NAMES), fold_case=True) or _matches(
        name, policy.allowed_env_names
    )


def host_path_allowed(host_dir: str, allowed: list[str]) -> bool:
    if ".." in host_dir.split("/"):
        return False
    path = posixpath.normpath(host_dir)
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in allowed)


def _matches(name: str, patterns: list[str], fold_case: bool = False) -> bool:
    if fold_case:
        return any(fnmatchcase(name.upper(), p.upper()) for p in patterns)
    return any(fnmatchcase(name, p) for p in patterns)


def _listed(values: list[str]) -> str:
    return ", ".join(values) if values else "none"


def check(
    spec: TTSServiceSpec,
    policy: Policy,
    default_image: str,
    hf_endpoint: str = DEFAULT_HF_ENDPOINT,
) -> list[Violation]:
    """Every field of `spec` the policy refuses (empty: allowed). `default_image` is the
    operator's runtime image (what an unset spec.runtime.image runs; always allowed);
    `hf_endpoint` is where hf:// URIs download from (judged as the URL they become)."""
    out: list[Violation] = []

    def refuse(field: str, problem: str, policy_field: str) -> None:
        out.append(Violation(field, problem, chart_value(policy_field)))

    def refuse_keys(keys: Iterable[str], field: str, what: str, policy_field: str) -> None:
        """Each map key (`field`["KEY"]) that none of the policy field's patterns allows."""
        allowed: list[str] = getattr(policy, policy_field)
        for key in keys:
            if not _matches(key, allowed):
                refuse(
                    f'{field}["{key}"]',
                    f"{what} {key} is not allowed ({_listed(allowed)})",
                    policy_field,
                )

    image = spec.runtime.image
    problem = image and image_problem(image, image_prefixes(policy, default_image))
    if problem:
        refuse("spec.runtime.image", problem, "allowed_image_prefixes")

    uri = spec.model.uri
    hf = is_hf_uri(uri)
    # An hf:// model is downloaded from the hub's resolve URL: judged as that URL.
    model = urlsplit(download_url(uri, DownloadRules(hf_endpoint=hf_endpoint)) if hf else uri)
    via = f" (hf:// URIs download from {hf_endpoint}, TTS_OPERATOR_HF_ENDPOINT)" if hf else ""
    if model.scheme == "http" and not policy.allow_http_model_uris:
        refuse(
            "spec.model.uri",
            "a plain http:// model URI is downloaded unencrypted and unauthenticated; use "
            f"https://{via}",
            "allow_http_model_uris",
        )
    if model.scheme in ("http", "https"):
        problem = internal_host(model.hostname or "")
        if problem and not policy.allow_private_model_hosts:
            refuse(
                "spec.model.uri",
                f"the model host {model.hostname} is {problem}{via}",
                "allow_private_model_hosts",
            )
        if policy.require_model_sha256 and not spec.model.sha256:
            refuse(
                "spec.model.sha256",
                "a downloaded (http(s)://, hf://) model needs the model's SHA-256 "
                "(policy.requireModelSha256)",
                "require_model_sha256",
            )
    if model.scheme == "file":
        host_dir, _ = file_mount(spec.model.uri)
        if not host_path_allowed(host_dir, policy.allowed_host_paths):
            refuse(
                "spec.model.uri",
                f"file:// mounts host directory {host_dir}, which is not an allowed host path "
                f"({_listed(policy.allowed_host_paths)})",
                "allowed_host_paths",
            )

    for field, ref in secret_refs(spec):
        if not _matches(ref.name, policy.allowed_secret_names):
            refuse(
                field,
                f"Secret {ref.name} is not an allowed Secret "
                f"({_listed(policy.allowed_secret_names)}): the pods would read it for the "
                "spec's author",
                "allowed_secret_names",
            )

    for i, env in enumerate(spec.runtime.env):
        if not env_name_allowed(env.name, policy):
            refuse(
                f"spec.runtime.env[{i}].name",
                f"{env.name} is neither a runtime tuning knob "
                f"({', '.join(RUNTIME_TUNING_ENV_NAMES)}) nor an allowed environment name "
                f"({_listed(policy.allowed_env_names)})",
                "allowed_env_names",
            )
        for source in env.value_from or {}:
            if source not in policy.allowed_env_value_from:
                refuse(
                    f"spec.runtime.env[{i}].valueFrom.{source}",
                    f"valueFrom.{source} is not an allowed source "
                    f"({_listed(list(policy.allowed_env_value_from))})",
                    "allowed_env_value_from",
                )

    service = spec.service
    if service.type not in policy.allowed_service_types:
        refuse(
            "spec.service.type",
            f"Service type {service.type} is not allowed "
            f"({_listed(list(policy.allowed_service_types))})",
            "allowed_service_types",
        )
    refuse_keys(
        service.annotations,
        "spec.service.annotations",
        "Service annotation",
        "allowed_service_annotations",
    )

    sched = spec.scheduling
    if sched.priority_class_name and not _matches(
        sched.priority_class_name, policy.allowed_priority_classes
    ):
        refuse(
            "spec.scheduling.priorityClassName",
            f"PriorityClass {sched.priority_class_name} is not allowed "
            f"({_listed(policy.allowed_priority_classes)})",
            "allowed_priority_classes",
        )
    if sched.runtime_class_name and not _matches(
        sched.runtime_class_name, policy.allowed_runtime_classes
    ):
        refuse(
            "spec.scheduling.runtimeClassName",
            f"RuntimeClass {sched.runtime_class_name} is not allowed "
            f"({_listed(policy.allowed_runtime_classes)})",
            "allowed_runtime_classes",
        )
    gpu_taint = spec.runtime.gpu.resource_name
    tolerable = [gpu_taint, *policy.allowed_toleration_keys]
    for i, tol in enumerate(sched.tolerations):
        if not tol.key:
            if tol.operator == "Exists" and not policy.allow_toleration_wildcards:
                refuse(
                    f"spec.scheduling.tolerations[{i}]",
                    "a toleration with no key and operator Exists tolerates every taint",
                    "allow_toleration_wildcards",
                )
        elif not _matches(tol.key, tolerable):
            refuse(
                f"spec.scheduling.tolerations[{i}].key",
                f"a toleration for taint {tol.key} lets the pods onto nodes tainted to keep "
                f"them off; only the GPU taint ({gpu_taint}) and allowed keys "
                f"({_listed(policy.allowed_toleration_keys)}) may be tolerated",
                "allowed_toleration_keys",
            )
    refuse_keys(
        sched.node_selector,
        "spec.scheduling.nodeSelector",
        "node selector key",
        "allowed_node_selector_keys",
    )
    return out


def refusal_message(violations: list[Violation], limit: int = 4000) -> str:
    """One condition message for all violations, cut to fit a condition (4096 characters)."""
    text = (
        "the operator's policy refuses this spec, so nothing was created or changed: "
        + "; ".join(v.message() for v in violations)
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."
