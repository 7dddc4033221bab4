"""deploy: the chart values the local cluster installs with (checked against the chart's own
schema), the pre-bound voice volume and the client pod."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from tts_cluster import deploy
from tts_cluster.base import ClusterError
from tts_cluster.images import Image, Images
from tts_cluster.node import REAL_NODE_TAINT

SCHEMA = json.loads((deploy.CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((deploy.CHART / "values.yaml").read_text())


def _images(operator: str = "localhost/tts-operator:dev") -> Images:
    def image(name: str) -> Image:
        return Image(name, Path(f"/cache/{name.rsplit('/', 1)[-1]}.tar"), "1-1")

    return Images(
        runtime=image("localhost/tts-runtime:dev"),
        operator=image(operator),
        pause=image("localhost/tts-pause:3.10"),
        sizes={},
    )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """over on top of base, as helm merges values (maps merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merged(values: dict[str, Any]) -> dict[str, Any]:
    """values over the chart's defaults."""
    return _merge(DEFAULTS, values)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("localhost/tts-operator:dev", ("localhost/tts-operator", "dev")),
        ("localhost:5000/tts-operator:dev", ("localhost:5000/tts-operator", "dev")),
        ("registry.example:443/team/op:1.2.3", ("registry.example:443/team/op", "1.2.3")),
        ("tts-operator:dev", ("tts-operator", "dev")),
    ],
)
def test_split_image(name: str, expected: tuple[str, str]) -> None:
    assert deploy.split_image(name) == expected
    repository, tag = expected
    assert f"{repository}:{tag}" == name


@pytest.mark.parametrize(
    "name",
    ["localhost/tts-operator", "localhost:5000/tts-operator", "tts-operator", "x:", ":dev", ""],
)
def test_split_image_refuses_a_name_without_a_tag(name: str) -> None:
    with pytest.raises(ClusterError, match="has no tag"):
        deploy.split_image(name)


def test_chart_joins_repository_and_tag_the_way_split_image_splits_them() -> None:
    template = (deploy.CHART / "templates" / "deployment.yaml").read_text()
    assert '"{{ .Values.image.repository }}:{{ .Values.image.tag' in template


def test_chart_values_use_the_local_images_and_never_pull() -> None:
    values = deploy.chart_values(_images("localhost:5000/tts-operator:e2e"), replicas=3)
    assert values["image"] == {
        "repository": "localhost:5000/tts-operator",
        "tag": "e2e",
        "pullPolicy": "Never",
    }
    assert values["replicaCount"] == 3
    assert values["operator"]["defaultRuntimeImage"] == "localhost/tts-runtime:dev"
    assert values["peering"]["create"] is True
    assert deploy.chart_values(_images(), create_peering=False)["peering"]["create"] is False


def test_chart_values_serve_namespaces_made_after_the_install() -> None:
    """The e2e scenarios and the demo create TTSServices in fresh namespaces; the chart's
    default scope serves its own namespace only, so the local install asks for cluster scope."""
    assert DEFAULTS["scope"] == "namespaced"
    values = deploy.chart_values(_images())
    assert values["scope"] == "cluster"
    assert _merged(values)["scope"] == "cluster"


def test_chart_values_tolerate_the_real_node_taint() -> None:
    (toleration,) = deploy.chart_values(_images())["tolerations"]
    assert toleration["operator"] == "Equal"
    for field in ("key", "value", "effect"):
        assert toleration[field] == REAL_NODE_TAINT[field], field
    assert set(toleration) == {"key", "operator", "value", "effect"}


def test_chart_values_keep_the_admission_policy_unless_narrowed() -> None:
    assert "admissionPolicy" not in deploy.chart_values(_images())
    selector = {"matchLabels": {"a": "b"}}
    values = deploy.chart_values(_images(), admission_namespaces=selector)
    assert values["admissionPolicy"] == {"namespaceSelector": selector}
    jsonschema.validate(_merged(values), SCHEMA)


@pytest.mark.parametrize("create_peering", [True, False])
def test_chart_values_pass_the_chart_schema(create_peering: bool) -> None:
    values = deploy.chart_values(_images(), replicas=1, create_peering=create_peering)
    jsonschema.validate(_merged(values), SCHEMA)
    json.dumps(values)  # install_operator writes them as JSON


@pytest.mark.parametrize(
    "wrong",
    [
        {"imagee": {"tag": "dev"}},
        {"image": {"pullpolicy": "Never"}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"operator": {"defaultRuntimeImag": "x"}},
        {"peering": {"create": "yes"}},
        {"replicaCount": "2"},
    ],
)
def test_the_schema_check_catches_a_wrong_key(wrong: dict[str, Any]) -> None:
    """The schema test above can fail: a misspelt key or a wrong type is refused."""
    values = _merged(deploy.chart_values(_images()))
    jsonschema.validate(values, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_merge(values, wrong), SCHEMA)


def test_voice_claim_is_pre_bound_to_its_volume(tmp_path: Path) -> None:
    volume, claim = deploy.voice_claim_objects("speech", "voices", tmp_path)
    assert (volume["kind"], claim["kind"]) == ("PersistentVolume", "PersistentVolumeClaim")
    name = volume["metadata"]["name"]
    assert name == "speech-voices"
    assert "namespace" not in volume["metadata"]  # PersistentVolumes are cluster-scoped
    assert volume["spec"]["claimRef"] == {"namespace": "speech", "name": "voices"}
    assert claim["metadata"] == {"name": "voices", "namespace": "speech"}
    assert claim["spec"]["volumeName"] == name
    # No storage class on either side, so no provisioner steps in; modes and sizes agree.
    assert volume["spec"]["storageClassName"] == claim["spec"]["storageClassName"] == ""
    assert volume["spec"]["accessModes"] == claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert (
        volume["spec"]["capacity"]["storage"] == claim["spec"]["resources"]["requests"]["storage"]
    )
    assert volume["spec"]["hostPath"] == {"path": str(tmp_path), "type": "Directory"}
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


def test_two_namespaces_get_two_volumes(tmp_path: Path) -> None:
    first = deploy.voice_claim_objects("a", "voices", tmp_path)[0]["metadata"]["name"]
    second = deploy.voice_claim_objects("b", "voices", tmp_path)[0]["metadata"]["name"]
    assert first != second


def test_client_pod_is_non_root_without_capabilities() -> None:
    pod = deploy.client_pod("client", "localhost/tts-runtime:dev")
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert pod["metadata"] == {"name": "client"}
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "localhost/tts-runtime:dev"
    assert container["imagePullPolicy"] == "Never"
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["command"][0] == "python3"
    assert pod["spec"]["nodeSelector"] == {"type": "real"}


def test_client_pod_tolerates_the_real_node_only_when_asked() -> None:
    tolerant = deploy.client_pod("c", "img:dev")["spec"]
    assert tolerant["tolerations"] == [deploy.REAL_NODE_TOLERATION]
    assert "tolerations" not in deploy.client_pod("c", "img:dev", tolerate_real_node=False)["spec"]
