"""Builders: spec -> Deployment, Service, HPA, PDB and ConfigMap manifests."""

from __future__ import annotations

from typing import Any

import pytest
from tts_operator.builders import Children, build_children
from tts_operator.builders.common import CONFIG_HASH_ANNOTATION, labels, selector_string
from tts_operator.builders.hpa import latency_quantity
from tts_operator.builders.model import FETCH_CONTAINER, model_delivery
from tts_operator.builders.service import endpoint
from tts_operator.models import TTSServiceSpec

IMAGE = "registry.local/tts-runtime:test"


def spec_of(**fields: Any) -> TTSServiceSpec:
    return TTSServiceSpec.model_validate({"model": {"uri": "pvc://voices/en/lessac"}, **fields})


def children(spec: TTSServiceSpec) -> Children:
    return build_children("voice", "speech", spec, IMAGE)


def kind(kids: Children, k: str) -> dict[str, Any]:
    [found] = [m for m in kids.desired if m["kind"] == k]
    return found


def pod(spec: TTSServiceSpec) -> dict[str, Any]:
    result: dict[str, Any] = kind(children(spec), "Deployment")["spec"]["template"]["spec"]
    return result


def container(spec: TTSServiceSpec) -> dict[str, Any]:
    result: dict[str, Any] = pod(spec)["containers"][0]
    return result


def test_minimal_spec_builds_all_children_with_standard_labels(
    minimal_spec: TTSServiceSpec,
) -> None:
    kids = build_children("en", "ns", minimal_spec, IMAGE)
    kinds = sorted(m["kind"] for m in kids.desired)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    assert [r.kind for r in kids.unwanted] == ["HorizontalPodAutoscaler"]
    for m in kids.desired:
        assert m["metadata"]["namespace"] == "ns"
        assert m["metadata"]["labels"] == labels("en")
        assert m["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tts-operator"
    names = {m["kind"]: m["metadata"]["name"] for m in kids.desired}
    assert names["ConfigMap"] == "en-runtime" and names["Deployment"] == "en"
    assert (
        selector_string("en") == "app.kubernetes.io/name=tts-runtime,app.kubernetes.io/instance=en"
    )


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


def test_runtime_settings_go_to_the_configmap_loaded_by_envfrom() -> None:
    spec = spec_of(model={"uri": "pvc://voices/en", "voices": {"amy": 3}, "precision": "fp32"})
    kids = children(spec)
    data = kind(kids, "ConfigMap")["data"]
    assert data["TTS_MODEL_PATH"] == "/models/en"
    assert data["TTS_PRECISION"] == "fp32" and data["TTS_VOICES"] == '{"amy": 3}'
    assert data["TTS_MAX_BATCH_SIZE"] == "8" and data["TTS_PORT"] == "8000"
    assert all(isinstance(v, str) for v in data.values())
    c = kind(kids, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"] == [{"configMapRef": {"name": "voice-runtime"}}]


def test_extra_env_and_image_overrides() -> None:
    env = [
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "x"}}},
    ]
    c = container(spec_of(runtime={"env": env, "image": "mine:1", "imagePullPolicy": "Always"}))
    assert c["env"] == env
    assert c["image"] == "mine:1" and c["imagePullPolicy"] == "Always"
    assert container(spec_of())["image"] == IMAGE


def test_pvc_delivery_mounts_the_claim_read_only() -> None:
    d = model_delivery("pvc://voices/a/b.onnx", IMAGE, {})
    assert d.claim == "voices" and d.model_path == "/models/a/b.onnx"
    assert d.volume["persistentVolumeClaim"] == {"claimName": "voices", "readOnly": True}
    assert model_delivery("pvc://voices", IMAGE, {}).model_path == "/models"


def test_http_delivery_downloads_in_an_init_container() -> None:
    spec = spec_of(model={"uri": "https://h/v/en.onnx"})
    p = pod(spec)
    [init] = p["initContainers"]
    assert init["name"] == FETCH_CONTAINER and init["image"] == IMAGE
    assert "https://h/v/en.onnx" in init["command"]
    assert {"name": "model", "emptyDir": {}} in p["volumes"]
    data = kind(children(spec), "ConfigMap")["data"]
    assert data["TTS_MODEL_PATH"] == "/models"


def test_fetch_script_downloads_model_and_config(tmp_path: Any) -> None:
    """The init container's script, run for real against file:// URLs."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "v.onnx").write_bytes(b"onnx")
    (src / "v.onnx.json").write_text("{}")
    dest = tmp_path / "models"
    dest.mkdir()
    d = model_delivery("https://unused/v.onnx", IMAGE, {})
    script = d.init_containers[0]["command"][2]
    subprocess.run([sys.executable, "-c", script, (src / "v.onnx").as_uri(), str(dest)], check=True)
    assert (dest / "model.onnx").read_bytes() == b"onnx"
    assert (dest / "model.onnx.json").read_text() == "{}"
    assert sorted(p.name for p in dest.iterdir()) == ["model.onnx", "model.onnx.json"]


@pytest.mark.parametrize(
    ("uri", "host", "path"),
    [
        ("file:///data/v/en.onnx", "/data/v", "/models/en.onnx"),
        ("file:///data/v/", "/data/v", "/models"),
    ],
)
def test_file_delivery_uses_host_path(uri: str, host: str, path: str) -> None:
    d = model_delivery(uri, IMAGE, {})
    assert d.volume["hostPath"]["path"] == host and d.model_path == path


def test_service_is_client_ip_affine_by_default() -> None:
    svc = kind(children(spec_of()), "Service")["spec"]
    assert svc["sessionAffinity"] == "ClientIP"
    assert svc["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 300}}
    assert svc["ports"][0]["port"] == 8000 and svc["ports"][0]["targetPort"] == "http"
    assert svc["selector"] == {
        "app.kubernetes.io/name": "tts-runtime",
        "app.kubernetes.io/instance": "voice",
    }
    none = kind(children(spec_of(service={"sessionAffinity": "None"})), "Service")["spec"]
    assert none["sessionAffinity"] == "None" and "sessionAffinityConfig" not in none
    assert endpoint("voice", "speech", spec_of()) == "http://voice.speech.svc.cluster.local:8000"


def test_hpa_scales_on_the_queue_latency_pods_metric() -> None:
    kids = children(spec_of(autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 6}))
    hpa = kind(kids, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "voice",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    [metric] = spec["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "tts_queue_latency_seconds"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "150m"}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert not kids.unwanted or all(r.kind != "HorizontalPodAutoscaler" for r in kids.unwanted)


def test_hpa_behavior_policies(full_spec: TTSServiceSpec) -> None:
    hpa = kind(build_children("amy", "tts", full_spec, IMAGE), "HorizontalPodAutoscaler")
    up = hpa["spec"]["behavior"]["scaleUp"]
    assert up["selectPolicy"] == "Max"
    assert up["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 60}]


@pytest.mark.parametrize(("ms", "quantity"), [(150, "150m"), (1, "1m"), (2500, "2500m")])
def test_latency_quantity(ms: int, quantity: str) -> None:
    assert latency_quantity(ms) == quantity


def test_pdb_and_its_removal() -> None:
    pdb = kind(children(spec_of(disruption={"maxUnavailable": "25%"})), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == "25%"
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "voice"
    kids = children(spec_of(disruption={"enabled": False}))
    assert "PodDisruptionBudget" in [r.kind for r in kids.unwanted]
    assert all(m["kind"] != "PodDisruptionBudget" for m in kids.desired)


def test_scheduling_pass_through(full_spec: TTSServiceSpec) -> None:
    p = build_children("amy", "tts", full_spec, IMAGE).desired[1]["spec"]["template"]["spec"]
    assert p["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert p["priorityClassName"] == "tts-high" and p["runtimeClassName"] == "nvidia"
    assert "nodeAffinity" in p["affinity"]
    [spread] = p["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "amy"
    assert p["tolerations"][0]["key"] == "nvidia.com/mig-1g.10gb"
