"""Deciding requests against policies: examples and hypothesis properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kifabrik.policy import PURPOSES, PolicyError, Request, decide, parse_policy, preset
from kifabrik.policy.evaluate import covers, regions, within

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OPS = {"purpose": ["eq", "neq", "isAnyOf", "isNoneOf"], "spatial": ["eq", "neq", "isAnyOf", "isNoneOf", "isPartOf"],
       "dateTime": ["lt", "lteq", "gt", "gteq"], "count": ["eq", "neq", "lt", "lteq", "gt", "gteq"]}
COMPLEMENT = {"eq": "neq", "neq": "eq", "isAnyOf": "isNoneOf", "isNoneOf": "isAnyOf", "lt": "gteq", "gteq": "lt",
              "lteq": "gt", "gt": "lteq"}
REGIONS = ["EU", "DE", "FR", "US", "CH", "EEA", "NO"]


def req(purpose: str, *, now: datetime = NOW, region: str = "DE", used: int = 0, consume: bool = False) -> Request:
    return Request(purpose, now, region, lambda rule: used, consume)


@st.composite
def constraints(draw: st.DrawFn) -> dict[str, Any]:
    left = draw(st.sampled_from(sorted(OPS)))
    op = draw(st.sampled_from(OPS[left]))
    many = op in ("isAnyOf", "isNoneOf")
    if left == "purpose":
        values = draw(st.lists(st.sampled_from(PURPOSES), min_size=1, max_size=3 if many else 1))
        right: Any = values if many else values[0]
    elif left == "spatial":
        values = draw(st.lists(st.sampled_from(REGIONS), min_size=1, max_size=3 if many else 1))
        right = values if many else values[0]
    elif left == "dateTime":
        right = (NOW.date() + timedelta(days=draw(st.integers(-400, 400)))).isoformat()
    else:
        right = draw(st.integers(0, 5))
    return {"leftOperand": left, "operator": op, "rightOperand": right}


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    return {"action": draw(st.sampled_from(["use", "distribute", "commercialize"])),
            "constraint": draw(st.lists(constraints(), max_size=3))}


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    return {"@type": "Set", "permission": draw(st.lists(rules(), min_size=1, max_size=3)),
            "prohibition": draw(st.lists(rules(), max_size=2)),
            "conflict": draw(st.sampled_from(["prohibit", "perm", "invalid"]))}


def test_internal_only_example() -> None:
    policy = parse_policy(preset("internal-only"))
    assert decide(policy, req("training")).permitted
    release = decide(policy, req("release"))
    assert not release.permitted and release.rule == "prohibition[0]"
    assert "forbids distribute" in release.reason


def test_action_hierarchy() -> None:
    assert covers("use", "distribute") and covers("use", "commercialize") and covers("use", "use")
    assert not covers("distribute", "use") and not covers("transfer", "use") and not covers("use", "transfer")


def test_regions() -> None:
    assert within("DE", "EU") and within("EU", "EU") and within("NO", "EEA") and within("de", "eu")
    assert not within("US", "EU") and not within("CH", "EU") and not within("EU", "DE")
    assert len(regions()["EU"]) == 27


def test_date_bounds_are_inclusive_for_whole_days() -> None:
    policy = parse_policy(preset("expires-on:2026-06-01"))
    assert decide(policy, req("serving", now=datetime(2026, 6, 1, 23, 59, tzinfo=UTC))).permitted
    late = decide(policy, req("serving", now=datetime(2026, 6, 2, 0, 0, tzinfo=UTC)))
    assert not late.permitted and late.constraint == "dateTime lteq 2026-06-01"


def test_duties_come_with_the_permission() -> None:
    doc = {"permission": [{"action": "use", "duty": [{"action": "attribute"}]}],
           "obligation": [{"action": "inform"}]}
    decision = decide(parse_policy(doc), req("release"))
    assert decision.permitted and [d.action for d in decision.duties] == ["attribute", "inform"]


def test_conflict_perm_lets_a_permission_win() -> None:
    doc = {"permission": [{"action": "use", "constraint": [{"leftOperand": "purpose", "operator": "eq",
                                                            "rightOperand": "release"}]}],
           "prohibition": [{"action": "distribute"}]}
    assert not decide(parse_policy(doc), req("release")).permitted
    assert decide(parse_policy({**doc, "conflict": "perm"}), req("release")).permitted


@given(policies(), st.sampled_from(PURPOSES), st.sampled_from(REGIONS), st.integers(0, 6), st.booleans())
@settings(max_examples=300, deadline=None)
def test_adding_a_prohibition_never_permits_more(doc: dict[str, Any], purpose: str, region: str, used: int,
                                                consume: bool) -> None:
    r = req(purpose, region=region, used=used, consume=consume)
    before = decide(parse_policy(doc), r)
    after = decide(parse_policy({**doc, "conflict": "prohibit", "prohibition": [*doc["prohibition"], {"action": "use"}]}), r)
    assert not after.permitted
    if not before.permitted and doc["conflict"] != "perm":
        assert not after.permitted


@given(policies(), rules(), st.sampled_from(PURPOSES), st.sampled_from(REGIONS), st.integers(0, 6))
@settings(max_examples=300, deadline=None)
def test_adding_a_permission_never_denies_more(doc: dict[str, Any], extra: dict[str, Any], purpose: str,
                                               region: str, used: int) -> None:
    r = req(purpose, region=region, used=used)
    before = decide(parse_policy(doc), r)
    after = decide(parse_policy({**doc, "permission": [*doc["permission"], extra]}), r)
    if before.permitted:
        assert after.permitted


@given(constraints(), st.sampled_from(PURPOSES), st.sampled_from(REGIONS), st.integers(0, 6), st.booleans())
@settings(max_examples=400, deadline=None)
def test_complementary_operators_decide_oppositely(c: dict[str, Any], purpose: str, region: str, used: int,
                                                   consume: bool) -> None:
    if c["operator"] not in COMPLEMENT:
        return
    flipped = {**c, "operator": COMPLEMENT[c["operator"]]}
    r = req(purpose, region=region, used=used, consume=consume)
    a = decide(parse_policy({"permission": [{"action": "use", "constraint": [c]}]}), r).permitted
    b = decide(parse_policy({"permission": [{"action": "use", "constraint": [flipped]}]}), r).permitted
    assert a != b


@given(st.integers(0, 8))
def test_count_limit_allows_exactly_n_consuming_uses(limit: int) -> None:
    policy = parse_policy({"permission": [{"action": "use", "constraint": [
        {"leftOperand": "count", "operator": "lteq", "rightOperand": limit}]}]})
    granted = [decide(policy, req("training", used=u, consume=True)).permitted for u in range(limit + 3)]
    assert granted == [True] * limit + [False] * 3
    # serving consumes nothing: allowed while the limit is not overrun
    assert decide(policy, req("serving", used=limit)).permitted


@given(st.sampled_from(PURPOSES), st.sampled_from(REGIONS))
def test_denials_always_name_a_reason(purpose: str, region: str) -> None:
    for name in ("internal-only", "evaluation-only", "research-non-commercial", "expires-on:2020-01-01"):
        decision = decide(parse_policy(preset(name)), req(purpose, region=region))
        assert decision.reason
        if not decision.permitted:
            assert decision.rule or decision.constraint


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
                               st.sampled_from(["permission", "action", "constraint", "leftOperand", "operator",
                                                "rightOperand", "and", "@id", "@type", "policy", "duty", "x"]),
                               kids, max_size=4), max_leaves=20)


@given(json_values)
@settings(max_examples=500, deadline=None)
def test_parser_never_crashes_on_garbage(doc: Any) -> None:
    try:
        policy = parse_policy(doc)
    except PolicyError as exc:
        assert exc.problems
    else:
        for purpose in PURPOSES:
            decide(policy, req(purpose))


def test_dates_compare_as_dates_or_moments() -> None:
    day = parse_policy({"permission": [{"action": "use", "constraint": [
        {"leftOperand": "dateTime", "operator": "gteq", "rightOperand": "2026-06-01"}]}]})
    moment = parse_policy({"permission": [{"action": "use", "constraint": [
        {"leftOperand": "dateTime", "operator": "gteq", "rightOperand": "2026-06-01T13:00:00+01:00"}]}]})
    assert day.permissions[0].constraints[0].right == date(2026, 6, 1)  # type: ignore[union-attr]
    assert decide(day, req("training")).permitted
    assert decide(moment, req("training")).permitted  # 13:00+01:00 == 12:00Z == NOW
    assert not decide(moment, req("training", now=NOW - timedelta(seconds=1))).permitted


def test_company_internal_permits_commercial_use_inside_and_no_distribution() -> None:
    """What most companies mean by their own data: use it commercially inside, never hand it out."""
    policy = parse_policy(preset("company-internal"))
    decided = {p: decide(policy, req(p)).permitted for p in PURPOSES}
    assert decided == {p: p != "release" for p in PURPOSES}
    assert not decide(parse_policy(preset("internal-only")), req("commercialUse")).permitted


def test_every_preset_states_itself_in_one_sentence() -> None:
    from kifabrik.policy import preset_names

    for name in preset_names():
        spec = {"expires-on": "expires-on:2030-01-01"}.get(name, name)
        description = preset(spec)["dct:description"]
        assert description.endswith(".") and len(description) < 300, name
