"""CLI options generated from the pydantic option models (field descriptions become `--help`).

The same model validates recipe files, the Python API and the command line, so the three cannot
drift: a field added to the model is an option of the command at once.

    def serve(**options): ...
    app.command("serve")(options_command(serve, ServeConfig, rename={"ai_notice_off_reason": "reason"}))
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError

from kifabrik.errors import KifabrikError


def _cli_type(annotation: Any) -> Any:
    """The type typer is given: Literal -> str (pydantic checks the choice), `X | None` -> X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return str
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _cli_type(args[0])
    return annotation


def options_command(run: Callable[[BaseModel], None], model: type[BaseModel], *,
                    rename: dict[str, str] | None = None, exclude: tuple[str, ...] = (),
                    doc: str | None = None) -> Callable[..., None]:
    """A typer command with one option per field of `model`; it calls `run(validated_model)`."""
    rename = rename or {}
    params = []
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        flag = "--" + rename.get(name, name).replace("_", "-")
        ann = _cli_type(info.annotation)
        help_text = info.description or ""
        if ann is bool:
            decls = [f"{flag}/--no-{flag[2:]}"]
        else:
            decls = [flag]
        default = info.default if info.default is not None or not info.is_required() else ...
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[ann | None if default is None else ann,
                                                             typer.Option(*decls, help=help_text)]))

    @functools.wraps(run)
    def command(**kwargs: Any) -> None:
        values = {k: v for k, v in kwargs.items() if not (v is None and model.model_fields[k].default is None)}
        try:
            config = model.model_validate(values)
        except ValidationError as exc:
            raise KifabrikError("; ".join(f"--{rename.get(str(e['loc'][0]), str(e['loc'][0])).replace('_', '-')}"
                                          f": {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors()),
                                hint="see --help") from None
        run(config)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc or run.__doc__
    return command
