"""The run folder at run time: failed.json, stop requests, ranks under SLURM, one wandb run per stage, sweeps."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FIXTURES, ROOT, compose

import mfexp.generate
from mfexp import run
from mfexp.runpaths import RunPaths
from mfexp.tracking import run_key, start_tracking

CATEGORIES = FIXTURES / "categories.json"  # 4 rare categories
GENERATE = [
    "stages=[generate]",
    "generator/model=tiny_random",
    "generator.num_objects=2",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.enable_progress_bar=false",
]  # + synthetic.images_per_category: mosaics per rare category


def cli(args, cwd: Path, timeout=600, **env):
    env = {**os.environ, "MFEXP_OUTPUTS": str(cwd), "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", **env}
    return subprocess.run(
        [sys.executable, "-m", "mfexp", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_a_failing_stage_leaves_failed_json_and_a_later_success_removes_it(tmp_path, monkeypatch):
    cfg = compose(["stages=[generate]", "augmenter=none", "logger=none"])
    paths = RunPaths(tmp_path)

    def out_of_memory(cfg, run_dir, tracker):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(mfexp.generate, "generate", out_of_memory)  # STAGES names it by its dotted path
    with pytest.raises(run.StageFailed, match="stage generate failed: RuntimeError: CUDA out of memory") as info:
        run.run_experiment(cfg, tmp_path)
    assert info.value.path == paths.failed
    failed = json.loads(paths.failed.read_text())
    assert set(failed) == {"stage", "type", "message", "traceback", "time"}
    assert failed["stage"] == "generate" and failed["type"] == "RuntimeError"
    assert failed["message"].startswith("CUDA out of memory") and "in out_of_memory" in failed["traceback"]
    assert not paths.marker("generate").exists()
    monkeypatch.undo()
    run.run_experiment(cfg, tmp_path)
    assert paths.marker("generate").is_file() and not paths.failed.exists()


def test_generate_that_keeps_no_mosaic_fails_with_the_skip_reasons(tmp_path):
    cfg = compose(
        GENERATE
        + [
            f"generator.categories={CATEGORIES}",
            "logger=none",
            "synthetic.images_per_category=1",
            "synthetic.max_images=2",
            "generator.mask.min_area=0.9",
            "generator.mask.max_area=0.95",
        ]
    )
    with pytest.raises(run.StageFailed, match=r"kept 0 of 2 planned images; skip reasons: 1 mask: .*within 90%-95%"):
        run.run_experiment(cfg, tmp_path)
    assert json.loads(RunPaths(tmp_path).failed.read_text())["type"] == "ValueError"


@pytest.mark.parametrize("signum,exit_code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_during_generate_saves_the_finished_mosaics_and_the_rerun_resumes(tmp_path, signum, exit_code):
    """Lightning notes SIGTERM but runs its predict loop on; Ctrl-C would land anywhere: either way the stage stops
    after the mosaic in hand, exits with the signal's shell code, and the same command continues where it stopped."""
    args = GENERATE + [
        f"generator.categories={CATEGORIES}",
        "synthetic.images_per_category=5",
        "logger=none",
        "hydra.run.dir=run",
    ]
    env = dict(os.environ, MFEXP_OUTPUTS=str(tmp_path), PYTHONPATH=str(ROOT), WANDB_MODE="disabled")
    parts = tmp_path / "run" / "synthetic" / "parts"
    with open(tmp_path / "first.log", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mfexp", *args], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None and len(list(parts.glob("*.json"))) < 2:
                time.sleep(0.2)
            assert proc.poll() is None, "generate ended before it could be stopped"
            proc.send_signal(signum)
            code = proc.wait(timeout=120)
        finally:
            proc.kill()
    log = (tmp_path / "first.log").read_text()
    done = len(list(parts.glob("*.json")))
    assert code == exit_code, log[-3000:]
    assert "stopped during stage generate" in log and 2 <= done < 20
    assert not (tmp_path / "run" / "synthetic" / "annotations.json").exists()
    assert not (tmp_path / "run" / "failed.json").exists()
    again = cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{done} already done, {20 - done} to make" in again.stdout + again.stderr
    ann = json.loads((tmp_path / "run" / "synthetic" / "annotations.json").read_text())
    assert ann["info"]["planned"] == 20


def test_a_slurm_task_of_rank_1_writes_nothing_and_starts_no_wandb(tmp_path):
    """Lightning's rank (SLURM_PROCID here): only rank 0 removes files, writes markers and starts wandb."""
    folder = RunPaths(tmp_path / "run")
    folder.synthetic.mkdir(parents=True)
    args = ["stages=[generate]", "augmenter=none", "logger=wandb", "hydra.run.dir=run"]
    rank1 = cli(args, tmp_path, SLURM_PROCID="1", SLURM_NTASKS="2", WANDB_MODE="offline")
    assert rank1.returncode == 0, rank1.stderr[-3000:]
    assert folder.synthetic.is_dir() and not folder.marker("generate").exists() and not folder.wandb.exists()
    rank0 = cli(args, tmp_path, SLURM_PROCID="0", SLURM_NTASKS="2", WANDB_MODE="offline")
    assert rank0.returncode == 0, rank0.stderr[-3000:]
    assert not folder.synthetic.exists() and folder.marker("generate").is_file()
    assert list(folder.wandb.glob("offline-run-*-generate"))


def wandb_records(offline_run: Path, wait: float = 60.0) -> dict[str, list]:
    """What an offline wandb run logged, by kind; waits (up to ``wait`` s) until the run record is on disk: on a
    loaded machine wandb-core may still be writing the file when ``finish()`` has returned."""
    deadline = time.monotonic() + wait
    while True:
        records = read_wandb_file(next(offline_run.glob("run-*.wandb")))
        if "run" in records or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def read_wandb_file(path: Path) -> dict[str, list]:
    """The protobuf Records of a .wandb file (a LevelDB-style log: a 7-byte file header, 32 KiB blocks, chunks with a
    7-byte header: crc32, length, type full/first/middle/last), by kind."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, pending = {}, 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, last
            record = Record.FromString(pending)
            records.setdefault(record.WhichOneof("record_type"), []).append(record)
            pending = b""
    return records


def test_each_stage_logs_a_wandb_run_with_the_resolved_config(tmp_path, monkeypatch):
    """Offline wandb: the generate stage's run (job_type generate, grouped by the run folder) holds the resolved
    config, the counts, the mosaics with their masks, the skip reasons as a Table and the synthetic set as an
    Artifact."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose(
        GENERATE
        + [
            f"generator.categories={CATEGORIES}",
            "logger=wandb",
            "generator.mask.min_area=0.02",
            "synthetic.images_per_category=3",
        ]
    )
    result = run.run_experiment(cfg, tmp_path / "run")["generate"]
    assert result["kept"] > 0
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*-generate")
    records = wandb_records(offline)
    (started,) = records["run"]
    assert started.run.job_type == "generate" and started.run.run_group == "run"
    config = {item.key: json.loads(item.value_json) for item in started.run.config.update}
    assert config["generator"]["region_size"] == [32, 32]  # resolved, not ${.model.region_size}
    assert config["generator"]["attention"]["resolutions"] == [4, 2] and "hydra" not in config
    logged = {}
    for record in records["history"]:
        for item in record.history.item:
            key = [item.key] if item.key else list(item.nested_key)
            if len(key) == 1:
                logged[key[0]] = json.loads(item.value_json)
            else:
                logged.setdefault(key[0], {})[key[1]] = json.loads(item.value_json)
    assert logged["generate/kept"] == result["kept"] and logged["generate/planned"] == 12
    assert logged["generate/masks"]["_type"] == "images/separated"
    assert logged["generate/masks"]["count"] == len(logged["generate/masks"]["all_masks"]) == result["kept"]
    assert logged["generate/skip_reasons"]["_type"] == "table-file"
    assert logged["generate/skip_reasons"]["nrows"] == len(result["skip_reasons"])
    (artifact,) = [r.artifact for r in records["artifact"] if r.artifact.type == "dataset"]
    assert artifact.name == f"synthetic-{run_key(tmp_path / 'run')}"
    paths = {e.path for e in artifact.manifest.contents}
    assert "annotations.json" in paths and sum(p.startswith("images/") for p in paths) == result["kept"]
    # the train stage declares it as its input (offline: by name and digest in its config)
    folder = RunPaths(tmp_path / "run")
    tracker = start_tracking(cfg, folder.root, "train")
    tracker.use_dataset(artifact.name, folder.synthetic_annotations, folder.synthetic_images)
    tracker.finish()
    (train,) = folder.wandb.glob("offline-run-*-train")
    assert wandb_records(train)["run"][0].run.job_type == "train"
    inputs = [
        json.loads(item.value_json)
        for r in wandb_records(train)["config"]
        for item in r.config.update
        if item.key == "input_artifact"
    ]
    assert inputs == [{"name": artifact.name, "digest": artifact.digest}]


@pytest.mark.slow
def test_submitit_local_sweep_of_two_runs_goes_on_after_a_failed_one(tmp_path):
    """hydra/launcher=submitit_local (the `slurm` extra): two settings, one with a missing categories file; the
    failed one leaves failed.json, the other finishes."""
    missing = tmp_path / "missing.json"
    res = cli(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.sweep.dir=sweep",
            "logger=none",
            f"generator.categories={CATEGORIES},{missing}",
            "synthetic.images_per_category=3",
            "generator.mask.min_area=0.02",
            *GENERATE,
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    runs = [RunPaths(p) for p in sorted((tmp_path / "sweep").iterdir()) if (p / ".hydra").is_dir()]
    assert len(runs) == 2
    failed = [r for r in runs if r.failed.exists()]
    finished = [r for r in runs if r.marker("generate").exists()]
    assert len(failed) == len(finished) == 1 and failed != finished
    assert json.loads(failed[0].failed.read_text())["type"] == "FileNotFoundError"


def _gather_on_rank(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from mfexp.detection.stages import _gather

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        got = _gather([{"rank": rank, "i": i} for i in range(rank + 1)])
        Path(out, f"{rank}.json").write_text(json.dumps(got))
    finally:
        dist.destroy_process_group()


def test_predictions_are_gathered_on_rank_0_only(tmp_path):
    import torch.multiprocessing

    torch.multiprocessing.spawn(_gather_on_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    assert json.loads((tmp_path / "0.json").read_text()) == [
        {"rank": 0, "i": 0},
        {"rank": 1, "i": 0},
        {"rank": 1, "i": 1},
    ]
    assert json.loads((tmp_path / "1.json").read_text()) == []


def test_quiet_console_drops_the_known_notes_and_nothing_else(caplog):
    import logging
    import warnings

    from mfexp.console import quiet_third_party

    quiet_third_party()
    lightning = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        lightning.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        lightning.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
    message = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet_third_party()  # catch_warnings reset the filters
        warnings.warn_explicit(message, FutureWarning, "_pytree.py", 21, module="pytorch_lightning.utilities._pytree")
        warnings.warn_explicit(message, FutureWarning, "mine.py", 1, module="mfexp.mine")
    assert [w.filename for w in seen] == ["mine.py"]


def test_a_key_added_later_keeps_old_run_folders_hashes():
    """generator.guidance_window (and later its per-model default, generator.model.guidance_window) came after run
    folders existed: left null they hash as if absent, so a folder made before them resumes (the generate stage's
    marker and the mosaics' fingerprint are unchanged); set, either counts."""
    from omegaconf import OmegaConf

    from mfexp.augmenters.mosaicfusion import fingerprint
    from mfexp.run import stage_hash

    now = compose(["generator.num_objects=2"])
    before = OmegaConf.create(OmegaConf.to_container(now))  # untyped, so the key can go
    del before.generator["guidance_window"]
    del before.generator.model["guidance_window"]
    windowed = compose(["generator.num_objects=2", "generator.guidance_window=[0.35,0.9,8]"])
    by_model = compose(["generator.num_objects=2", "generator.model.guidance_window=[0.35,0.9,8]"])
    assert by_model.generator.guidance_window == [0.35, 0.9, 8]  # the model's default reaches the generator
    for stage in ("generate", "train", "evaluate"):
        assert stage_hash(now, stage) == stage_hash(before, stage) != stage_hash(windowed, stage)
        assert stage_hash(by_model, stage) != stage_hash(now, stage)
    assert fingerprint(now) == fingerprint(before) != fingerprint(windowed)
    assert fingerprint(by_model) != fingerprint(now)
