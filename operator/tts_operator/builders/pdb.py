"""PodDisruptionBudget NAME: node drains take GPU pods down a few at a time."""

from __future__ import annotations

from tts_operator.builders.common import metadata, selector_labels
from tts_operator.kinds import PDB, Manifest
from tts_operator.models import TTSServiceSpec


def build_pdb(name: str, namespace: str, spec: TTSServiceSpec) -> Manifest:
    return {
        **PDB.header(),
        "metadata": metadata(name, namespace),
        "spec": {
            "maxUnavailable": spec.disruption.max_unavailable,
            "selector": {"matchLabels": selector_labels(name)},
        },
    }
