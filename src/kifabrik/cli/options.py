"""CLI options generated from the pydantic option models (field descriptions become `--help`).

The same model validates recipe files, the Python API and the command line, so the three cannot
drift: a field added to the model is an option of the command at once. Nested models are
flattened (`lora.rank` -> `--lora-rank`, or the name given in `flags`), list fields are
repeatable options, `Literal` fields are strings that pydantic checks.

    def _serve(config: ServeConfig) -> None: ...
    serve = options_command(_serve, ServeConfig, flags={"ai_notice_off_reason": "reason"})

Parameters of `run` after the first belong to the command itself (a MODEL argument, `--json`,
`--set`); they are declared as usual for typer and passed to `run` by name.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator
from typing import Annotated, Any, NamedTuple

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from rich.markup import escape

from kifabrik.config import format_loc, validation_messages
from kifabrik.errors import KifabrikError

_SCALARS = (str, int, float, bool)


class Flag(NamedTuple):
    """How one model field appears on the command line; every part is optional."""

    name: str | None = None  # without `--`; default: the field path, `lora.rank` -> `lora-rank`
    short: str | None = None  # e.g. "-t"
    type: Any = None  # what the command line parses, when it differs from the field (then give `parse`)
    parse: Callable[[Any], Any] | None = None  # command-line value -> field value, e.g. "A:0.6,B:0.4" -> [...]
    metavar: str | None = None  # how the value is written, e.g. NAME=CATEGORY
    argument: bool = False  # a positional argument instead of an option
    envvar: str | None = None


class FieldFlag(NamedTuple):
    """One generated parameter: the field at `path` as `flag`."""

    path: tuple[str, ...]
    param: str  # the Python name typer passes it under: `lora__rank`
    flag: str  # `--rank`, or the argument's name
    info: FieldInfo
    spec: Flag
    required: bool
    panel: str | None  # the help section of a nested model's fields


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a nested-model field (`LoraOptions` or `ContextOptions | None`), else None."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def cli_type(annotation: Any) -> Any:
    """The type typer parses for a field: Literal -> str, `X | None` -> X, `str | list[str]` -> list[str].

    Returns None when the field has no command-line form (a mapping, a list of models).
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in _SCALARS:
        return annotation
    if origin is typing.Literal:
        return str
    if origin is list and len(args) == 1 and cli_type(args[0]) in _SCALARS:
        return list[cli_type(args[0])]  # type: ignore[misc]
    if origin in (typing.Union, types.UnionType):
        forms = [cli_type(a) for a in args if a is not type(None)]
        lists = [f for f in forms if typing.get_origin(f) is list]
        scalars = [f for f in forms if f in _SCALARS]
        return (lists or scalars or [None])[0]  # a repeatable option covers `str | list[str]`
    return None


def _choices(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return [c for a in typing.get_args(annotation) for c in _choices(a)]


class ModelFlags:
    """The command-line face of one option model: one flag per field, nested models flattened.

    Args:
        model: The pydantic option model.
        flags: Field path (`learning_rate`, `lora.rank`) -> flag name or `Flag`.
        exclude: Field paths that have no flag (a nested model's path leaves out all of its fields).
        what: Names the options in the error message: `invalid training options: ...`.
        hint: The hint of that error (default: see `kifabrik COMMAND --help`).
    """

    def __init__(self, model: type[BaseModel], *, flags: dict[str, str | Flag] | None = None,
                 exclude: tuple[str, ...] = (), what: str = "options", hint: str | None = None) -> None:
        self.model, self.exclude, self.what, self.hint = model, frozenset(exclude), what, hint
        specs = {path: Flag(name=v) if isinstance(v, str) else v for path, v in (flags or {}).items()}
        self.fields = list(self._walk(model, (), specs, required=True, panel=None))
        known = {".".join(f.path) for f in self.fields}
        # A misspelt path in `flags` or `exclude` would silently give a field the default name or a flag.
        if unknown := sorted(set(specs) - known):
            raise TypeError(f"{model.__name__}: `flags` names no field: {', '.join(unknown)}")
        if unknown := sorted(p for p in self.exclude if not _has_path(model, p.split("."))):
            raise TypeError(f"{model.__name__}: `exclude` names no field: {', '.join(unknown)}")
        seen: dict[str, str] = {}
        for f in self.fields:
            if f.flag in seen:
                raise TypeError(f"{model.__name__}: {seen[f.flag]} and {'.'.join(f.path)} are both {f.flag}")
            seen[f.flag] = ".".join(f.path)

    def _walk(self, model: type[BaseModel], prefix: tuple[str, ...], specs: dict[str, Flag],
              required: bool, panel: str | None) -> Iterator[FieldFlag]:
        for name, info in model.model_fields.items():
            path = (*prefix, name)
            dotted = ".".join(path)
            if dotted in self.exclude:
                continue
            nested = nested_model(info.annotation)
            if nested is not None and dotted not in specs:
                yield from self._walk(nested, path, specs, required and info.is_required(),
                                      escape(f"{dotted}: {info.description}" if info.description else dotted))
                continue
            spec = specs.get(dotted, Flag())
            if (spec.type or cli_type(info.annotation)) is None:
                raise TypeError(f"{model.__name__}.{name}: {info.annotation} has no command-line form; "
                                f"give flags={{{dotted!r}: Flag(type=..., parse=...)}} or exclude it")
            flag = spec.name or "-".join(path).replace("_", "-")
            yield FieldFlag(path, "__".join(path), flag if spec.argument else f"--{flag}", info, spec,
                            required and info.is_required(), panel)

    def parameters(self) -> list[inspect.Parameter]:
        """One typer parameter per field, its help the field's description."""
        return [inspect.Parameter(f.param, inspect.Parameter.KEYWORD_ONLY, default=_default(f),
                                  annotation=_annotation(f)) for f in self.fields]

    def given(self, values: dict[str, Any], ctx: typer.Context | None = None) -> dict[str, Any]:
        """The options the user gave, as the model's nested mapping; defaults are left to the model.

        With the command's context, a flag counts as given when it came from the command line or
        its environment variable; without one, when its value is not None.
        """
        raw: dict[str, Any] = {}
        for f in self.fields:
            value = values.get(f.param)
            source = ctx.get_parameter_source(f.param) if ctx is not None else None
            if (source.name.startswith("DEFAULT") if source is not None else value is None):
                continue
            node = raw
            for part in f.path[:-1]:
                node = node.setdefault(part, {})
            node[f.path[-1]] = f.spec.parse(value) if f.spec.parse else value
        return raw

    def validate(self, raw: dict[str, Any], *, given: dict[str, Any] | None = None, source: str | None = None,
                 ctx: typer.Context | None = None) -> Any:
        """`raw` as the model, or one KifabrikError naming the flag (or, with `source`, the file:line).

        Args:
            raw: The options; by default all of them came from the command line.
            given: What came from flags, when `raw` also holds values of a config file.
            source: The config file, for the errors of values that did not come from a flag.
            ctx: The command's context, for the hint `see kifabrik COMMAND --help`.
        """
        try:
            return self.model.model_validate(raw)
        except ValidationError as exc:
            given = raw if given is None else given
            problems = []
            for error, located in zip(exc.errors(), validation_messages(exc, raw, source or ""), strict=True):
                loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
                flag = self.flag_at(loc)
                if flag is not None and _has_path(given, flag.path):
                    problems.append(f"{flag.flag}: {error['msg']}")
                elif source:
                    problems.append(located)
                else:
                    problems.append(f"{format_loc(loc)}: {error['msg']}" if loc else error["msg"])
            hint = self.hint or (f"see `{ctx.command_path} --help`" if ctx else "see --help")
            raise KifabrikError(f"invalid {self.what}:\n  " + "\n  ".join(problems), hint=hint) from None

    def flag_at(self, loc: tuple[int | str, ...]) -> FieldFlag | None:
        """The flag of the field at an error location (`("lora", "rank")` -> `--rank`), if it has one."""
        return next((f for f in self.fields if loc[:len(f.path)] == f.path), None)

    def command(self, run: Callable[..., None], *, layered: bool = False, doc: str | None = None) -> Callable[..., None]:
        """A typer command: the parameters of `run` after the first, then one per field.

        It calls `run(options, **own)` with the validated model, or with `layered`, the nested
        mapping of the given flags (for a command that puts them over a config file and then
        calls `validate` itself).
        """
        hints = typing.get_type_hints(run, include_extras=True)
        _, *rest = inspect.signature(run).parameters.values()
        own = [inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default,
                                 annotation=hints.get(p.name, p.annotation)) for p in rest]
        if clash := {p.name for p in own} & {f.param for f in self.fields} | ({"ctx_"} & {p.name for p in own}):
            raise TypeError(f"{run.__name__}: parameters {sorted(clash)} are also fields of {self.model.__name__}")
        names = {p.name for p in own}

        def command(ctx_: typer.Context, **kwargs: Any) -> None:
            mine = {k: kwargs.pop(k) for k in names}
            given = self.given(kwargs, ctx_)
            run(given if layered else self.validate(given, ctx=ctx_), **mine)

        command.__name__, command.__qualname__, command.__module__ = run.__name__, run.__qualname__, run.__module__
        command.__doc__ = doc or run.__doc__
        context = inspect.Parameter("ctx_", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        command.__signature__ = inspect.Signature([context, *own, *self.parameters()])  # type: ignore[attr-defined]
        command.options = self  # type: ignore[attr-defined]  # for the drift test and for `validate`
        return command


def options_command(run: Callable[..., None], model: type[BaseModel], *, flags: dict[str, str | Flag] | None = None,
                    exclude: tuple[str, ...] = (), what: str = "options", hint: str | None = None,
                    doc: str | None = None) -> Callable[..., None]:
    """A typer command with one option per field of `model`; it calls `run(validated_model, **own)`."""
    return ModelFlags(model, flags=flags, exclude=exclude, what=what, hint=hint).command(run, doc=doc)


def overlay(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Put the given flags over a config mapping (in place, nested mappings merged key by key)."""
    for key, value in given.items():
        if isinstance(value, dict):
            if not isinstance(base.get(key), dict):
                base[key] = {}
            overlay(base[key], value)
        else:
            base[key] = value
    return base


def key_values(items: list[str], *, flag: str, expected: str, hint: str) -> dict[str, str]:
    """`["VE1=3"]` -> `{"VE1": "3"}`; an item that is not KEY=VALUE is an error naming the flag."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise KifabrikError(f"{flag} {item!r}: expected {expected}", hint=hint)
        pairs[key.strip()] = value.strip()
    return pairs


def _has_path(node: Any, path: Any) -> bool:
    """Whether `path` names a key of the nested mapping, or a (nested) field of the model class."""
    for part in path:
        if isinstance(node, type) and issubclass(node, BaseModel):
            if part not in node.model_fields:
                return False
            node = nested_model(node.model_fields[part].annotation) or {}
            continue
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _default(f: FieldFlag) -> Any:
    if f.required:
        return ...
    if not f.info.is_required() and f.info.default_factory is None and f.spec.parse is None:
        return f.info.default
    return None  # nothing to show: a factory's default, or one in the model's form, not the command line's


def _annotation(f: FieldFlag) -> Any:
    kind = f.spec.type or cli_type(f.info.annotation)
    repeatable = typing.get_origin(kind) is list
    # typer renders help as rich markup: `e.g. [q_proj, v_proj]` must not become a style tag
    help_text = escape(f.info.description or "") + (" Repeatable." if repeatable and not f.spec.argument else "")
    choices = _choices(f.info.annotation)
    metavar = f.spec.metavar or ("[" + "|".join(choices) + "]" if choices else None)
    if f.spec.argument:
        info: Any = typer.Argument(help=help_text, metavar=metavar or f.flag.upper(), show_default=False,
                                   rich_help_panel=f.panel)
    else:
        decls = [f"{f.flag}/--no-{f.flag[2:]}"] if kind is bool else [f.flag, *([f.spec.short] if f.spec.short else [])]
        info = typer.Option(*decls, help=help_text, metavar=metavar, envvar=f.spec.envvar, rich_help_panel=f.panel)
    return Annotated[kind | None if _default(f) is None else kind, info]
