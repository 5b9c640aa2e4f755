"""Lightning Trainer arguments from ``cfg.trainer``, with one rule of ours: ``devices: auto`` on a CPU.

Lightning reads ``devices=auto`` on a CPU as one process, which then uses every core through intra-op threads; the
toy world's models are too small for intra-op threads to pay (Python's per-module overhead bounds them), while one
single-threaded process per core scales (docs/results/README.md, "The default run takes 11.7 minutes"). So on a
CPU ``auto`` means DDP over one process per core, a power of two so that the detector's batch splits evenly, at
most ``CPU_AUTO_MAX``; Lightning gives each process cores // processes threads. Anywhere else ``auto`` is
Lightning's (all GPUs).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from omegaconf import OmegaConf, read_write

CPU_AUTO_MAX = 8
# what Lightning's DDP launcher sets in the launching process: while LOCAL_RANK is set it launches no more processes
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


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


@contextmanager
def relaunch_as_this_job() -> Iterator[None]:
    """Within one job of a Hydra multirun: make Lightning's DDP relaunch run this job alone, in this job's folder.

    Lightning starts the other processes of a one-machine DDP run by re-running ``sys.argv`` with
    ``hydra.run.dir=<HydraConfig run.dir>`` appended. In a multirun ``sys.argv`` is the whole sweep (``-m``), so each
    worker would re-run the sweep, in a sweep folder of its own (the folder's name holds its start time), and write
    its shard of the synthetic set there: rank 0 then finds half the set missing. For the length of the job,
    ``sys.argv`` becomes this job's overrides in run mode and ``run.dir`` this job's folder. The workers end with the
    job, so at its end the process group goes and the launcher's environment is put back: the next job launches
    workers of its own. Outside a multirun nothing changes; under SLURM, which starts the processes, nothing is
    relaunched."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        yield
        return
    argv, run_dir = sys.argv, hydra_cfg.run.dir
    launcher_env = {key: os.environ.get(key) for key in LAUNCHER_ENV}
    sys.argv = [argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in launcher_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.argv = argv
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = run_dir


def check_accelerator(accelerator: str) -> None:
    """A ValueError naming ``trainer.accelerator`` unless it is Lightning's name of an accelerator this machine has
    (``auto`` always is; ``gpu`` is CUDA or Apple MPS)."""
    if accelerator == "auto":
        return
    import torch
    from pytorch_lightning.accelerators import AcceleratorRegistry

    names = ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    if accelerator not in names:
        raise ValueError(f"trainer.accelerator={accelerator!r} must be one of {', '.join(names)}")
    if accelerator == "gpu":
        here = torch.cuda.is_available() or torch.backends.mps.is_available()
    else:
        here = AcceleratorRegistry.get(accelerator).is_available()
    if not here:
        raise ValueError(
            f"trainer.accelerator={accelerator!r}: this machine has none (use trainer.accelerator=cpu, or auto)"
        )


def is_launched_worker() -> bool:
    """This process is a worker that a launcher started on this machine (Lightning's DDP relaunch, torchrun): it has
    a ``LOCAL_RANK`` above 0. A SLURM task (``SLURM_LOCALID``, no ``LOCAL_RANK``) is not: srun started it."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) > 0


def end_with_parent() -> None:
    """Have the kernel kill this process when its parent ends (Linux ``PR_SET_PDEATHSIG``; elsewhere nothing). A DDP
    worker calls it first thing: if the main process is killed (kill -9), the worker must not run on, writing into
    the run folder, until a collective call times out. If the parent has already gone, the worker ends now."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the request was in place
        os.kill(os.getpid(), signal.SIGKILL)
