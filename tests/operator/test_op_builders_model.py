"""Model delivery: PVC mount, init-container download, hostPath."""

from __future__ import annotations

from typing import Any

import pytest
from builder_helpers import IMAGE, children, kind, pod, spec_of
from tts_operator.builders.model import FETCH_CONTAINER, model_delivery


def test_pvc_delivery_mounts_the_claim_read_only() -> None:
    d = model_delivery("pvc://voices/a/b.onnx", IMAGE, {})
    assert d.claim == "voices" and d.model_path == "/models/a/b.onnx"
    assert d.volume["persistentVolumeClaim"] == {"claimName": "voices", "readOnly": True}
    assert model_delivery("pvc://voices", IMAGE, {}).model_path == "/models"


def test_http_delivery_downloads_in_an_init_container() -> None:
    spec = spec_of(model={"uri": "https://h/v/en.onnx"})
    p = pod(spec)
    [init] = p["initContainers"]
    assert init["name"] == FETCH_CONTAINER and init["image"] == IMAGE
    assert "https://h/v/en.onnx" in init["command"]
    assert {"name": "model", "emptyDir": {}} in p["volumes"]
    data = kind(children(spec), "ConfigMap")["data"]
    assert data["TTS_MODEL_PATH"] == "/models"


def test_fetch_script_downloads_model_and_config(tmp_path: Any) -> None:
    """The init container's script, run for real against file:// URLs."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "v.onnx").write_bytes(b"onnx")
    (src / "v.onnx.json").write_text("{}")
    dest = tmp_path / "models"
    dest.mkdir()
    d = model_delivery("https://unused/v.onnx", IMAGE, {})
    script = d.init_containers[0]["command"][2]
    subprocess.run([sys.executable, "-c", script, (src / "v.onnx").as_uri(), str(dest)], check=True)
    assert (dest / "model.onnx").read_bytes() == b"onnx"
    assert (dest / "model.onnx.json").read_text() == "{}"
    assert sorted(p.name for p in dest.iterdir()) == ["model.onnx", "model.onnx.json"]


@pytest.mark.parametrize(
    ("uri", "host", "path"),
    [
        ("file:///data/v/en.onnx", "/data/v", "/models/en.onnx"),
        ("file:///data/v/", "/data/v", "/models"),
    ],
)
def test_file_delivery_uses_host_path(uri: str, host: str, path: str) -> None:
    d = model_delivery(uri, IMAGE, {})
    assert d.volume["hostPath"]["path"] == host and d.model_path == path
