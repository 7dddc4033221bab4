"""Run the real helm binary against charts/tts-operator and parse what it renders."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tts-operator"
NAMESPACE = "tts-system"
RELEASE = "tts"

HELM_MISSING = (
    "helm binary not built: run hack/cluster-binaries.sh (it builds "
    ".cache/k8s/<version>/bin/helm), or set HELM=/path/to/helm"
)


def find_helm() -> str | None:
    """HELM from the environment, else the one hack/cluster-binaries.sh built, else PATH."""
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    built = sorted(glob.glob(str(ROOT / ".cache" / "k8s" / "*" / "bin" / "helm")))
    if built:
        return built[-1]
    return shutil.which("helm")


@dataclass
class Rendered:
    """The objects one `helm template` produced, by kind and name."""

    docs: list[dict[str, Any]]

    def kinds(self) -> list[str]:
        return sorted(d["kind"] for d in self.docs)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, rendered {len(found)}: {self.kinds()}"
        return found[0]


class Helm:
    def __init__(self, binary: str) -> None:
        self.binary = binary

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def template(self, *args: str, chart: Path = CHART) -> Rendered:
        out = self.run("template", RELEASE, str(chart), "--namespace", NAMESPACE, *args).stdout
        return Rendered([d for d in yaml.safe_load_all(out) if d])

    def template_error(self, *args: str) -> str:
        """Render expecting failure; returns helm's error output."""
        proc = self.run("template", RELEASE, str(CHART), "-n", NAMESPACE, *args, check=False)
        assert proc.returncode != 0, f"helm template {args} unexpectedly succeeded"
        return proc.stderr
