"""Policies in words, for dataset cards, `kifabrik policy show` and refusal messages."""

from __future__ import annotations

from datetime import date, datetime

from kifabrik.policy.odrl import Constraint, Logical, Node, Policy, Rule, vocabulary

_ACTION_WORDS = {
    "use": "use",
    "distribute": "distribute (release or export)",
    "commercialize": "use commercially",
}


def _list(values: tuple[str, ...], conj: str = "or") -> str:
    words = [vocabulary()["purpose_words"].get(v, v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {conj} " + words[-1]


def _when(value: date | datetime) -> str:
    return value.isoformat() if isinstance(value, date) and not isinstance(value, datetime) else \
        value.strftime("%Y-%m-%d %H:%M UTC")


def constraint_words(node: Node, only: str = "only ") -> str:
    """`purpose isAnyOf [training, evaluation]` -> `only for training a model or evaluating a model`."""
    if isinstance(node, Logical):
        joiner = {"and": " and ", "andSequence": " and then ", "or": " or ", "xone": " or (exactly one) "}[node.op]
        return "(" + joiner.join(constraint_words(i, only) for i in node.items) + ")"
    c: Constraint = node
    op, right = c.operator, c.right
    if c.left == "purpose":
        if op in ("neq", "isNoneOf"):
            return f"not for {_list(right)}"
        return f"{only}for {_list(right, 'and' if op == 'isAllOf' else 'or')}"
    if c.left == "spatial":
        if op in ("neq", "isNoneOf"):
            return f"not in {_list(right)}"
        return f"{only}in {_list(right)}"
    if c.left == "dateTime":
        return {"lt": f"{only}before {_when(right)}", "lteq": f"{only}until {_when(right)}",
                "gt": f"{only}after {_when(right)}", "gteq": f"{only}from {_when(right)}"}[op]
    n = int(right)
    return {"lteq": f"at most {n} times", "lt": f"at most {n - 1} times", "eq": f"exactly the {n}th time",
            "neq": f"not the {n}th time", "gt": f"only after {n} uses", "gteq": f"only from the {n}th use"}[op]


def rule_words(rule: Rule) -> str:
    verb = _ACTION_WORDS.get(rule.action, rule.action)
    cons = ", ".join(constraint_words(n, "" if rule.kind == "prohibition" else "only ") for n in rule.constraints)
    if rule.kind == "permission":
        text = f"may {verb}" + (f" {cons}" if cons else "")
        if rule.duties:
            text += "; duty: " + "; ".join(rule_words(d) for d in rule.duties)
        return text
    if rule.kind == "prohibition":
        return f"must not {verb}" + (f" {cons}" if cons else "")
    return f"must {verb}" + (f" {cons}" if cons else "") + (f" ({rule.note})" if rule.note else "")


def policy_words(policy: Policy) -> list[str]:
    """One sentence per rule, permissions first."""
    lines = [f"Permitted: {rule_words(r)}." for r in policy.permissions]
    lines += [f"Prohibited: {rule_words(r)[len('must not '):]}." for r in policy.prohibitions]
    lines += [f"Duty: {rule_words(r)[len('must '):]}." for r in policy.obligations]
    if policy.conflict == "perm":
        lines.append("Where a permission and a prohibition both apply, the permission wins.")
    return lines
