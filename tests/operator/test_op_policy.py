"""The operator's policy: each rule refuses its bad case and allows its good one, names the
field and the chart value, and the defaults allow no more than a TTS service needs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from op_helpers import EXAMPLES, load_yaml
from pydantic import ValidationError
from tts_operator.models import TTSServiceSpec
from tts_operator.policy import (
    Policy,
    Violation,
    chart_value,
    check,
    image_allowed,
    image_repository,
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
    for name in ("LD_PRELOAD", "PYTHONPATH", "TTS_MODEL_PATH", "NVIDIA_VISIBLE_DEVICES", "PATH"):
        assert violations(spec(runtime=env({"name": name, "value": "x"}))), name


def _example(name: str) -> TTSServiceSpec:
    return TTSServiceSpec.model_validate(load_yaml(EXAMPLES / name)["spec"])


def test_the_examples_pass_the_policy_their_comments_name() -> None:
    assert violations(spec()) == []
    assert violations(_example("minimal.yaml")) == []
    full = _example("full.yaml")
    assert {v.allowed_by for v in violations(full)} == {
        "policy.allowedEnvValueFrom",
        "policy.allowedServiceAnnotations",
        "policy.allowedPriorityClasses",
        "policy.allowedRuntimeClasses",
    }
    opened = Policy(
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
        ("ghcr.io/tts-operator/tts-runtime@sha256:abc", DEFAULT_REPO),
        ("ghcr.io/tts-operator/tts-runtime:0.1@sha256:abc", DEFAULT_REPO),
        ("localhost:5000/tts-runtime:dev", "localhost:5000/tts-runtime"),
        ("localhost:5000/tts-runtime", "localhost:5000/tts-runtime"),
        ("localhost/tts-runtime:dev", "localhost/tts-runtime"),
        ("rt:1", "rt"),
    ],
)
def test_image_repository(image: str, repository: str) -> None:
    assert image_repository(image) == repository


def test_default_image_prefix_is_the_default_runtime_images_repository() -> None:
    for good in (f"{DEFAULT_REPO}:0.2.0", f"{DEFAULT_REPO}@sha256:0123", DEFAULT_REPO):
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
    policy = Policy(allowed_image_prefixes=prefixes)
    assert violations(spec(runtime={"image": f"{DEFAULT_REPO}:0.1.0"}), policy)


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
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "ld_preload",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "TTS_MODEL_PATH",
        "tts_model_path",  # the runtime reads its settings case-insensitively
        "TTS_HOST",
        "TTS_POD_NAME",
        "NVIDIA_VISIBLE_DEVICES",
        "GCONV_PATH",
        "PATH",
    ],
)
def test_denied_env_names_are_refused(name: str) -> None:
    s = spec(runtime=env({"name": "FINE", "value": "1"}, {"name": name, "value": "/models/x"}))
    v = only(violations(s))
    assert v.field == "spec.runtime.env[1].name" and v.allowed_by == "policy.allowedEnvNames"
    assert name in v.problem


@pytest.mark.parametrize(
    "name", ["TTS_BATCH_CALIBRATION", "TTS_MEMORY_MODE", "HF_HOME", "OMP_NUM_THREADS", "MY_PATH"]
)
def test_other_env_names_are_allowed(name: str) -> None:
    assert violations(spec(runtime=env({"name": name, "value": "false"}))) == []


def test_allowed_env_names_override_the_deny_list() -> None:
    s = spec(runtime=env({"name": "TTS_LOG_LEVEL", "value": "debug"}))
    assert violations(s)
    assert violations(s, Policy(allowed_env_names=["TTS_LOG_*"])) == []
    assert violations(s, Policy(denied_env_names=["LD_*"])) == []


def test_secret_key_ref_is_refused_and_config_maps_and_field_refs_allowed() -> None:
    secret = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
    v = only(violations(spec(runtime=env(secret))))
    assert v.field == "spec.runtime.env[0].valueFrom.secretKeyRef"
    assert v.allowed_by == "policy.allowedEnvValueFrom"
    allowed = [
        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "C", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
    ]
    assert violations(spec(runtime=env(*allowed))) == []
    opened = Policy(allowed_env_value_from=["configMapKeyRef", "secretKeyRef"])
    assert violations(spec(runtime=env(secret)), opened) == []
    v = only(violations(spec(runtime=env(allowed[1])), opened))
    assert v.field == "spec.runtime.env[0].valueFrom.fieldRef"


def test_an_unknown_value_from_source_is_refused() -> None:
    odd = {"name": "X", "valueFrom": {"fileKeyRef": {"path": "/etc/shadow"}}}
    assert (
        only(violations(spec(runtime=env(odd)))).field == "spec.runtime.env[0].valueFrom.fileKeyRef"
    )


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


def test_toleration_wildcards_need_allowing_but_keyed_tolerations_pass() -> None:
    keyed = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    wildcard = {"operator": "Exists"}
    s = spec(scheduling={"tolerations": [keyed, wildcard]})
    v = only(violations(s))
    assert v.field == "spec.scheduling.tolerations[1]"
    assert v.allowed_by == "policy.allowTolerationWildcards"
    assert violations(spec(scheduling={"tolerations": [keyed]})) == []
    assert violations(s, Policy(allow_toleration_wildcards=True)) == []


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
