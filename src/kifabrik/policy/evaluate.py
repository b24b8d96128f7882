"""Deciding one request against one parsed ODRL policy (pure: no database, no clock).

The rules, following ODRL 2.2 with a fail-closed reading where the standard leaves room:
- A rule applies when its action is the requested action or an ancestor of it in the ODRL
  action hierarchy (`use` covers `distribute` and `commercialize`) and all its constraints hold.
- A prohibition that applies denies, unless the policy says `conflict: perm` and a
  permission applies too. (`invalid`, ODRL's default for conflicts, voids the policy: also a denial.)
- Otherwise some permission must apply; its duties and the policy's obligations are returned.
- `count` constraints see the number of uses already consumed, plus one when this request
  consumes a use. So after the last permitted training, further trainings are refused while
  serving the trained model (which consumes nothing) is still allowed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache

from kifabrik.policy.odrl import DATA, Constraint, Node, Policy, Rule, vocabulary


@cache
def regions() -> dict[str, list[str]]:
    return {k: v for k, v in json.loads((DATA / "regions.json").read_text(encoding="utf-8")).items()
            if not k.startswith("_")}


def purpose_action(purpose: str) -> str:
    """The ODRL action a kifabrik purpose performs (`release` -> `distribute`)."""
    return vocabulary()["purposes"][purpose]


def covers(rule_action: str, action: str) -> bool:
    """True when `rule_action` is `action` or an ancestor of it in the action hierarchy."""
    parents = vocabulary()["actions"]
    seen = set()
    while action and action not in seen:
        if action == rule_action:
            return True
        seen.add(action)
        action = parents.get(action)
    return False


def within(region: str, area: str) -> bool:
    """`DE` lies within `EU`; every region lies within itself."""
    region, area = region.upper(), area.upper()
    return region == area or region in regions().get(area, [])


def _purpose_matches(purpose: str, value: str) -> bool:
    # Values may be plain (`training`) or namespaced (`kf:training`, `https://.../training`).
    return value == purpose or value.endswith((f":{purpose}", f"/{purpose}", f"#{purpose}"))


@dataclass(frozen=True)
class Request:
    """What is asked: a purpose at a moment in a region; `used(rule)` counts consumed uses."""

    purpose: str
    now: datetime
    region: str
    used: Callable[[Rule], int] = lambda rule: 0
    consume: bool = False

    @property
    def action(self) -> str:
        return purpose_action(self.purpose)


@dataclass(frozen=True)
class Decision:
    """The outcome for one policy; `rule` and `constraint` say what decided it."""

    permitted: bool
    reason: str
    rule: str | None = None
    constraint: str | None = None
    duties: tuple[Rule, ...] = ()
    counted: tuple[Rule, ...] = field(default=())  # permissions whose uses this request consumes


def holds(node: Node, req: Request, rule: Rule) -> tuple[bool, str | None]:
    """Whether a constraint holds; on failure also the text of the atomic constraint that failed."""
    if isinstance(node, Constraint):
        return (True, None) if _atomic(node, req, rule) else (False, node.text())
    results = [holds(item, req, rule) for item in node.items]
    oks = [ok for ok, _ in results]
    ok = {"and": all(oks), "andSequence": all(oks), "or": any(oks), "xone": sum(oks) == 1}[node.op]
    if ok:
        return True, None
    failed = [why for good, why in results if not good and why]
    return False, (failed[0] if node.op in ("and", "andSequence") and failed else node.text())


def _atomic(c: Constraint, req: Request, rule: Rule) -> bool:
    if c.left == "purpose":
        hits = [_purpose_matches(req.purpose, v) for v in c.right]
        return {"eq": any(hits), "isA": any(hits), "isAnyOf": any(hits), "neq": not any(hits),
                "isNoneOf": not any(hits), "isAllOf": all(hits)}[c.operator]
    if c.left == "spatial":
        hits = [within(req.region, v) for v in c.right]
        return {"eq": any(hits), "isA": any(hits), "isPartOf": any(hits), "isAnyOf": any(hits),
                "neq": not any(hits), "isNoneOf": not any(hits)}[c.operator]
    if c.left == "dateTime":
        now: date | datetime = req.now.date() if type(c.right) is date else req.now
        return _compare(now, c.operator, c.right)
    if c.left == "count":
        return _compare(req.used(rule) + (1 if req.consume else 0), c.operator, c.right)
    return False  # unknown operands never pass validation; fail closed all the same


def _compare(a: object, op: str, b: object) -> bool:
    return {"eq": a == b, "neq": a != b, "lt": a < b, "lteq": a <= b,  # type: ignore[operator]
            "gt": a > b, "gteq": a >= b}[op]  # type: ignore[operator]


def _all_hold(rule: Rule, req: Request) -> tuple[bool, str | None]:
    for node in rule.constraints:
        ok, why = holds(node, req, rule)
        if not ok:
            return False, why
    return True, None


def has_count(rule: Rule) -> bool:
    def walk(node: Node) -> bool:
        return node.left == "count" if isinstance(node, Constraint) else any(walk(i) for i in node.items)

    return any(walk(n) for n in rule.constraints)


def decide(policy: Policy, req: Request) -> Decision:
    """Permit or deny `req` under `policy` (see the module docstring for the rules)."""
    action = req.action
    prohibited = []
    for rule in policy.prohibitions:
        if covers(rule.action, action):
            ok, _ = _all_hold(rule, req)
            if ok:
                prohibited.append(rule)
    candidates = [r for r in policy.permissions if covers(r.action, action)]
    first_failure: tuple[Rule, str | None] | None = None
    granted = None
    for rule in candidates:
        ok, why = _all_hold(rule, req)
        if ok:
            granted = rule
            break
        first_failure = first_failure or (rule, why)
    if prohibited and not (granted and policy.conflict == "perm"):
        rule = prohibited[0]
        cons = "; ".join(n.text() for n in rule.constraints) or None
        return Decision(False, f"prohibition {rule.label} forbids {action}"
                        + (f" when {cons}" if cons else ""), rule.label, cons)
    if granted is None:
        if first_failure is None:
            return Decision(False, f"no permission covers the action {action!r} (purpose {req.purpose})",
                            constraint=f"action {action}")
        rule, why = first_failure
        return Decision(False, f"permission {rule.label} requires {why} (asked: purpose {req.purpose}, "
                        f"region {req.region}, {req.now:%Y-%m-%d %H:%M} UTC)", rule.label, why)
    counted = (granted,) if req.consume and has_count(granted) else ()
    return Decision(True, f"permission {granted.label} allows {action} for {req.purpose}", granted.label,
                    "; ".join(n.text() for n in granted.constraints) or None,
                    duties=granted.duties + policy.obligations, counted=counted)


def expired(policy: Policy, now: datetime) -> str | None:
    """Why nothing in `policy` can ever be permitted again from `now` on, or None.

    Only upper date bounds (`dateTime lt/lteq`) count: a policy whose every permission ends
    before `now` has expired. A start date in the future is not an expiry.
    """
    reasons = []
    for rule in policy.permissions:
        ended = [c for c in rule.constraints if isinstance(c, Constraint) and c.left == "dateTime"
                 and c.operator in ("lt", "lteq")
                 and not _atomic(c, Request("training", now, "EU"), rule)]
        if not ended:
            return None
        reasons.append(f"{rule.label}: {ended[0].text()}")
    return "; ".join(reasons) if reasons else None
