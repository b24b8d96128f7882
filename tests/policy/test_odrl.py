"""Reading and validating ODRL documents as EDC / Catena-X / people write them."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from kifabrik.errors import KifabrikError
from kifabrik.policy import PolicyError, load_policy_file, parse_policy, policy_words, preset, preset_names
from kifabrik.policy.evaluate import expired
from kifabrik.policy.odrl import Constraint, Logical


def test_edc_policy_definition_is_normalised(edc_doc: dict) -> None:
    policy = parse_policy(edc_doc)
    assert policy.type == "Set"
    (perm,) = policy.permissions
    assert perm.action == "use" and perm.path == "policy.permission[0]"
    (node,) = perm.constraints
    assert isinstance(node, Logical) and node.op == "and"
    left = [c.left for c in node.items if isinstance(c, Constraint)]
    assert left == ["purpose", "count", "spatial"]
    assert node.items[1].right == 2  # type: ignore[union-attr]


def test_plain_odrl_with_single_objects_and_refinement() -> None:
    doc = {"@type": "Agreement", "uid": "urn:x", "permission": {
        "action": {"rdf:value": {"@id": "odrl:distribute"},
                   "refinement": {"leftOperand": "spatial", "operator": "isPartOf", "rightOperand": "eu"}},
        "constraint": {"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2030-01-01T00:00:00Z"}}}
    policy = parse_policy(doc)
    perm = policy.permissions[0]
    assert perm.action == "distribute" and policy.uid == "urn:x"
    spatial, when = perm.constraints
    assert spatial.right == ("EU",)  # type: ignore[union-attr]
    assert when.right == datetime(2030, 1, 1, tzinfo=UTC)  # type: ignore[union-attr]


def test_every_problem_is_reported_with_its_path() -> None:
    doc = {"@type": "Sett", "permision": [], "permission": [
        {"action": "usee", "constraint": [
            {"leftOperand": "purpose", "operator": "lt", "rightOperand": "training"},
            {"leftOperand": "FrameworkAgreement", "operator": "eq", "rightOperand": "x"},
            {"leftOperand": "dateTime", "operator": "lteq", "rightOperand": "31.12.2026"},
            {"leftOperand": "count", "operator": "lteq", "rightOperand": -1},
            {"leftOperand": "purpose", "operator": "eq", "rightOperand": ["training", "evaluation"]},
            {"operator": "eq", "rightOperand": "x"}]}]}
    with pytest.raises(PolicyError) as info:
        parse_policy(doc, "p.json")
    problems = info.value.problems
    text = "\n".join(problems)
    assert "@type: 'Sett' is not an ODRL policy type" in text
    assert "permision: unknown key (did you mean 'permission'?)" in text
    assert "permission[0].action: unknown ODRL action 'usee' (did you mean 'use'?)" in text
    assert "constraint[0].operator: 'lt' does not apply to purpose" in text
    assert "constraint[1].leftOperand: 'FrameworkAgreement' cannot be checked" in text
    assert "constraint[2].rightOperand: '31.12.2026' is not an ISO 8601 date" in text
    assert "constraint[3].rightOperand: count needs a whole number >= 0" in text
    assert "constraint[4].rightOperand: eq takes one value; for a list use isAnyOf" in text
    assert "constraint[5]: leftOperand is missing" in text
    assert len(problems) == 9
    assert str(info.value).startswith("p.json: invalid ODRL policy (9 problems)")


@pytest.mark.parametrize("doc, message", [
    ([], "a policy is a JSON object"),
    ({"@type": "Set"}, "the policy permits nothing"),
    ({"permission": [{"constraint": []}]}, "every permission needs an action"),
    ({"permission": [{"action": ["use", "distribute"]}]}, "exactly one action"),
    ({"permission": [{"action": "use"}], "prohibition": [{"action": "use", "duty": [{"action": "attribute"}]}]},
     "only permissions have duties"),
    ({"permission": [{"action": "use", "constraint": [{"and": []}]}]}, "needs at least one constraint"),
    ({"permission": [{"action": "use"}], "inheritFrom": "urn:p"}, "inheritance by reference is not supported"),
    ({"@type": "PolicyDefinition"}, "needs a `policy` object"),
])
def test_structural_errors(doc: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(doc)


def test_extension_keys_with_a_prefix_are_allowed() -> None:
    doc = {"dct:title": "t", "https://example.org/x": 1, "permission": [{"action": "odrl:use", "ex:note": "n"}]}
    assert parse_policy(doc).title == "t"


def test_every_preset_is_valid_and_described() -> None:
    for name in preset_names():
        spec = f"{name}:2030-01-31" if name == "expires-on" else name
        policy = parse_policy(preset(spec))
        assert policy_words(policy), name


def test_preset_arguments() -> None:
    assert "ACME \"GmbH\"" in json.dumps(preset("open-with-attribution:ACME \"GmbH\""), ensure_ascii=False) \
        or "ACME \\\"GmbH\\\"" in json.dumps(preset("open-with-attribution:ACME \"GmbH\""))
    assert parse_policy(preset("open-with-attribution:ACME \"GmbH\"")).permissions[0].duties[0].note == \
        'Attribute the data to ACME "GmbH".'
    with pytest.raises(KifabrikError, match="needs a date"):
        preset("expires-on")
    with pytest.raises(KifabrikError, match="not a date"):
        preset("expires-on:tomorrow")
    with pytest.raises(KifabrikError, match="takes no argument"):
        preset("internal-only:x")
    with pytest.raises(KifabrikError, match="unknown policy preset"):
        preset("internal")


def test_expiry_is_detected() -> None:
    policy = parse_policy(preset("expires-on:2020-06-30"))
    assert policy.permissions[0].constraints[0].right == date(2020, 6, 30)  # type: ignore[union-attr]
    assert "dateTime lteq 2020-06-30" in (expired(policy, datetime(2020, 7, 1, tzinfo=UTC)) or "")
    assert expired(policy, datetime(2020, 6, 30, 23, 59, tzinfo=UTC)) is None
    assert expired(parse_policy(preset("internal-only")), datetime(2099, 1, 1, tzinfo=UTC)) is None


def test_policy_file_errors(tmp_path: Path, edc_doc: dict) -> None:
    bad = tmp_path / "p.json"
    bad.write_text('{"permission": [\n  {"action": "use",}\n]}')
    with pytest.raises(KifabrikError, match=r"p.json:2:\d+: invalid JSON"):
        load_policy_file(bad)
    with pytest.raises(KifabrikError, match="no such policy file"):
        load_policy_file(tmp_path / "missing.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(edc_doc))
    doc, policy = load_policy_file(good)
    assert doc == edc_doc and policy.permissions


def test_parsing_does_not_change_the_document(edc_doc: dict) -> None:
    doc = copy.deepcopy(edc_doc)
    parse_policy(doc)
    assert doc == edc_doc
