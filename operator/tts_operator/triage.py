"""What a watch event of a child or pod asks for: nothing, a status refresh, or a full pass.

kopf delivers every event of every child and pod, and most change nothing the operator
cares about: a controller writing a PodDisruptionBudget's status or the Deployment's
revision annotation, the ADDED event of a child the operator just applied, a healthy pod
going Running. Each pass leaves here what it built (the desired children) and what the
status it wrote was computed from (the Deployment's rollout signal, the pods that showed a
problem), so an event is judged in memory, without an API call:

- a child deleted, or no longer holding what the operator applies (drift, drift.py), or
  one the last pass did not want: a full pass;
- a Deployment whose rollout signal, or a pod whose problem facts, differ from what the
  status was computed from: a status refresh;
- anything else: nothing.

Nothing known about a TTSService (a new operator process before its resume passes, a
failed pass) means a pass: the memory only ever saves passes that would change nothing.
"""

from __future__ import annotations

import enum
import threading

from tts_operator.builders import ChildRef
from tts_operator.drift import up_to_date
from tts_operator.kinds import DEPLOYMENT, POD, Manifest
from tts_operator.status import Observed, PodFacts, pod_facts, rollout_signal

OwnerKey = tuple[str, str]  # namespace, TTSService name
ChildKey = tuple[str, str, str]  # kind, namespace, name


class Need(enum.Enum):
    NONE = "none"
    STATUS = "status"
    FULL = "full"


class Triage:
    """The operator's memory of its last passes, per TTSService (thread-safe: passes run
    in worker threads, events are judged on the event loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._desired: dict[ChildKey, Manifest] = {}
        self._children: dict[OwnerKey, list[ChildKey]] = {}
        self._rollout: dict[OwnerKey, tuple[object, ...] | None] = {}
        self._pods: dict[OwnerKey, dict[str, PodFacts]] = {}

    def built(
        self, namespace: str, owner: str, desired: list[Manifest], unwanted: list[ChildRef]
    ) -> None:
        """A pass built these children (stamped, about to be applied or found up to date)."""
        keys = [(m["kind"], namespace, m["metadata"]["name"]) for m in desired]
        with self._lock:
            for key in self._children.get((namespace, owner), []):
                self._desired.pop(key, None)
            self._desired.update(zip(keys, desired, strict=True))
            self._children[(namespace, owner)] = keys

    def reporting_from(self, namespace: str, owner: str, deployment: Manifest | None) -> None:
        """A full pass applied (or found current) this Deployment and is about to report a
        status computed from it: the Deployment's own watch event, which can arrive before
        the pass reports, needs no refresh. (Should the pass fail instead, it is retried.)"""
        with self._lock:
            self._rollout[(namespace, owner)] = rollout_signal(deployment)

    def observed(self, namespace: str, owner: str, seen: Observed) -> None:
        """A pass wrote (or found current) a status computed from `seen`."""
        problems = {
            pod["metadata"]["name"]: facts
            for pod in seen.pods
            if (facts := pod_facts(pod)) is not None
        }
        with self._lock:
            self._rollout[(namespace, owner)] = rollout_signal(seen.deployment)
            self._pods[(namespace, owner)] = problems

    def forget(self, namespace: str, owner: str) -> None:
        """The TTSService is gone (or its status was not computed): know nothing of it."""
        key = (namespace, owner)
        with self._lock:
            for child in self._children.pop(key, []):
                self._desired.pop(child, None)
            self._rollout.pop(key, None)
            self._pods.pop(key, None)

    def unknown(self, namespace: str, owner: str) -> bool:
        with self._lock:
            return (namespace, owner) not in self._children

    def need(self, kind: str, event_type: str, body: Manifest, owner: str) -> Need:
        """What the watch event (`event_type` ADDED, MODIFIED or DELETED) of a child or pod
        of TTSService `owner` asks for."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        okey = (namespace, owner)
        gone = event_type == "DELETED"
        with self._lock:
            if kind == POD.kind:
                known = self._pods.get(okey)
                facts = None if gone else pod_facts(body)
                same = known is not None and known.get(name) == facts
                return Need.NONE if same else Need.STATUS
            children = self._children.get(okey)
            desired = self._desired.get((kind, namespace, name))
            rollout = self._rollout.get(okey, ())
        if children is None:
            return Need.FULL
        if desired is None:  # a child the last pass did not want: gone is what it wants
            return Need.NONE if gone else Need.FULL
        if gone or not up_to_date(desired, body):
            return Need.FULL
        if kind == DEPLOYMENT.kind and rollout_signal(body) != rollout:
            return Need.STATUS
        return Need.NONE
