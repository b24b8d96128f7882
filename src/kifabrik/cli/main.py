"""`kifabrik`: the command-line face. Parses, calls the Python API, prints."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kifabrik import __version__
from kifabrik.cli import accounts as accounts_cli
from kifabrik.cli import agent as agent_cli
from kifabrik.cli import data as data_cli
from kifabrik.cli import document as document_cli
from kifabrik.cli import evaluate as evaluate_cli
from kifabrik.cli import fachllm as fachllm_cli
from kifabrik.cli import kb as kb_cli
from kifabrik.cli import keys as keys_cli
from kifabrik.cli import merge as merge_cli
from kifabrik.cli import models as models_cli
from kifabrik.cli import policy as policy_cli
from kifabrik.cli import records as records_cli
from kifabrik.cli import release as release_cli
from kifabrik.cli import serve as serve_cli
from kifabrik.cli import train as train_cli
from kifabrik.cli import usage as usage_cli
from kifabrik.cli.common import err, out, workspace
from kifabrik.cli.options import ModelFlags
from kifabrik.cli.recipe import run_recipe_file
from kifabrik.config import set_offline
from kifabrik.errors import KifabrikError
from kifabrik.models.backend import BackendOptions

app = typer.Typer(
    help="kifabrik: specialise open base models on your own data, test, document and serve them. Offline by default.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a recipe value: --set a.b=value (repeatable).")]
OnlineOpt = Annotated[bool, typer.Option("--online", help="Allow network access (hub downloads).")]


def _version(value: bool) -> None:
    if value:
        out.print(f"kifabrik {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version.")] = False,
          project: Annotated[str | None, typer.Option(
              "--project", help="Work in this project: its artifacts, policies, keys and audit entries (default: "
                                "$KIFABRIK_PROJECT, else `default`); runs are accounted to it (else to the Slurm "
                                "job's account); see `kifabrik projects`, `kifabrik usage`.")] = None) -> None:
    if project:  # the environment carries it into the processes and Slurm jobs this command starts
        os.environ["KIFABRIK_PROJECT"] = project
    set_offline(False)  # commands that may go online switch it back on themselves


def _generate(
    runtime: BackendOptions,
    model: Annotated[str, typer.Argument(help="Registered model or adapter: name, name@version or id.")],
    prompt: Annotated[str, typer.Argument(help="The prompt (sent through the model's chat template).")],
    system: Annotated[str | None, typer.Option(help="System message.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Most tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed for sampling.")] = 0,
) -> None:
    """Answer one prompt with a registered model or adapter."""
    from kifabrik.generate import generate_text
    from kifabrik.models.generate import GenerationOptions

    gen = generate_text(workspace(), model, [prompt], system=system, backend=runtime,
                        options=GenerationOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed))[0]
    out.print(gen.text)
    if gen.finish_reason == "length":
        err.print(f"(stopped at --max-new-tokens {max_new_tokens})")


#: `--backend` and `--gguf-type` come from the runtime's option model.
generate = ModelFlags(BackendOptions).command(_generate)


def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    set_: SetOpt = None,
    online: OnlineOpt = False,
    check: Annotated[bool, typer.Option("--check", help="Only validate the recipe; run nothing.")] = False,
    reuse: Annotated[bool, typer.Option("--reuse/--no-reuse", help="Reuse the outputs of an earlier run of a train, "
                                        "merge, kb or fach-llm step with the same options and inputs.")] = True,
    executor: Annotated[str | None, typer.Option(help="local: run the stages here; slurm: submit one sbatch job per "
                                                 "stage (default: the recipe's executor: section, else local).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With slurm: print every job script; submit nothing.")] = False,
    pipeline_id: Annotated[str | None, typer.Option(hidden=True, help="The pipeline a job's step belongs to.")] = None,
    only_stage: Annotated[str | None, typer.Option(hidden=True, help="Run only this step (an executor's job).")] = None,
) -> None:
    """Validate a recipe completely, then run its stages in order (one run record each), here or on Slurm."""
    run_recipe_file(recipe, set_ or [], online, check, reuse=reuse, executor=executor, dry_run=dry_run,
                    pipeline_id=pipeline_id, only=only_stage)


def demo(set_: SetOpt = None, online: OnlineOpt = False) -> None:
    """Run the bundled demo recipe on the embedded model."""
    with resources.as_file(resources.files("kifabrik") / "recipes" / "demo.yaml") as path:
        run_recipe_file(path, set_ or [], online, False)


# The command table, in pipeline order (typer lists commands first, then the command groups).
for _name, _command in [
    ("run", run), ("demo", demo), ("generate", generate), ("train", train_cli.train),
    ("merge", merge_cli.merge_command), ("merge-gate", merge_cli.gate_command), ("export", merge_cli.export_command),
    ("eval", evaluate_cli.eval_command), ("document", document_cli.document_command),
    ("release", release_cli.release_command), ("serve", serve_cli.serve), ("agent", agent_cli.agent),
    ("verify", records_cli.verify), ("lineage", records_cli.lineage), ("doctor", records_cli.doctor),
    ("usage", usage_cli.usage), ("ui", accounts_cli.ui),
]:
    app.command(_name)(_command)
for _group, _name in [
    (models_cli.app, "models"), (data_cli.app, "data"), (policy_cli.app, "policy"), (merge_cli.adapters_app, "adapters"),
    (kb_cli.app, "kb"), (keys_cli.app, "keys"), (fachllm_cli.app, "fach-llm"), (records_cli.runs_app, "runs"), (records_cli.artifacts_app, "artifacts"),
    (records_cli.audit_app, "audit"), (accounts_cli.users_app, "users"), (accounts_cli.projects_app, "projects"),
]:
    app.add_typer(_group, name=_name)


def main() -> None:
    """Console entry point: user errors print one message and exit 1, never a traceback."""
    try:
        app()
    except KifabrikError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        if exc.hint:
            err.print(f"[yellow]hint:[/yellow] {escape(exc.hint)}")
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
