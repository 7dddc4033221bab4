"""Scenario 11 (issue 11): the operator's policy keeps a TTSService author's rights their own.

A user who may only manage TTSServices (impersonated: a Role granting `ttsservices` and
nothing else) cannot read the Secret `db-credentials`. A TTSService that would put that
Secret into its pods' environment (`env[].valueFrom.secretKeyRef`) is refused: Degraded and
Ready False with reason PolicyViolation, the message naming the field and the chart value
that would allow it, a Warning event, and no child at all (so no pod ever holds the Secret).
The same for an image outside the allowed prefixes; and once the spec drops the image, the
refusal clears and the children are built.

Model downloads (issue 11, item 8): a plain http:// model URI and an https one naming an
internal address (the cloud metadata endpoint) are refused the same way; the API server
refuses a malformed digest and a digest on a model nothing downloads; an https model with a
digest reaches the pods' model-fetch init container with the digest, the download cap and
the deadline, and its emptyDir gets a sizeLimit.

The host operator runs with the default policy (e2e/operatorproc.py adds only the kind
provider's model directory to allowedHostPaths). These namespaces are outside the chart's
admission policy (conftest ADMISSION_LABEL), as on a cluster without it: that is what the
operator's own checks are for. Where the policy judges the namespace, the API server refuses
the Secret's TTSService for this user before the operator sees it
(test_15_admission_identity.py).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubeapi import MODEL_URI, E2EKube, condition, tts_body, wait_for
from kubernetes.client import ApiException
from operatorproc import OperatorProcess
from ttschildren import labelled_children

SECRET = "db-credentials"
FOREIGN_IMAGE = "docker.io/attacker/tools:1"
# Longer than a few of the operator's passes (child events, TTS_OPERATOR_RETRY_SECONDS=2).
SETTLE_SECONDS = 6


def wait_refused(kube: E2EKube, namespace: str, name: str, field: str) -> dict[str, Any]:
    """The TTSService once Degraded/PolicyViolation names `field`."""

    def refused() -> dict[str, Any] | None:
        tts = kube.get_tts(namespace, name)
        cond = condition(tts, "Degraded") or {}
        return (
            tts
            if (cond.get("status"), cond.get("reason")) == ("True", "PolicyViolation")
            and field in (cond.get("message") or "")
            else None
        )

    return wait_for(f"TTSService {name} Degraded/PolicyViolation naming {field}", refused, 60)


def wait_warning(kube: E2EKube, namespace: str, name: str, field: str) -> dict[str, Any]:
    def posted() -> dict[str, Any] | None:
        for event in kube.events(namespace):
            involved = event.get("involvedObject") or {}
            if (
                involved.get("kind") == "TTSService"
                and involved.get("name") == name
                and event.get("type") == "Warning"
                and event.get("reason") == "PolicyViolation"
                and field in (event.get("message") or "")
            ):
                return event
        return None

    return wait_for(f"a Warning PolicyViolation event naming {field}", posted, 30)


def assert_refused(
    kube: E2EKube, namespace: str, name: str, field: str, chart_value: str
) -> dict[str, Any]:
    tts = wait_refused(kube, namespace, name, field)
    message = (condition(tts, "Degraded") or {})["message"]
    assert chart_value in message, message
    ready = condition(tts, "Ready") or {}
    assert (ready["status"], ready["reason"]) == ("False", "PolicyViolation")
    wait_warning(kube, namespace, name, field)
    time.sleep(SETTLE_SECONDS)  # later passes (child events, resumes) must not write either
    assert not any(labelled_children(kube, namespace, name).values())
    return tts


def test_a_secret_the_author_cannot_read_never_reaches_a_pod(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str, tts_user: E2EKube
) -> None:
    kube.core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": SECRET}, "stringData": {"password": "hunter2"}},
    )
    name = "secret-reader"
    body = tts_body(
        name,
        {
            "runtime": {
                "env": [
                    {
                        "name": "STOLEN",
                        "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "password"}},
                    }
                ]
            }
        },
    )
    # Retried until the RoleBinding reaches the authorizer's cache.
    wait_for("the TTSService created as the user", lambda: tts_user.create_tts(namespace, body), 30)
    with pytest.raises(ApiException) as denied:  # the user may not read the Secret
        tts_user.core.read_namespaced_secret(SECRET, namespace)
    assert denied.value.status == 403

    assert_refused(
        kube,
        namespace,
        name,
        "spec.runtime.env[0].valueFrom.secretKeyRef",
        "policy.allowedEnvValueFrom",
    )
    pods = kube.core.list_namespaced_pod(namespace).items
    assert pods == []


def test_an_image_outside_the_allowed_prefixes_is_refused_until_the_spec_drops_it(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str, tts_user: E2EKube
) -> None:
    name = "foreign-image"
    body = tts_body(name, {"runtime": {"image": FOREIGN_IMAGE}})
    wait_for("the TTSService created as the user", lambda: tts_user.create_tts(namespace, body), 30)
    tts = assert_refused(kube, namespace, name, "spec.runtime.image", "policy.allowedImagePrefixes")
    assert FOREIGN_IMAGE in (condition(tts, "Degraded") or {})["message"]

    # A spec change is handled anew: without the image (the operator's default runs) it is
    # allowed, and the children appear.
    tts_user.patch_tts(namespace, name, {"spec": {"runtime": {"image": None}}})
    deployment = wait_for(
        "the Deployment once the image is dropped",
        lambda: kube.deployment(namespace, name),
        60,
    )
    images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert FOREIGN_IMAGE not in images
    wait_for(
        "the PolicyViolation to clear",
        lambda: (
            (condition(kube.get_tts(namespace, name), "Degraded") or {}).get("reason")
            != "PolicyViolation"
        ),
        60,
    )


MODEL_SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def test_model_downloads_are_https_to_public_hosts_capped_and_pinned(
    kube: E2EKube, running_operator: OperatorProcess, namespace: str, tts_user: E2EKube
) -> None:
    plain = tts_body("plain-http", {"model": {"uri": "http://models.example.com/v/en.onnx"}})
    wait_for(
        "the TTSService created as the user", lambda: tts_user.create_tts(namespace, plain), 30
    )
    assert_refused(kube, namespace, "plain-http", "spec.model.uri", "policy.allowHttpModelUris")

    metadata = tts_body(
        "metadata-host",
        {"model": {"uri": "https://169.254.169.254/latest/meta-data/model.onnx"}},
    )
    tts_user.create_tts(namespace, metadata)
    tts = assert_refused(
        kube, namespace, "metadata-host", "spec.model.uri", "policy.allowPrivateModelHosts"
    )
    assert "a link-local address" in (condition(tts, "Degraded") or {})["message"]

    # The API server checks the digest's form, and that a digest is only given where a
    # download verifies it (CEL).
    for name, model, says in (
        ("short-digest", {"uri": MODEL_URI, "sha256": "abc"}, "spec.model.sha256"),
        (
            "mounted-digest",
            {"uri": "pvc://voices/en", "sha256": MODEL_SHA},
            "apply to downloaded (http(s)://, hf://) URIs only",
        ),
    ):
        with pytest.raises(ApiException) as refused:
            tts_user.create_tts(namespace, tts_body(name, {"model": model}))
        assert refused.value.status == 422, refused.value
        assert says in str(refused.value.body), refused.value.body

    # Allowed: the digest, the cap and the deadline reach the init container. No replica, so
    # no pod tries to reach models.example.com.
    pinned = tts_body("pinned", {"model": {"uri": MODEL_URI, "sha256": MODEL_SHA}, "replicas": 0})
    tts_user.create_tts(namespace, pinned)
    deployment = wait_for(
        "the Deployment of the pinned model", lambda: kube.deployment(namespace, "pinned"), 60
    )
    template = deployment["spec"]["template"]["spec"]
    [init] = template["initContainers"]
    assert init["name"] == "model-fetch"
    assert init["command"] == ["python3", "-m", "tts_runtime.fetch"]
    assert init["args"] == [
        MODEL_URI, "/models", "--max-bytes", str(2 << 30), "--deadline-seconds", "900",
        "--sha256", MODEL_SHA,
    ]  # fmt: skip
    [volume] = [v for v in template["volumes"] if v["name"] == "model"]
    assert volume["emptyDir"] == {"sizeLimit": "2112Mi"}
