"""Data-parallel training over several processes (torch.distributed: gloo on CPU, nccl on GPU).

`kifabrik train ... --nproc N` starts N copies of the same command under `torch.distributed.run`
(the module behind `torchrun`); the same code runs under a user's own `torchrun` or `srun`, which
set `RANK`/`WORLD_SIZE`/`LOCAL_RANK` themselves. Every process reads the same data, builds the same
model with the same seed and trains its share of each global batch; the Trainer averages the
gradients. Only rank 0 writes anything that other people see: the run record, the count of a
count-limited policy use, the run folder's metrics and checkpoint markers, and the published adapter.
The other ranks wait for it and return the same record.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from kifabrik.errors import KifabrikError

#: Longest text shared from rank 0 (a run id)
_TEXT = 128


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Join the process group (once); a single process needs none."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        try:
            dist.init_process_group(backend=backend)
        except (ValueError, RuntimeError) as exc:
            raise KifabrikError(f"WORLD_SIZE={world_size()}, but the processes cannot meet: {exc}",
                                hint="start several processes with `kifabrik train --nproc N`, torchrun or srun "
                                     "(they set RANK, MASTER_ADDR and MASTER_PORT), or unset WORLD_SIZE") from None


def share(text: str | None) -> str:
    """Rank 0's `text` on every rank (a fixed-size byte tensor: nothing is pickled between processes)."""
    if world_size() <= 1:
        if text is None:
            raise ValueError("a single process must give the text")
        return text
    import torch
    import torch.distributed as dist

    buf = torch.zeros(_TEXT, dtype=torch.uint8)
    if is_main():
        data = (text or "").encode()
        if len(data) > _TEXT:
            raise ValueError(f"text longer than {_TEXT} bytes")
        buf[:len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    if dist.get_backend() == "nccl":
        buf = buf.cuda()
    dist.broadcast(buf, src=0)
    return bytes(buf.cpu().tolist()).rstrip(b"\0").decode()


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `kifabrik ARGV` as `nproc` processes of one job on this machine; returns the exit status."""
    if nproc < 1:
        raise KifabrikError(f"--nproc {nproc}: at least one process is needed")
    if world_size() > 1:
        raise KifabrikError("--nproc inside a multi-process launch (torchrun/srun already started the processes)",
                            hint="drop --nproc; the launcher's WORLD_SIZE is used")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "kifabrik.cli.main", *argv]
    threads = max(1, (os.cpu_count() or 1) // nproc)  # the cores are shared out, not oversubscribed
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    return subprocess.run(cmd, env=env, check=False).returncode
