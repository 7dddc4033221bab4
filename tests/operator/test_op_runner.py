"""Process wiring: peering objects, kopf settings, handler registration, metrics."""

from __future__ import annotations

import logging
import socket
import urllib.request
from typing import cast

import kopf
import pytest
from op_helpers import tts_body
from prometheus_client import generate_latest
from tts_operator import metrics
from tts_operator.handlers import register
from tts_operator.runner import (
    NoDiffBase,
    PeeringMissingError,
    QuietWatchers,
    kopf_settings,
    peering_objects,
    wait_for_peering,
)
from tts_operator.settings import OperatorSettings


def test_clusterwide_peering_is_a_cluster_object() -> None:
    [(path, body)] = peering_objects(OperatorSettings(peering_name="p"))
    assert path == "/apis/kopf.dev/v1/clusterkopfpeerings"
    assert body["kind"] == "ClusterKopfPeering" and body["metadata"] == {"name": "p"}


def test_namespaced_peering_has_one_object_per_namespace() -> None:
    objs = peering_objects(OperatorSettings(namespaces="a,b"))
    assert [p for p, _ in objs] == [
        "/apis/kopf.dev/v1/namespaces/a/kopfpeerings",
        "/apis/kopf.dev/v1/namespaces/b/kopfpeerings",
    ]
    assert all(b["kind"] == "KopfPeering" for _, b in objs)


def test_only_warnings_become_kubernetes_events() -> None:
    ks = kopf_settings(OperatorSettings())
    assert ks.posting.level == logging.WARNING and ks.peering.stealth


def test_kopf_copies_no_body_for_a_diff_nobody_reads() -> None:
    ks = kopf_settings(OperatorSettings())
    storage = ks.persistence.diffbase_storage
    assert isinstance(storage, NoDiffBase)
    body = kopf.Body(cast(kopf.RawBody, tts_body({"model": {"uri": "pvc://voices/en"}})))
    assert storage.build(body=body) == {} and storage.fetch(body=body) is None
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=kopf.BodyEssence())
    assert not patch  # nothing is written into the object either


def test_register_needs_no_cluster_and_covers_every_cause() -> None:
    registry = kopf.OperatorRegistry()
    register(OperatorSettings(), registry)
    watched = {h.id for h in registry._watching.get_all_handlers()}
    assert {"ttsservices", "pods"} <= watched
    assert {"child-deployments", "child-services", "child-configmaps"} <= watched
    assert {"child-horizontalpodautoscalers", "child-poddisruptionbudgets"} <= watched
    assert registry._activities.get_all_handlers()  # the login handler


def test_no_handler_makes_kopf_write_into_objects() -> None:
    # kopf blocks deletion with a finalizer when any spawning handler (timer, daemon) or a
    # non-optional on.delete handler matches; with the operator down, deletion would hang.
    # Change handlers (create, update, resume) make it patch its bookkeeping (last handled
    # spec, handler progress) into each object. Event handlers do neither.
    registry = kopf.OperatorRegistry()
    register(OperatorSettings(), registry)
    assert registry._spawning.get_all_handlers() == []
    assert registry._changing.get_all_handlers() == []


def test_a_timer_would_make_kopf_add_its_finalizer() -> None:
    """The check above can fail: kopf marks every timer as needing the finalizer."""
    registry = kopf.OperatorRegistry()
    register(OperatorSettings(), registry)
    kopf.timer("ttsoperator.io", "v1alpha1", "ttsservices", registry=registry, interval=30)(
        lambda **_: None
    )
    assert any(h.requires_finalizer for h in registry._spawning.get_all_handlers())


def test_observed_counts_results_and_reraises() -> None:
    before = generate_latest(metrics.REGISTRY).decode()
    with metrics.observed("unit"):
        pass
    with pytest.raises(kopf.TemporaryError), metrics.observed("unit"):
        raise kopf.TemporaryError("later")
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'tts_operator_reconciles_total{handler="unit",result="ok"} 1.0' in text
    assert 'tts_operator_reconciles_total{handler="unit",result="retry"} 1.0' in text
    assert 'tts_operator_reconcile_errors_total{error="TemporaryError",handler="unit"} 1.0' in text
    assert 'tts_operator_reconcile_duration_seconds_count{handler="unit"} 2.0' in text
    assert "unit" not in before


def test_quiet_watchers_drops_only_routine_child_successes() -> None:
    def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)

    quiet = QuietWatchers()
    assert not quiet.filter(record("Handler 'child-services' succeeded."))
    assert not quiet.filter(record("Handler 'pods' succeeded."))
    assert not quiet.filter(record("Handler 'ttsservices' succeeded."))
    assert quiet.filter(record("Handler 'create' succeeded."))
    assert quiet.filter(record("Handler 'child-services' failed.", logging.ERROR))


def test_metrics_server_binds_the_given_host() -> None:
    server = metrics.serve(_free_port(), "127.0.0.1")
    assert server is not None
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"tts_operator_reconciles_total" in response.read()
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_port_zero_starts_nothing() -> None:
    assert metrics.serve(0, "127.0.0.1") is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _PeeringAppears:
    """A Kube stand-in whose peering object exists from the `after`-th look on."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.looks: list[str] = []

    def exists(self, path: str) -> bool:
        self.looks.append(path)
        return len(self.looks) > self.after


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_operator_waits_for_the_releases_peering_object() -> None:
    kube, clock = _PeeringAppears(after=3), _Clock()
    settings = OperatorSettings(peering_name="p", peering_create=False)
    wait_for_peering(kube, settings, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    assert kube.looks == ["/apis/kopf.dev/v1/clusterkopfpeerings/p"] * 4
    assert clock.now == 3.0


def test_a_peering_object_that_never_comes_stops_the_operator_with_a_reason() -> None:
    kube, clock = _PeeringAppears(after=10**6), _Clock()
    settings = OperatorSettings(peering_name="p", peering_create=False, peering_wait_seconds=5)
    with pytest.raises(PeeringMissingError, match="ClusterKopfPeering 'p' did not appear"):
        wait_for_peering(kube, settings, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    assert clock.now == 5.0
