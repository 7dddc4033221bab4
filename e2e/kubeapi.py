"""Thin helpers over the Kubernetes Python client for the e2e tests: reads and waits.

Every assertion in the e2e tests is about what the API server returns; these helpers only
fetch objects and poll until a condition holds (with a clear message when it never does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client import ApiException

GROUP = "ttsoperator.io"
VERSION = "v1alpha1"
PLURAL = "ttsservices"
KIND = "TTSService"
MODEL_URI = "https://models.example.com/voices/en_US-lessac-medium.onnx"

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition the test waited for never held."""


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 60, every: float = 0.5
) -> T:
    """Poll `check` until it returns a truthy value; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            last = value
        except ApiException as error:  # not there yet, or the API server is restarting
            value, last = None, f"HTTP {error.status}: {error.reason}"
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(every)


# The spec every test TTSService starts from; the kind provider swaps in its runnable voice.
BASE_SPEC: dict[str, Any] = {"model": {"uri": MODEL_URI}}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` laid over `base`, recursively for nested objects."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def tts_body(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A TTSService manifest; `spec` is merged over BASE_SPEC (a minimal valid spec)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": merged(BASE_SPEC, spec or {}),
    }


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


class E2EKube:
    """The e2e tests' typed client: typed-ish access to the cluster behind one kubeconfig
    (the operator's own client is tts_operator.kube.Kube)."""

    def __init__(self, kubeconfig: Path, *, impersonate: str | None = None) -> None:
        loader: Any = config  # the loader functions carry no annotations
        self.kubeconfig = kubeconfig
        self.api_client: Any = loader.new_client_from_config(config_file=str(kubeconfig))
        if impersonate is not None:  # the session's admin (system:masters) may impersonate
            self.api_client.set_default_header("Impersonate-User", impersonate)
        self.core: Any = client.CoreV1Api(self.api_client)
        self.apps: Any = client.AppsV1Api(self.api_client)
        self.autoscaling: Any = client.AutoscalingV2Api(self.api_client)
        self.policy: Any = client.PolicyV1Api(self.api_client)
        self.custom: Any = client.CustomObjectsApi(self.api_client)
        self.apiext: Any = client.ApiextensionsV1Api(self.api_client)

    def as_user(self, user: str) -> E2EKube:
        """The same cluster, every request made as `user` (Impersonate-User)."""
        return E2EKube(self.kubeconfig, impersonate=user)

    # -- namespaces and CRDs

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}})
        wait_for(
            f"default ServiceAccount in {name}",
            lambda: self.core.read_namespaced_service_account("default", name),
            30,
        )

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise

    def wait_crd_established(self, name: str) -> dict[str, Any]:
        def established() -> dict[str, Any] | None:
            crd = self.api_client.sanitize_for_serialization(
                self.apiext.read_custom_resource_definition(name)
            )
            ok = any(
                c["type"] == "Established" and c["status"] == "True"
                for c in crd.get("status", {}).get("conditions", [])
            )
            return dict(crd) if ok else None

        return wait_for(f"CRD {name} Established", established, 30)

    def wait_gc_tracks_ttsservices(self, timeout: float = 90) -> None:
        """Wait until the garbage collector watches TTSServices.

        kube-controller-manager rediscovers resource types every 30 s (not configurable);
        until then a deleted TTSService's children linger. An owned ConfigMap whose owner is
        deleted tells us when the collector has caught up, so later tests see real GC timing.
        """
        namespace = "e2e-gc-probe"
        self.create_namespace(namespace)
        owner = self.create_tts(namespace, tts_body("gc-probe"))
        meta = owner["metadata"]
        ref = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": meta["name"],
            "uid": meta["uid"],
        }
        self.core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "gc-probe", "ownerReferences": [ref]}}
        )
        self.delete_tts(namespace, "gc-probe")
        self.wait_gone(
            "the garbage collector to collect a TTSService's child",
            lambda: self.configmap(namespace, "gc-probe"),
            timeout,
        )
        self.delete_namespace(namespace)

    def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a pod, retrying while the ServiceAccount admission plugin's cache has not
        seen the namespace's default ServiceAccount yet (a new namespace, or a restarted
        API server); controllers retry the same way."""

        def create() -> dict[str, Any] | None:
            try:
                return self.plain(self.core.create_namespaced_pod(namespace, body))
            except ApiException as error:
                if error.status == 403 and "serviceaccount" in str(error.body):
                    return None
                raise

        return wait_for(f"pod {body['metadata']['name']} created", create, 30)

    # -- TTSServices

    def create_tts(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        )

    def get_tts(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        )

    def patch_tts(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch
            )
        )

    def delete_tts(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def tts_exists(self, namespace: str, name: str) -> bool:
        return self._exists(lambda: self.get_tts(namespace, name))

    def wait_tts_condition(
        self, namespace: str, name: str, type_: str, status: str, timeout: float = 90
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.get_tts(namespace, name)
            cond = condition(obj, type_)
            return obj if cond is not None and cond.get("status") == status else None

        return wait_for(f"TTSService {namespace}/{name} {type_}={status}", check, timeout)

    def wait_tts_ready(self, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
        return self.wait_tts_condition(namespace, name, "Ready", "True", timeout)

    # -- children

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return self.plain(self.apps.read_namespaced_deployment(name, namespace))

    def service(self, namespace: str, name: str) -> dict[str, Any]:
        return self.plain(self.core.read_namespaced_service(name, namespace))

    def hpa(self, namespace: str, name: str) -> dict[str, Any]:
        return self.plain(
            self.autoscaling.read_namespaced_horizontal_pod_autoscaler(name, namespace)
        )

    def pdb(self, namespace: str, name: str) -> dict[str, Any]:
        return self.plain(self.policy.read_namespaced_pod_disruption_budget(name, namespace))

    def configmap(self, namespace: str, name: str) -> dict[str, Any]:
        return self.plain(self.core.read_namespaced_config_map(name, namespace))

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector)
        return [self.plain(p) for p in pods.items]

    def replicasets(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        sets = self.apps.list_namespaced_replica_set(namespace, label_selector=selector)
        return [self.plain(r) for r in sets.items]

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return [self.plain(e) for e in self.core.list_namespaced_event(namespace).items]

    def wait_gone(self, what: str, read: Callable[[], Any], timeout: float = 60) -> None:
        wait_for(f"{what} to be deleted", lambda: not self._exists(read), timeout)

    def exists(self, read: Callable[[], Any]) -> bool:
        return self._exists(read)

    # -- internals

    def plain(self, obj: Any) -> dict[str, Any]:
        return dict(self.api_client.sanitize_for_serialization(obj))

    @staticmethod
    def _exists(read: Callable[[], Any]) -> bool:
        try:
            read()
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True


def is_ready(obj: dict[str, Any]) -> bool:
    return (condition(obj, "Ready") or {}).get("status") == "True"


def ready_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pods if is_ready(p)]
