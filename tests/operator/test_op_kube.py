"""Kube: the real Kubernetes client against a recording HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tts_operator.kube import USER_AGENT, Kube, load_client, owns_field, resource_path
from tts_operator.metrics import REGISTRY
from tts_operator.retry import retryable


class Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []
    replies: ClassVar[dict[tuple[str, str], tuple[int, dict[str, Any]]]] = {}
    delay: ClassVar[float] = 0.0

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        self.seen.append(
            {
                "method": self.command,
                "path": parts.path,
                "query": parse_qs(parts.query),
                "content_type": self.headers.get("Content-Type"),
                "body": json.loads(body) if body else None,
                "user_agent": self.headers.get("User-Agent"),
            }
        )
        time.sleep(self.delay)
        code, reply = self.replies.get((self.command, parts.path), (200, {"kind": "Echo"}))
        data = json.dumps(reply).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    do_GET = do_PATCH = do_DELETE = do_POST = _handle

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kube() -> Iterator[Kube]:
    Recorder.seen, Recorder.replies, Recorder.delay = [], {}, 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    conf = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield Kube(client.ApiClient(conf))
    finally:
        server.shutdown()
        server.server_close()


def test_paths() -> None:
    assert resource_path("v1", "ConfigMap", "ns", "a") == "/api/v1/namespaces/ns/configmaps/a"
    assert resource_path("apps/v1", "Deployment", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert (
        resource_path("ttsoperator.io/v1alpha1", "TTSService", "ns", "x")
        == "/apis/ttsoperator.io/v1alpha1/namespaces/ns/ttsservices/x"
    )


def test_apply_is_server_side_apply_with_force(kube: Kube) -> None:
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "a", "namespace": "n"},
    }
    assert kube.apply(manifest) == {"kind": "Echo"}
    [req] = Recorder.seen
    assert req["method"] == "PATCH"
    assert req["path"] == "/apis/apps/v1/namespaces/n/deployments/a"
    assert req["query"] == {"fieldManager": ["tts-operator"], "force": ["true"]}
    assert req["content_type"] == "application/apply-patch+yaml"
    assert req["body"] == manifest


def test_get_and_delete_treat_404_as_absent(kube: Kube) -> None:
    Recorder.replies[("GET", "/api/v1/namespaces/n/services/gone")] = (404, {"kind": "Status"})
    Recorder.replies[("DELETE", "/api/v1/namespaces/n/services/gone")] = (404, {"kind": "Status"})
    assert kube.get("v1", "Service", "n", "gone") is None
    assert kube.delete("v1", "Service", "n", "gone") is False
    assert kube.delete("v1", "Service", "n", "here") is True


def test_other_errors_raise(kube: Kube) -> None:
    Recorder.replies[("GET", "/api/v1/namespaces/n/services/x")] = (403, {"kind": "Status"})
    with pytest.raises(ApiException) as info:
        kube.get("v1", "Service", "n", "x")
    assert info.value.status == 403


def test_list_uses_the_label_selector(kube: Kube) -> None:
    Recorder.replies[("GET", "/api/v1/namespaces/n/pods")] = (200, {"items": [{"kind": "Pod"}]})
    assert kube.list("v1", "Pod", "n", "a=b,c=d") == [{"kind": "Pod"}]
    assert Recorder.seen[0]["query"] == {"labelSelector": ["a=b,c=d"]}


def test_patch_status_merges_into_the_subresource(kube: Kube) -> None:
    kube.patch_status("n", "x", {"replicas": 1})
    [req] = Recorder.seen
    assert req["path"] == "/apis/ttsoperator.io/v1alpha1/namespaces/n/ttsservices/x/status"
    assert req["content_type"] == "application/merge-patch+json"
    assert req["body"] == {"status": {"replicas": 1}}


def test_create_if_missing(kube: Kube) -> None:
    Recorder.replies[("POST", "/apis/kopf.dev/v1/clusterkopfpeerings")] = (409, {"kind": "Status"})
    assert kube.create_if_missing({"kind": "X"}, "/apis/kopf.dev/v1/clusterkopfpeerings") is False
    assert kube.create_if_missing({"kind": "X"}, "/apis/kopf.dev/v1/other") is True


def test_owns_field_reads_managed_fields() -> None:
    obj = {
        "metadata": {
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}},
                },
                {
                    "manager": "tts-operator",
                    "operation": "Apply",
                    "fieldsV1": {"f:spec": {"f:template": {}}},
                },
            ]
        }
    }
    assert not owns_field(obj, "tts-operator", "spec", "replicas")
    assert owns_field(obj, "tts-operator", "spec", "template")
    assert not owns_field(obj, "kube-controller-manager", "spec", "replicas")  # Update, not Apply


def writes(verb: str, kind: str) -> float:
    found = REGISTRY.get_sample_value("tts_operator_api_writes_total", {"verb": verb, "kind": kind})
    return found or 0.0


def test_every_write_is_counted_by_verb_and_kind(kube: Kube) -> None:
    counted = [
        ("apply", "Service"),
        ("patch", "TTSService/status"),
        ("delete", "PodDisruptionBudget"),
    ]
    before = [writes(*c) for c in counted] + [writes("create", "KopfPeering")]
    kube.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "n"}})
    kube.patch_status("n", "x", {"replicas": 1})
    kube.delete("policy/v1", "PodDisruptionBudget", "n", "a")
    kube.create_if_missing({"kind": "KopfPeering"}, "/apis/kopf.dev/v1/namespaces/n/kopfpeerings")
    kube.get("v1", "Service", "n", "a")  # reads are not writes
    kube.list("v1", "Pod", "n", "a=b")
    after = [writes(*c) for c in counted] + [writes("create", "KopfPeering")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]


def test_a_request_that_gets_no_answer_times_out(kube: Kube) -> None:
    slow = Kube(kube.api, timeout=0.2)
    Recorder.delay = 1.0
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError) as info:
        slow.apply(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "n"}}
        )
    assert time.monotonic() - started < 0.9
    assert retryable(info.value)


def test_the_operator_names_itself_in_its_requests(
    kube: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_in_a_pod() -> None:
        raise config.ConfigException("not in a pod")

    monkeypatch.setattr(config, "load_incluster_config", not_in_a_pod)
    monkeypatch.setattr(config, "load_kube_config", lambda: None)
    api = load_client()
    assert api.user_agent == USER_AGENT
    api.configuration.host = kube.api.configuration.host
    Kube(api).get("v1", "Service", "n", "a")
    assert Recorder.seen[-1]["user_agent"] == USER_AGENT
