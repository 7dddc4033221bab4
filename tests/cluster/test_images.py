"""images: hack/build-images.sh's KEY=VALUE output, parsed into the archives containerd imports."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from tts_cluster.base import ClusterError
from tts_cluster.images import IMAGES_SCRIPT, Images

NAMES = {
    "RUNTIME": "localhost/tts-runtime:dev",
    "OPERATOR": "localhost/tts-operator:dev",
    "PAUSE": "localhost/tts-pause:3.10",
}


def _output(tmp_path: Path, *, drop: str | None = None) -> str:
    lines = ["STORAGE_DRIVER=vfs", "BASE_IMAGE=localhost/tts-base:bookworm"]
    for key, name in NAMES.items():
        archive = tmp_path / f"{key.lower()}.oci.tar"
        if not archive.exists():
            archive.write_bytes(b"x" * (len(key) * 10))
        lines += [
            f"{key}_IMAGE={name}",
            f"{key}_ARCHIVE={archive}",
            f"{key}_IMAGE_BYTES={len(key) * 1000}",
        ]
    return "\n".join(line for line in lines if not (drop and line.startswith(f"{drop}="))) + "\n"


def test_parses_each_image(tmp_path: Path) -> None:
    images = Images.from_script_output(_output(tmp_path))
    assert images.runtime.name == NAMES["RUNTIME"]
    assert images.operator.name == NAMES["OPERATOR"]
    assert images.pause.name == NAMES["PAUSE"]
    assert images.runtime.archive == tmp_path / "runtime.oci.tar"
    assert images.operator.archive == tmp_path / "operator.oci.tar"
    assert images.pause.archive == tmp_path / "pause.oci.tar"
    # The pause image is imported first: the sandbox needs it before any pod.
    assert images.all == [images.pause, images.runtime, images.operator]
    assert images.sizes == {
        "RUNTIME_IMAGE_BYTES": 7000,
        "OPERATOR_IMAGE_BYTES": 8000,
        "PAUSE_IMAGE_BYTES": 5000,
    }


def test_sizes_skip_values_that_are_not_numbers(tmp_path: Path) -> None:
    text = _output(tmp_path).replace("PAUSE_IMAGE_BYTES=5000", "PAUSE_IMAGE_BYTES=")
    assert "PAUSE_IMAGE_BYTES" not in Images.from_script_output(text).sizes


def test_build_id_changes_when_the_archive_is_rebuilt(tmp_path: Path) -> None:
    text = _output(tmp_path)
    before = Images.from_script_output(text)
    assert before == Images.from_script_output(text)
    archive = tmp_path / "runtime.oci.tar"
    archive.write_bytes(b"rebuilt, and longer than before")
    os.utime(archive, ns=(1, 1))
    after = Images.from_script_output(text)
    assert after.runtime.build_id != before.runtime.build_id
    assert after.operator.build_id == before.operator.build_id


@pytest.mark.parametrize("key", ["RUNTIME_IMAGE", "OPERATOR_ARCHIVE", "PAUSE_IMAGE"])
def test_a_missing_key_is_named(tmp_path: Path, key: str) -> None:
    with pytest.raises(ClusterError, match=key) as raised:
        Images.from_script_output(_output(tmp_path, drop=key))
    assert str(IMAGES_SCRIPT) in str(raised.value)


def test_a_missing_archive_is_a_cluster_error(tmp_path: Path) -> None:
    text = _output(tmp_path)
    (tmp_path / "operator.oci.tar").unlink()
    with pytest.raises(ClusterError, match="image archive missing"):
        Images.from_script_output(text)


def test_the_script_prints_every_key_the_parser_reads(tmp_path: Path) -> None:
    """The keys in build-images.sh's final heredoc, given values, parse."""
    heredoc = IMAGES_SCRIPT.read_text().rsplit("cat <<EOF\n", 1)[1].split("\nEOF", 1)[0]
    keys = re.findall(r"^([A-Z0-9_]+)=", heredoc, re.MULTILINE)
    assert len(keys) == len(heredoc.splitlines())
    lines = []
    for key in keys:
        if key.endswith("_ARCHIVE"):
            (tmp_path / key).write_bytes(b"oci")
            lines.append(f"{key}={tmp_path / key}")
        elif key.endswith("_BYTES"):
            lines.append(f"{key}=3")
        else:
            lines.append(f"{key}=localhost/{key.lower()}:dev")
    images = Images.from_script_output("\n".join(lines))
    assert images.runtime.name == "localhost/runtime_image:dev"
    assert set(images.sizes) == {k for k in keys if k.endswith("_BYTES")}
