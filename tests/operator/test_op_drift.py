"""drift.py: when a live child already is what the operator would apply (the apply skipped)."""

from __future__ import annotations

import copy
from typing import Any

from tts_operator.builders.service import build_service
from tts_operator.drift import (
    APPLIED_HASH,
    applied_hash,
    contains,
    manifest_hash,
    stamp,
    up_to_date,
)
from tts_operator.models import TTSServiceSpec

SPEC: dict[str, Any] = {"model": {"uri": "pvc://voices/en"}}


def service(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    built = build_service("voice", "speech", TTSServiceSpec.model_validate(spec or SPEC))
    return stamp(built)


def as_served(desired: dict[str, Any]) -> dict[str, Any]:
    """`desired` the way the API server returns it: its defaults, ids and status added."""
    live = copy.deepcopy(desired)
    live["metadata"].update(
        uid="u-1",
        resourceVersion="42",
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[{"manager": "tts-operator", "operation": "Apply"}],
    )
    live["spec"].update(
        clusterIP="10.96.0.10",
        clusterIPs=["10.96.0.10"],
        ipFamilies=["IPv4"],
        internalTrafficPolicy="Cluster",
    )
    live["status"] = {"loadBalancer": {}}
    return live


def test_the_hash_is_stamped_and_stable() -> None:
    first, second = service(), service()
    assert applied_hash(first) == applied_hash(second) == manifest_hash(first)
    reordered = dict(reversed(list(first.items())))
    assert manifest_hash(reordered) == manifest_hash(first)
    assert stamp(copy.deepcopy(first)) == first  # stamping again changes nothing
    assert applied_hash(service({**SPEC, "service": {"port": 9000}})) != applied_hash(first)


def test_a_child_as_the_api_server_returns_it_is_up_to_date() -> None:
    desired = service()
    assert up_to_date(desired, as_served(desired))


def test_a_hand_edit_of_one_of_our_fields_is_not() -> None:
    desired = service()
    live = as_served(desired)
    live["spec"]["sessionAffinity"] = "None"  # the annotation (our hash) stays
    assert applied_hash(live) == applied_hash(desired)
    assert not up_to_date(desired, live)


def test_a_field_the_spec_no_longer_asks_for_is_applied_away() -> None:
    before = service({**SPEC, "service": {"annotations": {"lb.example.com/internal": "true"}}})
    live = as_served(before)
    after = service()
    # The live object still holds every field of the new manifest (our hash aside), plus the
    # old annotation: a subset check alone would skip the apply that removes it.
    unstamped = copy.deepcopy(after)
    del unstamped["metadata"]["annotations"]
    assert contains(live, unstamped)
    assert not up_to_date(after, live)  # the hash does not match


def test_a_child_without_our_hash_is_applied() -> None:
    desired = service()
    live = as_served(desired)
    del live["metadata"]["annotations"][APPLIED_HASH]  # made by an older operator
    assert not up_to_date(desired, live)
    assert not up_to_date(desired, None)


def test_values_must_match_exactly_or_the_apply_happens() -> None:
    assert contains({"a": 1, "b": 2}, {"a": 1})
    assert not contains({"a": True}, {"a": 1})  # bool is not int
    assert not contains({"a": 1}, {"a": True})
    assert not contains({"cpu": "1"}, {"cpu": "1000m"})  # a quantity the server rewrote
    assert not contains({"a": [1, 2, 3]}, {"a": [1, 2]})  # an item added by hand
    assert contains({"a": [{"x": 1, "y": 2}]}, {"a": [{"x": 1}]})  # defaults in list items
    assert not contains({"a": {}}, {"a": {"b": None}})
    assert contains({"emptyDir": {}}, {"emptyDir": {}})
