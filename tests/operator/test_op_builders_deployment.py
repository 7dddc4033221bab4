"""The Deployment builder: replicas, rollout, GPUs, probes, security, annotations, scheduling."""

from __future__ import annotations

from typing import Any

from builder_helpers import IMAGE, children, container, kind, pod, spec_of
from tts_operator.builders import build_children
from tts_operator.builders.common import CONFIG_HASH_ANNOTATION
from tts_operator.builders.deployment import GRACE_MARGIN_SECONDS
from tts_operator.models import TTSServiceSpec


def test_deployment_replicas_follow_autoscaling() -> None:
    assert kind(children(spec_of(replicas=3)), "Deployment")["spec"]["replicas"] == 3
    assert kind(children(spec_of()), "Deployment")["spec"]["replicas"] == 1
    auto = kind(children(spec_of(autoscaling={"enabled": True})), "Deployment")
    assert "replicas" not in auto["spec"]


def test_rollout_defaults_surge_one_unavailable_zero() -> None:
    strategy = kind(children(spec_of()), "Deployment")["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_gpu_limit_uses_the_configured_resource_name() -> None:
    res = container(
        spec_of(runtime={"gpu": {"count": 2, "resourceName": "nvidia.com/mig-1g.10gb"}})
    )
    assert res["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "2"
    assert "nvidia.com/gpu" not in res["resources"]["limits"]
    assert res["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}


def test_cpu_only_has_no_gpu_limit_or_toleration() -> None:
    spec = spec_of(runtime={"gpu": {"count": 0}})
    assert "nvidia.com/gpu" not in container(spec)["resources"]["limits"]
    assert "tolerations" not in pod(spec)


def _env_value(c: dict[str, Any], name: str) -> str | None:
    values = [e.get("value") for e in c.get("env", []) if e["name"] == name]
    assert len(values) <= 1, c["env"]
    return values[0] if values else None


def test_no_nvidia_gpu_asked_means_no_gpu_visible() -> None:
    """Issue 22: the CUDA base sets NVIDIA_VISIBLE_DEVICES=all, so on a node whose container
    runtime is NVIDIA's a pod asking for no GPU (count 0, or another resource) saw every GPU
    of the node. Such containers get `void`; init containers always do."""
    http = {"uri": "https://models.example.com/v/en.onnx"}
    for runtime in (
        {"gpu": {"count": 0}},
        {"gpu": {"count": 1, "resourceName": "amd.com/gpu"}},
        {"gpu": {"count": 0, "resourceName": "nvidia.com/mig-1g.10gb"}},
    ):
        p = pod(spec_of(model=http, runtime=runtime))
        assert _env_value(p["containers"][0], "NVIDIA_VISIBLE_DEVICES") == "void", runtime
        [init] = p["initContainers"]
        assert _env_value(init, "NVIDIA_VISIBLE_DEVICES") == "void"


def test_an_nvidia_gpu_pod_gets_its_devices_from_the_device_plugin() -> None:
    http = {"uri": "https://models.example.com/v/en.onnx"}
    for gpu in ({"count": 1}, {"count": 2, "resourceName": "nvidia.com/mig-1g.10gb"}):
        p = pod(spec_of(model=http, runtime={"gpu": gpu}))
        assert _env_value(p["containers"][0], "NVIDIA_VISIBLE_DEVICES") is None  # the plugin's
        assert _env_value(p["initContainers"][0], "NVIDIA_VISIBLE_DEVICES") == "void"


def test_gpu_toleration_is_added_once() -> None:
    default = pod(spec_of())["tolerations"]
    assert default == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    own = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "x", "effect": "NoSchedule"}
    extra = {"key": "dedicated", "operator": "Equal", "value": "tts"}
    tol = pod(spec_of(scheduling={"tolerations": [own, extra]}))["tolerations"]
    assert tol == [own, extra]


def test_probes_tolerate_slow_model_loads() -> None:
    c = container(spec_of(runtime={"startupTimeoutSeconds": 900}))
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900
    assert startup["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_security_context_is_locked_down() -> None:
    p = pod(spec_of())
    sc = p["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert p["securityContext"]["runAsNonRoot"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in p["containers"][0]["volumeMounts"]


def test_grace_period_outlasts_the_drain() -> None:
    p = pod(spec_of(runtime={"drainTimeoutSeconds": 40}))
    assert p["terminationGracePeriodSeconds"] > 40


def test_pre_stop_sleep_keeps_serving_through_endpoint_removal() -> None:
    default = container(spec_of())
    assert default["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert "exec" not in default["lifecycle"]["preStop"]  # no shell needed in the image
    own = container(spec_of(runtime={"preStopSleepSeconds": 12}))
    assert own["lifecycle"]["preStop"]["sleep"]["seconds"] == 12


def test_grace_period_covers_sleep_then_drain_then_exit() -> None:
    # The kubelet counts the preStop hook inside the grace period.
    p = pod(spec_of(runtime={"preStopSleepSeconds": 10, "drainTimeoutSeconds": 40}))
    assert p["terminationGracePeriodSeconds"] == 10 + 40 + GRACE_MARGIN_SECONDS
    assert GRACE_MARGIN_SECONDS > 0


def test_zero_pre_stop_sleep_means_no_hook() -> None:
    spec = spec_of(runtime={"preStopSleepSeconds": 0, "drainTimeoutSeconds": 40})
    assert "lifecycle" not in container(spec)
    assert pod(spec)["terminationGracePeriodSeconds"] == 40 + GRACE_MARGIN_SECONDS


def test_template_has_scrape_annotations_and_config_hash() -> None:
    def template_annotations(spec: TTSServiceSpec) -> dict[str, str]:
        meta = kind(children(spec), "Deployment")["spec"]["template"]["metadata"]
        result: dict[str, str] = meta["annotations"]
        return result

    base = template_annotations(spec_of())
    assert base["prometheus.io/scrape"] == "true" and base["prometheus.io/port"] == "8000"
    assert base["prometheus.io/path"] == "/metrics"
    assert template_annotations(spec_of()) == base  # deterministic
    changed = template_annotations(spec_of(runtime={"batching": {"maxBatchSize": 4}}))
    assert changed[CONFIG_HASH_ANNOTATION] != base[CONFIG_HASH_ANNOTATION]


POD_NAME_FROM_DOWNWARD_API = {
    "name": "TTS_POD_NAME",
    "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
}


def test_runtime_gets_its_pod_name_from_the_downward_api() -> None:
    # The runtime sends it back in X-TTS-Pod; it must be the pod's own name, not a literal.
    assert container(spec_of())["env"] == [POD_NAME_FROM_DOWNWARD_API]
    assert "TTS_POD_NAME" not in kind(children(spec_of()), "ConfigMap")["data"]


def test_extra_env_follows_the_operators_and_image_overrides() -> None:
    env = [
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "x"}}},
        {"name": "C", "value": "pod $(TTS_POD_NAME)"},
    ]
    c = container(spec_of(runtime={"env": env, "image": "mine:1", "imagePullPolicy": "Always"}))
    # Operator's first: a user value can refer to it with $(TTS_POD_NAME).
    assert c["env"] == [POD_NAME_FROM_DOWNWARD_API, *env]
    assert c["image"] == "mine:1" and c["imagePullPolicy"] == "Always"
    assert container(spec_of())["image"] == IMAGE


def test_user_env_overrides_the_pod_name_without_a_duplicate_entry() -> None:
    # Extra env wins over operator-set values (as over the ConfigMap), and the list never
    # names a variable twice: server-side apply refuses duplicate keys.
    mine = {"name": "TTS_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}
    env = container(spec_of(runtime={"env": [{"name": "A", "value": "1"}, mine]}))["env"]
    assert env == [{"name": "A", "value": "1"}, mine]
    literal = container(spec_of(runtime={"env": [{"name": "TTS_POD_NAME", "value": "p-1"}]}))
    assert literal["env"] == [{"name": "TTS_POD_NAME", "value": "p-1"}]


def test_scheduling_pass_through(full_spec: TTSServiceSpec) -> None:
    p = build_children("amy", "tts", full_spec, IMAGE).desired[1]["spec"]["template"]["spec"]
    assert p["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert p["priorityClassName"] == "tts-high" and p["runtimeClassName"] == "nvidia"
    assert "nodeAffinity" in p["affinity"]
    [spread] = p["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "amy"
    assert p["tolerations"][0]["key"] == "nvidia.com/mig-1g.10gb"
