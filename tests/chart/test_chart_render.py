"""What `helm template` renders: lint, objects per mode, RBAC shape, security, CRD, monitoring."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, NAMESPACE, ROOT, Helm
from tts_operator.kinds import rbac_needs

CRD_FILE = "ttsservices.ttsoperator.io.yaml"
PROMETHEUS_OPERATOR = [
    "--api-versions",
    "monitoring.coreos.com/v1/PodMonitor",
    "--api-versions",
    "monitoring.coreos.com/v1/ServiceMonitor",
]


def _container(rendered_deployment: dict[str, Any]) -> dict[str, Any]:
    containers = rendered_deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(rendered_deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _container(rendered_deployment)["env"]}


def test_helm_lint_strict(helm: Helm) -> None:
    out = helm.run("lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in out


def test_default_install_serves_the_release_namespace_only_with_the_crd(helm: Helm) -> None:
    """The narrowest scope that serves an installation is the default: a Role in the release
    namespace; the CRD and the admission policy (which grants nothing, and is bound to the
    release namespace) are the only cluster-scoped objects, and nothing grants anything
    outside the release namespace."""
    r = helm.template()
    assert r.kinds() == sorted(
        [
            "ConfigMap",  # prometheus-adapter rules
            "ConfigMap",  # Grafana dashboard
            "CustomResourceDefinition",
            "Deployment",
            "KopfPeering",
            "Role",
            "RoleBinding",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
    )
    cluster_scoped = {
        "CustomResourceDefinition",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for doc in r.docs:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    assert _env(r.one("Deployment"))["TTS_OPERATOR_NAMESPACES"] == NAMESPACE
    binding = r.one("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "tts-tts-operator",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tts-tts-operator", "namespace": NAMESPACE}
    ]


def test_cluster_scope_is_one_cluster_role_for_every_namespace(helm: Helm) -> None:
    r = helm.template("--set", "scope=cluster")
    assert r.kinds() == sorted(
        [
            "ClusterKopfPeering",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "ConfigMap",
            "CustomResourceDefinition",
            "Deployment",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
    )
    assert _env(r.one("Deployment"))["TTS_OPERATOR_NAMESPACES"] == ""
    binding = r.one("ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tts-tts-operator", "namespace": NAMESPACE}
    ]


def test_namespaced_scope_uses_roles_per_namespace_and_nothing_cluster_scoped(
    helm: Helm,
) -> None:
    r = helm.template(
        "--set", "scope=namespaced", "--set", "watchNamespaces={voices,staging}",
        "--set", "crds.install=false", "--set", "prometheusAdapter.enabled=false",
        "--set", "grafana.dashboard.enabled=false", "--set", "admissionPolicy.enabled=false",
    )  # fmt: skip
    assert r.kinds() == sorted(
        ["Deployment", "ServiceAccount"] + ["Role", "RoleBinding", "KopfPeering"] * 2
    )
    assert sorted(x["metadata"]["namespace"] for x in r.all("Role")) == ["staging", "voices"]
    assert sorted(x["metadata"]["namespace"] for x in r.all("KopfPeering")) == [
        "staging",
        "voices",
    ]
    for binding in r.all("RoleBinding"):
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    assert _env(r.one("Deployment"))["TTS_OPERATOR_NAMESPACES"] == "voices,staging"


def test_namespaced_scope_defaults_to_the_release_namespace(helm: Helm) -> None:
    r = helm.template("--set", "scope=namespaced")
    assert [x["metadata"]["namespace"] for x in r.all("Role")] == [NAMESPACE]
    assert _env(r.one("Deployment"))["TTS_OPERATOR_NAMESPACES"] == NAMESPACE


def _rules(helm: Helm, *args: str) -> list[dict[str, Any]]:
    r = helm.template(*args)
    roles = r.all("ClusterRole") + r.all("Role")
    return [rule for role in roles for rule in role["rules"]]


def test_rbac_is_explicit_and_never_grants_secrets(helm: Helm) -> None:
    for args in ([], ["--set", "scope=cluster"]):
        rules = _rules(helm, *args)
        assert rules
        for rule in rules:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"wildcard in {rule}"
            assert "secrets" not in rule["resources"]
            assert "nodes" not in rule["resources"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def _grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_rbac_grants_exactly_what_the_operator_and_kopf_use(helm: Helm) -> None:
    """Each scope's rules, whole: a verb or a resource more (or less) than the operator's
    kinds table (operator/tts_operator/kinds.py) and kopf's peering need fails here (README
    "RBAC" explains each)."""
    needs = rbac_needs()
    peering = {"get", "list", "watch", "patch"}  # the release creates it; the operator waits
    assert _grants(_rules(helm)) == needs | {("kopf.dev", "kopfpeerings"): peering}
    assert _grants(_rules(helm, "--set", "scope=cluster")) == needs | {
        ("kopf.dev", "clusterkopfpeerings"): peering,
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    }


def test_operator_pod_is_hardened(helm: Helm) -> None:
    deployment = helm.template().one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = _container(deployment)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert _container(deployment)["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["spec"]["replicas"] == 2


def _operator_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The operator's settings as it reads them from the rendered environment."""
    from tts_operator.settings import OperatorSettings

    for name in [n for n in os.environ if n.startswith("TTS_OPERATOR_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("TTS_OPERATOR_"):
            monkeypatch.setenv(name, value)
    return OperatorSettings()


def test_operator_env_names_are_real_operator_settings(
    helm: Helm, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tts_operator.settings import OperatorSettings

    fields = {f"TTS_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    env = _env(helm.template().one("Deployment"))
    ours = {name for name in env if name.startswith("TTS_OPERATOR_")}
    assert ours, env
    assert ours <= fields, f"not operator settings: {ours - fields}"
    # The values the chart passes must be ones the settings class accepts (read the way the
    # operator reads them: from the environment, JSON for the policy).
    _operator_settings(env, monkeypatch)


def test_policy_defaults_are_the_operators_and_follow_the_default_runtime_image(
    helm: Helm, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tts_operator.policy import Policy, image_prefixes

    settings = _operator_settings(_env(helm.template().one("Deployment")), monkeypatch)
    assert settings.policy == Policy()
    assert image_prefixes(settings.policy, settings.runtime_image) == [
        "ghcr.io/tts-operator/tts-runtime"
    ]
    local = helm.template("--set", "operator.defaultRuntimeImage=localhost/tts-runtime:dev")
    settings = _operator_settings(_env(local.one("Deployment")), monkeypatch)
    assert image_prefixes(settings.policy, settings.runtime_image) == ["localhost/tts-runtime"]


def test_policy_values_reach_the_operator(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    given = {
        "allowedImagePrefixes": ["registry.example/tts/"],
        "allowedHostPaths": ["/srv/voices"],
        "allowedEnvValueFrom": ["configMapKeyRef", "secretKeyRef"],
        "allowedServiceTypes": ["ClusterIP", "LoadBalancer"],
        "allowedServiceAnnotations": ["service.beta.kubernetes.io/*"],
        "allowedPriorityClasses": ["tts-high"],
        "allowedRuntimeClasses": ["nvidia"],
        "allowTolerationWildcards": True,
        "allowedTolerationKeys": ["dedicated"],
        "allowedNodeSelectorKeys": ["pool"],
        "allowedEnvNames": ["OMP_NUM_THREADS"],
        "allowedSecretNames": ["tts-*"],
        "allowHttpModelUris": True,
        "allowPrivateModelHosts": True,
        "requireModelSha256": True,
        "maxModelDownloadBytes": 512 << 20,
        "modelDownloadDeadlineSeconds": 120,
    }
    r = helm.template("--set-json", f"policy={json.dumps(given)}")
    policy = _operator_settings(_env(r.one("Deployment")), monkeypatch).policy
    dumped = policy.model_dump(by_alias=True)
    assert {k: dumped[k] for k in given} == given
    r = helm.template()
    defaults = _operator_settings(_env(r.one("Deployment")), monkeypatch).policy
    assert defaults.allowed_env_names == []  # values.yaml: the runtime's tuning knobs only
    assert defaults.allowed_node_selector_keys == ["*"]
    # The download cap as a quantity, as values.yaml writes it.
    r = helm.template("--set", "policy.maxModelDownloadBytes=4Gi")
    policy = _operator_settings(_env(r.one("Deployment")), monkeypatch).policy
    assert policy.max_model_download_bytes == 4 << 30


def test_the_hf_endpoint_reaches_the_operator(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _operator_settings(_env(helm.template().one("Deployment")), monkeypatch)
    assert settings.hf_endpoint == "https://huggingface.co"
    mirror = helm.template("--set", "operator.hfEndpoint=https://hf-mirror.example/hub")
    settings = _operator_settings(_env(mirror.one("Deployment")), monkeypatch)
    assert settings.hf_endpoint == "https://hf-mirror.example/hub"


def test_each_replica_draws_its_own_peering_priority(helm: Helm) -> None:
    """kopf pauses every replica when two share a priority: the pod's start script must give
    each replica a distinct one the operator's settings accept."""
    from tts_operator.settings import OperatorSettings

    container = _container(helm.template().one("Deployment"))
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    env = {k: v for k, v in os.environ.items() if k != "TTS_OPERATOR_PRIORITY"}
    drawn = []
    probe = script.replace("exec tts-operator run", "echo $TTS_OPERATOR_PRIORITY")
    for _ in range(3):
        shown = subprocess.run(
            ["/bin/sh", "-c", probe], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
        drawn.append(OperatorSettings.model_validate({"priority": shown}).priority)
    assert len(set(drawn)) > 1, drawn  # 3 equal 16-bit draws: about 1 in 4 billion

    assert _env(helm.template().one("Deployment"))["TTS_OPERATOR_PEERING_CREATE"] == "false"
    fixed = _env(helm.template("--set", "peering.priority=7").one("Deployment"))
    assert fixed["TTS_OPERATOR_PRIORITY"] == "7"
    assert "TTS_OPERATOR_PRIORITY" not in _env(helm.template().one("Deployment"))


def test_crd_template_is_the_generated_crd_plus_helm_metadata(helm: Helm) -> None:
    # One source of truth: the chart's file is a link to the generated CRD (helm follows it
    # and `helm package` stores the content).
    linked = CHART / "files" / CRD_FILE
    assert linked.is_symlink() and linked.resolve() == (ROOT / "crds" / CRD_FILE).resolve()
    generated_text = (ROOT / "crds" / CRD_FILE).read_text()
    generated = yaml.safe_load(generated_text)
    rendered = helm.template().one("CustomResourceDefinition")
    meta = rendered.pop("metadata")
    generated_meta = generated.pop("metadata")
    assert rendered == generated
    assert meta["name"] == generated_meta["name"] == "ttsservices.ttsoperator.io"
    assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    for key, value in (generated_meta.get("annotations") or {}).items():
        assert meta["annotations"][key] == value

    unkept = helm.template("--set", "crds.keep=false").one("CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (unkept["metadata"].get("annotations") or {})
    assert not helm.template("--set", "crds.install=false").all("CustomResourceDefinition")


def test_peering_crds_in_the_chart_are_the_operators() -> None:
    linked = CHART / "crds" / "kopf-peering.yaml"
    assert linked.is_symlink() and linked.resolve() == (ROOT / "crds" / "kopf-peering.yaml")
    names = sorted(d["metadata"]["name"] for d in yaml.safe_load_all(linked.read_text()) if d)
    assert names == ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"]


def test_packaged_chart_carries_the_linked_crds(helm: Helm, tmp_path: Path) -> None:
    helm.run("package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("tts-operator-*.tgz")
    with tarfile.open(package) as tar:
        for member, source in [
            (f"tts-operator/files/{CRD_FILE}", ROOT / "crds" / CRD_FILE),
            ("tts-operator/crds/kopf-peering.yaml", ROOT / "crds" / "kopf-peering.yaml"),
        ]:
            entry = tar.getmember(member)
            assert entry.isfile(), member
            extracted = tar.extractfile(entry)
            assert extracted is not None
            assert extracted.read() == source.read_bytes()


def test_monitors_render_only_when_the_prometheus_operator_crds_exist(helm: Helm) -> None:
    with_sm = ["--set", "monitoring.serviceMonitor.enabled=true"]
    assert not helm.template(*with_sm).all("PodMonitor")
    assert not helm.template(*with_sm).all("ServiceMonitor")
    r = helm.template(*PROMETHEUS_OPERATOR, *with_sm, "--set", "scope=cluster")
    pm, sm = r.one("PodMonitor"), r.one("ServiceMonitor")
    for monitor, endpoints in ((pm, "podMetricsEndpoints"), (sm, "endpoints")):
        assert monitor["spec"]["selector"]["matchLabels"] == {
            "app.kubernetes.io/name": "tts-runtime",
            "app.kubernetes.io/managed-by": "tts-operator",
        }
        assert monitor["spec"]["namespaceSelector"] == {"any": True}
        (endpoint,) = monitor["spec"][endpoints]
        assert endpoint["port"] == "http"
        assert endpoint["path"] == "/metrics"
        targets = {x["targetLabel"] for x in endpoint["relabelings"]}
        assert {"namespace", "pod", "tts_service"} <= targets
    assert not helm.template(*PROMETHEUS_OPERATOR).all("ServiceMonitor")  # off by default
    scoped = helm.template(*PROMETHEUS_OPERATOR).one("PodMonitor")  # the default scope
    assert scoped["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def _adapter_rule(helm: Helm, *args: str) -> dict[str, Any]:
    configmaps = helm.template(*args).all("ConfigMap")
    (cm,) = [c for c in configmaps if c["metadata"]["name"].endswith("-adapter-rules")]
    (rule,) = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    return dict(rule)


def _squash(promql: str) -> str:
    return re.sub(r"\s+", "", promql)


# The HPA signal agreed in /work/prompts/names.md (and docs/monitoring.md).
AGREED_PROMQL = (
    "sum by (namespace,pod) (rate(tts_queue_wait_seconds_sum[1m])) / clamp_min(sum by "
    "(namespace,pod) (rate(tts_queue_wait_seconds_count[1m])), 1e-9)"
)


def test_adapter_rule_is_the_agreed_rate_based_per_pod_queue_latency(helm: Helm) -> None:
    rule = _adapter_rule(helm)
    assert rule["name"]["as"] == "tts_queue_latency_seconds"
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    query = rule["metricsQuery"].replace("<<.GroupBy>>", "namespace,pod")
    query = query.replace("{<<.LabelMatchers>>}", "")
    assert _squash(query) == _squash(AGREED_PROMQL)
    # Both sides are rates: a raw counter would never fall when load falls.
    assert "rate(tts_queue_wait_seconds_sum" in rule["metricsQuery"]
    assert "rate(tts_queue_wait_seconds_count" in rule["metricsQuery"]
    renamed = _adapter_rule(
        helm, "--set", "prometheusAdapter.metricName=voice_wait", "--set",
        "prometheusAdapter.rateWindow=2m",
    )  # fmt: skip
    assert renamed["name"]["as"] == "voice_wait"
    assert "[2m]" in renamed["metricsQuery"]


def test_adapter_metric_name_default_matches_the_crd_default(helm: Helm) -> None:
    from tts_operator.models import DEFAULT_METRIC_NAME

    assert _adapter_rule(helm)["name"]["as"] == DEFAULT_METRIC_NAME


# values.yaml key -> the operator setting it feeds (TTS_OPERATOR_KEDA_*).
KEDA_SETTINGS = {
    "prometheusServerAddress": "keda_prometheus_address",
    "rateWindow": "keda_rate_window",
    "pollingInterval": "keda_polling_interval",
}


def test_keda_values_reach_the_operator_and_the_schema_refuses_what_it_would(
    helm: Helm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator builds the ScaledObjects (spec.autoscaling.provider keda); the chart only
    tells it where Prometheus is. A value the operator would refuse at start (a pod that
    crash-loops) fails `helm install` instead."""
    from pydantic import ValidationError
    from tts_operator.builders.scaledobject import PrometheusSource
    from tts_operator.settings import OperatorSettings

    settings = _operator_settings(_env(helm.template().one("Deployment")), monkeypatch)
    assert settings.prometheus_source == PrometheusSource()  # the same defaults
    given = {
        "prometheusServerAddress": "https://prometheus.example:9443/prom",
        "rateWindow": "2m",
        "pollingInterval": 30,
    }
    r = helm.template("--set-json", f"keda={json.dumps(given)}")
    settings = _operator_settings(_env(r.one("Deployment")), monkeypatch)
    assert {key: getattr(settings, field) for key, field in KEDA_SETTINGS.items()} == given

    for key, bad in [
        ("prometheusServerAddress", "prometheus-operated:9090"),
        ("rateWindow", "1 minute"),
        ("rateWindow", "0m"),
        ("rateWindow", "500ms"),
        ("pollingInterval", "0"),
        ("pollingInterval", "3601"),
    ]:
        error = helm.template_error("--set", f"keda.{key}={bad}")
        assert "values don't meet the specifications of the schema" in error, error
        assert key in error, error
        with pytest.raises(ValidationError):
            OperatorSettings.model_validate({KEDA_SETTINGS[key]: bad})


def test_grafana_dashboard_is_valid_json_on_real_runtime_metrics(helm: Helm) -> None:
    from tts_runtime.metrics import RuntimeMetrics

    configmaps = helm.template().all("ConfigMap")
    (cm,) = [c for c in configmaps if c["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["tts-operator.json"])
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("queue latency", "batch size", "throughput", "real-time factor", "replicas"):
        assert topic in titles
    exported = RuntimeMetrics().exposition().decode()
    series = set(re.findall(r"^(tts_\w+)", exported, flags=re.MULTILINE))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\btts_[a-z_]+", e) if m != "tts_service"}
    assert used, exprs
    assert used <= series, f"dashboard queries series the runtime does not export: {used - series}"
