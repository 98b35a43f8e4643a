"""Where and how torch runs: the ``--device`` rule and the CPU thread count, shared by training, evaluation and
the policies."""

from __future__ import annotations

import os
import time

import torch

from gr2_sim.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"--device {name!r} is not one of auto, cpu, cuda, cuda:N")
    return torch.device(name)


# ------------------------------------------------------------------------------------------ CPU threads
def affinity_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all cores from /proc/stat, or None where there is no /proc."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_cores(sample_s: float = 0.15) -> float:
    """How many cores other work keeps busy now: the machine's busy share over ``sample_s`` seconds (this process
    sleeps meanwhile) times its core count; the 1-minute load average where /proc/stat is missing."""
    before = _cpu_times()
    if before is None:
        try:
            return float(os.getloadavg()[0])
        except OSError:
            return 0.0
    time.sleep(sample_s)
    after = _cpu_times()
    busy, total = after[0] - before[0], after[1] - before[1]
    return (os.cpu_count() or 1) * busy / total if total > 0 else 0.0


def auto_threads(limit: int | None = None) -> tuple[int, str]:
    """``(threads, why)``: ``OMP_NUM_THREADS`` when it is set; else one thread per core that no other work holds
    now, 1 to the affinity cores (and at most ``limit``).

    Torch threads that share a core with another busy process spin against each other at every parallel region:
    on 2 cores with a one-thread job beside it, 2-thread training ran ~25x slower than 1-thread training
    (``gr2-sim bench threads``; docs/benchmarks.md). A thread per free core avoids that.
    """
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) >= 1:
        n = min(int(env), limit) if limit else int(env)
        return n, f"auto: OMP_NUM_THREADS={env}"
    cores = affinity_cores()
    busy = min(busy_cores(), cores)
    free = max(1, min(cores, int(cores - busy + 0.5)))  # a core counts as free when under half of it is busy
    threads = min(free, limit) if limit else free
    return threads, f"auto: {busy:.0f} of {cores} cores busy" + (f", at most {limit}" if limit and free > limit else "")


def parse_threads(value: str | int | None) -> int:
    """``--threads``: a count >= 1, or 0 / 'auto' (returned as 0) for the automatic rule."""
    if value is None or value == "auto":
        return 0
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UserError(f"--threads must be a number of threads or 'auto', got {value!r}") from None
    if n < 0:
        raise UserError(f"--threads must be >= 1, or 0 / auto for one thread per free core; got {n}")
    return n


def set_threads(requested: int, limit: int | None = None, say: bool = True) -> int:
    """``torch.set_num_threads`` to ``requested`` (0: :func:`auto_threads`), printing ``threads: N (why)``."""
    if requested:
        threads, why = requested, "--threads"
    else:
        threads, why = auto_threads(limit)
    torch.set_num_threads(threads)
    if say:
        print(f"threads: {threads} ({why})", flush=True)
    return threads


# ------------------------------------------------------------------------------------------ CUDA
def enable_tf32() -> None:
    """TF32 tensor-core matmuls and convolutions for float32 on CUDA (10-bit mantissa products, float32
    accumulation): several times the float32 rate on Ampere and later. The flags touch CUDA only, never CPU."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when ``bf16``; a no-op context elsewhere (bf16 on a CPU is slow, never used there)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for timing); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``x`` on ``device``. A CPU tensor bound for CUDA is copied through pinned (page-locked) host memory with
    ``non_blocking=True``: the copy is queued behind the GPU's work instead of making the host wait for it."""
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
