"""Logs a batch scheduler can read: away from a terminal, long stages write plain progress lines (done / total, rate,
ETA) every few percent or at least once a minute."""

import logging
import re

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mfexp import callbacks
from mfexp.callbacks import LogProgress, ProgressLines, duration, progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_few_percent_or_every_minute():
    clock = Clock()
    lines = ProgressLines("generate", 1000, "mosaic", clock=clock)
    written = []
    for done in range(1, 1001):
        clock.now += 0.2  # 5 mosaics a second: 5 % (50 mosaics) every 10 s
        line = lines.update(done)
        if line:
            written.append((done, line))
    assert [d for d, _ in written] == list(range(50, 1001, 50))
    assert written[0][1] == "generate: mosaic 50/1000 (5%), 5.00 mosaic/s, elapsed 10s, ETA 3m10s"
    assert written[-1][1].startswith("generate: mosaic 1000/1000 (100%)") and written[-1][1].endswith("ETA 0s")
    clock.now = 1000.0
    slow = ProgressLines("train", 1000, "step", start=400, clock=clock)  # a resumed run: 400 done before
    clock.now += 59
    assert slow.update(401) is None
    clock.now += 1
    assert slow.update(402) == "train: step 402/1000 (40%), 30.0 s/step, elapsed 1m00s, ETA 4h59m"


def test_duration():
    assert [duration(s) for s in (0, 59.6, 61, 3600, 3725)] == ["0s", "1m00s", "1m01s", "1h00m", "1h02m"]


def test_progress_is_a_live_bar_on_a_terminal_and_lines_elsewhere(monkeypatch):
    monkeypatch.setattr(callbacks, "is_terminal", lambda: True)
    assert progress(True, "train", callbacks.RunProgressBar)[0] is True
    assert progress(True, "generate") == (True, [])  # Lightning's own bar
    monkeypatch.setattr(callbacks, "is_terminal", lambda: False)
    enabled, shown = progress(True, "generate")
    assert enabled is False and isinstance(shown[0], LogProgress)
    assert progress(False, "train") == (False, [])


class Doubler(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def predict_step(self, batch, batch_idx):
        return batch * 2

    def training_step(self, batch, batch_idx):
        return (self.w * batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mfexp.progress"]


def test_lightning_predict_and_fit_write_progress_lines(caplog):
    caplog.set_level(logging.INFO, logger="mfexp.progress")
    data = DataLoader(torch.arange(40, dtype=torch.float32), batch_size=2)
    args = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = pl.Trainer(**args, callbacks=[LogProgress("generate", every=0.25)])
    trainer.predict(Doubler(), data, return_predictions=False)
    assert [line.split(" (")[0] for line in progress_lines(caplog)] == [
        f"generate: batch {n}/20" for n in (5, 10, 15, 20)
    ]
    caplog.clear()
    trainer = pl.Trainer(**args, max_steps=30, callbacks=[LogProgress(every=0.5)], enable_checkpointing=False)
    trainer.fit(Doubler(), data)
    assert [line.split(" (")[0] for line in progress_lines(caplog)] == ["train: step 15/30", "train: step 30/30"]


def test_a_loop_writes_progress_lines_away_from_a_terminal(monkeypatch, caplog):
    monkeypatch.setattr(callbacks, "is_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="mfexp.progress")
    seen = [i for i in callbacks.with_progress(range(40), "generate (cut_paste)", "image") if i % 3]
    assert len(seen) == 26  # every item, whatever the loop does with it
    done = [int(re.match(r"generate \(cut_paste\): image (\d+)/40 ", line)[1]) for line in progress_lines(caplog)]
    assert done == list(range(2, 41, 2))
