"""The project's images (runtime, operator, pause), built without a daemon by
hack/build-images.sh (debootstrap base, buildah, a host wheelhouse) and handed to the real
node's containerd as OCI archives."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tts_cluster.base import REPO_ROOT, ClusterError

IMAGES_SCRIPT = REPO_ROOT / "hack" / "build-images.sh"


@dataclass(frozen=True)
class Image:
    name: str  # e.g. localhost/tts-runtime:dev
    archive: Path  # an OCI archive `ctr images import` takes
    build_id: str  # changes whenever the image is rebuilt (the archive's size and mtime)


@dataclass(frozen=True)
class Images:
    runtime: Image
    operator: Image
    pause: Image
    sizes: dict[str, int]

    @property
    def all(self) -> list[Image]:
        return [self.pause, self.runtime, self.operator]

    @classmethod
    def from_script_output(cls, text: str) -> Images:
        values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

        def image(key: str) -> Image:
            try:
                archive = Path(values[f"{key}_ARCHIVE"])
                stat = archive.stat()
                return Image(values[f"{key}_IMAGE"], archive, f"{stat.st_size}-{stat.st_mtime_ns}")
            except KeyError as missing:
                raise ClusterError(f"{IMAGES_SCRIPT} did not print {missing}") from None
            except OSError as error:
                raise ClusterError(f"image archive missing: {error}") from None

        sizes = {k: int(v) for k, v in values.items() if k.endswith("_BYTES") and v.isdigit()}
        return cls(image("RUNTIME"), image("OPERATOR"), image("PAUSE"), sizes)


def locate_images(build: bool = False) -> Images:
    """The built images; without `build`, raise ClusterError naming what is missing."""
    args = [str(IMAGES_SCRIPT)] + ([] if build else ["--check"])
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise ClusterError(detail[0])
    return Images.from_script_output(result.stdout)
