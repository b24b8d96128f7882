"""The stage protocol (core): what a recipe step is, what it may use while it runs.

Stages import these from here, never from the orchestrator `pipeline.py`, which only runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from kifabrik.catalog import ArtifactRecord
from kifabrik.config import Recipe, StrictModel
from kifabrik.workspace import Workspace


class StageOptions(StrictModel):
    """Options every stage has."""

    stage: str = Field(description="Which stage to run (a registered stage name).")
    name: str | None = Field(default=None, description="Name of this step; later steps refer to its outputs by it.")


@dataclass
class StageContext:
    """What a running stage may use."""

    ws: Workspace
    recipe: Recipe
    pipeline_id: str
    run_id: str
    base_model: ArtifactRecord
    outputs: dict[str, list[ArtifactRecord]] = field(default_factory=dict)
    online: bool = False

    def resolve(self, ref: str, kind: str | None = None) -> ArtifactRecord:
        """`base` -> the recipe's model; an earlier step's name -> its (last) output; else a catalog ref."""
        if ref == "base":
            return self.base_model
        if ref in self.outputs and self.outputs[ref]:
            return self.outputs[ref][-1]
        return self.ws.catalog.get_artifact(ref, kind)

    def artifact_name(self, step: str) -> str:
        return f"{self.recipe.name}-{step}"


@dataclass(frozen=True)
class StageDef:
    """A stage: its options model, what it does, and optional static checks."""

    name: str
    options: type[StageOptions]
    run: Callable[[StageContext, Any], list[ArtifactRecord]]
    summary: str
    check: Callable[[Any, list[str]], list[str]] | None = None  # (options, earlier step names) -> problems
    #: The outputs depend only on the options and on catalog artifacts (no files read at run time), so a
    #: recipe run again with the same options and the same upstream artifacts reuses them (pipeline.py).
    reusable: bool = False
