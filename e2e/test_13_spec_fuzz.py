"""Scenario 13 (issue 12): the real API server and the TTSService models agree on generated specs.

SPECS specs from spec_fuzz.spec_cases (drawn from the CRD's own schema, most broken in one
place: a wrong type, a number out of range, a bad string, one item too many, a required
field gone, an unknown field, a null, a violated CEL rule) go to the API server as
server-side dry-run creates (dryRun=All: nothing is stored; fieldValidation=Strict: an
unknown field is refused, not dropped). For each answer:

- refused (400 or 422): the models refuse the spec too (as the API server validates it:
  nulls pruned, defaults set) and name at least one field the API server names;
- accepted: the object returned (pruned and defaulted, what the operator would read) is
  accepted by the models, or is spec_fuzz.uri_gap's one known case, and goes through the
  operator's pure path (admit, then the builders) without an exception;
- the offline stand-in tests/operator/test_op_spec_fuzz.py trusts
  (spec_fuzz.api_server_verdict) gives the same verdict as the real API server.

Disagreements are collected, not raised one at a time (no shrinking against a real API
server), and listed together with the counts.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from hypothesis import given
from kubeapi import GROUP, KIND, PLURAL, VERSION, E2EKube
from kubernetes.client import ApiException
from spec_fuzz import KINDS, Case, api_server_verdict, judge, reproducible, spec_cases
from tts_operator.settings import OperatorSettings

SPECS = 153  # 17 of each kind of break
_UNKNOWN_FIELD = re.compile(r'unknown field "([^"]+)"')


def refused_fields(error: ApiException) -> frozenset[str]:
    """The fields a 400/422 from the API server names: its causes' fields (not "<nil>", the
    note that CEL rules went unchecked on an object that failed its schema), and the unknown
    fields a strict decoding error lists in its message."""
    try:
        status = json.loads(error.body or "{}")
    except ValueError:
        status = {}
    message = str(status.get("message", error.body))
    causes = (status.get("details") or {}).get("causes") or []
    # A leading dot (".spec.replicas", the scale subresource's path) names the same field.
    named = {
        str(c["field"]).removeprefix(".")
        for c in causes
        if c.get("field") not in (None, "", "<nil>")
    }
    named |= set(_UNKNOWN_FIELD.findall(message))
    return frozenset(named or {f"(none named: {message[:200]})"})


def answer(refused: frozenset[str]) -> str:
    return f"refuses naming {sorted(refused)}" if refused else "accepts"


def dry_run_create(kube: E2EKube, namespace: str, spec: Any) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": "fuzz"}}
    created = kube.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {**body, "spec": spec},
        dry_run="All",
        field_validation="Strict",
    )
    return dict(created)


def compare(kube: E2EKube, namespace: str, case: Case, settings_: OperatorSettings) -> str:
    """The outcome of one spec; raises AssertionError naming a disagreement."""
    try:
        stored = dry_run_create(kube, namespace, case.spec)["spec"]
    except ApiException as error:
        if error.status not in (400, 422):
            raise
        named = refused_fields(error)
        outcome = judge(case.spec, named, None, settings_, exact=False)
    else:
        named = frozenset()
        outcome = judge(case.spec, named, stored, settings_, exact=False)
    # The offline stand-in test_op_spec_fuzz.py trusts: the same verdict; its fields may
    # differ (the real API server adds what it could not check, say), worth printing only.
    offline = api_server_verdict(case.spec)
    assert offline.accepted == (not named), (
        f"the API server {answer(named)}, the offline stand-in {answer(offline.fields)}"
    )
    if offline.fields != named:
        found, expected = sorted(named), sorted(offline.fields)
        print(f"  {case.mutation}: the API server names {found}, the stand-in {expected}")
    return outcome


def test_api_server_and_models_agree_on_generated_specs(
    kube: E2EKube, crds: None, namespace: str
) -> None:
    outcomes: Counter[str] = Counter()
    disagreements: list[str] = []
    operator_settings = OperatorSettings()

    for kind in KINDS:

        @reproducible(SPECS // len(KINDS), shrink=False)
        @given(case=spec_cases(kind))
        def check(case: Case) -> None:
            try:
                outcomes[compare(kube, namespace, case, operator_settings)] += 1
            except AssertionError as disagreement:
                outcomes["disagreement"] += 1
                disagreements.append(f"{case.mutation}: {disagreement}\n    {case.spec}")

        check()
    print(f"\nspec fuzz against the API server: {sum(outcomes.values())} specs, {dict(outcomes)}")
    assert not disagreements, f"{len(disagreements)} disagreements:\n" + "\n".join(
        disagreements[:20]
    )
    # the operator's pure path ran on every spec not refused, whatever its policy said
    reached = sum(n for outcome, n in outcomes.items() if outcome != "refused")
    assert outcomes["refused"] >= SPECS // 3 and reached >= SPECS // 10


def test_a_whole_float_is_refused_where_the_scale_subresource_reads_it(
    kube: E2EKube, crds: None, namespace: str
) -> None:
    """What spec_fuzz.validated_form and api_server_verdict assume of the real API server:
    spec.replicas 2.0 is refused, an integer field nothing else reads stores 9000.0 as 9000,
    and a CEL rule comparing a whole float fails, naming the rule's object (found by this
    fuzz in CI: autoscaling.maxReplicas 2.0), unless its has() guards skip the comparison."""
    base = {"model": {"uri": "pvc://voices/en"}}
    try:
        dry_run_create(kube, namespace, {**base, "replicas": 2.0})
    except ApiException as error:
        assert error.status == 422 and refused_fields(error) == {"spec.replicas"}
    else:
        raise AssertionError("the API server took replicas: 2.0")
    stored = dry_run_create(kube, namespace, {**base, "service": {"port": 9000.0}})
    assert stored["spec"]["service"]["port"] == 9000
    assert isinstance(stored["spec"]["service"]["port"], int)  # Go writes 9000.0 as 9000
    compared = {**base, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2.0}}
    try:
        dry_run_create(kube, namespace, compared)
    except ApiException as error:
        assert error.status == 422 and refused_fields(error) == {"spec.autoscaling"}
    else:
        raise AssertionError("the API server took autoscaling.maxReplicas: 2.0")
    assert api_server_verdict(compared).fields == {"spec.autoscaling"}
