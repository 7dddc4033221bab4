"""Certificates for the API server, its clients and the aggregation front proxy (openssl)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tts_cluster.base import ClusterError
from tts_cluster.network import API_SERVICE_IP, NODE_IP


@dataclass(frozen=True)
class Pki:
    """Certificates for the API server, its admin client and the aggregation front proxy."""

    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    def create(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise ClusterError("openssl is needed to create the local cluster's certificates")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ca(openssl, "ca", "tts-e2e-ca")
        self._ca(openssl, "front-proxy-ca", "tts-e2e-front-proxy-ca")
        self._cert(
            openssl,
            "apiserver",
            "ca",
            "/CN=kube-apiserver",
            "extendedKeyUsage=serverAuth\n"
            f"subjectAltName=IP:127.0.0.1,IP:{API_SERVICE_IP},IP:{NODE_IP},DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc\n",
        )
        self._cert(
            openssl,
            "admin",
            "ca",
            "/O=system:masters/CN=tts-e2e-admin",
            "extendedKeyUsage=clientAuth\n",
        )
        self._cert(
            openssl,
            "front-proxy-client",
            "front-proxy-ca",
            "/CN=front-proxy-client",
            "extendedKeyUsage=clientAuth\n",
        )
        self._run(openssl, "genrsa", "-out", "sa.key", "2048")
        self._run(openssl, "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def issue(self, name: str, subject: str, extensions: str) -> None:
        """One more certificate from the cluster CA (NAME.crt, NAME.key), after `create`."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise ClusterError("openssl is needed to create the local cluster's certificates")
        self._cert(openssl, name, "ca", subject, extensions)

    def _run(self, *argv: str) -> None:
        result = subprocess.run(argv, cwd=self.dir, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ClusterError(f"{' '.join(argv[:3])} failed: {result.stderr.strip()}")

    def _ca(self, openssl: str, name: str, cn: str) -> None:
        self._run(
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={cn}",
        )  # fmt: skip

    def _cert(self, openssl: str, name: str, ca: str, subject: str, extensions: str) -> None:
        (self.dir / f"{name}.ext").write_text(extensions)
        self._run(
            openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
            "-keyout", f"{name}.key", "-out", f"{name}.csr",
        )  # fmt: skip
        self._run(
            openssl, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt",
            "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", "30",
            "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        )  # fmt: skip


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
