"""Scenario 14 (issue 12): no reconcile is lost to a failing API server.

The operator under test reaches the API server only through a fault-injecting proxy
(faultproxy.py): a share of its own requests fail (500, 503, 429, 409, a write that lands but
whose answer never comes, a dropped connection) while TTSServices are created and their
children are deleted and edited by hand. A pass started by a child event that fails is
retried with backoff until it succeeds (no timer, no finalizer): first a pass whose writes
are made to fail three times in a row (without retries the deleted Service would never come
back: no other event follows), then random faults over several rounds of hand edits. Once
the faults are lifted, every child holds exactly what the operator builds from its
TTSService's spec, none is duplicated, and the operator process is the one that started.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
from e2e_provider import PROVIDER
from faultproxy import WRITES, FaultProxy
from kubeapi import E2EKube, is_ready, tts_body, wait_for
from kubernetes.client import ApiException
from operatorproc import OperatorProcess, e2e_policy
from tts_operator.builders import build_children
from tts_operator.drift import contains, stamp
from tts_operator.kinds import Manifest
from tts_operator.models import TTSServiceSpec
from tts_operator.policy import Policy, download_rules
from tts_operator.settings import OperatorSettings
from ttschildren import instance_selector, labelled_children

NAMES = [f"faulty-{i}" for i in range(4)]
# No GPU (the session's stub nodes have four, other tests' pods may hold some), but the
# toleration the GPU nodes' taint asks for.
SPEC: dict[str, Any] = {
    "replicas": 1,
    "runtime": {"gpu": {"count": 0}},
    "scheduling": {
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    },
}
API_TIMEOUT_SECONDS = 3  # the operator's request timeout
HOLD_SECONDS = 5  # how long a `timeout` fault holds the answer: past the operator's timeout
WRITE_FAULT_RATE = 0.3
READ_FAULT_RATE = 0.05
ROUNDS = 3
HAND = "someone-by-hand"


@pytest.fixture
def proxy(cluster: Any) -> Iterator[FaultProxy]:
    if PROVIDER != "local":
        pytest.skip("the proxy serves the local cluster's own certificates (E2E_PROVIDER=local)")
    faults = FaultProxy(cluster.server, Path(cluster.pki.dir), hold_seconds=HOLD_SECONDS)
    faults.start()
    yield faults
    faults.stop()


@pytest.fixture
def faulty_operator(
    cluster: Any, operator: OperatorProcess, proxy: FaultProxy, workdir: Path
) -> Iterator[OperatorProcess]:
    """The operator, talking to the API server only through the proxy. The session's
    operator stops meanwhile (both would act); the next test that needs it starts it again."""
    operator.stop()
    kubeconfig = proxy.write_kubeconfig(Path(cluster.kubeconfig), workdir / "proxy.kubeconfig")
    faulty = OperatorProcess(
        kubeconfig,
        workdir / "logs" / f"operator-faults-{time.monotonic_ns()}.log",
        name="operator-faults",
        priority=50,  # above any stale peer of the session's operator (kopf pauses on ties)
        extra_env={"TTS_OPERATOR_API_TIMEOUT_SECONDS": str(API_TIMEOUT_SECONDS)},
    )
    faulty.start()
    yield faulty
    faulty.stop()


def expected_children(tts: dict[str, Any]) -> list[Manifest]:
    """What the operator builds for this TTSService, with the operator's e2e settings."""
    settings = OperatorSettings(policy=Policy.model_validate(e2e_policy()))
    meta = tts["metadata"]
    kids = build_children(
        meta["name"],
        meta["namespace"],
        TTSServiceSpec.model_validate(tts["spec"]),
        settings.runtime_image,
        download_rules(settings.policy, settings.hf_endpoint),
        settings.prometheus_source,
    )
    kopf.adopt(kids.desired, owner=cast(Any, tts))
    return [stamp(m) for m in kids.desired]


def read_raw(kube: E2EKube, kind: str, namespace: str, name: str) -> Manifest | None:
    """A child as the API server stores it (raw JSON: the typed client drops fields it does
    not know); None when it does not exist."""
    readers: dict[str, Callable[..., Any]] = {
        "Deployment": kube.apps.read_namespaced_deployment,
        "Service": kube.core.read_namespaced_service,
        "ConfigMap": kube.core.read_namespaced_config_map,
        "PodDisruptionBudget": kube.policy.read_namespaced_pod_disruption_budget,
    }
    try:
        response = readers[kind](name, namespace, _preload_content=False)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return cast(Manifest, json.loads(response.data))


def drifted(kube: E2EKube, namespace: str, name: str) -> list[str]:
    """The children (kind/name) that do not hold every field the operator would apply."""
    tts = kube.get_tts(namespace, name)
    out = []
    for desired in expected_children(tts):
        kind, child = desired["kind"], desired["metadata"]["name"]
        live = read_raw(kube, kind, namespace, child)
        if live is None or not contains(live, desired):
            out.append(f"{kind}/{child}")
    return out


def in_spec(kube: E2EKube, namespace: str, name: str) -> bool:
    return not drifted(kube, namespace, name)


# Hand edits of fields the operator sets, and deletions: each has to be put back.
def delete_service(kube: E2EKube, namespace: str, name: str) -> None:
    kube.core.delete_namespaced_service(name, namespace)


def retag_image(kube: E2EKube, namespace: str, name: str) -> None:
    container = {"name": "tts-runtime", "image": "evil:1"}
    patch = {"spec": {"template": {"spec": {"containers": [container]}}}}
    kube.apps.patch_namespaced_deployment(name, namespace, patch, field_manager=HAND)


def edit_setting(kube: E2EKube, namespace: str, name: str) -> None:
    patch = {"data": {"TTS_MAX_BATCH_SIZE": "999"}}
    kube.core.patch_namespaced_config_map(f"{name}-runtime", namespace, patch, field_manager=HAND)


def delete_pdb(kube: E2EKube, namespace: str, name: str) -> None:
    kube.policy.delete_namespaced_pod_disruption_budget(name, namespace)


def drop_affinity(kube: E2EKube, namespace: str, name: str) -> None:
    patch = {"spec": {"sessionAffinity": "None", "sessionAffinityConfig": None}}
    kube.core.patch_namespaced_service(name, namespace, patch, field_manager=HAND)


def delete_configmap(kube: E2EKube, namespace: str, name: str) -> None:
    kube.core.delete_namespaced_config_map(f"{name}-runtime", namespace)


def widen_pdb(kube: E2EKube, namespace: str, name: str) -> None:
    patch = {"spec": {"maxUnavailable": 3}}
    kube.policy.patch_namespaced_pod_disruption_budget(name, namespace, patch, field_manager=HAND)


EDITS = [
    delete_service,
    retag_image,
    edit_setting,
    delete_pdb,
    drop_affinity,
    delete_configmap,
    widen_pdb,
]


def settle(operator: OperatorProcess, timeout: float = 30) -> None:
    """Wait (at most `timeout`) until no pass started for 3 s: a retry or a status refresh
    still waiting would take the forced faults meant for the next pass."""
    deadline = time.monotonic() + timeout
    before = operator.reconciles()
    while time.monotonic() < deadline:
        time.sleep(3)
        now = operator.reconciles()
        if now == before:
            return
        before = now


def test_no_reconcile_is_lost_to_api_faults(
    kube: E2EKube, proxy: FaultProxy, faulty_operator: OperatorProcess, namespace: str
) -> None:
    operator, faults = faulty_operator, proxy.plan
    assert operator.component is not None
    pid = operator.component.pid

    # 1. Created under faults (create passes are retried by kopf).
    faults.set(WRITE_FAULT_RATE, READ_FAULT_RATE)
    for name in NAMES:
        kube.create_tts(namespace, tts_body(name, SPEC))
    for name in NAMES:
        kube.wait_tts_ready(namespace, name, timeout=180)

    # 2. One child event's pass, and its first retry, fail for sure: the next three writes
    # for this TTSService (the Service's apply, the status saying so, the retry's apply)
    # fail. Nothing else would ever bring the Service back: only the retries do.
    faults.set(0.0)
    first = NAMES[0]
    settle(operator)
    retries = operator.metric("tts_operator_pass_retries_total")
    faults.fail_next_writes(
        "503", "500", "409", path=rf"/namespaces/{namespace}/(services|ttsservices)/{first}\b"
    )
    old_uid = kube.service(namespace, first)["metadata"]["uid"]
    kube.core.delete_namespaced_service(first, namespace)

    def recreated() -> bool:
        found = read_raw(kube, "Service", namespace, first)
        return found is not None and found["metadata"]["uid"] != old_uid

    wait_for("the deleted Service back after three failed writes", recreated, 60)
    assert faults.forced_left() == []
    forced_retries = operator.metric("tts_operator_pass_retries_total") - retries
    # Two, as a rule: the failed pass, then its failed first retry.
    assert forced_retries >= 1

    # 3. Random faults while children are deleted and edited by hand, round after round.
    faults.set(WRITE_FAULT_RATE, READ_FAULT_RATE)
    for round_ in range(ROUNDS):
        for i, name in enumerate(NAMES):
            edit = EDITS[(round_ * len(NAMES) + i) % len(EDITS)]
            try:
                edit(kube, namespace, name)
            except ApiException as error:  # not back yet from an earlier round
                if error.status not in (404, 409):
                    raise
        time.sleep(3)
    injected = faults.counts()
    faults.set(0.0)

    # Faults lifted: every child holds what the spec asks for, without any further event.
    for name in NAMES:
        wait_for(
            f"{name}'s children to match its spec", partial(in_spec, kube, namespace, name), 120
        )
    retried = operator.metric("tts_operator_pass_retries_total") - retries
    print(
        f"\nfaults injected (method fault: count): {injected}; operator requests through the "
        f"proxy: {faults.forwarded_counts()}; passes retried: {forced_retries:.0f} in the forced "
        f"round, {retried:.0f} in all; all survived"
    )
    assert sum(injected.values()) >= 5, injected
    assert any(key.split()[0] in WRITES for key in injected), injected

    # Nothing duplicated: one child of each kind, one live ReplicaSet, one pod each.
    for name in NAMES:
        children = labelled_children(kube, namespace, name)
        assert {k: v for k, v in children.items() if v} == {
            "Deployment": [name],
            "Service": [name],
            "ConfigMap": [f"{name}-runtime"],
            "PodDisruptionBudget": [name],
        }

        def settled(name: str = name) -> bool:
            sets = kube.replicasets(namespace, instance_selector(name))
            active = [r for r in sets if (r["spec"].get("replicas") or 0) > 0]
            pods = [
                p
                for p in kube.pods(namespace, instance_selector(name))
                if not p["metadata"].get("deletionTimestamp")
            ]
            return len(active) == 1 and len(pods) == 1 and is_ready(pods[0])

        wait_for(f"{name}: one ReplicaSet, one ready pod", settled, 120)
        kube.wait_tts_ready(namespace, name, timeout=60)
        assert in_spec(kube, namespace, name)
    assert operator.running and operator.component.pid == pid, "the operator restarted"
