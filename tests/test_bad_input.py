"""Bad input and faults, tried as a new user would: a command that fails validation writes nothing into any run folder,
two commands on one run folder never do the work twice, DDP workers end with their parent, and each bad value is one
line naming its key."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, ROOT, compose

from mfexp.runpaths import RunPaths

FINISHED = ["augmenter=none", "stages=[generate]", "logger=none", "trainer.devices=1"]  # outputs/runs/augmenter=none
GENERATE = [
    "stages=[generate]",
    "generator/model=tiny_random",
    "generator.num_objects=2",
    f"generator.categories={FIXTURES / 'categories.json'}",  # 4 rare categories
    "trainer.accelerator=cpu",
    "logger=none",
]  # + synthetic.images_per_category: mosaics per rare category


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path below ``folder`` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture
def mfexp_cli(tmp_path, monkeypatch, capsys):
    """``python -m mfexp ARGS`` in this process (the imports are paid once), run folders under tmp_path/outputs:
    returns (exit status, stderr)."""
    import mfexp.__main__ as entry

    monkeypatch.setenv("MFEXP_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def call(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["mfexp", *args])
        monkeypatch.setattr(entry, "TASK_STARTED", False)
        capsys.readouterr()
        try:
            entry.cli()
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        finally:  # Hydra configured logging for the run: put pytest's back
            for h in root.handlers:
                if h not in handlers:
                    h.close()
            root.handlers[:] = handlers
            root.setLevel(level)
        return code, capsys.readouterr().err

    return call


BAD_COMMANDS = [
    (["stages=[evalute]"], "stages=['evalute']: choose a list from"),
    (["stages=[foo]"], "stages=['foo']: choose a list from"),
    (["generate.reuse='/nonexistent'"], "generate.reuse=/nonexistent: no synthetic set there"),
    (["synthetic.max_images=0"], "synthetic.max_images=0 must be >= 1 or null"),
    (["trainer.precision=foo"], "trainer.precision='foo' must be one of"),
    (["trainer.accelerator=foo"], "trainer.accelerator='foo' must be one of"),
    pytest.param(
        ["trainer.accelerator=gpu"],
        "trainer.accelerator='gpu': this machine has none",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine"),
    ),
    (["augmenter=cut_paste_schema"], "Could not find 'augmenter/cut_paste_schema'"),  # composition: Hydra's message
    (["seed=abc"], "seed"),
]


@pytest.mark.parametrize("bad,msg", BAD_COMMANDS)
def test_a_bad_command_writes_nothing_and_exits_2(mfexp_cli, tmp_path, bad, msg):
    """A finished run folder stays byte for byte as it was after a bad command aimed at it (keys left out of the run
    folder's name: stages, generate.reuse, trainer.*), and a bad command makes no new run folder."""
    outputs = tmp_path / "outputs"
    code, err = mfexp_cli(*FINISHED)
    assert code == 0, err
    finished = RunPaths(outputs / "runs" / "augmenter=none")
    assert finished.marker("generate").is_file() and (finished.hydra / "overrides.yaml").is_file()
    before = tree(outputs)
    keys = {o.split("=")[0] for o in bad}
    code, err = mfexp_cli(*[o for o in FINISHED if o.split("=")[0] not in keys], *bad)
    assert code == 2, err
    assert msg in err
    if not msg.startswith("Could not") and msg != "seed":  # validation: one line
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert tree(outputs) == before


def test_a_bad_setting_of_a_sweep_spoils_no_finished_run(mfexp_cli, tmp_path):
    """In a sweep (-m) a bad value is recorded as a failed setting in a new folder only; a folder that holds an
    earlier run stays as it was."""
    sweep = ["-m", "hydra.sweep.dir=outputs/sweep", *FINISHED]
    assert mfexp_cli(*sweep)[0] == 0
    done = tmp_path / "outputs" / "sweep" / "augmenter=none"
    before = tree(done)
    assert RunPaths(done).marker("generate").is_file()
    code, err = mfexp_cli(*sweep[:3], "stages=[evalute]", *sweep[-2:])
    assert code == 0 and "error: stages=['evalute']" in err
    assert tree(done) == before
    code, err = mfexp_cli(*sweep, "seed=1,2", "synthetic.max_images=0")
    assert code == 0 and err.count("error: synthetic.max_images=0") == 2
    new = RunPaths(done.parent / "augmenter=none,seed=1,synthetic.max_images=0")
    assert (new.hydra / "overrides.yaml").is_file() and "max_images" in new.failed.read_text()
    assert tree(done) == before


def test_a_second_process_on_a_held_run_folder_stops_at_once(tmp_path):
    from mfexp.run import RunFolderBusy, hold_run_folder

    paths = RunPaths(tmp_path / "run")
    with hold_run_folder(paths):
        with pytest.raises(RunFolderBusy, match=f"in use by process {os.getpid()} .*nothing was done"):
            with hold_run_folder(paths):
                pass
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from mfexp.run import *; hold_run_folder(RunPaths({str(paths.root)!r})).__enter__()",
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
        )
        assert child.returncode == 1 and f"RunFolderBusy: run folder {paths.root} is in use" in child.stderr
    with hold_run_folder(paths):  # released at the end
        pass


def cli_process(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MFEXP_OUTPUTS": str(cwd), "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mfexp", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.mark.slow
def test_two_identical_commands_make_each_image_once(tmp_path):
    args = [*GENERATE, "trainer.devices=1", "synthetic.images_per_category=2", "hydra.run.dir=run"]
    first = cli_process(args, tmp_path, tmp_path / "first.log")
    second = cli_process(args, tmp_path, tmp_path / "second.log")
    codes = sorted([first.wait(timeout=600), second.wait(timeout=600)])
    logs = (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
    assert codes == [0, 1], logs[-3000:]
    assert logs.count("is in use by process") == 1 and logs.count("0 already done, 8 to make") == 1, logs[-3000:]
    ann = json.loads((tmp_path / "run" / "synthetic" / "annotations.json").read_text())
    assert ann["info"]["planned"] == 8


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_launched_worker_ends_with_its_parent(tmp_path):
    """kill -9 of a process whose child is a launched worker (LOCAL_RANK > 0): the worker ends within seconds."""
    worker = (
        "import time; from mfexp.devices import end_with_parent, is_launched_worker; "
        "assert is_launched_worker(); end_with_parent(); print('ready', flush=True); time.sleep(120)"
    )
    parent = (
        "import os, subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', {worker!r}], env=dict(os.environ, LOCAL_RANK='1'), "
        "stdout=subprocess.PIPE, text=True); p.stdout.readline(); print(p.pid, flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", parent], env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(proc.stdout.readline())
        assert alive(child)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.time() + 5
        while alive(child) and time.time() < deadline:
            time.sleep(0.1)
        assert not alive(child)
    finally:
        proc.kill()


def children(pid: int) -> list[int]:
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and alive(int(p.name)) and (p / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid)
    ]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_the_main_process_ends_its_ddp_worker(tmp_path):
    args = [
        *GENERATE,
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "synthetic.images_per_category=25",
        "hydra.run.dir=run",
    ]
    main = cli_process(args, tmp_path, tmp_path / "main.log")
    parts = tmp_path / "run" / "synthetic" / "parts"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and main.poll() is None and len(list(parts.glob("*.json"))) < 2:
            time.sleep(0.2)
        workers = children(main.pid)
        assert main.poll() is None and workers, (tmp_path / "main.log").read_text()[-3000:]
        main.send_signal(signal.SIGKILL)
        main.wait(timeout=10)
        deadline = time.time() + 5
        while any(alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(alive(w) for w in workers)
    finally:
        main.kill()
    assert not (tmp_path / "run" / "failed.json").exists()


def test_schema_entries_are_no_choices():
    from hydra.core.config_store import ConfigStore
    from hydra.errors import ConfigCompositionException, MissingConfigException

    with pytest.raises((ConfigCompositionException, MissingConfigException)) as e:
        compose(["augmenter=foo"])
    offered = str(e.value).split("Available options in 'augmenter':")[1].split("Config search path")[0].split()
    assert offered == sorted(p.stem for p in (ROOT / "conf" / "augmenter").glob("*.yaml"))
    for group in ("augmenter", "dataset", "detector", "generator/model"):  # no schema is a choice of its group
        try:
            stored = ConfigStore.instance().list(group)
        except OSError:  # Hydra's "Path not found": no schema in the group
            stored = []
        assert stored == [], group


@pytest.mark.parametrize(
    "argv,key",
    [
        (["synthetic.no_such_key=1"], "synthetic.no_such_key"),
        (["no_such_group=x"], "no_such_group"),
        (["augmenter=foo"], "augmenter/foo"),
        (["seed=abc"], "seed"),
    ],
)
def test_check_with_a_bad_key_is_one_line(capsys, argv, key):
    from mfexp import check

    assert check.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and key in err, err


def test_check_names_the_image_folder_it_misses(tmp_path):
    from test_check import fake_lvis, lvis_cfg

    from mfexp import check

    root = fake_lvis(tmp_path / "data")
    for f in (root / "coco" / "val2017").iterdir():
        f.unlink()
    message = check.check_lvis_layout(lvis_cfg(root)).message
    assert f"val images {root / 'coco' / 'val2017'}/ (no .jpg files)" in message and "train" not in message


def test_accelerator_missing_here_names_the_key(monkeypatch):
    from mfexp.devices import check_accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name in ("gpu", "cuda"):
        with pytest.raises(ValueError, match=f"trainer.accelerator='{name}': this machine has none"):
            check_accelerator(name)
    check_accelerator("cpu")
    check_accelerator("auto")


def test_report_baseline_names_the_unknown_key(tmp_path, capsys):
    from test_sweeps_report import fake_run, metrics

    from mfexp.report import main

    for a in ("none", "mosaicfusion"):  # runs that name no seed
        fake_run(tmp_path / "sweep", f"augmenter={a}", [f"augmenter={a}"], metrics(0.2, 0.1))
    assert main([str(tmp_path / "sweep"), "--baseline", "nokey=1"]) == 2
    err = capsys.readouterr().err
    assert "--baseline names nokey, not a swept key" in err and "seed" not in err


def test_toy_quality_refuses_overrides_its_own_flags_set():
    """benchmarks/toy_quality.py: --n sets each part's objects per image and --steps the steps, so `--set
    generator.num_objects=4` (which would turn its single objects into 4-object mosaics) is a usage error."""
    cmd = [sys.executable, str(ROOT / "benchmarks/toy_quality.py"), "--set", "generator.num_objects=4"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "leave them out of --set" in out.stderr, out.stderr
