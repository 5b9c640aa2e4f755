"""Lightning callbacks of the stages: stop requests (in `predict`; a checkpoint on a stop in `fit`), and one training
bar for the whole run."""

from __future__ import annotations

from pytorch_lightning.callbacks import Callback, RichProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException


class StopOnSigterm(Callback):
    """End `Trainer.predict` after the batch in hand once SIGTERM came (Lightning's fit loop does this itself; its
    predict loop notes the signal and runs on). Put it after the callbacks that write a batch's outputs."""

    def on_predict_batch_end(self, trainer, *args, **kwargs) -> None:
        if trainer.received_sigterm:
            raise SIGTERMException


class CheckpointOnStop(Callback):
    """Save the training state to ``path`` (the run's last.ckpt) when a stop request (SIGTERM, Ctrl-C) ends
    `Trainer.fit`, so that the rerun resumes at the step reached, not at the last ``checkpoint_every``. Lightning
    raises the request at a step boundary (Ctrl-C: where it lands; the step in hand is not counted), on every rank."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and trainer.global_step > 0:
            trainer.save_checkpoint(self.path, weights_only=False)


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
