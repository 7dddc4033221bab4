"""Scenario 6: invalid TTSServices are refused by the API server itself, with the schema's
and the CEL rules' own messages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubeapi import MODEL_URI, E2EKube, tts_body
from kubernetes.client import ApiException

MODEL = {"uri": MODEL_URI}
# Whole specs (not merged over the tests' base spec, which would fill in a model uri).
CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "min-above-max",
        {"model": MODEL, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
        ["autoscaling.minReplicas must be <= autoscaling.maxReplicas"],
    ),
    (
        "negative-gpus",
        {"model": MODEL, "runtime": {"gpu": {"count": -1}}},
        ["spec.runtime.gpu.count", "should be greater than or equal to 0"],
    ),
    (
        "unknown-precision",
        {"model": {"uri": MODEL_URI, "precision": "fp8"}},
        ["spec.model.precision", 'Unsupported value: "fp8"'],
    ),
    ("missing-uri", {"model": {"precision": "fp16"}}, ["spec.model.uri", "Required value"]),
    (
        "replicas-with-autoscaling",
        {"model": MODEL, "replicas": 2, "autoscaling": {"enabled": True}},
        ["replicas and autoscaling.enabled are mutually exclusive"],
    ),
]


@pytest.mark.parametrize(("case", "spec", "messages"), CASES, ids=[c[0] for c in CASES])
def test_api_server_rejects_invalid_ttsservice(
    kube: E2EKube, crds: None, namespace: str, case: str, spec: dict[str, Any], messages: list[str]
) -> None:
    with pytest.raises(ApiException) as refused:
        kube.create_tts(namespace, {**tts_body(case), "spec": spec})
    assert refused.value.status == 422
    message = json.loads(refused.value.body or "{}")["message"]
    for expected in messages:
        assert expected in message
    assert not kube.tts_exists(namespace, case)
