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
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from tts_runtime.fetch import DEFAULT_HF_ENDPOINT, address_problem, is_hf_uri

from tts_operator.builders.model import (
    DEFAULT_DOWNLOAD_DEADLINE_SECONDS,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    MI,
    DownloadRules,
    download_url,
    file_mount,
)
from tts_operator.models import SecretKeyRef, TTSServiceSpec

POLICY_VIOLATION = "PolicyViolation"
CHART_KEY = "policy"
ValueFromSource = Literal["configMapKeyRef", "fieldRef", "resourceFieldRef", "secretKeyRef"]
ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]

# Environment names a TTSService may not set (glob patterns, compared case-insensitively:
# the runtime's settings read TTS_* names in any case).
DEFAULT_DENIED_ENV_NAMES = (
    "LD_*",  # the dynamic loader: LD_PRELOAD / LD_LIBRARY_PATH load any file as code
    "GCONV_PATH",  # glibc loads iconv modules from here
    "GLIBC_TUNABLES",
    "MALLOC_*",
    "PATH",  # which executable the image's command names
    "PYTHON*",  # PYTHONPATH, PYTHONSTARTUP, PYTHONHOME ...: the interpreter loads code
    "NVIDIA_*",  # NVIDIA_VISIBLE_DEVICES=all: every GPU on the node, past the device plugin
    "TTS_*",  # the runtime's settings: the operator sets them from validated spec fields
)
# Names allowed although a denied pattern matches: runtime tuning knobs without a spec field.
DEFAULT_ALLOWED_ENV_NAMES = (
    "TTS_BATCH_CALIBRATION",
    "TTS_MEMORY_MODE",
    "TTS_MAX_SEGMENT_CHARS",
    "TTS_WRITE_TIMEOUT_S",
    "TTS_MAX_AUDIO_SECONDS",
    "TTS_MAX_CONNECTIONS",
    "TTS_HEADER_TIMEOUT_S",
    "TTS_BODY_TIMEOUT_S",
)
DEFAULT_SERVICE_TYPES: tuple[ServiceType, ...] = ("ClusterIP",)
DEFAULT_ENV_VALUE_FROM: tuple[ValueFromSource, ...] = (
    "configMapKeyRef",
    "fieldRef",
    "resourceFieldRef",
)
# An image prefix ending in one of these matches anything that starts with it; any other
# prefix is a repository, and matches only itself with a tag or digest.
_PREFIX_ENDS = ("/", ":", "@")
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
    """Images spec.runtime.image may name. A prefix ending in /, : or @ allows every image
    starting with it (ghcr.io/acme/ allows the whole org); any other prefix is a repository
    and allows that repository with any tag or digest. Images compare as written (no
    docker.io/library/ normalisation). Empty: the repository of the operator's default
    runtime image (TTS_OPERATOR_RUNTIME_IMAGE) only."""
    allowed_host_paths: list[str] = Field(default_factory=list)
    """Host directories a file:// model URI may mount (the directory itself or one under
    it). Empty: file:// URIs are refused."""
    denied_env_names: list[str] = Field(default_factory=lambda: list(DEFAULT_DENIED_ENV_NAMES))
    """spec.runtime.env names refused (glob patterns, case-insensitive)."""
    allowed_env_names: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_ENV_NAMES))
    """spec.runtime.env names allowed although deniedEnvNames matches them."""
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

    @field_validator(
        "allowed_image_prefixes",
        "denied_env_names",
        "allowed_env_names",
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
    resolving it: IP literals and localhost. Names are checked by the download, in the pod,
    against every address they resolve to, with the same rule (tts_runtime.fetch, a
    stdlib-only module of this distribution)."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "a loopback address"
    try:
        return address_problem(host)
    except ValueError:  # a name, not an IP literal
        return None


def chart_value(field: str) -> str:
    """The chart value (`policy.allowedImagePrefixes`) of a Policy field."""
    return f"{CHART_KEY}.{to_camel(field)}"


@dataclass(frozen=True)
class Violation:
    """One spec field the policy refuses."""

    field: str
    """Where in the TTSService, e.g. spec.runtime.env[2].name."""
    problem: str
    """What is refused, e.g. "LD_PRELOAD is a denied environment name"."""
    allowed_by: str
    """The chart value that would allow it, e.g. policy.allowedEnvNames."""

    def message(self) -> str:
        return f"{self.field}: {self.problem} (allowed by chart value {self.allowed_by})"


def image_repository(image: str) -> str:
    """An image reference without its tag and digest (a registry port is kept)."""
    name = image.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


def image_prefixes(policy: Policy, default_image: str) -> list[str]:
    """The prefixes in force: the policy's, or the default runtime image's repository."""
    return policy.allowed_image_prefixes or [image_repository(default_image)]


def image_allowed(image: str, prefixes: list[str]) -> bool:
    for prefix in prefixes:
        if not image.startswith(prefix):
            continue
        if prefix.endswith(_PREFIX_ENDS) or image[len(prefix) : len(prefix) + 1] in ("", ":", "@"):
            return True
    return False


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

    image = spec.runtime.image
    prefixes = image_prefixes(policy, default_image)
    if image and not image_allowed(image, prefixes):
        refuse(
            "spec.runtime.image",
            f"image {image} is not under an allowed prefix ({_listed(prefixes)})",
            "allowed_image_prefixes",
        )

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
        if _matches(env.name, policy.denied_env_names, fold_case=True) and not _matches(
            env.name, policy.allowed_env_names, fold_case=True
        ):
            refuse(
                f"spec.runtime.env[{i}].name",
                f"{env.name} is a denied environment name (policy.deniedEnvNames)",
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
    for key in service.annotations:
        if not _matches(key, policy.allowed_service_annotations):
            refuse(
                f'spec.service.annotations["{key}"]',
                f"Service annotation {key} is not allowed "
                f"({_listed(policy.allowed_service_annotations)})",
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
    if not policy.allow_toleration_wildcards:
        for i, tol in enumerate(sched.tolerations):
            if not tol.key and tol.operator == "Exists":
                refuse(
                    f"spec.scheduling.tolerations[{i}]",
                    "a toleration with no key and operator Exists tolerates every taint",
                    "allow_toleration_wildcards",
                )
    return out


def refusal_message(violations: list[Violation], limit: int = 4000) -> str:
    """One condition message for all violations, cut to fit a condition (4096 characters)."""
    text = (
        "the operator's policy refuses this spec, so nothing was created or changed: "
        + "; ".join(v.message() for v in violations)
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."
