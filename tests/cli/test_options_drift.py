"""The CLI cannot drift from the option models: every field is a flag, its help the field's description.

`drift()` walks a model itself (it does not ask the generator) and looks each field up among the
parameters of the command, by the name the generator promises (`lora.rank` -> `lora__rank`).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pytest
import typer
from pydantic import BaseModel, Field
from rich.text import Text
from typer.main import get_command
from typer.testing import CliRunner

from kifabrik.cli.main import app
from kifabrik.cli.options import Flag, ModelFlags, options_command
from kifabrik.config import StrictModel
from kifabrik.errors import KifabrikError

#: The commands whose options come from their option model.
GENERATED = {"train": "TrainOptions", "eval": "EvalOptions", "merge": "MergeOptions", "document": "DocumentOptions",
             "release": "ReleaseOptions", "serve": "ServeConfig", "data import": "ImportOptions",
             "kb build": "KbOptions", "generate": "BackendOptions", "agent": "BackendOptions"}

#: The flags of these commands when they were written by hand (commit 0e9329d): users know them.
FLAGS_BEFORE = {
    "train": ["--alpha", "--base", "--batch-size", "--data", "--dropout", "--epochs", "--eval-steps", "--grad-accum",
              "--lr", "--max-seq-length", "--max-steps", "--method", "--mlflow", "--name", "--no-mlflow",
              "--no-packing", "--packing", "--rank", "--resume", "--save-steps", "--seed", "--set", "--target"],
    "eval": ["--api-key", "--assessments", "--baseline", "--catalogue", "--endpoint-model", "--json", "--judge",
             "--limit", "--name", "--need", "--questionnaire", "--report", "--seed", "--suite", "--task",
             "--thresholds", "--train-data", "-s", "-t"],
    "merge": ["--adapters", "--density", "--into-base", "--majority-sign-method", "--method", "--name", "--seed",
              "--svd-rank"],
    "document": ["--catalogue", "--data-source", "--format", "--name", "--org", "--out"],
    "release": ["--audience", "--documents", "--gate", "--license", "--name", "--version"],
    "serve": ["--ai-notice", "--auth", "--backend", "--batch-wait-ms", "--default-max-tokens", "--device", "--host",
              "--log-content", "--max-batch", "--max-queue", "--models", "--no-ai-notice", "--no-auth",
              "--no-log-content", "--no-preload", "--port", "--preload", "--reason", "--region"],
    "data import": ["--chunk-size", "--collected", "--csv-map", "--description", "--encoding", "--format",
                    "--max-line-bytes", "--model", "--name", "--no-dedup", "--pii", "--policy", "--policy-preset",
                    "--seed", "--skip-invalid", "--test-file", "--test-fraction"],
    "kb build": ["--chunk-tokens", "--data", "--split"],
}


def field_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every field of `model`, into nested models (`lora: LoraOptions`, `context: ContextOptions | None`)."""
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        union = typing.get_origin(info.annotation) in (typing.Union, types.UnionType)
        inner = [a for a in (*(typing.get_args(info.annotation) if union else ()), info.annotation)
                 if isinstance(a, type) and issubclass(a, BaseModel)]  # not list[Model]: one flag for the list
        if inner:
            yield from field_paths(inner[0], path)
        else:
            yield path, info


def drift(command: Any, model: type[BaseModel], exclude: frozenset[str] = frozenset()) -> list[str]:
    """What the click `command` misses of `model`; empty when every field is a flag with its description."""
    params = {p.name: p for p in command.params}
    problems = []
    for path, info in field_paths(model):
        dotted = ".".join(path)
        if any(dotted == e or dotted.startswith(e + ".") for e in exclude):
            continue
        param = params.get("__".join(path))
        if param is None or not (param.param_type_name == "argument" or any(o.startswith("--") for o in param.opts)):
            problems.append(f"{dotted}: no flag")
            continue
        if not info.description:
            problems.append(f"{dotted}: no description")
            continue
        repeatable = param.param_type_name == "option" and param.multiple
        expected = info.description + (" Repeatable." if repeatable else "")
        shown = Text.from_markup(param.help or "").plain  # what --help prints: typer renders it as rich markup
        if shown != expected:
            problems.append(f"{dotted}: help {shown!r} is not its description {expected!r}")
    opts = [o for p in command.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))
            if o.startswith("-")]
    problems += [f"{o} is two parameters" for o in sorted({o for o in opts if opts.count(o) > 1})]
    return problems


def commands(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, cmd in group.commands.items():
        path = f"{prefix} {name}".strip()
        if hasattr(cmd, "commands"):
            yield from commands(cmd, path)
        else:
            yield path, cmd


def generated() -> dict[str, tuple[Any, ModelFlags]]:
    return {path: (cmd, cmd.callback.options) for path, cmd in commands(get_command(app))
            if isinstance(getattr(cmd.callback, "options", None), ModelFlags)}


def test_these_commands_are_generated_from_their_models():
    assert {path: flags.model.__name__ for path, (_, flags) in generated().items()} == GENERATED


@pytest.mark.parametrize("path", sorted(GENERATED))
def test_every_field_is_a_flag_with_its_description(path):
    command, flags = generated()[path]
    assert drift(command, flags.model, flags.exclude) == []


def test_only_structured_fields_are_excluded():
    assert {path: sorted(flags.exclude) for path, (_, flags) in generated().items() if flags.exclude} == {
        "release": ["gates"]}  # a list of gate structures; `--gate FILE` reads them


@pytest.mark.parametrize("path", sorted(FLAGS_BEFORE))
def test_the_flags_users_know_are_kept(path):
    command, _ = generated()[path]
    opts = {o for p in command.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}
    assert sorted(set(FLAGS_BEFORE[path]) - opts) == []


# --------------------------------------------------------------------------- a throwaway model
class Inner(StrictModel):
    depth: int = Field(default=2, ge=1, description="How deep; [deep] is not a style.")
    tags: list[str] = Field(default_factory=list, description="Tags to attach.")


class Toy(StrictModel):
    mode: Literal["a", "b"] = Field(default="a", description="Which mode.")
    count: int | None = Field(default=None, ge=1, description="How many.")
    fast: bool = Field(default=False, description="Go fast.")
    inner: Inner = Field(default_factory=Inner, description="Inner settings.")
    secret: dict[str, str] = Field(default_factory=dict, description="No command-line form.")


class Grown(Toy):
    added: int = Field(default=1, description="A field added later.")


class Bare(StrictModel):
    n: int = 1


def toy_app(model: type[BaseModel], seen: list[Any], **kw: Any) -> typer.Typer:
    def run(options: Any, label: str = typer.Option("x", help="Not a field.")) -> None:
        seen.append((options, label))

    toy = typer.Typer()
    toy.command()(options_command(run, model, **kw))
    toy.command("other")(lambda: None)  # two commands, so that typer keeps the command name
    return toy


def toy_command(model: type[BaseModel], **kw: Any) -> Any:
    return get_command(toy_app(model, [], **kw)).commands["run"]


def test_a_generated_command_reaches_every_field_and_validates_with_pydantic():
    seen: list[Any] = []
    toy = toy_app(Toy, seen, flags={"inner.depth": "depth"}, exclude=("secret",))
    runner = CliRunner()
    got = runner.invoke(toy, ["run", "--mode", "b", "--count", "3", "--fast", "--depth", "4", "--inner-tags", "x",
                              "--inner-tags", "y", "--label", "z"])
    assert got.exit_code == 0, got.output
    assert seen == [(Toy(mode="b", count=3, fast=True, inner=Inner(depth=4, tags=["x", "y"])), "z")]
    assert runner.invoke(toy, ["run"]).exit_code == 0
    assert seen[1][0] == Toy() and seen[1][0].model_fields_set == set()  # defaults stay the model's
    bad = runner.invoke(toy, ["run", "--depth", "0", "--mode", "c"])
    assert isinstance(bad.exception, KifabrikError)
    assert bad.exception.message == ("invalid options:\n  --mode: Input should be 'a' or 'b'\n"
                                     "  --depth: Input should be greater than or equal to 1")
    assert drift(get_command(toy).commands["run"], Toy, frozenset({"secret"})) == []


def test_drift_finds_a_field_the_command_forgot():
    def by_hand(
        mode: Annotated[str, typer.Option(help="Which mode.")] = "a",
        count: Annotated[int | None, typer.Option(help="How many.")] = None,
        fast: Annotated[bool, typer.Option(help="Go fast.")] = False,
        inner__depth: Annotated[int, typer.Option("--depth", help="How deep; \\[deep] is not a style.")] = 2,
        inner__tags: Annotated[list[str] | None, typer.Option(help="Tags to attach. Repeatable.")] = None,
    ) -> None:
        """The old way: the options of Toy copied by hand."""

    toy = typer.Typer()
    toy.command()(by_hand)
    toy.command("other")(lambda: None)
    command = get_command(toy).commands["by-hand"]
    assert drift(command, Toy, frozenset({"secret"})) == []
    # the model grows, the copy does not: the drift test fails
    assert drift(command, Grown, frozenset({"secret"})) == ["added: no flag"]
    # generated, the grown model has the new field at once
    assert drift(toy_command(Grown, exclude=("secret",)), Grown, frozenset({"secret"})) == []


def test_drift_finds_a_field_without_description():
    assert drift(toy_command(Bare), Bare) == ["n: no description"]


def test_a_field_without_command_line_form_must_be_mapped_or_excluded():
    with pytest.raises(TypeError, match=r"Toy.secret: .* has no command-line form; give flags=\{'secret'"):
        ModelFlags(Toy)
    mapped = ModelFlags(Toy, flags={"secret": Flag(type=list[str], parse=lambda items: dict(i.split("=") for i in items))})
    assert mapped.given({"secret": ["a=b"]}) == {"secret": {"a": "b"}}


@pytest.mark.parametrize("kw, message", [
    ({"flags": {"inner.deep": "depth"}, "exclude": ("secret",)}, "`flags` names no field: inner.deep"),
    ({"exclude": ("secret", "inner.none")}, "`exclude` names no field: inner.none"),
    ({"flags": {"count": "mode"}, "exclude": ("secret",)}, "mode and count are both --mode"),
])
def test_mistakes_in_the_flag_map_fail_when_the_command_is_built(kw, message):
    with pytest.raises(TypeError, match=message):
        ModelFlags(Toy, **kw)


# --------------------------------------------------------------------------- the real commands
def test_train_flags_go_over_the_config_file_and_errors_name_flag_or_line(cli, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("base: tiny\ndata: service-chats\nmax_steps: 4\nlora:\n  rank: 0\n", encoding="utf-8")
    r = cli("train", str(cfg), "--max-steps", "0", "--lr-scheduler", "sometimes")
    assert r.code == 1 and "Traceback" not in r.err
    assert r.err.splitlines()[:4] == [
        "error: invalid training options:",
        f"  {cfg}:5: lora.rank: Input should be greater than or equal to 1",
        "  --max-steps: Input should be greater than or equal to 1",
        "  --lr-scheduler: Input should be 'linear', 'cosine', 'constant' or 'constant_with_warmup'",
    ]
    assert "hint: see `kifabrik train --help`; nothing was run" in r.err


def test_parsed_flags_name_themselves(cli):
    r = cli("eval", "tiny", "--suite", "ve", "--need", "VE1")
    assert r.code == 1 and "--need 'VE1': expected CRITERION=NEED" in r.err and "e.g. --need VE1=3" in r.err
    r = cli("release", "tiny", "--name", "a b", "--version", "1", "--audience", "everyone")
    assert r.code == 1 and "--name: String should match pattern" in r.err
    assert "--audience: Input should be 'public' or 'internal'" in r.err
