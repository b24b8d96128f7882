"""Compute and energy accounting of a training run (facts for AI Act Annex XI 2(d)/(e)).

Energy is measured where the hardware lets us read it: RAPL package counters
(/sys/class/powercap/intel-rapl:N/energy_uj) on CPUs, NVML's total-energy counter on NVIDIA
GPUs. Where neither is readable the figure is an estimate from wall time and an assumed
power draw, and is marked `"method": "estimate"` with its basis.
"""

from __future__ import annotations

import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RAPL_ROOT = Path("/sys/class/powercap")
#: Assumed draw of one busy CPU core and of one GPU, for estimates only.
WATTS_PER_CPU_CORE = 10.0
WATTS_PER_GPU = 300.0


# ------------------------------------------------------------------ FLOPs
def matmul_parameters(model: Any) -> int:
    """Weights used in matrix multiplies (linear layers and the output head; embedding lookups excluded)."""
    from torch import nn

    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            total += module.weight.numel()
    return total


def training_flops(method: str, n_matmul: int, n_trainable: int, tokens: int,
                   gradient_checkpointing: bool = False) -> tuple[float, str]:
    """Estimated training FLOPs and the formula used.

    Full fine-tuning: 6·N·T (forward 2·N·T, backward 4·N·T). LoRA: the frozen weights still
    run forward (2·N·T) and pass gradients back to earlier layers (2·N·T) but need no weight
    gradients, while the adapter weights cost the full 6·N_lora·T: (4·N + 6·N_lora)·T.
    Gradient checkpointing repeats the forward pass: + 2·N·T.
    """
    recompute = 2 * n_matmul * tokens if gradient_checkpointing else 0
    if method == "full":
        flops = 6 * n_matmul * tokens + recompute
        formula = "6·N·T"
    else:
        flops = (4 * n_matmul + 6 * n_trainable) * tokens + recompute
        formula = "(4·N + 6·N_lora)·T"
    if gradient_checkpointing:
        formula += " + 2·N·T (activation recomputation)"
    basis = (f"{formula}; N = {n_matmul:,} weights in matrix multiplies (embedding lookups excluded)"
             + (f", N_lora = {n_trainable:,} adapter weights" if method != "full" else "")
             + f", T = {tokens:,} training tokens processed; attention-score FLOPs and evaluation not counted")
    return float(flops), basis


# ------------------------------------------------------------------ device and memory
def device_description(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        n = torch.cuda.device_count()
        return f"{n}× {torch.cuda.get_device_name(0)}" if n > 1 else torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu} ({torch.get_num_threads()} threads)"


def peak_memory_bytes(device: str) -> tuple[int, str]:
    """Peak memory of this process: GPU memory allocated by torch, or peak resident set size on CPU."""
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return int(rss_kib) * 1024, "peak resident set size of the training process (ru_maxrss)"


# ------------------------------------------------------------------ energy
def _rapl_zones(root: Path) -> list[Path]:
    """Top-level package zones only (intel-rapl:0, intel-rapl:1): sub-zones are inside them."""
    zones = []
    for z in sorted(root.glob("intel-rapl:*")):
        if z.name.count(":") == 1 and (z / "energy_uj").exists():
            zones.append(z)
    return zones


def _read_rapl(zones: list[Path]) -> list[int] | None:
    try:
        return [int((z / "energy_uj").read_text()) for z in zones]
    except (OSError, ValueError):  # unreadable (often root-only since CVE-2020-8694)
        return None


@dataclass
class EnergyMeter:
    """Energy used between `start()` and `read()`: RAPL, NVML, or an estimate (in that order)."""

    device: str
    rapl_root: Path = RAPL_ROOT
    _method: str = "estimate"
    _t0: float = 0.0
    _start: Any = None
    _zones: list[Path] | None = None
    _nvml: Any = None

    def start(self) -> EnergyMeter:
        self._t0 = time.monotonic()
        if self.device.startswith("cuda"):
            try:
                import pynvml

                pynvml.nvmlInit()
                handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
                self._start = [pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles]  # mJ
                self._nvml, self._zones, self._method = (pynvml, handles), None, "nvml"
            except Exception:  # no pynvml, or a GPU without the energy counter
                self._method = "estimate"
        else:
            zones = _rapl_zones(self.rapl_root) if self.rapl_root.exists() else []
            values = _read_rapl(zones) if zones else None
            if values is not None:
                self._zones, self._start, self._method = zones, values, "rapl"
        return self

    def read(self) -> dict[str, Any]:
        """`{"joules", "method", "basis"}` for the time since `start()`."""
        wall = time.monotonic() - self._t0
        if self._method == "rapl" and self._zones:
            now = _read_rapl(self._zones)
            if now is not None:
                total = 0
                for z, a, b in zip(self._zones, self._start, now, strict=True):
                    if b < a:  # the counter wrapped around
                        b += int((z / "max_energy_range_uj").read_text())
                    total += b - a
                return {"joules": total / 1e6, "method": "rapl",
                        "basis": "measured: RAPL package energy counters (the whole CPU package, including "
                                 "other processes running at the same time)"}
        if self._method == "nvml" and self._nvml:
            pynvml, handles = self._nvml
            now = [pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles]
            return {"joules": sum(b - a for a, b in zip(self._start, now, strict=True)) / 1e3, "method": "nvml",
                    "basis": "measured: NVML total energy counter of the GPU(s) (GPU board only; CPU not included)"}
        if self.device.startswith("cuda"):
            import torch

            n = max(torch.cuda.device_count(), 1)
            watts, what = WATTS_PER_GPU * n, f"{n} GPU(s) × an assumed {WATTS_PER_GPU:.0f} W each"
        else:
            import torch

            n = torch.get_num_threads()
            watts, what = WATTS_PER_CPU_CORE * n, f"{n} busy CPU threads × an assumed {WATTS_PER_CPU_CORE:.0f} W each"
        return {"joules": wall * watts, "method": "estimate",
                "basis": f"estimate (no readable RAPL/NVML counter): wall time × {what}"}

