"""The TTSService models and the CRD agree on generated specs (issue 12), checked offline:
spec_fuzz.api_server_verdict stands in for the API server (the committed CRD's structural
schema through jsonschema, Go's regular expressions, defaulting, null pruning,
fieldValidation=Strict, and the CEL rules through the models' CelRule mirrors; the
real API server's CEL is e2e/test_13_spec_fuzz.py's part).

What the API server refuses, the models refuse, naming the same fields; what it stores,
the models accept and the operator's pure path (admit, builders) takes without an exception.
Reproducible: derandomized, no example database; prints how many cases ran of each kind.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from spec_fuzz import (
    KINDS,
    Case,
    api_server_verdict,
    judge,
    models_fields,
    reproducible,
    spec_cases,
)
from tts_operator.settings import OperatorSettings

PER_KIND = 30  # specs per kind of break: 9 kinds, 270 specs
SETTINGS = OperatorSettings()


def check_case(case: Case) -> str:
    api = api_server_verdict(case.spec)
    try:
        return judge(case.spec, api.fields, api.stored, SETTINGS, exact=case.base_valid)
    except AssertionError as disagreement:
        raise AssertionError(f"{case.mutation}: {disagreement}") from None


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_models_and_crd_agree_on_generated_specs(kind: str) -> None:
    outcomes: Counter[str] = Counter()

    @reproducible(PER_KIND)
    @given(case=spec_cases(kind))
    def case(case: Case) -> None:
        outcomes[check_case(case)] += 1

    case()
    print(f"\nspec fuzz, {kind}: {sum(outcomes.values())} specs, {dict(outcomes)}")
    assert sum(outcomes.values()) == PER_KIND
    if kind == "none":  # most drawn specs are valid, and the operator takes them
        assert outcomes["refused"] <= PER_KIND // 2
    elif kind != "null":  # a null is pruned: the spec is as valid as without it
        assert outcomes["refused"] >= PER_KIND // 2


def test_a_model_uri_that_is_no_url_is_the_one_place_the_models_refuse_more() -> None:
    """The CRD's pattern takes "http://[" (no pattern tells a [IPv6] host from that); the
    policy, the builders and the download cannot split it, so the models refuse it and the
    operator reports InvalidSpec instead of failing on it."""
    spec = {"model": {"uri": "http://["}}
    api = api_server_verdict(spec)
    assert api.accepted and api.stored is not None
    assert models_fields(api.stored) == {"spec.model.uri"}
    assert judge(spec, api.fields, api.stored, SETTINGS, exact=True) == "InvalidSpec"


def test_a_whole_float_is_an_integer_except_where_the_scale_subresource_reads_it() -> None:
    """Seen on the real API server (e2e/test_13_spec_fuzz.py checks it there): 9000.0 is
    stored as 9000 in an integer field, but the scale subresource reads spec.replicas as an
    int64 and refuses a float. The models refuse it there too, naming the same field."""
    base = {"model": {"uri": "pvc://voices/en"}}
    refused = api_server_verdict({**base, "replicas": 2.0})
    assert refused.fields == {"spec.replicas"} and refused.stored is None
    assert judge({**base, "replicas": 2.0}, refused.fields, None, SETTINGS, exact=True) == (
        "refused"
    )
    taken = api_server_verdict({**base, "service": {"port": 9000.0}})
    assert not taken.fields and taken.stored is not None
    assert taken.stored["service"]["port"] == 9000
    assert isinstance(taken.stored["service"]["port"], int)
    assert not models_fields(taken.stored)


def test_a_whole_float_a_cel_rule_compares_is_refused_naming_the_rules_object() -> None:
    """Found by e2e/test_13_spec_fuzz.py on the real API server: CEL reads
    autoscaling.maxReplicas 2.0 before it is stored as 2, fails ("expected int, got
    float64"), and the API server names the rule's object. The models refuse the float
    (strict), naming the field inside it: the same problem."""
    base = {"model": {"uri": "pvc://voices/en"}}
    spec = {**base, "autoscaling": {"enabled": True, "maxReplicas": 2.0}}
    refused = api_server_verdict(spec)
    assert refused.fields == {"spec.autoscaling"} and refused.stored is None
    assert judge(spec, refused.fields, None, SETTINGS, exact=True) == "refused"
    # the same spec with an integer is taken
    taken = api_server_verdict({**base, "autoscaling": {"enabled": True, "maxReplicas": 2}})
    assert taken.accepted
