"""Where a recipe's stages run (core): the `executor:` section of a recipe and of each stage.

The recipe's section chooses the executor and sets the Slurm options of every job; a stage's
own `executor:` section overrides them for that stage's job (`extra` lines are added, `env`
is merged). `kifabrik.executors` runs them; this module only describes and validates them.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, or UNLIMITED.
_TIME = re.compile(r"^(\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+(:\d{2}){0,2}|UNLIMITED|INFINITE)$")
_MEM = re.compile(r"^\d+[KMGT]?$")


class StrictModel(BaseModel):
    """`kifabrik.config.StrictModel` (which imports this module for `Recipe.executor`)."""

    model_config = ConfigDict(extra="forbid")


class ContainerOptions(StrictModel):
    """An Apptainer image the job's command runs in: `apptainer exec [--nv] --bind ... IMAGE.sif kifabrik ...`."""

    image: str = Field(description="Path of the Apptainer image (.sif) on the cluster's shared file system.")
    nv: bool = Field(default=False, description="Pass the host's NVIDIA GPUs and driver into the container (--nv).")
    bind: list[str] = Field(default_factory=list, description="Paths bound into the container (SRC[:DST[:ro]]); "
                            "KIFABRIK_HOME and the recipe's folder are bound without asking.")
    apptainer: str = Field(default="apptainer", description="The apptainer (or singularity) command on the nodes.")


class SlurmOptions(StrictModel):
    """The sbatch options of a job; unset ones are left to the site's defaults."""

    partition: str | None = Field(default=None, description="Slurm partition (--partition).")
    account: str | None = Field(default=None, description="Account the job is charged to (--account).")
    qos: str | None = Field(default=None, description="Quality of service (--qos).")
    time: str | None = Field(default=None, description="Time limit (--time), e.g. 30, 02:00:00 or 1-12:00:00.")
    cpus: int | None = Field(default=None, ge=1, description="CPUs of the job's one task (--cpus-per-task).")
    mem: str | None = Field(default=None, description="Memory of the job (--mem), e.g. 16G or 8000M.")
    gpus: int | None = Field(default=None, ge=0, description="GPUs of the job (--gpus).")
    extra: list[str] = Field(default_factory=list, description="More #SBATCH lines, as written after `#SBATCH`, "
                             "e.g. `--constraint=a100` or `--mail-type=END`.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables the job exports.")
    container: ContainerOptions | None = Field(default=None, description="Run the command in an Apptainer image.")

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None and not _TIME.match(value):
            raise ValueError(f"{value!r} is not a Slurm time limit; write minutes (30), HH:MM:SS (02:00:00) "
                             "or D-HH:MM:SS (1-12:00:00)")
        return value

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        if value is not None and not _MEM.match(value):
            raise ValueError(f"{value!r} is not a Slurm memory size; write e.g. 16G, 8000M or 8000 (MB)")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not _ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"not environment variable names: {', '.join(map(repr, bad))} (letters, digits, _)")
        return value

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: list[str]) -> list[str]:
        for line in value:
            if "\n" in line or not line.strip().startswith("-"):
                raise ValueError(f"{line!r}: each extra line is one sbatch option, e.g. `--constraint=a100`")
        return [line.strip() for line in value]

    def over(self, base: SlurmOptions) -> SlurmOptions:
        """These options (a stage's) over `base` (the recipe's): set fields win, `extra` adds, `env` merges."""
        merged = base.model_dump()
        merged.update({k: v for k, v in self.model_dump().items() if k in self.model_fields_set})
        merged["extra"] = base.extra + [line for line in self.extra if line not in base.extra]
        merged["env"] = {**base.env, **self.env}
        return SlurmOptions.model_validate(merged)


class ExecutorSpec(SlurmOptions):
    """The recipe's `executor:` section: which executor runs the stages and every job's Slurm options."""

    kind: Literal["local", "slurm"] = Field(default="local", description="local: in this process, one stage after "
                                            "the other; slurm: one sbatch job per stage, chained with afterok.")

    def slurm(self) -> SlurmOptions:
        return SlurmOptions.model_validate(self.model_dump(exclude={"kind"}, exclude_unset=True))
