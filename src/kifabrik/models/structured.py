"""Constrained decoding: output that follows a JSON Schema or the tool-call format, token by token.

A `Constraint` says what the answer must look like (a JSON value of a schema, or the
structural tag of `toolcalls.call_format`: free text with valid `<tool_call>` blocks, or
exactly one call). `compile_constraint` turns it into a grammar for one tokenizer with
xgrammar (cached); a `Matcher` follows one sequence through it and masks, before each
token is sampled, every token the grammar does not allow. So even a 135M model emits a
call whose name is one of the offered tools and whose arguments validate.

Both decoding paths use the same `Matcher`: the batch decoder of `kifabrik serve`
(`serve.backends.decode`, one per row) and `LoadedModel.generate_ids` (through
`ConstrainedLogits`, a transformers logits processor).

Schema keywords the grammar cannot enforce are refused before anything runs
(`UnsupportedSchema` names the parameter and the keyword), instead of producing output
that silently breaks the schema.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kifabrik.errors import KifabrikError

#: Keywords that only annotate a schema (nothing to enforce).
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
                         "readOnly", "writeOnly", "$anchor", "contentMediaType", "contentEncoding"})
#: Keywords the grammar enforces (xgrammar's JSON-Schema converter).
ENFORCED = frozenset({"type", "properties", "required", "additionalProperties", "items", "prefixItems", "enum",
                      "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern", "format",
                      "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                      "minItems", "maxItems", "minProperties", "maxProperties", "propertyNames"})
#: Largest length or count bound accepted: each unit is a grammar repetition, so a huge bound is a huge grammar.
MAX_BOUND = 4096
#: `format` values the grammar knows.
FORMATS = frozenset({"email", "date", "time", "date-time", "duration", "uuid", "uri", "uri-reference", "ipv4", "ipv6",
                     "hostname", "uri-template", "json-pointer", "relative-json-pointer"})
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMAS = ("items", "additionalProperties", "propertyNames")


class UnsupportedSchema(KifabrikError):
    """A schema that constrained decoding cannot enforce; `param` names where (`response_format.json_schema.schema`)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message, hint="remove or rewrite that part of the schema")
        self.param = param


def require_xgrammar() -> None:
    if importlib.util.find_spec("xgrammar") is None:
        raise KifabrikError("constrained decoding needs the xgrammar package, which is not installed",
                            hint="pip install --no-deps xgrammar==0.2.9 apache-tvm-ffi")


def check_schema(schema: Any, param: str) -> None:
    """Raise `UnsupportedSchema` for a schema that is invalid, or uses what the grammar cannot enforce."""
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    if not isinstance(schema, dict | bool):
        raise UnsupportedSchema(f"{param} must be a JSON Schema object", param)
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise UnsupportedSchema(f"{param} is not a valid JSON Schema: {exc.message}", param) from None
    for where, node in _walk(schema, param):
        for key in node:
            if key in ANNOTATIONS or key in ENFORCED:
                continue
            raise UnsupportedSchema(f"{where}: the keyword {key!r} cannot be enforced while decoding "
                                    f"(supported: {', '.join(sorted(ENFORCED))})", f"{where}.{key}")
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            raise UnsupportedSchema(f"{where}: only local references (#/$defs/...) are supported, not {ref!r}",
                                    f"{where}.$ref")
        if "format" in node and node["format"] not in FORMATS:
            raise UnsupportedSchema(f"{where}: format {node['format']!r} is not supported "
                                    f"(supported: {', '.join(sorted(FORMATS))})", f"{where}.format")
        for key in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
            if isinstance(node.get(key), int) and node[key] > MAX_BOUND:
                raise UnsupportedSchema(f"{where}: {key} {node[key]} is above the supported {MAX_BOUND}",
                                        f"{where}.{key}")


def _walk(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(node, dict):
        return
    yield where, node
    for key in _SUBSCHEMA_MAPS:
        for name, sub in (node.get(key) or {}).items():
            yield from _walk(sub, f"{where}.{key}.{name}")
    for key in _SUBSCHEMA_LISTS:
        for i, sub in enumerate(node.get(key) or []):
            yield from _walk(sub, f"{where}.{key}[{i}]")
    for key in _SUBSCHEMAS:
        yield from _walk(node.get(key), f"{where}.{key}")


@dataclass(frozen=True)
class Constraint:
    """What the generated text must be: a JSON value (`json`) or a structural tag (`tags`, tool calls).

    `spec` is JSON text (the schema, or the structural tag), so that a constraint is hashable and the
    compiled grammar can be cached by it.
    """

    kind: Literal["json", "tags"]
    spec: str

    @classmethod
    def json_object(cls) -> Constraint:
        """Any JSON object (`response_format: {"type": "json_object"}`)."""
        return cls("json", json.dumps({"type": "object"}))

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | bool, param: str = "schema") -> Constraint:
        """A JSON value valid under `schema`; raises `UnsupportedSchema` first if it cannot be enforced."""
        check_schema(schema, param)
        return cls("json", json.dumps(schema, ensure_ascii=False))

    @classmethod
    def tags(cls, structural_tag: dict[str, Any]) -> Constraint:
        """A structural tag (`toolcalls.call_format`); its schemas were checked where they were given."""
        return cls("tags", json.dumps(structural_tag, ensure_ascii=False))


# --------------------------------------------------------------------------- compiling, cached per tokenizer

_COMPILERS: OrderedDict[tuple[int, int, tuple[int, ...]], tuple[Any, Any]] = OrderedDict()
_GRAMMARS: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_LOCK = threading.Lock()
#: Compiled grammars kept per process (a served model sees the same tool lists again and again).
CACHE_SIZE = 64


def _compiler(tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> Any:
    import xgrammar as xgr

    key = (id(tokenizer), vocab_size, tuple(sorted(stop_ids)))
    if key not in _COMPILERS:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(key[2]))
        # the tokenizer is kept with its compiler, so its id() cannot be reused by another one
        _COMPILERS[key] = (tokenizer, xgr.GrammarCompiler(info, max_threads=1))
        while len(_COMPILERS) > 4:
            _COMPILERS.popitem(last=False)
    return _COMPILERS[key][1]


def compile_constraint(tokenizer: Any, vocab_size: int, stop_ids: Sequence[int], constraint: Constraint) -> Any:
    """The compiled grammar of `constraint` for this tokenizer (an xgrammar `CompiledGrammar`), cached.

    `vocab_size` is the width of the model's logits (may exceed the tokenizer's vocabulary);
    `stop_ids` end the sequence once the grammar is complete.
    """
    require_xgrammar()
    key = (id(tokenizer), vocab_size, tuple(sorted(stop_ids)), constraint)
    with _LOCK:
        if key in _GRAMMARS:
            _GRAMMARS.move_to_end(key)
            return _GRAMMARS[key]
        compiler = _compiler(tokenizer, vocab_size, stop_ids)
        try:
            if constraint.kind == "json":
                # strict: no properties beyond the schema's (a subset of what the schema allows, so the
                # output still validates), except for a bare {"type": "object"}, which means any object;
                # any_whitespace=False: compact JSON, so a small model cannot spend its tokens on blanks
                strict = json.loads(constraint.spec) != {"type": "object"}
                grammar = compiler.compile_json_schema(constraint.spec, any_whitespace=False, strict_mode=strict)
            else:
                grammar = compiler.compile_structural_tag(constraint.spec)
        except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError / ValueError subclasses with its reason
            raise UnsupportedSchema(f"the schema cannot be compiled into a grammar: {str(exc).strip()[:300]}",
                                    "schema") from None
        _GRAMMARS[key] = grammar
        while len(_GRAMMARS) > CACHE_SIZE:
            _GRAMMARS.popitem(last=False)
        return grammar


# --------------------------------------------------------------------------- following one sequence

class Matcher:
    """The grammar state of one sequence: which tokens may come next, and the tokens that came."""

    def __init__(self, grammar: Any) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.matcher = xgr.GrammarMatcher(grammar)
        self.vocab_size = int(grammar.tokenizer_info.vocab_size)
        self.bitmask = xgr.allocate_token_bitmask(1, self.vocab_size)

    @property
    def done(self) -> bool:
        """The grammar accepted a stop token: nothing more may follow."""
        return bool(self.matcher.is_terminated())

    def mask(self, logits: Any) -> None:
        """Set the logits (one row, or a 1 x vocab batch) of every token the grammar forbids to -inf, in place."""
        if self.done:
            return
        if self.matcher.fill_next_token_bitmask(self.bitmask, 0):
            row = logits.view(1, -1) if logits.dim() == 1 else logits
            self._xgr.apply_token_bitmask_inplace(row, self.bitmask.to(row.device), vocab_size=self.vocab_size)

    def accept(self, token: int) -> bool:
        """Advance by `token`; False when the grammar does not allow it (the caller masked with `mask` first)."""
        return bool(self.matcher.accept_token(int(token))) if not self.done else False


class ConstrainedLogits:
    """A transformers `LogitsProcessor` that keeps every row of `model.generate` inside its grammar.

    Rows are the prompts of one `generate` call, in order; each has its own `Matcher` (None for an
    unconstrained row). The first call sees only the prompt; every later call first feeds each
    row the token the previous step chose.
    """

    def __init__(self, matchers: Sequence[Matcher | None]) -> None:
        self.matchers = list(matchers)
        self.started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        for row, matcher in enumerate(self.matchers):
            if matcher is None:
                continue
            if self.started and not matcher.done:
                matcher.accept(int(input_ids[row, -1]))
            if not matcher.done:
                matcher.mask(scores[row])
        self.started = True
        return scores
