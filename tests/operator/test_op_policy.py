"""The operator's policy: each rule refuses its bad case and allows its good one, names the
field and the chart value, and the defaults allow no more than a TTS service needs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from op_helpers import EXAMPLES, load_yaml
from pydantic import ValidationError
from tts_operator.builders.model import DownloadRules
from tts_operator.models import TTSServiceSpec
from tts_operator.policy import (
    RUNTIME_TUNING_ENV_NAMES,
    Policy,
    Violation,
    chart_value,
    check,
    download_rules,
    image_allowed,
    image_prefixes,
    internal_host,
    refusal_message,
)
from tts_operator.settings import DEFAULT_RUNTIME_IMAGE, OperatorSettings

DEFAULT_REPO = "ghcr.io/tts-operator/tts-runtime"
BASE: dict[str, Any] = {"model": {"uri": "pvc://voices/en"}}


def spec(**parts: Any) -> TTSServiceSpec:
    return TTSServiceSpec.model_validate({**BASE, **parts})


def violations(
    s: TTSServiceSpec, policy: Policy | None = None, image: str = DEFAULT_RUNTIME_IMAGE
) -> list[Violation]:
    return check(s, policy or Policy(), image)


def only(found: list[Violation]) -> Violation:
    assert len(found) == 1, found
    return found[0]


def env(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"env": list(entries)}


# ---------------------------------------------------------------- defaults


def test_default_settings_carry_the_safe_policy() -> None:
    policy = OperatorSettings().policy
    assert policy == Policy()
    assert policy.allowed_image_prefixes == []  # the default runtime image's repository
    assert policy.allowed_host_paths == []
    assert policy.allowed_env_value_from == ["configMapKeyRef", "fieldRef", "resourceFieldRef"]
    assert policy.allowed_service_types == ["ClusterIP"]
    assert policy.allowed_service_annotations == []
    assert policy.allowed_priority_classes == []
    assert policy.allowed_runtime_classes == []
    assert policy.allow_toleration_wildcards is False
    assert policy.allow_http_model_uris is False
    assert policy.allow_private_model_hosts is False
    assert policy.allowed_env_names == []  # the runtime's tuning knobs only
    assert policy.allowed_toleration_keys == []  # the GPU taint only
    for name in ("LD_PRELOAD", "PYTHONPATH", "TTS_MODEL_PATH", "NVIDIA_VISIBLE_DEVICES", "PATH"):
        assert violations(spec(runtime=env({"name": name, "value": "x"}))), name


def _example(name: str) -> TTSServiceSpec:
    return TTSServiceSpec.model_validate(load_yaml(EXAMPLES / name)["spec"])


def test_the_examples_pass_the_policy_their_comments_name() -> None:
    assert violations(spec()) == []
    assert violations(_example("minimal.yaml")) == []
    full = _example("full.yaml")
    assert {v.allowed_by for v in violations(full)} == {
        "policy.allowedSecretNames",
        "policy.allowedEnvNames",
        "policy.allowedEnvValueFrom",
        "policy.allowedTolerationKeys",
        "policy.allowedServiceAnnotations",
        "policy.allowedPriorityClasses",
        "policy.allowedRuntimeClasses",
    }
    opened = Policy(
        allowed_secret_names=["tts-*"],
        allowed_env_names=["OMP_NUM_THREADS", "HF_TOKEN"],
        allowed_toleration_keys=["dedicated"],
        allowed_env_value_from=["configMapKeyRef", "fieldRef", "resourceFieldRef", "secretKeyRef"],
        allowed_service_annotations=["example.com/*"],
        allowed_priority_classes=["tts-high"],
        allowed_runtime_classes=["nvidia"],
    )
    assert violations(full, opened) == []
    dev = _example("cpu-dev.yaml")
    assert only(violations(dev)).allowed_by == "policy.allowedHostPaths"
    assert violations(dev, Policy(allowed_host_paths=["/var/lib/tts/voices"])) == []


def test_policy_reads_from_one_json_variable_with_the_chart_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given = {"allowedImagePrefixes": ["registry.example/tts/"], "allowTolerationWildcards": True}
    monkeypatch.setenv("TTS_OPERATOR_POLICY", json.dumps(given))
    policy = OperatorSettings().policy
    assert policy.allowed_image_prefixes == ["registry.example/tts/"]
    assert policy.allow_toleration_wildcards is True
    assert policy.allowed_service_types == ["ClusterIP"]  # keys left out keep their defaults


@pytest.mark.parametrize(
    "given",
    [
        {"allowedImagePrefix": ["x/"]},  # a typo
        {"allowedServiceTypes": ["ExternalName"]},
        {"allowedHostPaths": ["relative/dir"]},
        {"allowedHostPaths": ["/srv/../etc"]},
        {"allowedEnvValueFrom": ["secretRef"]},
        {"allowedImagePrefixes": [""]},
        {"allowedImagePrefixes": ["Registry.example/UPPER/"]},  # not a repository path
        {"deniedEnvNames": ["LD_*"]},  # the deny list is gone: the upgrade note says so
        {"maxModelDownloadBytes": "2 GB"},
        {"maxModelDownloadBytes": "1.5Gi"},
        {"maxModelDownloadBytes": 1000},  # under 1Mi
        {"maxModelDownloadBytes": "2Ti"},  # over 1Ti
        {"maxModelDownloadBytes": True},
        {"modelDownloadDeadlineSeconds": 0},
        {"modelDownloadDeadlineSeconds": 86_401},
        {"allowHttpModelUri": True},  # a typo
    ],
)
def test_a_bad_policy_stops_the_operator_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, given: dict[str, Any]
) -> None:
    monkeypatch.setenv("TTS_OPERATOR_POLICY", json.dumps(given))
    with pytest.raises(ValidationError) as err:
        OperatorSettings()
    assert next(iter(given)) in str(err.value)


def test_chart_value_names_the_camel_case_key() -> None:
    assert chart_value("allowed_image_prefixes") == "policy.allowedImagePrefixes"
    for field in Policy.model_fields:
        assert chart_value(field) == f"policy.{Policy.model_fields[field].alias}"


# ---------------------------------------------------------------- images


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("ghcr.io/tts-operator/tts-runtime:0.1.0", DEFAULT_REPO),
        ("ghcr.io/tts-operator/tts-runtime@sha256:" + "a" * 64, DEFAULT_REPO),
        ("ghcr.io/tts-operator/tts-runtime:0.1@sha256:" + "a" * 64, DEFAULT_REPO),
        ("localhost:5000/tts-runtime:dev", "localhost:5000/tts-runtime"),
        ("localhost:5000/tts-runtime", "localhost:5000/tts-runtime"),
        ("localhost/tts-runtime:dev", "localhost/tts-runtime"),
        ("rt:1", "docker.io/library/rt"),
        ("tts-runtime:dev", "docker.io/library/tts-runtime"),
        ("library/tts-runtime", "docker.io/library/tts-runtime"),
        ("index.docker.io/acme/tts", "docker.io/acme/tts"),
        ("[::1]:5000/tts-runtime:dev", "[::1]:5000/tts-runtime"),
        ("Registry.Example/tts:1", "registry.example/tts"),
    ],
)
def test_the_default_rule_is_the_default_images_parsed_repository(
    image: str, repository: str
) -> None:
    assert image_prefixes(Policy(), image) == [repository]


@pytest.mark.parametrize(
    "image",
    [
        "tts-runtime:5000/evil/miner",  # the registry host tts-runtime:5000, not Docker Hub
        "tts-runtime:5000/tts-runtime:dev",
        "evil.example/library/tts-runtime:dev",
        "localhost/tts-runtime:dev",  # another registry host
        "tts-runtime-evil:dev",
        "tts-runtime/sub:dev",
    ],
)
def test_an_image_on_another_registry_host_is_refused_whatever_its_prefix(image: str) -> None:
    """Issue 22: the image check was a string prefix, so with a default image that has no
    registry host (tts-runtime:dev), tts-runtime:5000/evil/miner passed and pulled from the
    registry host tts-runtime:5000."""
    v = only(violations(spec(runtime={"image": image}), image="tts-runtime:dev"))
    assert v.field == "spec.runtime.image" and v.allowed_by == "policy.allowedImagePrefixes"
    assert "docker.io/library/tts-runtime" in v.problem


def test_docker_hub_names_are_one_repository_however_written() -> None:
    for same in (
        "tts-runtime:2",
        "library/tts-runtime:2",
        "docker.io/tts-runtime:2",
        "docker.io/library/tts-runtime@sha256:" + "c" * 64,
        "index.docker.io/library/tts-runtime:2",
    ):
        assert violations(spec(runtime={"image": same}), image="tts-runtime:dev") == [], same


@pytest.mark.parametrize(
    "image",
    ["ghcr.io/UPPER/case:1", "ghcr.io/acme/x:bad tag", "ghcr.io/acme/x@sha256:short", "ghcr.io//x"],
)
def test_an_image_that_is_not_a_reference_is_refused(image: str) -> None:
    v = only(violations(spec(runtime={"image": image})))
    assert "not a valid image reference" in v.problem


def test_default_image_prefix_is_the_default_runtime_images_repository() -> None:
    for good in (f"{DEFAULT_REPO}:0.2.0", f"{DEFAULT_REPO}@sha256:{'0' * 64}", DEFAULT_REPO):
        assert violations(spec(runtime={"image": good})) == [], good
    for bad in (
        "docker.io/attacker/anything:1",
        f"{DEFAULT_REPO}-evil:1",  # a prefix of the name is not the repository
        f"{DEFAULT_REPO}/sub:1",
        "ghcr.io/tts-operator/tts-operator:0.1.0",
    ):
        v = only(violations(spec(runtime={"image": bad})))
        assert v.field == "spec.runtime.image" and v.allowed_by == "policy.allowedImagePrefixes"
        assert bad in v.problem and DEFAULT_REPO in v.problem
        assert v.field == "spec.runtime.image"


def test_the_operators_own_default_image_is_allowed_whatever_the_prefixes() -> None:
    policy = Policy(allowed_image_prefixes=["registry.example/other/"])
    assert violations(spec(), policy, image="localhost/tts-runtime:dev") == []
    assert violations(spec(), Policy(), image="localhost/tts-runtime:dev") == []
    good = spec(runtime={"image": "localhost/tts-runtime:dev2"})
    assert violations(good, Policy(), image="localhost/tts-runtime:dev") == []


def test_configured_image_prefixes_replace_the_default() -> None:
    prefixes = ["registry.example/tts/", "ghcr.io/acme/voice"]
    assert image_allowed("registry.example/tts/anything/deep:1", prefixes)
    assert image_allowed("ghcr.io/acme/voice:2", prefixes)
    assert not image_allowed("ghcr.io/acme/voice2:2", prefixes)
    assert not image_allowed("registry.example/ttsx/a:1", prefixes)
    assert not image_allowed("registry.example:5000/tts/a:1", prefixes)  # another host:port
    assert not image_allowed("registry.example/tts:1", prefixes)  # the path itself is no repo
    assert not image_allowed("ghcr.io/acme/voice/sub:1", prefixes)
    policy = Policy(allowed_image_prefixes=prefixes)
    assert violations(spec(runtime={"image": f"{DEFAULT_REPO}:0.1.0"}), policy)


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        ("localhost:5000/", ["localhost:5000/a:1", "localhost:5000/a/b@sha256:" + "d" * 64],
         ["localhost/a:1", "localhost:5001/a:1", "a:1"]),
        ("docker.io/", ["a:1", "acme/a:1", "docker.io/acme/a"], ["ghcr.io/a:1", "localhost/a"]),
        ("acme/", ["acme/a:1", "docker.io/acme/a/b:1"], ["acme:1", "acme2/a:1", "ghcr.io/acme/a"]),
        ("ghcr.io/acme/tts@", ["ghcr.io/acme/tts@sha256:" + "e" * 64,
                               "ghcr.io/acme/tts:1@sha256:" + "e" * 64],
         ["ghcr.io/acme/tts:1", "ghcr.io/acme/tts"]),
        ("ghcr.io/acme/tts:1.2", ["ghcr.io/acme/tts:1.2"],
         ["ghcr.io/acme/tts:1.3", "ghcr.io/acme/tts", "ghcr.io/acme/tts:1.2@sha256:" + "f" * 64]),
        ("ghcr.io/acme/tts@sha256:" + "a" * 64, ["ghcr.io/acme/tts:x@sha256:" + "a" * 64],
         ["ghcr.io/acme/tts@sha256:" + "b" * 64, "ghcr.io/acme/tts:x"]),
        ("ghcr.io/acme/tts:", ["ghcr.io/acme/tts:1", "ghcr.io/acme/tts"], ["ghcr.io/acme/tts2"]),
    ],
)  # fmt: skip
def test_image_rules_by_registry_path_tag_and_digest(
    rule: str, good: list[str], bad: list[str]
) -> None:
    for image in good:
        assert image_allowed(image, [rule]), (rule, image)
    for image in bad:
        assert not image_allowed(image, [rule]), (rule, image)


# ---------------------------------------------------------------- host paths


def test_file_uris_are_refused_by_default() -> None:
    v = only(violations(spec(model={"uri": "file:///"})))
    assert v.field == "spec.model.uri" and v.allowed_by == "policy.allowedHostPaths"
    assert "host directory /" in v.problem


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("file:///srv/voices", True),
        ("file:///srv/voices/en/", True),
        ("file:///srv/voices/en/model.onnx", True),  # mounts /srv/voices/en
        ("file:///srv/voices.onnx", False),  # mounts /srv
        ("file:///srv/voices2", False),
        ("file:///srv/voices/../../etc", False),
        ("file:///etc", False),
        ("file:///", False),
    ],
)
def test_allowed_host_paths_admit_only_their_directories(uri: str, allowed: bool) -> None:
    found = violations(spec(model={"uri": uri}), Policy(allowed_host_paths=["/srv/voices/"]))
    assert (found == []) is allowed, found


# ---------------------------------------------------------------- env


@pytest.mark.parametrize(
    "name",
    [
        # Issue 22: a deny list missed these, and each runs native code from a path it names
        # (an OpenSSL config whose `module =` is a downloaded "model").
        "OPENSSL_CONF",
        "OPENSSL_MODULES",
        "OPENSSL_ENGINES",
        "CUDA_INJECTION64_PATH",
        "CUDA_INJECTION32_PATH",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "ld_preload",
        "GCONV_PATH",
        "GLIBC_TUNABLES",
        "MALLOC_CHECK_",
        "MALLOC_ARENA_MAX",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "TTS_MODEL_PATH",
        "tts_model_path",  # the runtime reads its settings case-insensitively
        "TTS_HOST",
        "TTS_POD_NAME",
        "TTS_CACHE_SCOPE",
        "PATH",
        "HF_HOME",
        "OMP_NUM_THREADS",
        "SSL_CERT_FILE",
    ],
)
def test_env_names_outside_the_allow_list_are_refused(name: str) -> None:
    s = spec(
        runtime=env({"name": "TTS_MEMORY_MODE", "value": "1"}, {"name": name, "value": "/m/x"})
    )
    v = only(violations(s))
    assert v.field == "spec.runtime.env[1].name" and v.allowed_by == "policy.allowedEnvNames"
    assert name in v.problem and "runtime tuning knob" in v.problem


@pytest.mark.parametrize("name", [*RUNTIME_TUNING_ENV_NAMES, "tts_memory_mode"])
def test_the_runtimes_tuning_knobs_are_allowed(name: str) -> None:
    assert violations(spec(runtime=env({"name": name, "value": "false"}))) == []


def test_the_tuning_knobs_are_settings_the_runtime_documents() -> None:
    from tts_runtime.settings import RuntimeSettings

    fields = {f"TTS_{name.upper()}" for name in RuntimeSettings.model_fields}
    assert set(RUNTIME_TUNING_ENV_NAMES) <= fields


def test_allowed_env_names_are_case_sensitive_patterns_the_admin_lists() -> None:
    omp = spec(runtime=env({"name": "OMP_NUM_THREADS", "value": "2"}))
    assert violations(omp)
    policy = Policy(allowed_env_names=["OMP_*", "TTS_LOG_LEVEL"])
    assert violations(omp, policy) == []
    assert violations(spec(runtime=env({"name": "TTS_LOG_LEVEL", "value": "debug"})), policy) == []
    assert violations(spec(runtime=env({"name": "omp_num_threads", "value": "2"})), policy)
    v = only(violations(spec(runtime=env({"name": "OPENSSL_CONF", "value": "/m"})), policy))
    assert "(OMP_*, TTS_LOG_LEVEL)" in v.problem


def test_secret_key_ref_is_refused_and_config_maps_and_field_refs_allowed() -> None:
    secret = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
    v = only(violations(spec(runtime=env(secret)), Policy(allowed_env_names=["TOKEN"])))
    assert v.field == "spec.runtime.env[0].valueFrom.secretKeyRef"
    assert v.allowed_by == "policy.allowedEnvValueFrom"
    allowed = [
        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "C", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
    ]
    letters = Policy(allowed_env_names=["?"])
    assert violations(spec(runtime=env(*allowed)), letters) == []
    opened = Policy(
        allowed_env_value_from=["configMapKeyRef", "secretKeyRef"], allowed_env_names=["*"]
    )
    assert violations(spec(runtime=env(secret)), opened) == []
    v = only(violations(spec(runtime=env(allowed[1])), opened))
    assert v.field == "spec.runtime.env[0].valueFrom.fieldRef"


def test_an_unknown_value_from_source_is_refused() -> None:
    odd = {"name": "X", "valueFrom": {"fileKeyRef": {"path": "/etc/shadow"}}}
    found = violations(spec(runtime=env(odd)), Policy(allowed_env_names=["X"]))
    assert only(found).field == "spec.runtime.env[0].valueFrom.fileKeyRef"


# ---------------------------------------------------------------- service


@pytest.mark.parametrize("kind", ["NodePort", "LoadBalancer"])
def test_service_types_other_than_cluster_ip_are_refused(kind: str) -> None:
    v = only(violations(spec(service={"type": kind})))
    assert v.field == "spec.service.type" and v.allowed_by == "policy.allowedServiceTypes"
    opened = Policy.model_validate({"allowedServiceTypes": [kind]})
    assert violations(spec(service={"type": kind}), opened) == []


def test_service_annotations_need_an_allowed_key() -> None:
    s = spec(service={"annotations": {"external-dns.alpha.kubernetes.io/hostname": "bank.com"}})
    v = only(violations(s))
    assert v.field == 'spec.service.annotations["external-dns.alpha.kubernetes.io/hostname"]'
    assert v.allowed_by == "policy.allowedServiceAnnotations"
    lb = spec(service={"annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "x"}})
    policy = Policy(allowed_service_annotations=["service.beta.kubernetes.io/*"])
    assert violations(lb, policy) == []
    assert violations(s, policy)


# ---------------------------------------------------------------- scheduling


def test_priority_classes_need_allowing() -> None:
    s = spec(scheduling={"priorityClassName": "system-node-critical"})
    v = only(violations(s))
    assert v.field == "spec.scheduling.priorityClassName"
    assert v.allowed_by == "policy.allowedPriorityClasses"
    assert violations(s, Policy(allowed_priority_classes=["tts-*"]))
    assert violations(spec(scheduling={"priorityClassName": "tts-high"}),
                      Policy(allowed_priority_classes=["tts-*"])) == []  # fmt: skip


def test_runtime_classes_need_allowing() -> None:
    s = spec(scheduling={"runtimeClassName": "nvidia"})
    v = only(violations(s))
    assert v.field == "spec.scheduling.runtimeClassName"
    assert v.allowed_by == "policy.allowedRuntimeClasses"
    assert violations(s, Policy(allowed_runtime_classes=["nvidia"])) == []


def test_toleration_wildcards_need_allowing_but_the_gpu_taint_passes() -> None:
    keyed = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    wildcard = {"operator": "Exists"}
    s = spec(scheduling={"tolerations": [keyed, wildcard]})
    v = only(violations(s))
    assert v.field == "spec.scheduling.tolerations[1]"
    assert v.allowed_by == "policy.allowTolerationWildcards"
    assert violations(spec(scheduling={"tolerations": [keyed]})) == []
    assert violations(s, Policy(allow_toleration_wildcards=True)) == []


@pytest.mark.parametrize(
    "key",
    ["node-role.kubernetes.io/control-plane", "dedicated", "node.kubernetes.io/unschedulable"],
)
def test_tolerations_for_other_taints_need_the_chart_list(key: str) -> None:
    """Issue 22: a keyed toleration plus a node selector aimed pods at any tainted node."""
    s = spec(
        scheduling={
            "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
            "tolerations": [{"key": key, "operator": "Exists", "effect": "NoSchedule"}],
        }
    )
    v = only(violations(s))
    assert v.field == "spec.scheduling.tolerations[0].key"
    assert v.allowed_by == "policy.allowedTolerationKeys"
    assert key in v.problem and "nvidia.com/gpu" in v.problem
    assert violations(s, Policy(allowed_toleration_keys=[key])) == []
    assert violations(s, Policy(allowed_toleration_keys=["*"])) == []


def test_the_gpu_taint_is_the_resource_names_key() -> None:
    mig = "nvidia.com/mig-1g.10gb"
    tol = {"scheduling": {"tolerations": [{"key": mig, "operator": "Exists"}]}}
    gpu = {"gpu": {"count": 1, "resourceName": mig}}
    assert violations(spec(runtime=gpu, **tol)) == []
    assert only(violations(spec(**tol))).allowed_by == "policy.allowedTolerationKeys"


def test_node_selector_keys_follow_the_chart_list() -> None:
    s = spec(scheduling={"nodeSelector": {"pool": "reserved", "nvidia.com/gpu.present": "true"}})
    assert violations(s) == []  # default ["*"]: a selector alone passes no taint
    v = only(violations(s, Policy(allowed_node_selector_keys=["nvidia.com/*"])))
    assert v.field == 'spec.scheduling.nodeSelector["pool"]'
    assert v.allowed_by == "policy.allowedNodeSelectorKeys"


# ---------------------------------------------------------------- model downloads

SHA = "0123456789abcdef" * 4


def test_download_defaults_are_https_public_hosts_2gi_and_15_minutes() -> None:
    policy = Policy()
    assert policy.allow_http_model_uris is False
    assert policy.allow_private_model_hosts is False
    assert policy.require_model_sha256 is False
    assert policy.max_model_download_bytes == 2 << 30
    assert policy.model_download_deadline_seconds == 900
    assert download_rules(policy) == DownloadRules(
        max_bytes=2 << 30, deadline_seconds=900, allow_http=False, allow_private_hosts=False
    )
    assert violations(spec(model={"uri": "https://models.example.com/v/en.onnx"})) == []


def test_plain_http_model_uris_need_allowing() -> None:
    s = spec(model={"uri": "http://models.example.com/v/en.onnx"})
    v = only(violations(s))
    assert v.field == "spec.model.uri" and v.allowed_by == "policy.allowHttpModelUris"
    assert "plain http://" in v.problem
    assert violations(s, Policy(allow_http_model_uris=True)) == []


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("127.0.0.1", "a loopback address"),
        ("localhost", "a loopback address"),
        ("models.localhost", "a loopback address"),
        ("[::1]", "a loopback address"),
        ("10.0.0.7:8080", "a private address"),
        ("192.168.1.20", "a private address"),
        ("169.254.169.254", "a link-local address"),  # cloud metadata
        ("[::ffff:169.254.169.254]", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("100.64.0.1", "a non-public address"),
        # Issue 22: IP literals the resolver reads although they are not dotted quads.
        ("0x7f000001", "a loopback address"),
        ("2130706433", "a loopback address"),
        ("127.1", "a loopback address"),
        ("0177.0.0.1", "a loopback address"),
        ("0x7f.0.0.1", "a loopback address"),
        ("0xA9FEA9FE", "a link-local address"),
        ("169.254.43518", "a link-local address"),
        ("012.0.0.1", "a private address"),
        ("0", "an unspecified address"),
        ("127.0.0.1.", "a loopback address"),
        ("[0:0:0:0:0:0:0:1]", "a loopback address"),
        ("[::ffff:7f00:1]", "a loopback address"),
        ("[::ffff:127.0.0.1]:8443", "a loopback address"),
        ("[64:ff9b::a9fe:a9fe]", "a link-local address"),
        ("[fe80::1%25eth0]", "a link-local address"),
    ],
)
def test_model_hosts_at_internal_addresses_need_allowing(host: str, problem: str) -> None:
    s = spec(model={"uri": f"https://{host}/v/en.onnx"})
    v = only(violations(s))
    assert v.field == "spec.model.uri" and v.allowed_by == "policy.allowPrivateModelHosts"
    assert v.problem.endswith(f"is {problem}"), v.problem
    assert violations(s, Policy(allow_private_model_hosts=True)) == []


@pytest.mark.parametrize(
    "host", ["8.8.8.8", "huggingface.co", "models.tts.svc.cluster.local", "[2606:4700::1111]"]
)
def test_names_and_public_addresses_pass_the_check_the_pod_repeats(host: str) -> None:
    """A name is not resolved by the operator (its DNS is not the pods'): the download
    checks every address it resolves to, in the pod (tests/runtime/test_fetch.py)."""
    assert violations(spec(model={"uri": f"https://{host}/v/en.onnx"})) == []


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("localhost", "a loopback address"),
        ("models.localhost.", "a loopback address"),
        ("127.0.0.1", "a loopback address"),
        ("169.254.169.254", "a link-local address"),  # cloud metadata
        ("::ffff:10.0.0.1", "a private address"),
        ("8.8.8.8", None),
        ("models.example.com", None),  # a name: checked in the pod, after resolving
    ],
)
def test_the_operator_judges_literal_hosts_with_the_downloads_rule(
    host: str, why: str | None
) -> None:
    assert internal_host(host) == why


@pytest.mark.parametrize(
    "host",
    [
        "0x7f000001", "2130706433", "127.1", "0177.0.0.1", "0x7f.1", "10.1", "192.168.257",
        "0300.0250.0.1", "134744072", "8.8.8.8", "0", "1.2.3.4.5", "256.1.1.1", "09.1.1.1",
        "0x100.1", "1.0x1000000", "0x", "::1", "0:0:0:0:0:0:0:1", "::ffff:7f00:1",
        "::ffff:127.0.0.1", "fe80::1%eth0", "64:ff9b::a00:1", "2606:4700::1111",
        "models.example.com", "1e3", "127.0.0.1x",
    ],
)  # fmt: skip
def test_the_operator_reads_an_ip_literal_as_the_pods_resolver_does(host: str) -> None:
    """The download resolves the URI's host with getaddrinfo and judges every address it
    gets with address_problem. For an IP literal (AI_NUMERICHOST: no lookup, nothing leaves
    the machine) the operator's parse must give that same address, so the operator refuses
    exactly what the pod would."""
    import ipaddress
    import socket

    from tts_runtime.fetch import address_problem, ip_literal

    try:
        infos = socket.getaddrinfo(host, 443, flags=socket.AI_NUMERICHOST, type=socket.SOCK_STREAM)
        resolved: str | None = str(infos[0][4][0])
    except socket.gaierror:
        resolved = None
    ours = ip_literal(host)
    if resolved is None:
        assert ours is None
        return
    assert ours is not None
    assert ipaddress.ip_address(ours) == ipaddress.ip_address(resolved.split("%")[0])
    assert internal_host(host) == address_problem(resolved)


def test_a_required_sha256_is_asked_of_http_uris_only() -> None:
    required = Policy(require_model_sha256=True)
    s = spec(model={"uri": "https://models.example.com/v/en.onnx"})
    v = only(violations(s, required))
    assert v.field == "spec.model.sha256" and v.allowed_by == "policy.requireModelSha256"
    assert violations(s) == []
    pinned = spec(model={"uri": "https://models.example.com/v/en.onnx", "sha256": SHA})
    assert violations(pinned, required) == []
    assert violations(spec(), required) == []  # a pvc:// model downloads nothing


def test_all_download_refusals_of_one_spec_are_named() -> None:
    s = spec(model={"uri": "http://10.0.0.5/v/en.onnx"})
    found = violations(s, Policy(require_model_sha256=True))
    assert [(v.field, v.allowed_by) for v in found] == [
        ("spec.model.uri", "policy.allowHttpModelUris"),
        ("spec.model.uri", "policy.allowPrivateModelHosts"),
        ("spec.model.sha256", "policy.requireModelSha256"),
    ]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (3 << 30, 3 << 30),
        ("2Gi", 2 << 30),
        ("512Mi", 512 << 20),
        ("500M", 500_000_000),
        ("1Ti", 1 << 40),
        (" 64Mi ", 64 << 20),
    ],
)
def test_the_download_cap_takes_bytes_or_a_quantity(given: Any, expected: int) -> None:
    policy = Policy.model_validate({"maxModelDownloadBytes": given})
    assert policy.max_model_download_bytes == expected
    assert download_rules(policy).max_bytes == expected


def test_the_reconcile_hands_the_policys_download_rules_to_the_pods() -> None:
    """From TTS_OPERATOR_POLICY to the init container's arguments and the emptyDir."""
    from fake_kube import FakeKube
    from op_helpers import tts_body
    from tts_operator.reconcile import Context, reconcile

    policy = Policy.model_validate(
        {
            "allowHttpModelUris": True,
            "allowPrivateModelHosts": True,
            "requireModelSha256": True,
            "maxModelDownloadBytes": "1Gi",
            "modelDownloadDeadlineSeconds": 300,
        }
    )
    kube = FakeKube()
    body = tts_body({"model": {"uri": "http://models.speech.svc:8080/v/en.onnx", "sha256": SHA}})
    kube.add(body)
    settings = OperatorSettings(runtime_image="rt:1", policy=policy)
    reconcile(Context(kube=kube, settings=settings, events=lambda *a: None), body)
    deployment = kube.find("Deployment", "speech", "voice")
    assert deployment is not None
    template = deployment["spec"]["template"]["spec"]
    [init] = template["initContainers"]
    assert init["args"] == [
        "http://models.speech.svc:8080/v/en.onnx", "/models",
        "--max-bytes", str(1 << 30), "--deadline-seconds", "300", "--sha256", SHA,
        "--allow-http", "--allow-private-hosts",
    ]  # fmt: skip
    assert {"name": "model", "emptyDir": {"sizeLimit": "1088Mi"}} in template["volumes"]


# ---------------------------------------------------------------- the message


def test_every_violation_is_in_one_message_naming_field_and_chart_value() -> None:
    s = spec(
        model={"uri": "file:///etc"},
        runtime={"image": "evil/x:1", **env({"name": "LD_PRELOAD", "value": "/models/m.onnx"})},
        service={"type": "LoadBalancer"},
        scheduling={"priorityClassName": "system-node-critical"},
    )
    found = violations(s)
    assert [v.field for v in found] == [
        "spec.runtime.image",
        "spec.model.uri",
        "spec.runtime.env[0].name",
        "spec.service.type",
        "spec.scheduling.priorityClassName",
    ]
    message = refusal_message(found)
    assert message.startswith("the operator's policy refuses this spec")
    for v in found:
        assert v.field in message and v.allowed_by in message
    assert len(refusal_message(found * 100)) <= 4000


# ---------------------------------------------------------------- Secret references

KEYS_REF = {"apiKeysSecretRef": {"name": "tts-api-keys", "key": "keys"}}
HF_MODEL = {"uri": "hf://rhasspy/piper-voices/en/v.onnx"}
TOKEN_REF = {"tokenSecretRef": {"name": "hf-token", "key": "token"}}


def test_secret_references_are_refused_by_default_each_by_its_field() -> None:
    s = spec(model={**HF_MODEL, **TOKEN_REF}, auth=KEYS_REF)
    found = violations(s)
    assert [(v.field, v.allowed_by) for v in found] == [
        ("spec.model.tokenSecretRef", "policy.allowedSecretNames"),
        ("spec.auth.apiKeysSecretRef", "policy.allowedSecretNames"),
    ]
    assert found[1].problem == (
        "Secret tts-api-keys is not an allowed Secret (none): the pods would read it for "
        "the spec's author"
    )
    assert Policy().allowed_secret_names == []


def test_allowed_secret_names_are_glob_patterns() -> None:
    s = spec(model={**HF_MODEL, **TOKEN_REF}, auth=KEYS_REF)
    assert violations(s, Policy(allowed_secret_names=["tts-*", "hf-token"])) == []
    v = only(violations(s, Policy(allowed_secret_names=["tts-*"])))
    assert v.field == "spec.model.tokenSecretRef"
    assert "(tts-*)" in v.problem
    assert violations(spec(auth=KEYS_REF), Policy(allowed_secret_names=["*"])) == []


def test_every_secret_reference_of_a_spec_is_found_wherever_it_sits() -> None:
    """One walk over the spec's models: a Secret reference added to any part of the spec
    later is judged by the same rule without a line of policy code."""
    from pydantic import BaseModel
    from tts_operator.models import SecretKeyRef
    from tts_operator.policy import secret_refs

    class Inner(BaseModel):
        refs: list[SecretKeyRef]

    class Outer(BaseModel):
        direct: SecretKeyRef
        nested: Inner
        nothing: SecretKeyRef | None = None

    a, b = SecretKeyRef(name="a", key="k"), SecretKeyRef(name="b", key="k")
    found = list(secret_refs(Outer(direct=a, nested=Inner(refs=[a, b])), "x"))
    assert found == [("x.direct", a), ("x.nested.refs[0]", a), ("x.nested.refs[1]", b)]
    assert list(secret_refs(spec())) == []


def test_allowed_secret_names_come_from_the_chart_key() -> None:
    policy = Policy.model_validate({"allowedSecretNames": ["tts-*"]})
    assert policy.allowed_secret_names == ["tts-*"]
    assert chart_value("allowed_secret_names") == "policy.allowedSecretNames"
    with pytest.raises(ValidationError, match="entries must not be empty"):
        Policy.model_validate({"allowedSecretNames": [" "]})


# ---------------------------------------------------------------- hf:// URIs


def hf_violations(policy: Policy, endpoint: str, **model: Any) -> list[Violation]:
    return check(spec(model={**HF_MODEL, **model}), policy, DEFAULT_RUNTIME_IMAGE, endpoint)


def test_an_hf_uri_on_the_default_hub_passes_the_default_policy() -> None:
    assert hf_violations(Policy(), "https://huggingface.co") == []
    assert violations(spec(model=HF_MODEL)) == []  # the default endpoint


def test_an_hf_uri_is_judged_as_the_url_it_downloads_from() -> None:
    """The hub's host is the operator's setting, not the author's: an http:// or internal
    mirror needs the policy to allow it all the same, and the message says where."""
    http = only(hf_violations(Policy(), "http://hub.example"))
    assert http.field == "spec.model.uri" and http.allowed_by == "policy.allowHttpModelUris"
    assert "hf:// URIs download from http://hub.example, TTS_OPERATOR_HF_ENDPOINT" in http.problem
    assert hf_violations(Policy(allow_http_model_uris=True), "http://hub.example") == []
    private = only(hf_violations(Policy(), "https://10.0.0.5:8443/hf"))
    assert private.allowed_by == "policy.allowPrivateModelHosts"
    assert "the model host 10.0.0.5 is a private address (hf://" in private.problem
    assert hf_violations(Policy(allow_private_model_hosts=True), "https://10.0.0.5:8443") == []


def test_a_required_sha256_is_asked_of_hf_uris_too() -> None:
    required = Policy(require_model_sha256=True)
    v = only(hf_violations(required, "https://huggingface.co"))
    assert v.field == "spec.model.sha256"
    assert hf_violations(required, "https://huggingface.co", sha256=SHA) == []


def test_the_reconcile_hands_the_endpoint_and_the_token_to_the_fetch() -> None:
    """From TTS_OPERATOR_HF_ENDPOINT and the allowed Secret to the init container."""
    from fake_kube import FakeKube
    from op_helpers import tts_body
    from tts_operator.reconcile import Context, reconcile

    kube = FakeKube()
    body = tts_body({"model": {**HF_MODEL, **TOKEN_REF}, "auth": KEYS_REF})
    kube.add(body)
    settings = OperatorSettings(
        runtime_image="rt:1",
        hf_endpoint="https://hub.example/",
        policy=Policy(allowed_secret_names=["tts-api-keys", "hf-token"]),
    )
    reconcile(Context(kube=kube, settings=settings, events=lambda *a: None), body)
    deployment = kube.find("Deployment", "speech", "voice")
    assert deployment is not None
    [init] = deployment["spec"]["template"]["spec"]["initContainers"]
    assert init["args"][6:] == [
        "--hf-endpoint", "https://hub.example",
        "--token-file", "/var/run/secrets/ttsoperator.io/hf-token/token",
    ]  # fmt: skip
    configmap = kube.find("ConfigMap", "speech", "voice-runtime")
    assert configmap is not None
    assert configmap["data"]["TTS_API_KEYS_FILE"] == "/var/run/secrets/ttsoperator.io/api-keys/keys"
