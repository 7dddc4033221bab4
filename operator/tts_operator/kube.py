"""Kubernetes API access: server-side apply, get, delete, list and status patches.

Uses the official client's generic `call_api` so one code path serves every kind, with
server-side apply (`application/apply-patch+yaml`, field manager "tts-operator",
force=True): applying the same manifest twice changes nothing, and a field we stop sending
is a field we stop owning. Every request has a timeout (a connection the API server never
answers must not hold a TTSService's pass forever), and every write is counted
(tts_operator_api_writes_total).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tts_operator.kinds import BY_KIND, TTSSERVICE, Manifest
from tts_operator.metrics import API_WRITES
from tts_operator.settings import FIELD_MANAGER

# Names the operator's own requests in the API server's audit log (kopf's say "kopf/...").
USER_AGENT = "tts-operator"


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """REST path of a namespaced object (or collection when name is None); `kind` is one of
    kinds.KINDS."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{BY_KIND[kind].plural}"
    return f"{path}/{name}" if name else path


def load_client(connections: int | None = None) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config.
    `connections`: how many threads use it at once; the pool keeps that many connections
    open (a smaller pool drops the extras and pays a TLS handshake on each later request)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    if connections is not None:
        configuration.connection_pool_maxsize = max(connections, 1)
    api = client.ApiClient(configuration)
    api.user_agent = USER_AGENT
    return api


def owns_field(obj: Manifest, manager: str, *path: str) -> bool:
    """Whether `manager` owns the field at `path` (e.g. "spec", "replicas") through Apply."""
    for entry in obj.get("metadata", {}).get("managedFields", []) or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        node = entry.get("fieldsV1", {})
        for key in path:
            node = node.get(f"f:{key}") if isinstance(node, dict) else None
        if node is not None:
            return True
    return False


class Kube:
    """The few API calls reconciliation needs, on one ApiClient."""

    def __init__(
        self, api: client.ApiClient, field_manager: str = FIELD_MANAGER, timeout: float = 30.0
    ) -> None:
        self.api = api
        self.field_manager = field_manager
        self.timeout = timeout

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Manifest:
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=self.timeout)
        response.read()  # type: ignore[no-untyped-call]
        # Raises ApiException (with .status and .body) for anything but 2xx.
        result = self.api.response_deserialize(response, {"2XX": "object"}).data
        return result if isinstance(result, dict) else {}

    def apply(self, manifest: Manifest, field_manager: str | None = None) -> Manifest:
        """Server-side apply; returns the live object (status included)."""
        meta = manifest["metadata"]
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        )
        API_WRITES.labels("apply", manifest["kind"]).inc()
        return self._call(
            "PATCH",
            path,
            body=manifest,
            query=[("fieldManager", field_manager or self.field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        try:
            return self._call("GET", resource_path(api_version, kind, namespace, name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        API_WRITES.labels("delete", kind).inc()
        try:
            self._call("DELETE", resource_path(api_version, kind, namespace, name))
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[Manifest]:
        result = self._call(
            "GET", resource_path(api_version, kind, namespace), query=[("labelSelector", selector)]
        )
        items: list[Manifest] = result.get("items", []) or []
        return items

    def patch_status(self, namespace: str, name: str, status: Manifest) -> Manifest:
        """Merge-patch a TTSService's status subresource."""
        path = resource_path(TTSSERVICE.api_version, TTSSERVICE.kind, namespace, name) + "/status"
        API_WRITES.labels("patch", f"{TTSSERVICE.kind}/status").inc()
        return self._call(
            "PATCH", path, body={"status": status}, content_type="application/merge-patch+json"
        )

    def exists(self, path: str) -> bool:
        """GET an object by its REST path: False on 404 (e.g. a peering object not made yet)."""
        try:
            self._call("GET", path)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    def create_if_missing(self, manifest: Manifest, collection_path: str) -> bool:
        """POST an object; False when it already exists."""
        API_WRITES.labels("create", str(manifest.get("kind"))).inc()
        try:
            self._call("POST", collection_path, body=manifest)
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        return True
