"""Images the chart runs: the operator's by tag or by digest (image.digest), the default runtime
image by tag or by digest (operator.defaultRuntimeImage), and the schema's digest format."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from chart_helpers import CHART, Helm

DIGEST = "sha256:" + "0123456789abcdef" * 4
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
SCHEMA_ERROR = "values don't meet the specifications of the schema"


def _container(helm: Helm, *args: str) -> dict[str, Any]:
    containers = helm.template(*args).one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_the_operator_image_defaults_to_the_app_version_tag(helm: Helm) -> None:
    assert _container(helm)["image"] == f"ghcr.io/tts-operator/tts-operator:{APP_VERSION}"


def test_a_tag_names_the_operator_image(helm: Helm) -> None:
    container = _container(helm, "--set", "image.repository=registry.example/tts/op",
                           "--set", "image.tag=1.2.3")  # fmt: skip
    assert container["image"] == "registry.example/tts/op:1.2.3"


@pytest.mark.parametrize("tag", ["", "1.2.3"])
def test_a_digest_pins_the_operator_image_and_the_tag_is_ignored(helm: Helm, tag: str) -> None:
    container = _container(
        helm,
        "--set", "image.repository=registry.example/tts/op",
        "--set", f"image.tag={tag}",
        "--set", f"image.digest={DIGEST}",
    )  # fmt: skip
    assert container["image"] == f"registry.example/tts/op@{DIGEST}"


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:abc",  # too short
        "0123456789abcdef" * 4,  # no algorithm
        "@" + DIGEST,  # the separator belongs to the template
        DIGEST.upper().replace("SHA256", "sha256"),  # digests are lowercase hex
        "sha512:" + "ab" * 64,  # only sha256 digests are accepted
        DIGEST + " ",
    ],
)
def test_the_schema_rejects_a_malformed_operator_digest(helm: Helm, digest: str) -> None:
    error = helm.template_error("--set-string", f"image.digest={digest}")
    assert SCHEMA_ERROR in error, error
    assert "digest" in error and "pattern" in error, error


def test_the_default_runtime_image_may_be_given_by_digest(helm: Helm) -> None:
    from tts_operator.policy import Policy, image_allowed, image_prefixes

    image = f"registry.example/tts/tts-runtime@{DIGEST}"
    env = _env(_container(helm, "--set", f"operator.defaultRuntimeImage={image}"))
    assert env["TTS_OPERATOR_RUNTIME_IMAGE"] == image
    # With no allowedImagePrefixes, the policy allows that repository, by digest or tag, and
    # nothing that merely starts like it.
    prefixes = image_prefixes(Policy(), env["TTS_OPERATOR_RUNTIME_IMAGE"])
    assert prefixes == ["registry.example/tts/tts-runtime"]
    assert image_allowed(image, prefixes)
    assert image_allowed("registry.example/tts/tts-runtime:0.2.0", prefixes)
    assert not image_allowed("registry.example/tts/tts-runtime-evil@" + DIGEST, prefixes)


@pytest.mark.parametrize(
    "image",
    [
        "registry.example/tts/tts-runtime@sha256:abc",
        "registry.example/tts/tts-runtime@" + "0123456789abcdef" * 4,
        "registry.example/tts/tts-runtime@@" + DIGEST,
        "registry.example/tts/tts runtime:1.0",
    ],
)
def test_the_schema_rejects_a_malformed_default_runtime_image(helm: Helm, image: str) -> None:
    error = helm.template_error("--set-string", f"operator.defaultRuntimeImage={image}")
    assert SCHEMA_ERROR in error, error
    assert "defaultRuntimeImage" in error and "pattern" in error, error
