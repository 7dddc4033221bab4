"""Generated TTSService specs, and what the models and the CRD make of them (issue 12).

A spec is drawn from the committed CRD's own schema (each optional field present or not,
each value one the schema allows, the cross-field rules kept), then broken in one place as
its KIND says: a wrong type, a number out of range, a string that misses its pattern or
length or enum, one item or property too many, a required field taken away, an unknown
field, a null, or a violated cross-field (CEL) rule ("none": left as drawn). The property
(`judge`): what the API server refuses, the models refuse too, naming the same field; what
it accepts (as it stores it: nulls pruned, defaults applied), the models accept (but for
`uri_gap`), and the operator's pure path (admit, then the builders) takes without an
exception.

Not a test module. tests/operator/test_op_spec_fuzz.py checks the property against the CRD
offline (`api_server_verdict`: jsonschema on the structural schema, the API server's
defaulting and unknown-field rules, and the CEL rules through the models' CelRule mirrors);
e2e/test_13_spec_fuzz.py against the real API server. e2e/spec_fuzz.py is a link to this
file, so both import it as `spec_fuzz`.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlsplit

import jsonschema
import yaml
from hypothesis import HealthCheck, Phase, assume, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tts_operator import models
from tts_operator.builders import build_children
from tts_operator.crdgen import CRD_PATH
from tts_operator.models import CelRule, TTSServiceSpec
from tts_operator.policy import download_rules
from tts_operator.reconcile import Context, admit
from tts_operator.settings import OperatorSettings
from tts_operator.status import Problem

Node = dict[str, Any]
Path = tuple[str | int, ...]


def spec_schema() -> Node:
    """The schema of .spec in the committed CRD."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    schema: Node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def scale_replicas_field() -> str:
    """The .spec field the CRD's scale subresource reads the replica count from."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    path = str(crd["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"])
    assert path.startswith(".spec.") and path.count(".") == 2, path
    return path.removeprefix(".spec.")


SCHEMA = spec_schema()
# The scale subresource reads this field as an int64 before anything is stored, so a whole
# float there (2.0) is refused ("accessor error: 2 is of the type float64, expected int64",
# seen on the real API server), where every other integer field takes it and stores 2.
SCALE_REPLICAS = scale_replicas_field()
# `self.FIELD` outside has(): a field a CEL rule reads the value of.
_SELF_FIELD = re.compile(r"(?<!has\()self\.(\w+)")


def cel_rule_fields(node: Node = SCHEMA, path: Path = ()) -> dict[Path, tuple[str, ...]]:
    """For each object with CEL rules, the integer fields of it those rules compare."""
    found: dict[Path, tuple[str, ...]] = {}
    properties = node.get("properties") or {}
    rules = " ".join(entry["rule"] for entry in node.get("x-kubernetes-validations", ()))
    compared = tuple(
        dict.fromkeys(
            name
            for name in _SELF_FIELD.findall(rules)
            if properties.get(name, {}).get("type") == "integer"
        )
    )
    if compared:
        found[path] = compared
    for key, child in properties.items():
        found |= cel_rule_fields(child, (*path, key))
    return found


_CEL_RULE_FIELDS = cel_rule_fields()
CEL_COMPARED = [(*parent, name) for parent, names in _CEL_RULE_FIELDS.items() for name in names]


def reproducible(examples: int, *, shrink: bool = True) -> settings:
    """A bounded run with the same cases on every run and machine: derandomized, no example
    database. Without `shrink` a failing case is reported as found (no search for a smaller
    one: against a real API server each try is a request)."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        phases=list(Phase) if shrink else [Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# -- paths ---------------------------------------------------------------------------


def field_path(path: Path, schema: Node = SCHEMA) -> str:
    """`path` (keys and indices below .spec) as the API server names a field:
    spec.runtime.env[0].name, spec.model.voices.alloy (a map's value: the API server's
    schema validator names it with a dot, not brackets). Parts the schema does not describe
    (pydantic's union tags such as 'int' or 'constrained-str', keys inside a pass-through
    object) end the path; an unknown key of an object with properties is its last part."""
    text, node = "spec", schema
    for part in path:
        properties = node.get("properties")
        if isinstance(part, int) and node.get("type") == "array":
            text, node = f"{text}[{part}]", node["items"]
        elif properties is not None and part in properties:
            text, node = f"{text}.{part}", properties[part]
        elif isinstance(node.get("additionalProperties"), dict):
            text, node = f"{text}.{part}", node["additionalProperties"]
        elif properties is not None and not node.get("x-kubernetes-preserve-unknown-fields"):
            return f"{text}.{part}"  # unknown field
        else:
            return text
    return text


def walk(value: Any, node: Node, path: Path = ()) -> Iterator[tuple[Path, Node, Any]]:
    """Every value in `value` the schema describes, with its path and schema node."""
    yield path, node, value
    if isinstance(value, dict):
        properties = node.get("properties") or {}
        extra = node.get("additionalProperties")
        for key, child in value.items():
            if key in properties:
                yield from walk(child, properties[key], (*path, key))
            elif isinstance(extra, dict):
                yield from walk(child, extra, (*path, key))
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, child in enumerate(value):
            yield from walk(child, node["items"], (*path, index))


def get(value: Any, path: Path) -> Any:
    for part in path:
        value = value[part]
    return value


def put(value: Any, path: Path, new: Any) -> None:
    get(value, path[:-1])[path[-1]] = new


# -- what the models say -------------------------------------------------------------


def models_fields(spec: Any) -> frozenset[str]:
    """The fields the models name when they refuse `spec`; empty when they accept it."""
    try:
        TTSServiceSpec.model_validate(spec)
    except ValidationError as err:
        return frozenset(field_path(tuple(e["loc"])) for e in err.errors())
    return frozenset()


def splits(text: str) -> bool:
    try:
        urlsplit(text)
    except ValueError:
        return False
    return True


def uri_gap(spec: Any, named: frozenset[str]) -> bool:
    """The one place the models refuse what the API server stores: a model URI its pattern
    takes that is no URL (a malformed [IPv6] host); the operator reports InvalidSpec."""
    return named == {"spec.model.uri"} and not splits(spec["model"]["uri"])


def reconcile_offline(spec: dict[str, Any], settings: OperatorSettings) -> str:
    """The operator's pure path for a spec the API server stored: admit (the models, then
    the policy) and the builders. Returns what happened; raises only on a defect."""
    body = {
        "apiVersion": f"{models.GROUP}/{models.VERSION}",
        "kind": models.KIND,
        "metadata": {"name": "fuzz", "namespace": "fuzz", "uid": "uid-fuzz", "generation": 1},
        "spec": spec,
    }
    ctx = Context(kube=cast(Any, None), settings=settings)  # admit reads only the settings
    admitted = admit(ctx, body)
    # The builders must take every spec the models accept, whatever the policy says.
    parsed = TTSServiceSpec.model_validate(spec)
    children = build_children(
        "fuzz",
        "fuzz",
        parsed,
        settings.runtime_image,
        download_rules(settings.policy, settings.hf_endpoint),
        settings.prometheus_source,
    )
    assert children.desired, "no children built"
    if isinstance(admitted, Problem):
        return admitted.reason
    return "admitted"


def judge(
    spec: Any,
    refused: frozenset[str],
    stored: dict[str, Any] | None,
    settings: OperatorSettings,
    *,
    exact: bool,
) -> str:
    """The property for one spec, given the API server's answer: refused naming `refused`,
    or accepted and stored as `stored`. Returns where the spec ended ("refused", or the
    operator's verdict); raises AssertionError naming a disagreement.

    A refusal: the models refuse the spec as the API server validates it (nulls pruned,
    defaults set), naming the same fields when `exact` (one problem in the spec), else at
    least one of them: either side may stop early (the decoder's 400 for an unknown field;
    pydantic skips an object's cross-field rules once a field inside it failed, where the
    API server checks every CEL rule whose object holds)."""
    if refused:
        named = models_fields(validated_form(spec))
        # A CEL rule that cannot evaluate a field (a float where it compares integers) is
        # named by its object; the models name the field inside it: one problem.
        for parent in map(field_path, _CEL_RULE_FIELDS):
            inside = {n for n in named if n.startswith(parent + ".")}
            if parent in refused and inside:
                named = (named - inside) | {parent}
        assert (named == refused) if exact else bool(named & refused), (
            f"the API server refuses naming {sorted(refused)}, the models "
            f"{'accept it' if not named else 'name ' + str(sorted(named))}"
        )
        return "refused"
    assert stored is not None
    named = models_fields(stored)
    if uri_gap(stored, named):
        return "InvalidSpec"
    assert not named, f"the API server stores it, the models refuse it naming {sorted(named)}"
    return reconcile_offline(stored, settings)


# -- what the API server says, offline -----------------------------------------------


def _go_pattern(pattern: str) -> str:
    """A CRD pattern as Go's RE2 reads it: `$` is the end of the text, where Python's `$`
    also matches before a final newline ("name\\n" would pass)."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern


def _go_patterns(node: Any) -> Any:
    """`node` with every pattern as Go reads it (jsonschema uses Python's re.search)."""
    if isinstance(node, list):
        return [_go_patterns(n) for n in node]
    if not isinstance(node, dict):
        return node
    return {k: _go_pattern(v) if k == "pattern" else _go_patterns(v) for k, v in node.items()}


_VALIDATOR = jsonschema.Draft202012Validator(_go_patterns(SCHEMA))
_REQUIRED = re.compile(r"^'(.*)' is a required property$")


def _cel_rules() -> dict[str, CelRule]:
    """Every CEL rule of the CRD, by its text, with the Python check that mirrors it."""
    rules: dict[str, CelRule] = {}
    for _, cls in inspect.getmembers(models, inspect.isclass):
        for rule in getattr(cls, "cel", ()):
            if isinstance(rule, CelRule):
                rules[rule.rule] = rule
    return rules


CEL_RULES = _cel_rules()


@dataclass(frozen=True)
class Verdict:
    fields: frozenset[str]  # what a refusal names; empty: accepted
    stored: dict[str, Any] | None  # the spec as stored, when accepted

    @property
    def accepted(self) -> bool:
        return not self.fields


def unknown_fields(value: Any, node: Node, path: Path = ()) -> set[str]:
    """What fieldValidation=Strict refuses: keys an object's schema does not list."""
    found: set[str] = set()
    if isinstance(value, dict) and "properties" in node:
        if node.get("x-kubernetes-preserve-unknown-fields"):
            return found
        for key, child in value.items():
            if key in node["properties"]:
                found |= unknown_fields(child, node["properties"][key], (*path, key))
            else:
                found.add(field_path((*path, key)))
    elif isinstance(value, dict) and isinstance(node.get("additionalProperties"), dict):
        for key, child in value.items():
            found |= unknown_fields(child, node["additionalProperties"], (*path, key))
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, child in enumerate(value):
            found |= unknown_fields(child, node["items"], (*path, index))
    return found


def stored_form(value: Any, node: Node) -> Any:
    """What the API server keeps: null fields and map values pruned (none is nullable), then
    each absent field with a default set to it, recursively, as the apiextensions server
    defaults.
    Floats that are whole numbers come back as integers (Go writes 3.0 as 3)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        items = node.get("items")
        return [stored_form(v, items if isinstance(items, dict) else {}) for v in value]
    if not isinstance(value, dict):
        return value
    properties = node.get("properties") or {}
    extra = node.get("additionalProperties")
    out = {}
    for key, child in value.items():
        # Nulls are dropped from object fields and from map values alike (seen on the real
        # API server: nodeSelector {"k": null} is stored without the key).
        if child is None and (key in properties or isinstance(extra, dict)):
            continue
        schema = properties.get(key) or (extra if isinstance(extra, dict) else {})
        out[key] = stored_form(child, schema)
    for key, schema in properties.items():
        if key not in out and "default" in schema:
            out[key] = stored_form(copy.deepcopy(schema["default"]), schema)
    return out


_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")  # configSha256 -> config_sha256


def _as_object(value: Any, node: Node) -> Any:
    """A stored object as the CelRule checks read it: snake_case attributes, None where the
    field is absent (the API server has already set the defaults)."""
    if isinstance(value, dict) and "properties" in node:
        return SimpleNamespace(
            **{
                _CAMEL_HUMP.sub("_", key).lower(): _as_object(value.get(key), schema)
                for key, schema in node["properties"].items()
            }
        )
    return value


def cel_errors(stored: Any) -> set[str]:
    found = set()
    for path, node, value in walk(stored, SCHEMA):
        for entry in node.get("x-kubernetes-validations", ()):
            if not CEL_RULES[entry["rule"]].check(_as_object(value, node)):
                found.add(field_path(path))
    return found


def validated_form(spec: Any) -> Any:
    """The spec as the API server validates it: its stored form (stored_form), except that
    a float is still a float at the scale subresource's replicas field and at an integer
    field a CEL rule compares (CEL reads the value before it is stored as an integer)."""
    stored = stored_form(spec, SCHEMA)
    if not isinstance(spec, dict):
        return stored
    if isinstance(spec.get(SCALE_REPLICAS), float):
        stored[SCALE_REPLICAS] = spec[SCALE_REPLICAS]
    for path in CEL_COMPARED:
        raw, kept = _at(spec, path), _at(stored, path[:-1])
        if isinstance(raw, float) and isinstance(kept, dict):
            kept[path[-1]] = raw
    return stored


def _at(value: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def cel_float_errors(validated: Any) -> set[str]:
    """What the API server answers to a whole float at an integer field a CEL rule compares
    ("invalid data, expected int, got float64 evaluating rule", seen on the real API
    server): a refusal naming the rule's object, when every field the rule compares is
    present (the rules guard each comparison with has())."""
    found = set()
    for parent, fields in _CEL_RULE_FIELDS.items():
        values = [_at(validated, (*parent, name)) for name in fields]
        if all(v is not None for v in values) and any(isinstance(v, float) for v in values):
            found.add(field_path(parent))
    return found


def api_server_verdict(spec: Any) -> Verdict:
    """What the API server answers to a create of `spec` with fieldValidation=Strict:
    unknown fields are refused (a 400 from the decoder, nothing else checked); then nulls
    are pruned and defaults set; then the structural schema is checked, and the CEL rules
    when the schema holds (the API server skips CEL on an object that already failed it)."""
    errors = unknown_fields(spec, SCHEMA)
    if errors:  # Strict's 400 comes from the decoder, before any validation
        return Verdict(frozenset(errors), None)
    validated = validated_form(spec)
    for error in _VALIDATOR.iter_errors(validated):
        path = tuple(error.absolute_path)
        missing = _REQUIRED.match(error.message) if error.validator == "required" else None
        errors.add(field_path((*path, missing.group(1)) if missing else path))
    if isinstance(validated, dict) and isinstance(validated.get(SCALE_REPLICAS), float):
        errors.add(field_path((SCALE_REPLICAS,)))  # the scale subresource's own check
    errors |= cel_float_errors(validated)
    if not errors:
        errors = cel_errors(validated)
    return Verdict(frozenset(errors), None if errors else stored_form(spec, SCHEMA))


# -- specs ---------------------------------------------------------------------------


def matches(pattern: str, text: str) -> bool:
    return re.search(_go_pattern(pattern), text) is not None


NAME = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-"), min_size=1, max_size=8)


_STRATEGIES: dict[int, st.SearchStrategy[Any]] = {}


def values(node: Node) -> st.SearchStrategy[Any]:
    """Values the schema node accepts (a generated pattern string may still miss its
    pattern or length); built once per node, as hypothesis checks each new strategy."""
    if id(node) not in _STRATEGIES:
        _STRATEGIES[id(node)] = _values(node)
    return _STRATEGIES[id(node)]


def _values(node: Node) -> st.SearchStrategy[Any]:
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if node.get("x-kubernetes-int-or-string"):
        return _integers(node) | _strings(node)
    kind = node.get("type")
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return _integers(node)
    if kind == "string":
        return _strings(node)
    if kind == "array":
        item = node.get("items", {})
        return st.lists(values(item), max_size=min(node.get("maxItems", 2), 2))
    if "properties" in node:
        return _objects(node)
    if isinstance(node.get("additionalProperties"), dict):
        return st.dictionaries(NAME, values(node["additionalProperties"]), max_size=3)
    # a pass-through Kubernetes object (affinity, valueFrom ...)
    return st.dictionaries(NAME, st.integers(0, 9) | NAME, max_size=2)


def _integers(node: Node) -> st.SearchStrategy[int]:
    return st.integers(node.get("minimum", -1000), node.get("maximum", 100_000))


def _strings(node: Node) -> st.SearchStrategy[str]:
    longest = node.get("maxLength", 40)
    if "pattern" in node:
        pattern = str(node["pattern"])
        return (
            st.from_regex(pattern, fullmatch=True)
            .map(lambda s: s[:longest])
            .filter(lambda s: matches(pattern, s) and splits(s))  # no uri_gap unasked
        )
    return st.text(min_size=node.get("minLength", 0), max_size=min(longest, 20))


def _objects(node: Node) -> st.SearchStrategy[dict[str, Any]]:
    required = set(node.get("required", ()))
    fields = {
        key: values(schema) if key in required else st.none() | values(schema)
        for key, schema in node["properties"].items()
    }
    return st.fixed_dictionaries(fields).map(
        lambda drawn: {k: v for k, v in drawn.items() if v is not None}
    )


# One broken thing per spec. Each takes (schema node, current value) and returns the
# replacement, or None when it does not apply there.
Breaker = Callable[[Node, Any], Any]


def _wrong_type(node: Node, value: Any) -> Any:
    kind = "int-or-string" if node.get("x-kubernetes-int-or-string") else node.get("type")
    options: dict[str, list[Any]] = {
        "integer": ["3", True, 3.5, 2.0, [], {}, "abc"],
        "boolean": ["true", 1, 0, "yes", [], {}],
        "string": [5, True, 1.5, [], {}],
        "object": [5, "x", [], True],
        "array": [{}, "x", 5],
        "int-or-string": [True, 1.5, [], {}],
    }
    return options.get(str(kind), [None])


def _out_of_range(node: Node, value: Any) -> Any:
    if node.get("type") != "integer" and not node.get("x-kubernetes-int-or-string"):
        return None
    options = []
    if "minimum" in node:
        options += [node["minimum"] - 1, -(2**31)]
    if "maximum" in node:
        options += [node["maximum"] + 1, node["maximum"] + 10_000]
    return options or None


def _bad_string(node: Node, value: Any) -> Any:
    if not isinstance(value, str):
        return None
    options: list[Any] = []
    if "pattern" in node:
        options += [value + "\n", " " + value, value + " x", "Ünïcode", ""]
    if "enum" in node:
        options += [value.upper() if value.upper() != value else value.lower(), value + "x", ""]
    if "maxLength" in node:
        too_long = [c * (node["maxLength"] + 1) for c in "a1"] + ["pvc://" + "a" * 2048]
        options += [s for s in too_long if matches(node.get("pattern", ""), s)][:1]
    if node.get("minLength"):
        options.append("")
    return options or None


def _too_many(node: Node, value: Any) -> Any:
    if isinstance(value, list) and value and "maxItems" in node:
        return [[value[0]] * (node["maxItems"] + 1)]
    if isinstance(value, dict) and "maxProperties" in node and value:
        first = next(iter(value.values()))
        return [{f"k{i}": first for i in range(node["maxProperties"] + 1)}]
    return None


def _missing_required(node: Node, value: Any) -> Any:
    if not isinstance(value, dict) or not node.get("required"):
        return None
    return [{k: v for k, v in value.items() if k != key} for key in node["required"]]


def _unknown_field(node: Node, value: Any) -> Any:
    if not isinstance(value, dict) or "properties" not in node:
        return None
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return None
    return [{**value, "bogusField": 1}, {**value, "max_batch_size": 4}]


def _null(node: Node, value: Any) -> Any:
    return [None]  # a field set to null: pruned, as if absent


BREAKERS: dict[str, Breaker] = {
    "wrong type": _wrong_type,
    "out of range": _out_of_range,
    "bad string": _bad_string,
    "too many": _too_many,
    "missing required": _missing_required,
    "unknown field": _unknown_field,
    "null": _null,
}

# Cross-field (CEL) violations: (path of the object, what to lay over it).
SECRET = {"name": "tts-token", "key": "token"}
CEL_BREAKS: list[tuple[Path, dict[str, Any]]] = [
    ((), {"replicas": 2, "autoscaling": {"enabled": True}}),
    (("autoscaling",), {"minReplicas": 5, "maxReplicas": 2}),
    (("autoscaling",), {"minReplicas": 5}),  # above the default maxReplicas, 4
    (("model",), {"uri": "pvc://voices/en", "sha256": "a" * 64}),
    (("model",), {"uri": "file:///voices/en.onnx", "configSha256": "b" * 64}),
    (("model",), {"uri": "https://h.example/en.onnx", "tokenSecretRef": SECRET}),
    (("runtime", "env", 0), {"name": "A", "value": "1", "valueFrom": {"fieldRef": {}}}),
]


@dataclass(frozen=True)
class Case:
    spec: Any
    mutation: str  # what was broken, and where ("unbroken" for nothing)
    # The spec before the break passed the offline API server: then the break is the only
    # problem, and both sides should name exactly its field.
    base_valid: bool


def _within_cel_rules(spec: dict[str, Any]) -> dict[str, Any]:
    """A drawn spec made to keep the CRD's cross-field rules, which drawing each field on
    its own breaks often (a digest on a pvc:// model, minReplicas above maxReplicas): the
    "cel" kind of break is then the only one that breaks them."""
    model = spec["model"]
    if not model["uri"].startswith(("http://", "https://", "hf://")):
        model.pop("sha256", None)
        model.pop("configSha256", None)
    if not model["uri"].startswith("hf://"):
        model.pop("tokenSecretRef", None)
    scaling = spec.get("autoscaling", {})
    low, high = scaling.get("minReplicas", 1), scaling.get("maxReplicas", 4)
    if low > high:
        scaling["minReplicas"], scaling["maxReplicas"] = high, low
    if scaling.get("enabled"):
        spec.pop("replicas", None)
    for env in spec.get("runtime", {}).get("env", []):
        if "value" in env:
            env.pop("valueFrom", None)
    return spec


# What spec_cases breaks: nothing, a CEL rule, or one of BREAKERS.
KINDS = ("none", "cel", *BREAKERS)


@st.composite
def spec_cases(draw: st.DrawFn, kind: str) -> Case:
    """A spec drawn from the schema and broken in one place, as `kind` says."""
    spec = _within_cel_rules(draw(values(SCHEMA)))
    valid = api_server_verdict(spec).accepted
    if kind == "none":
        return Case(spec, "unbroken", valid)
    if kind == "cel":
        path, patch = draw(st.sampled_from(CEL_BREAKS))
        if path[:2] == ("runtime", "env"):
            spec.setdefault("runtime", {})["env"] = [patch]
        else:
            target = spec
            for part in path:
                target = target.setdefault(part, {})
            target.update(patch)
        return Case(spec, f"cel at {field_path(path)}: {patch}", valid)
    candidates = [
        (path, options)
        for path, node, value in walk(spec, SCHEMA)
        if (options := BREAKERS[kind](node, value)) is not None and (path or kind != "null")
    ]
    assume(candidates)  # nothing of that kind in this spec (no list to overfill, say)
    path, options = draw(st.sampled_from(candidates))
    new = draw(st.sampled_from(options))
    if path:
        put(spec, path, new)
    else:
        spec = new
    return Case(spec, f"{kind} at {field_path(path)}: {str(new)[:60]}", valid)
