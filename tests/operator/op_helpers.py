"""Helpers the operator unit tests share (no cluster, no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def tts_body(
    spec: dict[str, Any], name: str = "voice", namespace: str = "speech"
) -> dict[str, Any]:
    """A TTSService object as the API server hands it to the operator."""
    return {
        "apiVersion": "ttsoperator.io/v1alpha1",
        "kind": "TTSService",
        "metadata": {"name": name, "namespace": namespace, "uid": "uid-1234", "generation": 3},
        "spec": spec,
    }


def unschedulable_pod(
    message: str, instance: str = "voice", namespace: str = "speech"
) -> dict[str, Any]:
    """A Pending runtime pod the scheduler could not place, with the scheduler's message."""
    return {
        "kind": "Pod",
        "metadata": {
            "name": f"{instance}-pod",
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "tts-runtime",
                "app.kubernetes.io/instance": instance,
            },
        },
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                }
            ],
        },
    }
