"""`python -m mfexp.check`: the preflight's checks (each a small function) and its report and exit code."""

import json
import re

import pytest
import torch
from helpers import ROOT
from omegaconf import OmegaConf

from mfexp import check
from mfexp.check import FAIL, OK, SKIP

RESNET_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """No downloads allowed, an empty torch hub cache."""
    monkeypatch.delenv("MFEXP_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def fake_sd(folder):
    """A well-formed (tiny, fake) diffusers Stable Diffusion 1.x folder."""
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    for comp, files in {
        "unet": ["config.json", "diffusion_pytorch_model.safetensors"],
        "vae": ["config.json", "diffusion_pytorch_model.safetensors"],
        "text_encoder": ["config.json", "model.safetensors"],
        "tokenizer": ["vocab.json", "merges.txt", "tokenizer_config.json"],
        "scheduler": ["scheduler_config.json"],
    }.items():
        (folder / comp).mkdir()
        for f in files:
            (folder / comp / f).write_text("{}")
    return folder


def fake_lvis(root):
    """The LVIS v1 + COCO 2017 tree conf/dataset/lvis_v1.yaml expects, with one image per folder."""
    (root / "lvis").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "lvis" / f"lvis_v1_{split}.json").write_text('{"images": [], "annotations": [], "categories": []}')
        (root / "coco" / f"{split}2017").mkdir(parents=True)
        (root / "coco" / f"{split}2017" / "000000000001.jpg").write_bytes(b"\xff\xd8\xff")
    return root


def lvis_cfg(root):
    return OmegaConf.create(
        {
            "name": "lvis_v1",
            "root": str(root),
            "train_json": f"{root}/lvis/lvis_v1_train.json",
            "val_json": f"{root}/lvis/lvis_v1_val.json",
            "train_images": f"{root}/coco",
            "val_images": f"{root}/coco",
        }
    )


def report(out: str) -> dict:
    """{check name: (status, message, fix)} from the printed report."""
    rows, last = {}, None
    for line in out.splitlines():
        m = re.match(r"^(OK|FAIL|SKIP)\s+(\S+)\s+(.*)$", line)
        if m:
            last = m.group(2)
            rows[last] = [m.group(1), m.group(3), ""]
        elif line.strip().startswith("fix: ") and last:
            rows[last][2] = line.strip()[5:]
    return {k: tuple(v) for k, v in rows.items()}


# --- the check functions ------------------------------------------------------------------------------------------


def test_sd_folder(tmp_path):
    sd = fake_sd(tmp_path / "sd")
    c = check.check_generator_weights(OmegaConf.create({"path": str(sd)}))
    assert c.status == OK, c
    (sd / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (sd / "tokenizer" / "merges.txt").unlink()
    c = check.check_generator_weights(OmegaConf.create({"path": str(sd)}))
    assert c.status == FAIL and "unet/ weights" in c.message and "tokenizer/merges.txt" in c.message and c.fix
    c = check.check_generator_weights(OmegaConf.create({"path": str(tmp_path / "nowhere")}))
    assert c.status == FAIL and "no such folder" in c.message


def test_sd_hub_id_needs_downloads(monkeypatch):
    hub = OmegaConf.create({"path": "CompVis/stable-diffusion-v1-4", "allow_download": False})
    c = check.check_generator_weights(hub)
    assert c.status == FAIL and "downloads are off" in c.message and "generator.model.path=" in c.fix
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub.allow_download = True
    assert check.check_generator_weights(hub).status == OK


def test_shipped_and_random_models():
    assert check.check_generator_weights(OmegaConf.create({"path": None})).status == OK
    assert check.check_generator_weights(OmegaConf.create({"path": "tiny_random"})).status == OK


def test_lvis_layout(tmp_path):
    c = check.check_lvis_layout(lvis_cfg(tmp_path / "data"))
    assert c.status == FAIL and "lvis_v1_train.json" in c.message and "train2017" in c.message
    assert "lvisdataset.org" in c.fix
    root = fake_lvis(tmp_path / "data")
    assert check.check_lvis_layout(lvis_cfg(root)).status == OK
    # an image folder without images, an annotation file still zipped
    (root / "coco" / "val2017" / "000000000001.jpg").unlink()
    (root / "lvis" / "lvis_v1_val.json").rename(root / "lvis" / "lvis_v1_val.json.zip")
    c = check.check_lvis_layout(lvis_cfg(root))
    assert c.status == FAIL and "no .jpg files" in c.message and c.fix.startswith("unzip ")


def test_pretrained(tmp_path):
    assert check.check_pretrained(None).status == SKIP
    c = check.check_pretrained(RESNET_URL)
    assert c.status == FAIL and "torch hub cache" in c.message and "curl" in c.fix
    assert check.check_pretrained(RESNET_URL, allow_download=True).status == OK
    cached = check.torch_hub_checkpoint(RESNET_URL)
    assert cached == tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert check.check_pretrained(RESNET_URL).status == OK
    assert check.check_pretrained(str(cached)).status == OK
    assert check.check_pretrained(str(tmp_path / "missing.pth")).status == FAIL
    assert check.check_pretrained("torchvision://resnet50").status == FAIL


class FakeCuda:
    def __init__(self, free_gib, available=True):
        self.free = free_gib
        self.available = available

    def is_available(self):
        return self.available

    def device_count(self):
        return len(self.free)

    def mem_get_info(self, i):
        return int(self.free[i] * check.GiB), int(80 * check.GiB)

    def get_device_name(self, i):
        return "Fake GPU"


def test_gpu():
    auto = OmegaConf.create({"accelerator": "auto", "devices": 1})
    none = FakeCuda([], available=False)
    assert check.check_gpu(auto, paper_scale=False, cuda=none).status == SKIP
    c = check.check_gpu(auto, paper_scale=True, cuda=none)
    assert c.status == FAIL and "no CUDA GPU" in c.message and "--cuda" in c.fix
    assert check.check_gpu(OmegaConf.create({"accelerator": "gpu"}), paper_scale=False, cuda=none).status == FAIL
    assert check.check_gpu(OmegaConf.create({"accelerator": "cpu"}), paper_scale=True, cuda=none).status == SKIP
    assert check.check_gpu(auto, paper_scale=True, cuda=FakeCuda([40.0])).status == OK
    c = check.check_gpu(OmegaConf.create({"accelerator": "gpu", "devices": 2}), True, cuda=FakeCuda([40.0, 3.0]))
    assert c.status == FAIL and "[1]" in c.fix
    c = check.check_gpu(OmegaConf.create({"accelerator": "gpu", "devices": 8}), True, cuda=FakeCuda([40.0]))
    assert c.status == FAIL and "1 CUDA device" in c.message


def test_disk(tmp_path):
    assert check.check_disk("disk-logs", tmp_path / "not" / "yet", 0.0).status == OK
    c = check.check_disk("disk-logs", tmp_path, 1e9)
    assert c.status == FAIL and "paths.log_dir" in c.fix


def test_mmcv_ops_cpu():
    c = check.check_mmcv_ops(["cpu"])
    assert c.status == OK, c


# --- the whole preflight ------------------------------------------------------------------------------------------


def test_default_toy_config_passes(tmp_path, capsys):
    code = check.main([f"paths.log_dir={tmp_path}/outputs", f"paths.cache_dir={tmp_path}/cache"])
    rows = report(capsys.readouterr().out)
    assert code == 0, rows
    assert {
        "config",
        "versions",
        "dataset",
        "generator",
        "pretrained",
        "mmcv-ops",
        "gpu",
        "disk-logs",
        "disk-cache",
    } <= set(rows)
    assert all(status in (OK, SKIP) for status, _, _ in rows.values()), rows
    assert rows["dataset"][0] == OK and rows["generator"][0] == OK and rows["mmcv-ops"][0] == OK


def lvis_overrides(tmp_path, *extra):
    return [
        "experiment=lvis_mosaicfusion",
        f"paths.data_dir={tmp_path}/data",
        f"paths.log_dir={tmp_path}/outputs",
        f"paths.cache_dir={tmp_path}/cache",
        *extra,
    ]


def test_lvis_experiment_reports_what_is_missing(tmp_path, capsys):
    code = check.main(lvis_overrides(tmp_path))
    out = capsys.readouterr().out
    rows = report(out)
    assert code == 1
    for name in ("dataset", "generator", "pretrained"):
        status, message, fix = rows[name]
        assert status == FAIL and message and fix, (name, rows[name])
    assert "LVIS v1" in rows["dataset"][1] and "CompVis/stable-diffusion-v1-4" in rows["generator"][1]
    if not torch.cuda.is_available():  # a CPU machine: the paper's setting wants GPUs
        assert rows["gpu"][0] == FAIL and "no CUDA GPU" in rows["gpu"][1] and "--cuda" in rows["gpu"][2]
    assert out.strip().splitlines()[-1].startswith(f"{sum(r[0] == FAIL for r in rows.values())} failed")


def test_lvis_experiment_with_the_files_in_place(tmp_path, capsys):
    fake_lvis(tmp_path / "data")
    sd = fake_sd(tmp_path / "models" / "sd14")
    cached = check.torch_hub_checkpoint(RESNET_URL)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    check.main(lvis_overrides(tmp_path, f"generator.model.path={sd}"))
    rows = report(capsys.readouterr().out)
    assert rows["dataset"][0] == OK and rows["generator"][0] == OK and rows["pretrained"][0] == OK, rows


def test_checks_follow_the_stages(tmp_path, capsys):
    check.main(lvis_overrides(tmp_path, "stages=[evaluate]"))
    rows = report(capsys.readouterr().out)
    assert rows["generator"][0] == SKIP and rows["pretrained"][0] == SKIP and rows["dataset"][0] == FAIL
    check.main(lvis_overrides(tmp_path, "augmenter=cut_paste"))
    assert report(capsys.readouterr().out)["generator"][0] == SKIP


def test_bad_value_fails_the_config_check(tmp_path, capsys):
    code = check.main(
        [f"paths.log_dir={tmp_path}/outputs", f"paths.cache_dir={tmp_path}/cache", "synthetic.jpeg_quality=500"]
    )
    status, message, fix = report(capsys.readouterr().out)["config"]
    assert code == 1 and status == FAIL and message.startswith("synthetic.jpeg_quality=500") and fix


AUGMENTERS = sorted(p.stem for p in (ROOT / "conf" / "augmenter").glob("*.yaml"))


@pytest.mark.parametrize("augmenter", AUGMENTERS)
def test_the_preflight_checks_the_model_of_every_augmenter_that_uses_one(augmenter, tmp_path, capsys):
    from helpers import compose

    from mfexp.augmenters import uses

    overrides = lvis_overrides(tmp_path, f"augmenter={augmenter}")
    t2i = uses(compose(overrides), "text_to_image")  # declared in conf/augmenter/<name>.yaml
    check.main(overrides)
    rows = report(capsys.readouterr().out)
    assert rows["config"][0] == OK, rows["config"]
    if t2i:  # the paper's SD weights are not here
        assert rows["generator"][0] == FAIL and "CompVis/stable-diffusion-v1-4" in rows["generator"][1]
    else:
        assert rows["generator"][0] == SKIP and f"augmenter={augmenter}" in rows["generator"][1]
    assert t2i == (augmenter in ("mosaicfusion", "mosaicfusion_copy_paste"))
