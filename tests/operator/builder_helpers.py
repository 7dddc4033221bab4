"""Helpers the builder tests share: build a spec's children and pick one out."""

from __future__ import annotations

from typing import Any

from tts_operator.builders import Children, build_children
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
