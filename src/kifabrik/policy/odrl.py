"""ODRL 2.2 usage policies: read the JSON-LD that EDC and Catena-X write, validate it.

No JSON-LD processor runs here (it would fetch remote contexts); instead the compacted
shapes that the Eclipse Dataspace Connector, Catena-X and hand-written ODRL use are
normalised: `odrl:permission`, a full IRI and `permission` are the same key; values may be
plain, `{"@id": ...}`, `{"@value": ...}` or `{"@list": [...]}`; a single rule or constraint
may stand where a list is expected; an EDC `PolicyDefinition` wraps the policy in `policy`.

Validation collects every problem with its JSON path and raises one `PolicyError`.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

from kifabrik.errors import KifabrikError
from kifabrik.files import load_json_text, read_input

DATA = Path(__file__).parent / "data"
POLICY_TYPES = ("Set", "Offer", "Agreement", "Policy")
LOGICAL = ("and", "or", "xone", "andSequence")
SET_OPERATORS = ("isAnyOf", "isAllOf", "isNoneOf")
RULE_KEYS = ("action", "constraint", "duty", "target", "assignee", "assigner", "uid", "consequence", "remedy")
POLICY_KEYS = ("permission", "prohibition", "obligation", "uid", "conflict", "profile", "target", "assigner",
               "assignee", "inheritFrom", "policy")


class PolicyError(KifabrikError):
    """An ODRL document that kifabrik cannot accept; `problems` lists each `path: reason`."""

    def __init__(self, problems: list[str], source: str = "policy") -> None:
        self.problems = problems
        n = len(problems)
        super().__init__(f"{source}: invalid ODRL policy ({n} problem{'s' if n > 1 else ''}):\n  " + "\n  ".join(problems),
                         hint="fix the document, or start from a preset: `kifabrik policy presets`")


@cache
def vocabulary() -> dict[str, Any]:
    return json.loads((DATA / "vocabulary.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Constraint:
    """An atomic constraint; `right` is normalised (tuple of str, int, date or datetime)."""

    left: str
    operator: str
    right: Any
    path: str

    def text(self) -> str:
        right = self.right
        if isinstance(right, tuple):
            shown = right[0] if len(right) == 1 and self.operator not in SET_OPERATORS else \
                "[" + ", ".join(str(v) for v in right) + "]"
        elif isinstance(right, datetime | date):
            shown = right.isoformat()
        else:
            shown = str(right)
        return f"{self.left} {self.operator} {shown}"


@dataclass(frozen=True)
class Logical:
    """`and` / `or` / `xone` / `andSequence` over constraints."""

    op: str
    items: tuple[Constraint | Logical, ...]
    path: str

    def text(self) -> str:
        return f"{self.op}(" + "; ".join(i.text() for i in self.items) + ")"


Node = Constraint | Logical


@dataclass(frozen=True)
class Rule:
    """A permission, prohibition or duty. `constraints` are and-ed (refinements included)."""

    kind: Literal["permission", "prohibition", "duty"]
    action: str
    constraints: tuple[Node, ...]
    path: str
    uid: str | None = None
    duties: tuple[Rule, ...] = ()
    note: str | None = None  # a description (e.g. the attribution text) shown to people

    @property
    def label(self) -> str:
        return f"{self.path} ({self.uid})" if self.uid else self.path


@dataclass(frozen=True)
class Policy:
    uid: str | None
    type: str
    permissions: tuple[Rule, ...]
    prohibitions: tuple[Rule, ...]
    obligations: tuple[Rule, ...]
    conflict: str = "prohibit"
    title: str | None = None
    description: str | None = None
    document: dict[str, Any] = field(default_factory=dict, compare=False)


# --------------------------------------------------------------------------- normalising
def local(name: str) -> str:
    """`odrl:permission`, `http://www.w3.org/ns/odrl/2/permission` -> `permission`."""
    for sep in ("#", "/"):
        if sep in name:
            name = name.rsplit(sep, 1)[1]
    return name.rsplit(":", 1)[1] if ":" in name else name


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        for key in ("@id", "@value", "id"):
            if key in value and len([k for k in value if not k.startswith("@") or k == key]) <= 1:
                return value[key]
        if "@list" in value:
            return value["@list"]
    return value


def _as_list(value: Any) -> list[Any]:
    value = _unwrap(value) if isinstance(value, dict) and "@list" in value else value
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


class _Parser:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.vocab = vocabulary()

    def err(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def keys(self, obj: dict[str, Any], path: str, known: tuple[str, ...]) -> dict[str, Any]:
        """Localise keys; unknown plain keys are errors (typos), prefixed or IRI keys are extensions."""
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if key.startswith("@"):
                out[key] = value
                continue
            name = local(key)
            if name in out:
                self.err(path, f"key {name!r} is given twice (as {key!r} too)")
            if name not in known and ":" not in key and "/" not in key:
                close = difflib.get_close_matches(name, known, n=1)
                self.err(f"{path}.{key}", "unknown key" + (f" (did you mean {close[0]!r}?)" if close else
                                                          f"; known: {', '.join(known)}"))
            out[name] = value
        return out

    # ---------------------------------------------------------------- policy
    def policy(self, doc: Any) -> Policy | None:
        if not isinstance(doc, dict):
            self.err("(top level)", f"a policy is a JSON object, not {type(doc).__name__}")
            return None
        top = self.keys(doc, "(top level)", POLICY_KEYS + ("description", "title"))
        path = ""
        if local(str(_unwrap(top.get("@type", "")))) == "PolicyDefinition" or "policy" in top:
            inner = top.get("policy")
            if not isinstance(inner, dict):
                self.err("policy", "an EDC PolicyDefinition needs a `policy` object")
                return None
            top, path = self.keys(inner, "policy", POLICY_KEYS), "policy."
        ptype = local(str(_unwrap(top.get("@type", "Set"))))
        if ptype not in POLICY_TYPES:
            self.err(f"{path}@type", f"{ptype!r} is not an ODRL policy type; use one of {', '.join(POLICY_TYPES)}")
        conflict = local(str(_unwrap(top.get("conflict", "prohibit"))))
        if conflict not in ("perm", "prohibit", "invalid"):
            self.err(f"{path}conflict", f"{conflict!r}: use perm, prohibit or invalid")
        if "inheritFrom" in top:
            self.err(f"{path}inheritFrom", "policy inheritance by reference is not supported; inline the rules")
        rules = {kind: tuple(r for i, raw in enumerate(_as_list(top.get(key)))
                             if (r := self.rule(raw, kind, f"{path}{key}[{i}]")) is not None)
                 for key, kind in (("permission", "permission"), ("prohibition", "prohibition"),
                                   ("obligation", "duty"))}
        if not rules["permission"] and not any(p.startswith(f"{path}permission") for p in self.problems):
            self.err(f"{path}permission", "the policy permits nothing: add at least one permission")
        uid = _unwrap(top.get("@id") or top.get("uid") or doc.get("@id"))
        return Policy(uid=str(uid) if uid else None, type=ptype, permissions=rules["permission"],
                      prohibitions=rules["prohibition"], obligations=rules["duty"], conflict=conflict,
                      title=_text(doc, "title"), description=_text(doc, "description"), document=doc)

    # ---------------------------------------------------------------- rules
    def rule(self, raw: Any, kind: Literal["permission", "prohibition", "duty"], path: str) -> Rule | None:
        if not isinstance(raw, dict):
            self.err(path, f"a {kind} is a JSON object, not {type(raw).__name__}")
            return None
        obj = self.keys(raw, path, RULE_KEYS + ("description", "title", "refinement"))
        action, refinements = self.action(obj.get("action"), kind, f"{path}.action")
        constraints = [n for i, c in enumerate(_as_list(obj.get("constraint")))
                       if (n := self.node(c, f"{path}.constraint[{i}]")) is not None]
        duties: list[Rule] = []
        if "duty" in obj:
            if kind != "permission":
                self.err(f"{path}.duty", f"only permissions have duties, not a {kind}")
            duties = [d for i, raw_d in enumerate(_as_list(obj["duty"]))
                      if (d := self.rule(raw_d, "duty", f"{path}.duty[{i}]")) is not None]
        uid = _unwrap(obj.get("@id") or obj.get("uid"))
        return Rule(kind=kind, action=action or "?", constraints=tuple(refinements + constraints), path=path,
                    uid=str(uid) if uid else None, duties=tuple(duties), note=_text(raw, "description"))

    def action(self, raw: Any, kind: str, path: str) -> tuple[str | None, list[Node]]:
        if raw is None:
            self.err(path, f"every {kind} needs an action (e.g. \"use\")")
            return None, []
        items = _as_list(raw)
        if len(items) != 1:
            self.err(path, "give exactly one action per rule (split the rule in two)")
            return None, []
        item, refinements = items[0], []
        if isinstance(item, dict):
            obj = {local(k) if not k.startswith("@") else k: v for k, v in item.items()}
            refinements = [n for i, c in enumerate(_as_list(obj.get("refinement")))
                           if (n := self.node(c, f"{path}.refinement[{i}]")) is not None]
            item = obj.get("value", obj.get("@id", obj.get("type", obj.get("@type"))))
            item = _unwrap(item)
        if not isinstance(item, str) or not item:
            self.err(path, "the action must be a name such as \"use\"")
            return None, refinements
        name = local(item)
        known = {a.lower(): a for a in [*self.vocab["actions"], *self.vocab["duties"]]}
        if name.lower() not in known:
            close = difflib.get_close_matches(name, list(known.values()), n=1)
            self.err(path, f"unknown ODRL action {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            return None, refinements
        return known[name.lower()], refinements

    # ---------------------------------------------------------------- constraints
    def node(self, raw: Any, path: str) -> Node | None:
        if not isinstance(raw, dict):
            self.err(path, f"a constraint is a JSON object, not {type(raw).__name__}")
            return None
        obj = {local(k) if not k.startswith("@") else k: v for k, v in raw.items()}
        logical = [k for k in LOGICAL if k in obj]
        if logical:
            op = logical[0]
            items = [n for i, c in enumerate(_as_list(obj[op])) if (n := self.node(c, f"{path}.{op}[{i}]")) is not None]
            if not _as_list(obj[op]):
                self.err(f"{path}.{op}", "a logical constraint needs at least one constraint")
            return Logical(op, tuple(items), path)
        obj = self.keys(raw, path, ("leftOperand", "operator", "rightOperand", "unit", "dataType",
                                    "rightOperandReference", "status", "uid"))
        for key in ("leftOperand", "operator"):
            if key not in obj:
                self.err(path, f"{key} is missing")
        if "rightOperandReference" in obj:
            self.err(f"{path}.rightOperandReference", "references are not resolved; give the rightOperand value")
        elif "rightOperand" not in obj:
            self.err(path, "rightOperand is missing")
        if any(k not in obj for k in ("leftOperand", "operator", "rightOperand")):
            return None
        left_raw = local(str(_unwrap(obj["leftOperand"])))
        left = self.vocab["left_operands"].get(left_raw.lower())
        if left is None:
            self.err(f"{path}.leftOperand", f"{left_raw!r} cannot be checked by kifabrik; supported left operands: "
                                            "purpose (also UsagePurpose), dateTime, count, spatial")
            return None
        op = local(str(_unwrap(obj["operator"])))
        allowed = self.vocab["operators"][left]
        if op not in allowed:
            self.err(f"{path}.operator", f"{op!r} does not apply to {left}; use one of {', '.join(allowed)}")
            return None
        right = self.right(left, op, obj["rightOperand"], f"{path}.rightOperand")
        return None if right is None else Constraint(left, op, right, path)

    def right(self, left: str, op: str, raw: Any, path: str) -> Any:
        values = [_unwrap(v) for v in _as_list(raw)]
        if not values:
            self.err(path, "empty value")
            return None
        if op not in SET_OPERATORS and len(values) > 1:
            self.err(path, f"{op} takes one value; for a list use isAnyOf or isNoneOf")
            return None
        if left in ("purpose", "spatial"):
            if not all(isinstance(v, str) and v.strip() for v in values):
                self.err(path, f"{left} values must be non-empty strings")
                return None
            return tuple(v.strip().upper() if left == "spatial" else v.strip() for v in values)
        value = values[0]
        if left == "count":
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                self.err(path, f"count needs a whole number >= 0, not {value!r}")
                return None
            return value
        parsed = parse_when(value)
        if parsed is None:
            self.err(path, f"{value!r} is not an ISO 8601 date or date-time (e.g. 2026-12-31 or 2026-12-31T23:59:59Z)")
        return parsed


def parse_when(value: Any) -> date | datetime | None:
    """An ISO date stays a `date`; a date-time becomes an aware UTC `datetime` (naive = UTC)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _text(obj: Any, key: str) -> str | None:
    if not isinstance(obj, dict):
        return None
    for k, v in obj.items():
        if local(k) == key:
            v = _unwrap(v)
            return v if isinstance(v, str) else None
    return None


def parse_policy(document: Any, source: str = "policy") -> Policy:
    """Validate an ODRL document and return its normalised form, or raise `PolicyError` with every problem."""
    parser = _Parser()
    policy = parser.policy(document)
    if parser.problems or policy is None:
        raise PolicyError(parser.problems or ["not a policy"], source)
    return policy


def load_policy_file(path: Path) -> tuple[dict[str, Any], Policy]:
    """Read and validate an ODRL JSON(-LD) file; errors name the file (and line for JSON syntax)."""
    try:
        text = read_input(path)
    except FileNotFoundError:
        raise KifabrikError(f"{path}: no such policy file", hint="give an ODRL JSON-LD file or use --policy-preset") from None
    except UnicodeDecodeError as exc:
        raise KifabrikError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})", hint="save it as UTF-8") from None
    try:
        doc = load_json_text(text, str(path))
    except json.JSONDecodeError as exc:
        raise KifabrikError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}",
                            hint="an ODRL policy is a JSON-LD document") from None
    return doc, parse_policy(doc, str(path))
