"""The Python API of the train stage: `train()` and `resume()`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from kifabrik import files
from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.models.sources import model_path
from kifabrik.progress import info
from kifabrik.train import distributed, rundir
from kifabrik.train.options import TrainOptions
from kifabrik.train.prepare import (
    RunSpec,
    check_policies,
    context_datasets,
    encode,
    resolve_inputs,
)
from kifabrik.workspace import Workspace


def default_name(base: ArtifactRecord, datasets: list[ArtifactRecord], method: str) -> str:
    return f"{base.name}-{datasets[0].name}-{method}"[:200]


def train(ws: Workspace, base: str, data: list[str], options: TrainOptions | None = None, *,
          name: str | None = None, run_id: str | None = None, callbacks: list[Any] | None = None) -> ArtifactRecord:
    """Train an adapter (or a full fine-tune) of model `base` on datasets `data`.

    Args:
        ws: The workspace.
        base: Base model: name, name@version or id.
        data: Dataset artifacts: names, name@version or ids.
        options: Hyper-parameters (defaults: `TrainOptions()`).
        name: Name of the output artifact (default `<base>-<dataset>-<method>`).
        run_id: A run record already started by the caller (the recipe runner), which
            also finishes it; without one, `train` records its own run. When that run already
            began training (a Slurm job requeued after a preemption or a time-limit warning),
            `train` resumes it from its last complete checkpoint instead of starting again.
        callbacks: Extra transformers `TrainerCallback`s.

    Returns:
        The adapter record (kind `adapter`; a `model` for method `full`).

    Raises:
        KifabrikError: bad input, a policy that forbids training (`PolicyDenied`), out of
            memory, or Ctrl-C (`TrainingInterrupted`; the run can be resumed).
    """
    options = options or TrainOptions()
    base_rec = ws.catalog.get_artifact(base, "model")
    data_recs = [ws.catalog.get_artifact(d) for d in data]
    if not data_recs:
        raise KifabrikError("no dataset given", hint="name at least one dataset: --data DATASET")
    spec = RunSpec(base_rec.id, [d.id for d in data_recs], options,
                   name or default_name(base_rec, data_recs, options.method))
    distributed.init()
    if not distributed.is_main():  # rank 0 records the run; the others train their share under its id
        return _follow(ws, distributed.share(None), lambda rid: _execute(ws, rid, spec, resume=_began(ws, rid),
                                                                          callbacks=callbacks or []))
    own = run_id is None
    if run_id is None:
        run_id = ws.catalog.start_run("train", spec.to_json(), name=spec.name)
    distributed.share(run_id)
    again = _began(ws, run_id)  # a requeued Slurm job runs its step again: continue the run it began
    record = _recorded(ws, run_id, own, lambda: _execute(ws, run_id, spec, resume=again, callbacks=callbacks or []))
    distributed.barrier()
    return record


def resume(ws: Workspace, run_ref: str, *, callbacks: list[Any] | None = None) -> ArtifactRecord:
    """Continue an interrupted or killed run from its last complete checkpoint.

    With the same data and seed the result matches an uninterrupted run: the Trainer
    restores weights, optimizer, scheduler, RNG states and the position in the data.
    The run record is finished by `resume` (also for runs a recipe started).
    """
    _single_process("resume")
    run = ws.catalog.get_run(run_ref)
    if run.stage != "train":
        raise KifabrikError(f"run {run.id[:12]} is a {run.stage} run, not a training run")
    if run.status == "succeeded":
        raise KifabrikError(f"run {run.id[:12]} already finished (outputs: {', '.join(o[:12] for o in run.outputs)})",
                            hint="nothing to resume")
    folder = rundir.run_dir(ws, run.id)
    if not (folder / "run.json").exists():
        raise KifabrikError(f"run {run.id[:12]} has no run folder ({folder}); it stopped before training began",
                            hint="start a new run with `kifabrik train`")
    spec = RunSpec.from_json(json.loads((folder / "run.json").read_text(encoding="utf-8")))
    ws.catalog.claim_run(run.id)  # running again, in this process (no longer shown as interrupted)
    return _recorded(ws, run.id, True, lambda: _execute(ws, run.id, spec, resume=True, callbacks=callbacks or []))


def _began(ws: Workspace, run_id: str) -> bool:
    """True when run `run_id` already trained (its run folder holds `run.json`): a caller that continues a
    recorded run, as a requeued Slurm job does, resumes it from its last complete checkpoint."""
    return (rundir.run_dir(ws, run_id) / "run.json").exists()


def _recorded(ws: Workspace, run_id: str, own: bool, work: Callable[[], ArtifactRecord]) -> ArtifactRecord:
    """Finish our own run record: succeeded with the output, or failed with the error."""
    if not own:
        return work()
    with ws.catalog.recording(run_id, interrupted="interrupted (Ctrl-C twice: stopped without a checkpoint)") as ids:
        record = work()
        ids.append(record.id)
    return record


def _follow(ws: Workspace, run_id: str, work: Callable[[str], object]) -> ArtifactRecord:
    """A rank other than 0: train under rank 0's run id, then return the record rank 0 published."""
    work(run_id)
    distributed.barrier()  # rank 0 has published (or failed: torch.distributed.run then stops every rank)
    run = ws.catalog.get_run(run_id)
    if run.status != "succeeded" or not run.outputs:
        raise KifabrikError(f"run {run_id[:12]} did not succeed on rank 0 ({run.status})")
    return ws.catalog.get_artifact(run.outputs[0])


def _single_process(what: str) -> None:
    """Refuse what is not built for several processes yet."""
    if distributed.world_size() > 1:
        raise KifabrikError(f"kifabrik train: {what} runs in one process for now",
                            hint="run it without torchrun/srun/--nproc; the checkpoint holds every rank's state "
                                 "only for the world size that wrote it")


def _execute(ws: Workspace, run_id: str, spec: RunSpec, *, resume: bool, callbacks: list[Any]) -> ArtifactRecord:
    from kifabrik.models.loading import load_tokenizer
    from kifabrik.train.publish import publish
    from kifabrik.train.runner import run_session

    folder = rundir.run_dir(ws, run_id)
    base, datasets = resolve_inputs(ws, spec)
    opts = spec.options
    sources = context_datasets(ws, opts)
    # The decision comes before any data is read; the use is counted only once nothing else can refuse the run.
    # The base model is asked too: a model made from data carries that data's policies into further training.
    main = distributed.is_main()
    if main:  # one decision in the audit log per run, not one per process
        check_policies(ws, [base, *datasets, *sources], count=False)
    trust = bool(base.meta.get("trust_remote_code"))
    path = model_path(ws, base)
    tokenizer = load_tokenizer(path, trust_remote_code=trust)
    prepared = encode(ws, tokenizer, base, datasets, opts, sources)
    with rundir.RunLock(folder) if main else contextlib.nullcontext():
        checkpoint = rundir.last_checkpoint(folder) if resume else None
        expected = None
        session = 1 + len(list(folder.glob("session-*.json")))
        if resume:
            expected = json.loads((folder / "run.json").read_text(encoding="utf-8")).get("fingerprint")
            if checkpoint is None:
                info("no complete checkpoint yet: starting the run from the beginning")
                rundir.truncate_metrics(folder, 0)
            else:
                dropped = rundir.truncate_metrics(folder, int(checkpoint.name.removeprefix(rundir.PREFIX)))
                info(f"resuming run {run_id[:12]} from {checkpoint.name}"
                     + (f" ({dropped} metric lines after it are replaced)" if dropped else ""))

        def before_first_step(fingerprint: str) -> None:
            if not resume and main:
                check_policies(ws, [base, *datasets, *sources], count=True)
                files.write_json_atomic(folder / "run.json", {**spec.to_json(), "fingerprint": fingerprint})

        res = run_session(path, folder, prepared, opts, trust=trust, session=session, resume_from=checkpoint,
                          fingerprint_expected=expected, before_first_step=before_first_step,
                          extra_callbacks=callbacks)
        if not main:
            return None  # type: ignore[return-value]  # rank 0 publishes; `_follow` returns its record
        return publish(ws, run_id, folder, spec, prepared, res)
