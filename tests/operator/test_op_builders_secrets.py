"""Secret references as files in the pod: the runtime's API keys (spec.auth.apiKeysSecretRef)
and the hf:// token (spec.model.tokenSecretRef): a secret volume each, mounted as a directory
(so a Secret update reaches running pods), read-only, readable by the pod's group only, the
path passed by a `*_FILE` setting or flag."""

from __future__ import annotations

from typing import Any

from builder_helpers import children, container, kind, pod, spec_of
from tts_operator.builders.secrets import SECRETS_ROOT, secret_file
from tts_operator.models import SecretKeyRef

KEYS = {"auth": {"apiKeysSecretRef": {"name": "tts-keys", "key": "api-keys"}}}
KEYS_DIR = f"{SECRETS_ROOT}/api-keys"


def test_a_secret_key_becomes_a_file_in_a_volume_of_its_own() -> None:
    found = secret_file("api-keys", SecretKeyRef(name="tts-keys", key="api-keys"), "keys")
    assert found.volume == {
        "name": "api-keys",
        "secret": {
            "secretName": "tts-keys",
            "items": [{"key": "api-keys", "path": "keys"}],
            "defaultMode": 0o440,
        },
    }
    assert found.mount == {"name": "api-keys", "mountPath": KEYS_DIR, "readOnly": True}
    assert found.path == f"{KEYS_DIR}/keys"


def test_api_keys_reach_the_runtime_as_a_file_named_by_its_setting() -> None:
    spec = spec_of(**KEYS)
    data = kind(children(spec), "ConfigMap")["data"]
    assert data["TTS_API_KEYS_FILE"] == f"{KEYS_DIR}/keys"
    mounts = container(spec)["volumeMounts"]
    assert {"name": "api-keys", "mountPath": KEYS_DIR, "readOnly": True} in mounts
    assert all("subPath" not in m for m in mounts)  # a subPath mount never sees updates
    [volume] = [v for v in pod(spec)["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["secretName"] == "tts-keys"
    # Never the key itself in the environment.
    assert "tts-keys" not in str(container(spec).get("env"))


def test_no_api_keys_no_volume_no_setting() -> None:
    spec = spec_of()
    assert "TTS_API_KEYS_FILE" not in kind(children(spec), "ConfigMap")["data"]
    assert [v["name"] for v in pod(spec)["volumes"]] == ["model", "tmp"]
    assert all(m["name"] != "api-keys" for m in container(spec)["volumeMounts"])


def test_turning_api_keys_on_rolls_the_pods() -> None:
    """The setting is in the ConfigMap, whose hash is in the pod template."""

    def config_hash(fields: dict[str, Any]) -> str:
        template = kind(children(spec_of(**fields)), "Deployment")["spec"]["template"]
        return str(template["metadata"]["annotations"]["ttsoperator.io/config-hash"])

    assert config_hash(KEYS) != config_hash({})


def test_api_keys_and_an_hf_token_each_go_where_they_are_used() -> None:
    spec = spec_of(
        model={"uri": "hf://o/r/v.onnx", "tokenSecretRef": {"name": "hf", "key": "token"}},
        **KEYS,
    )
    p = pod(spec)
    assert [v["name"] for v in p["volumes"]] == ["model", "tmp", "hf-token", "api-keys"]
    [init] = p["initContainers"]
    assert [m["name"] for m in init["volumeMounts"]] == ["model", "hf-token"]
    assert [m["name"] for m in p["containers"][0]["volumeMounts"]] == [
        "model",
        "tmp",
        "api-keys",
    ]
