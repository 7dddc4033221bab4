"""An in-memory stand-in for the API server, just faithful enough for reconcile's logic:
server-side apply ownership of Deployment .spec.replicas (a field dropped by its only
manager is reset; one co-owned survives), 404s, a change counter to check idempotence, and a
log of every apply and delete (which objects a write reached).
The real API server is exercised by the e2e suite."""

from __future__ import annotations

import copy
from typing import Any

from kubernetes.client.exceptions import ApiException

Key = tuple[str, str, str]  # kind, namespace, name


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.replica_owners: dict[Key, set[str]] = {}
        self.changes = 0
        self.status_patches: list[dict[str, Any]] = []
        self.fail_next_apply: Exception | None = None
        """Raised by the next apply (an ApiException, a urllib3 timeout ...), then cleared."""
        self.unserved_kinds: set[str] = set()
        """Kinds whose API the cluster does not serve (a CRD not installed): apply is a 404."""
        self.applied: list[Key] = []
        self.deleted: list[Key] = []
        self.listed: list[tuple[str, str, str]] = []
        """(kind, namespace, label selector) of each list call."""

    def add(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta["namespace"], meta["name"])] = copy.deepcopy(obj)

    def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        if self.fail_next_apply is not None:
            err, self.fail_next_apply = self.fail_next_apply, None
            raise err
        if manifest["kind"] in self.unserved_kinds:
            raise ApiException(status=404, reason="Not Found")
        manager = field_manager or "tts-operator"
        meta = manifest["metadata"]
        key = (manifest["kind"], meta["namespace"], meta["name"])
        self.applied.append(key)
        before = copy.deepcopy(self.objects.get(key))
        obj = copy.deepcopy(before) if before else {"status": {}}
        if manifest["kind"] == "Deployment":
            owners = self.replica_owners.setdefault(key, set())
            replicas = obj.get("spec", {}).get("replicas", 1)
            if "replicas" in manifest.get("spec", {}):
                owners.add(manager)
                replicas = manifest["spec"]["replicas"]
            elif manager in owners:
                owners.discard(manager)
                if not owners:
                    replicas = 1  # the API server's default once nobody owns the field
            merged = {k: v for k, v in manifest.items() if k != "status"}
            if manager != "tts-operator" and before:  # a partial apply: only replicas
                merged = copy.deepcopy(before)
            merged.setdefault("spec", {})["replicas"] = replicas
            merged["status"] = obj.get("status", {})
            merged["metadata"]["managedFields"] = [
                {"manager": m, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
                for m in sorted(owners)
            ]
            obj = merged
        else:
            obj = {**copy.deepcopy(manifest), "status": obj.get("status", {})}
        if obj != before:
            self.changes += 1
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found else None

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.deleted.append((kind, namespace, name))
        if self.objects.pop((kind, namespace, name), None) is None:
            return False
        self.changes += 1
        return True

    def list(
        self, api_version: str, kind: str, namespace: str, selector: str
    ) -> list[dict[str, Any]]:
        self.listed.append((kind, namespace, selector))
        wanted = dict(part.split("=", 1) for part in selector.split(","))
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in self.objects.items()
            if k == kind
            and ns == namespace
            and wanted.items() <= o.get("metadata", {}).get("labels", {}).items()
        ]

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.status_patches.append(copy.deepcopy(status))
        owner = self.objects.get(("TTSService", namespace, name))
        if owner is not None:
            owner.setdefault("status", {}).update(copy.deepcopy(status))
        return {"status": status}
