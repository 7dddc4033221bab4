"""The Service builder: ClientIP affinity, ports, endpoint."""

from __future__ import annotations

from builder_helpers import children, kind, spec_of
from tts_operator.builders.service import endpoint


def test_service_is_client_ip_affine_by_default() -> None:
    svc = kind(children(spec_of()), "Service")["spec"]
    assert svc["sessionAffinity"] == "ClientIP"
    assert svc["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 300}}
    assert svc["ports"][0]["port"] == 8000 and svc["ports"][0]["targetPort"] == "http"
    assert svc["selector"] == {
        "app.kubernetes.io/name": "tts-runtime",
        "app.kubernetes.io/instance": "voice",
    }
    none = kind(children(spec_of(service={"sessionAffinity": "None"})), "Service")["spec"]
    assert none["sessionAffinity"] == "None" and "sessionAffinityConfig" not in none
    assert endpoint("voice", "speech", spec_of()) == "http://voice.speech.svc.cluster.local:8000"
