"""The one table of Kubernetes kinds the operator touches.

Each row says where a kind lives (apiVersion, REST plural), whether it is a child the
operator applies and watches, and which verbs the operator's calls need on it. The handlers
watch the children listed here, the client builds REST paths from it, the builders stamp
apiVersion/kind from it, and the chart's RBAC test checks the chart grants exactly these
verbs (kopf's own peering objects aside).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tts_operator.models import GROUP, PLURAL, VERSION

Manifest = dict[str, Any]

# Server-side apply creates or patches; the operator reads each child before applying
# (get) and kopf watches it (list, watch).
APPLIED = frozenset({"get", "list", "watch", "create", "patch"})


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    verbs: frozenset[str]
    child: bool = False
    """A child of a TTSService: applied by the operator, watched for drift."""
    status_verbs: frozenset[str] = frozenset()
    """Verbs on the status subresource."""

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def header(self) -> Manifest:
        """The apiVersion and kind fields of a manifest of this kind."""
        return {"apiVersion": self.api_version, "kind": self.kind}


TTSSERVICE = Kind(
    f"{GROUP}/{VERSION}",
    "TTSService",
    PLURAL,
    frozenset({"get", "list", "watch"}),
    status_verbs=frozenset({"patch"}),
)
CONFIGMAP = Kind("v1", "ConfigMap", "configmaps", APPLIED, child=True)
SERVICE = Kind("v1", "Service", "services", APPLIED, child=True)
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments", APPLIED, child=True)
# Also deleted when autoscaling / the PDB is switched off (the others never are: the garbage
# collector removes children).
HPA = Kind(
    "autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
    APPLIED | {"delete"}, child=True,
)  # fmt: skip
# Only with autoscaling.provider keda (KEDA's CRD must then be installed).
SCALEDOBJECT = Kind(
    "keda.sh/v1alpha1", "ScaledObject", "scaledobjects", APPLIED | {"delete"}, child=True
)
PDB = Kind(
    "policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", APPLIED | {"delete"}, child=True
)
POD = Kind("v1", "Pod", "pods", frozenset({"list", "watch"}))
PVC = Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims", frozenset({"get"}))
EVENT = Kind("v1", "Event", "events", frozenset({"create"}))  # kopf.event posts them

KINDS = (TTSSERVICE, CONFIGMAP, SERVICE, DEPLOYMENT, HPA, SCALEDOBJECT, PDB, POD, PVC, EVENT)
CHILDREN = tuple(k for k in KINDS if k.child)
BY_KIND = {k.kind: k for k in KINDS}


def rbac_needs() -> dict[tuple[str, str], set[str]]:
    """(API group, resource) -> the verbs the operator's own calls need."""
    needs = {(k.group, k.plural): set(k.verbs) for k in KINDS}
    needs |= {(k.group, f"{k.plural}/status"): set(k.status_verbs) for k in KINDS if k.status_verbs}
    return needs
