"""Lightning callbacks of the stages: stop requests (in `predict`; a checkpoint on a stop in `fit`; Ctrl-C as a stop
request), one training bar for the whole run on a terminal, and plain progress lines in a log (a pipe, a file: SLURM,
nohup)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from pytorch_lightning.callbacks import Callback, RichProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException

progress_log = logging.getLogger("mfexp.progress")  # progress lines away from a terminal


class StopOnSigterm(Callback):
    """End `Trainer.predict` after the batch in hand once SIGTERM came (Lightning's fit loop does this itself; its
    predict loop notes the signal and runs on). Put it after the callbacks that write a batch's outputs."""

    def on_predict_batch_end(self, trainer, *args, **kwargs) -> None:
        if trainer.received_sigterm:
            raise SIGTERMException


class CheckpointOnStop(Callback):
    """Save the training state to ``path`` (the run's last.ckpt) when a stop request (SIGTERM, Ctrl-C) ends
    `Trainer.fit`, so that the rerun resumes at the step reached, not at the last ``checkpoint_every``. Lightning
    raises the request at a step boundary, on every rank (Ctrl-C too, with `CtrlCAsStopRequest`; a second Ctrl-C
    lands where it lands, and the step in hand is not counted)."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and trainer.global_step > 0:
            trainer.save_checkpoint(self.path, weights_only=False)


class CtrlCAsStopRequest(Callback):
    """Ctrl-C ends a loop the way SIGTERM does: after the training step or the predict batch in hand, on every rank
    (Lightning shares rank 0's request), with last.ckpt or the batch's outputs written; a second Ctrl-C stops at once.
    Lightning alone lets the KeyboardInterrupt land wherever it lands, ignores Ctrl-C from then on and exits with 1.
    The stop leaves as Lightning's SIGTERMException with code 130 (the shell's code for Ctrl-C), which
    `mfexp.run.StopRequested` passes on. Armed from the loop's start (Lightning's signal handling is set up by then)
    until the trainer's end, in the main thread only (signal handlers live there)."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous: object = None

    def _arm(self, trainer) -> None:
        if threading.current_thread() is not threading.main_thread() or self._previous is not None:
            return

        def on_ctrl_c(signum, frame) -> None:
            if self.pressed:
                raise KeyboardInterrupt
            self.pressed = True
            print("\nCtrl-C: stopping after the step in hand (Ctrl-C again: stop now)", file=sys.stderr, flush=True)
            trainer._signal_connector.received_sigterm = True  # the flag Lightning's SIGTERM handler sets

        self._previous = signal.signal(signal.SIGINT, on_ctrl_c)

    def _disarm(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._previous = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._arm(trainer)

    def on_predict_start(self, trainer, pl_module) -> None:
        self._arm(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._disarm()
        if self.pressed and isinstance(exception, SIGTERMException):
            exception.code = 130

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._disarm()


class RunProgressBar(RichProgressBar):
    """Lightning's progress bar, but training is one bar over the run's steps (``max_steps``) with the run's time
    left, where Lightning starts the bar over each epoch (as "Epoch 3/-2" under ``max_epochs=-1``)."""

    @property
    def total_train_batches(self) -> int:
        return self.trainer.max_steps

    def _get_train_description(self, current_epoch: int) -> str:
        return f"train (epoch {current_epoch})"

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.train_progress_bar_id is None:  # the first epoch of this process (a resumed run starts mid-way)
            super().on_train_epoch_start(trainer, pl_module)
            self._update(self.train_progress_bar_id, trainer.global_step)
        elif self.progress is not None:
            self.progress.update(
                self.train_progress_bar_id, description=self._get_train_description(trainer.current_epoch)
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._update(self.train_progress_bar_id, trainer.global_step)

    def get_metrics(self, trainer, pl_module) -> dict:
        """The logged metrics, without Lightning's ``v_num`` (the first logger's version: here a wandb run id's
        tail, meaningless on the bar)."""
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def duration(seconds: float) -> str:
    """``1h02m``, ``4m05s`` or ``12s``."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class ProgressLines:
    """When to write a progress line, and what it says: ``<name>: <unit> done/total (p%), rate, elapsed, ETA``
    (``unit``: singular, e.g. ``step``). A line is due
    when ``every`` of the total has been done since the last one, or ``interval`` seconds have passed, and at the
    end. ``start`` is what was done before this process began (a resumed run): the rate counts this process's work
    only."""

    def __init__(
        self,
        name: str,
        total: int,
        unit: str,
        start: int = 0,
        every: float = 0.05,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.total, self.unit, self.start = name, total, unit, start
        self.step, self.interval, self.clock = max(1, round(every * total)), interval, clock
        self.t0 = self.last_time = clock()
        self.last_done = start

    def update(self, done: int) -> str | None:
        """The line to write now that ``done`` are done, or None if none is due."""
        now = self.clock()
        due = done >= self.total or done - self.last_done >= self.step or now - self.last_time >= self.interval
        if not due or done == self.last_done:
            return None
        self.last_done, self.last_time = done, now
        elapsed = now - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = duration((self.total - done) / rate) if rate > 0 else "?"
        speed = f"{rate:.2f} {self.unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{self.unit}" if rate > 0 else "?"
        percent = 100 * done / self.total if self.total else 100.0
        return (
            f"{self.name}: {self.unit} {done}/{self.total} ({percent:.0f}%), {speed}, "
            f"elapsed {duration(elapsed)}, ETA {eta}"
        )


class LogProgress(Callback):
    """Progress as log lines (ProgressLines) on rank 0: training by optimizer steps of the run (``max_steps``, a
    resumed run counting from its step), prediction by the batches of rank 0's share, named ``predict_name``."""

    def __init__(self, predict_name: str = "predict", every: float = 0.05, interval: float = 60.0) -> None:
        self.predict_name, self.every, self.interval = predict_name, every, interval
        self.lines: ProgressLines | None = None
        self.done = 0  # prediction batches done by this process

    def _write(self, trainer, done: int) -> None:
        line = self.lines.update(done) if self.lines else None
        if line and trainer.is_global_zero:
            progress_log.info("%s", line)

    def on_train_start(self, trainer, pl_module) -> None:
        step = trainer.global_step
        self.lines = ProgressLines("train", trainer.max_steps, "step", step, self.every, self.interval)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._write(trainer, trainer.global_step)

    def on_predict_start(self, trainer, pl_module) -> None:
        total = int(sum(trainer.num_predict_batches))
        name = self.predict_name + (f" (rank 0's share of {trainer.world_size})" if trainer.world_size > 1 else "")
        self.lines = ProgressLines(name, total, "batch", 0, self.every, self.interval)
        self.done = 0

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.done += 1
        self._write(trainer, self.done)


T = TypeVar("T")


def with_progress(items: Sequence[T], name: str, unit: str) -> Iterator[T]:
    """``items`` one by one, a loop's progress shown as Lightning's is: a live tqdm bar on a terminal, else
    ProgressLines in the log (each item counted done when the next is asked for)."""
    if is_terminal():
        from tqdm import tqdm

        yield from tqdm(items, desc=name, unit=unit, leave=False)
        return
    lines = ProgressLines(name, len(items), unit)
    for done, item in enumerate(items, 1):
        yield item
        line = lines.update(done)
        if line:
            progress_log.info("%s", line)


def is_terminal() -> bool:
    """Both stdout and stderr are terminals (a live bar can redraw itself there)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def progress(enabled: bool, name: str, bar: Callable[[], Callback] | None = None) -> tuple[bool, list[Callback]]:
    """``(enable_progress_bar, callbacks)`` for a Trainer of stage ``name``: on a terminal Lightning's live bar (or
    ``bar()``); elsewhere plain LogProgress lines; nothing when ``enabled`` is false."""
    if not enabled:
        return False, []
    if is_terminal():
        return True, [bar()] if bar else []
    return False, [LogProgress(name)]
