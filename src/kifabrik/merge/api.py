"""The Python API of the merge stage: `merge()`.

Adapters are combined with PEFT (`add_weighted_adapter`); with `into_base` the exact
combined delta weights (PEFT's `merge_utils`) are added to the base weights and a full
Hugging Face model folder is written.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from kifabrik.catalog import ArtifactRecord
from kifabrik.config import StrictModel
from kifabrik.errors import KifabrikError
from kifabrik.merge.compat import AdapterInfo, check_compatible, load_info
from kifabrik.merge.methods import methods
from kifabrik.progress import bar
from kifabrik.workspace import Workspace

Method = Literal["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "svd"]


class WeightedAdapter(StrictModel):
    adapter: str = Field(description="Adapter: name, name@version, id, or an earlier recipe step.")
    weight: float = Field(default=1.0, description="Weight of its delta (may be negative to subtract).")


class MergeOptions(StrictModel):
    """How to combine adapters."""

    method: Method = Field(description="linear, task_arithmetic, ties, dare_linear, dare_ties or svd.")
    adapters: list[WeightedAdapter] = Field(min_length=1, description="The adapters and their weights.")
    density: float | None = Field(default=None, gt=0.0, le=1.0,
                                  description="Fraction of delta values kept (ties, dare_*); default 0.5.")
    majority_sign_method: Literal["total", "frequency"] = Field(default="total",
                                                                description="TIES sign election (ties, dare_ties).")
    svd_rank: int | None = Field(default=None, ge=1, description="Rank of the output adapter for svd-based methods "
                                 "(default: the largest input rank).")
    into_base: bool = Field(default=False, description="Fold into the base weights and write a full model.")
    seed: int = Field(default=0, description="Random seed (DARE drops entries at random).")

    @model_validator(mode="after")
    def _density(self) -> MergeOptions:
        needs = methods()[self.method]["needs_density"]
        if self.density is not None and not needs:
            raise ValueError(f"density does not apply to method {self.method!r}")
        if needs and self.density is None:
            self.density = 0.5
        if self.method == "linear" and abs(sum(a.weight for a in self.adapters)) < 1e-12:
            raise ValueError("linear normalises the weights to sum 1; these weights sum to 0 (use task_arithmetic)")
        if self.into_base and self.svd_rank is not None and self.method != "svd":
            raise ValueError("svd_rank only shapes adapter outputs; with into_base the exact deltas are used")
        return self

    def effective_weights(self) -> list[float]:
        w = [a.weight for a in self.adapters]
        return [x / sum(w) for x in w] if methods()[self.method]["normalise"] else w


def merge(ws: Workspace, options: MergeOptions, name: str, *, actor: str = "cli",
          resolve: Any = None) -> ArtifactRecord:
    """Merge adapters into a new adapter (or, with `into_base`, a full model).

    Args:
        ws: The workspace.
        options: Method, adapters with weights, and method parameters.
        name: Name of the output artifact.
        actor: Who asks (recorded with the policy decisions).
        resolve: Optional `ref -> ArtifactRecord` (the recipe runner resolves step names).

    Raises:
        KifabrikError: incompatible adapters, or a policy that forbids merging.
    """
    from kifabrik.policy import require

    infos = [load_info(ws, resolve(a.adapter).id if resolve else a.adapter) for a in options.adapters]
    if len({i.record.id for i in infos}) != len(infos):
        raise KifabrikError("an adapter is listed twice", hint="give each adapter once, with its total weight")
    check_compatible(infos)
    require(ws, [i.record.id for i in infos], "merging", actor=actor)
    base = infos[0].base
    weights = options.effective_weights()
    policies = sorted({p[0] for i in infos for p in ws.catalog.policies_of(i.record.id)})
    parents: list[Any] = [(base.id, "base_model")] + [
        (i.record.id, "merged_from", {"weight": w, "given_weight": a.weight})
        for i, w, a in zip(infos, weights, options.adapters, strict=True)]
    meta: dict[str, Any] = {
        "method": options.method, "peft_combination": methods()[options.method]["peft"],
        "weights": {i.record.ref: w for i, w in zip(infos, weights, strict=True)},
        "density": options.density, "majority_sign_method": options.majority_sign_method,
        "seed": options.seed, "base_model": base.ref, "base_model_id": base.id,
        "base_weights_sha256": base.meta.get("weights_sha256"), "architecture": base.meta.get("architecture"),
        "model_type": base.meta.get("model_type"), "policy_ids": policies,
        "parents": [{"id": i.record.id, "ref": i.record.ref, "rank": i.rank} for i in infos],
        "datasets": [d for i in infos for d in i.record.meta.get("datasets", [])],
    }
    config = {"merge": options.model_dump(mode="json"), "adapter_ids": [i.record.id for i in infos],
              "base_model_id": base.id}
    kind = "model" if options.into_base else "adapter"
    from kifabrik.merge.compute import merged_adapter, merged_model

    # record, policies and audit entry commit together
    with ws.catalog.transaction(), ws.create(kind, name, parents=parents, config=config, meta=meta,
                                             policies=policies) as draft:
        if options.into_base:
            merged_model(ws, infos, options, weights, draft.dir / "weights", meta)
        else:
            rank, targets = merged_adapter(ws, infos, options, weights, draft.dir,
                                           into_base_command(options, [i.record.ref for i in infos], name))
            meta.update({"rank": rank, "target_modules": targets})
        draft.meta = meta
    record: ArtifactRecord = draft.record
    if kind == "model":
        from kifabrik.models.sources import record_weights_hash

        with bar("hashing the merged weights"):
            record = record_weights_hash(ws, record)
    ws.catalog.audit("merge.output", actor=actor, subject=record.id,
                     details={"method": options.method, "parents": [i.record.id for i in infos], "kind": kind})
    return record


def into_base_command(options: MergeOptions, refs: list[str], name: str) -> str:
    """The `kifabrik merge` command that merges the same adapters, the same way, exactly into the base.

    For `svd`, whose rank reduction is the method, it is the exact task_arithmetic adapter instead.
    """
    pairs = ",".join(f"{ref}:{a.weight:g}" for ref, a in zip(refs, options.adapters, strict=True))
    if options.method == "svd":
        return f"kifabrik merge --method task_arithmetic --adapters {pairs} --name {name}-exact"
    parts = [f"kifabrik merge --method {options.method} --adapters {pairs}"]
    if options.density is not None:
        parts.append(f"--density {options.density:g}")
    if options.majority_sign_method != "total" and "ties" in options.method:
        parts.append(f"--majority-sign-method {options.majority_sign_method}")
    if options.seed and options.method.startswith("dare"):
        parts.append(f"--seed {options.seed}")
    return " ".join(parts + ["--into-base", f"--name {name}-model"])


def describe(info: AdapterInfo) -> dict[str, Any]:
    """The facts `kifabrik adapters show` prints."""
    m = info.record.meta
    return {"id": info.record.id, "name": info.record.name, "version": info.record.version,
            "status": info.record.status, "base_model": info.base.ref, "base_model_id": info.base.id,
            "base_weights_sha256": info.base.meta.get("weights_sha256"), "architecture": info.base.meta.get("architecture"),
            "rank": info.rank, "alpha": info.config.get("lora_alpha"), "target_modules": info.target_modules,
            "datasets": m.get("datasets", []), "policy_ids": m.get("policy_ids", []),
            "method": m.get("method"), "path": str(info.path)}
