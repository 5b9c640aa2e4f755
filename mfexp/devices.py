"""Lightning Trainer arguments from ``cfg.trainer``, with one rule of ours: ``devices: auto`` on a CPU.

Lightning reads ``devices=auto`` on a CPU as one process, which then uses every core through intra-op threads. The
toy world's models are too small for that to pay: a UNet call of the toy diffusion model takes 25 ms with 2 threads
and 28 ms with 1, because Python's per-module overhead, not arithmetic, bounds it. One single-threaded process per
core does scale (measured on 2 cores: the generate stage 2.0x, training 1.43x; Lightning gives each process
cores // processes threads). So on a CPU ``auto`` means DDP over one process per core, a power of two so that the
detector's batch splits evenly, at most ``CPU_AUTO_MAX``. Anywhere else ``auto`` is Lightning's (all GPUs).
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

CPU_AUTO_MAX = 8


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, as under SLURM or taskset), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def runs_on_cpu(accelerator: str) -> bool:
    """``trainer.accelerator`` resolves to the CPU: asked for, or ``auto`` with no GPU (CUDA or Apple MPS)."""
    if accelerator == "cpu":
        return True
    if accelerator != "auto":
        return False
    import torch

    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


def cpu_processes(cores: int) -> int:
    """The largest power of two <= ``cores``, capped at ``CPU_AUTO_MAX``."""
    n = 1
    while n * 2 <= min(cores, CPU_AUTO_MAX):
        n *= 2
    return n


def trainer_args(trainer_cfg, cores: int | None = None) -> dict:
    """``cfg.trainer`` as ``pl.Trainer`` keyword arguments, ``devices: auto`` on a CPU resolved as above."""
    args = OmegaConf.to_container(trainer_cfg, resolve=True) if OmegaConf.is_config(trainer_cfg) else dict(trainer_cfg)
    if str(args.get("devices")) == "auto" and runs_on_cpu(str(args.get("accelerator", "auto"))):
        n = cpu_processes(usable_cores() if cores is None else cores)
        args.update(accelerator="cpu", devices=n)
        if n > 1 and args.get("strategy", "auto") == "auto":
            args["strategy"] = "ddp"
    return args
