"""Scenario 15 (issue 22, item 5): admission with the author's own identity.

The chart's ValidatingAdmissionPolicy, rendered by helm and applied to the real API server
(bound to this test's namespace only, so other scenarios' users are not judged by it), lets a
TTSService through only when the user creating or changing it may `get` every Secret it
names and the PersistentVolumeClaim its pvc:// model mounts. Two impersonated users:

- one who may only manage TTSServices: refused by the API server itself (no object is
  stored) for another team's Secret (an API-key reference, an env secretKeyRef) and for
  another team's claim, the message naming the field and the missing permission; and
  refused for a toleration of a taint the chart does not list;
- one who may also read that Secret and claim: admitted.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubeapi
import pytest
import yaml
from kubeapi import E2EKube, tts_body, wait_for
from kubernetes import client
from kubernetes.client import ApiException
from test_chart import CHART, _binaries

SECRET = "team-b-api-keys"
CLAIM = "team-b-voices"
READER = "tts-and-secrets-reader"
LABEL = "tts-e2e/admission-identity"


def _render_policy(cluster: Any, namespace: str, release: str) -> list[dict[str, Any]]:
    values = {"admissionPolicy": {"namespaceSelector": {"matchLabels": {LABEL: namespace}}}}
    out = subprocess.run(
        [
            str(_binaries(cluster).helm), "template", release, str(CHART),
            "--namespace", "tts-system", "--show-only", "templates/admission-policy.yaml",
            "--set-json", f"admissionPolicy={json.dumps(values['admissionPolicy'])}",
        ],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture
def admission_policy(cluster: Any, kube: E2EKube, namespace: str) -> Iterator[str]:
    """The chart's policy and binding, for this namespace only; removed afterwards."""
    kube.core.patch_namespace(namespace, {"metadata": {"labels": {LABEL: namespace}}})
    release = f"e2e-vap-{uuid.uuid4().hex[:5]}"
    docs = _render_policy(cluster, namespace, release)
    assert [d["kind"] for d in docs] == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    path = Path(cluster.kubeconfig).parent / f"{release}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    cluster.kubectl("apply", "-f", str(path))
    try:
        yield docs[0]["metadata"]["name"]
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", str(path), check=False)


def _grant_reader(kube: E2EKube, namespace: str) -> E2EKube:
    """A user who may manage TTSServices and get the Secret and the claim."""
    rbac: Any = client.RbacAuthorizationV1Api(kube.api_client)
    rules = [
        {"apiGroups": [kubeapi.GROUP], "resources": [kubeapi.PLURAL],
         "verbs": ["create", "get", "list", "watch", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [SECRET], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "resourceNames": [CLAIM],
         "verbs": ["get"]},
    ]  # fmt: skip
    rbac.create_namespaced_role(namespace, {"metadata": {"name": READER}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": READER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": READER},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": READER}],
        },
    )
    return kube.as_user(READER)


def _refused(user: E2EKube, namespace: str, body: dict[str, Any]) -> str:
    """The API server's refusal message for creating `body` as `user` (retried while the
    policy or the RoleBinding is still reaching the API server's caches)."""

    def attempt() -> str | None:
        try:
            user.create_tts(namespace, body)
        except ApiException as err:
            text = str(err.body or "")
            if err.status == 422 or (err.status == 403 and "ValidatingAdmissionPolicy" in text):
                return text
            raise
        user.delete_tts(namespace, body["metadata"]["name"])  # the policy was not in force yet
        return None

    return wait_for(f"the API server refusing {body['metadata']['name']}", attempt, 30)


def test_the_api_server_judges_a_ttsservice_with_its_authors_rights(
    crds: None, kube: E2EKube, namespace: str, tts_user: E2EKube, admission_policy: str
) -> None:
    kube.core.create_namespaced_secret(
        namespace, {"metadata": {"name": SECRET}, "stringData": {"keys": "k1"}}
    )
    kube.core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": CLAIM},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    with_secret = tts_body("keys", {"auth": {"apiKeysSecretRef": {"name": SECRET, "key": "keys"}}})
    with_claim = tts_body("claim", {"model": {"uri": f"pvc://{CLAIM}/en.onnx"}})
    secret_env = {"name": "KEYS", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "keys"}}}
    with_env = tts_body("env", {"runtime": {"env": [secret_env]}})
    tolerating = tts_body(
        "control-plane",
        {"scheduling": {"tolerations": [
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}},
    )  # fmt: skip

    message = _refused(tts_user, namespace, with_secret)
    assert admission_policy in message
    assert f"may not get Secret {SECRET}" in message and "get secrets" in message
    assert "spec.auth.apiKeysSecretRef" in message
    message = _refused(tts_user, namespace, with_env)
    assert f"may not get each of the Secrets {SECRET}" in message and "get secrets" in message
    assert "spec.runtime.env[].valueFrom.secretKeyRef" in message
    message = _refused(tts_user, namespace, with_claim)
    assert f"may not get PersistentVolumeClaim {CLAIM}" in message
    assert "get persistentvolumeclaims" in message and "spec.model.uri" in message
    message = _refused(tts_user, namespace, tolerating)
    assert "node-role.kubernetes.io/control-plane" in message
    assert "policy.allowedTolerationKeys" in message
    for name in ("keys", "env", "claim", "control-plane"):
        assert not kube.tts_exists(namespace, name)

    reader = _grant_reader(kube, namespace)
    for body in (with_secret, with_env, with_claim):
        name = body["metadata"]["name"]

        def admitted(body: dict[str, Any] = body) -> dict[str, Any]:
            return reader.create_tts(namespace, body)

        wait_for(f"{name} admitted for a user who may read what it names", admitted, 30)
        assert kube.tts_exists(namespace, name)
    # Who may read them does not make the toleration any more acceptable.
    assert "policy.allowedTolerationKeys" in _refused(reader, namespace, tolerating)
