"""`python -m mfexp.check [overrides]`: preflight of an experiment before it runs.

Composes the same Hydra config as `python -m mfexp [overrides]` and checks what the run will need: the dataset
files, the text-to-image weights, the detector's ImageNet weights, mmcv's compiled ops on the chosen device, GPUs and
their free memory, free disk where outputs and caches go, and the installed versions. Prints one line per check,
``OK``, ``FAIL`` or ``SKIP`` (not applicable here), with a one-line fix under each failure; exits 1 if any check
failed, else 0. Nothing is downloaded and no run folder is made.

Each check is a small function returning a :class:`Check`; ``run_checks(cfg)`` runs them all.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"
GiB = 1024**3

# Thresholds: the paper's setting (SD v1.4 + Mask R-CNN R50-FPN on LVIS) and the toy world (see docs/lvis.md).
GPU_FREE_GIB = {"paper": 12.0, "toy": 1.0}  # free memory per GPU used
LOG_DIR_FREE_GIB = {"paper": 20.0, "toy": 1.0}  # run folders: synthetic set, checkpoints, predictions
CACHE_DIR_FREE_GIB = {"paper": 2.0, "toy": 0.5}  # generated datasets, built wheels
SD_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_TWO_TEXT = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
# the folders of a diffusers pipeline of each generator.model.family (SD3's T5, text_encoder_3, is optional)
FAMILY_COMPONENTS = {
    "unet": SD_COMPONENTS,
    "sdxl": ("unet", *_TWO_TEXT),
    "sd3": ("transformer", *_TWO_TEXT),
    "flux": ("transformer", *_TWO_TEXT),
}
# free GPU memory per family at paper scale (GiB): the weights in the config's dtype plus room for a batch of
# regions; estimates from the parameter counts (SDXL 3.5 B in fp16, SD3.5 Medium 2.5 B + T5-XXL 4.7 B in bf16,
# FLUX.1 12 B + T5-XXL 4.7 B in bf16), not measured here
FAMILY_GPU_FREE_GIB = {"unet": 12.0, "sdxl": 16.0, "sd3": 24.0, "flux": 40.0}
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK | FAIL | SKIP
    message: str
    fix: str = ""

    def lines(self) -> list[str]:
        out = [f"{self.status:<4}  {self.name:<12} {self.message}"]
        if self.status == FAIL and self.fix:
            out.append(f"{'':<4}  {'':<12} fix: {self.fix}")
        return out


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _first_entry(folder: Path, suffix: str) -> bool:
    """Whether ``folder`` holds at least one file ending in ``suffix`` (stops at the first)."""
    try:
        with os.scandir(folder) as it:
            return any(e.name.lower().endswith(suffix) for e in it)
    except OSError:
        return False


def is_paper_scale(cfg) -> bool:
    """Real data or a real text-to-image model: GPUs expected, bigger thresholds."""
    model_path = OmegaConf.select(cfg, "generator.model.path", default=None)
    return OmegaConf.select(cfg, "dataset.name", default="") != "toyworld" or model_path not in (None, "tiny_random")


# --- dataset ------------------------------------------------------------------------------------------------------

LVIS_FIX = (
    "download the LVIS v1 annotations (https://www.lvisdataset.org/dataset) and the COCO 2017 train/val "
    "images (https://cocodataset.org/#download) into the tree of docs/lvis.md, or point paths.data_dir "
    "(MFEXP_DATA) at it"
)


def check_lvis_layout(dataset_cfg) -> Check:
    """LVIS v1: both annotation JSONs and the COCO 2017 image folders (train2017/, val2017/ with .jpg files)."""
    missing, hints = [], []
    for key in ("train_json", "val_json"):
        path = Path(str(dataset_cfg[key])).expanduser()
        if not path.is_file():
            missing.append(f"{key} {path}")
            if Path(str(path) + ".zip").is_file():
                hints.append(f"unzip {path}.zip -d {path.parent}")
        elif path.stat().st_size == 0:
            missing.append(f"{key} {path} (empty)")
    seen = set()
    for key in ("train_images", "val_images"):
        root = Path(str(dataset_cfg[key])).expanduser()
        # LVIS v1 image paths are train2017/xxx.jpg or val2017/xxx.jpg under the images folder (both splits use both)
        for sub in ("train2017", "val2017"):
            folder = root / sub
            if folder in seen:
                continue
            seen.add(folder)
            what = f"{sub.removesuffix('2017')} images {folder}/"  # by the folder, whichever key's root it is under
            if not folder.is_dir():
                missing.append(what)
                if Path(str(folder) + ".zip").is_file():
                    hints.append(f"unzip {folder}.zip -d {root}")
            elif not _first_entry(folder, ".jpg"):
                missing.append(f"{what} (no .jpg files)")
    if missing:
        fix = "; ".join(hints) if hints else LVIS_FIX
        return Check("dataset", FAIL, "LVIS v1 missing: " + ", ".join(missing), fix)
    return Check("dataset", OK, f"LVIS v1 annotations and COCO 2017 images under {dataset_cfg.root}")


def check_dataset(cfg) -> Check:
    ds = cfg.dataset
    name = ds.get("name")
    if name == "toyworld":
        return Check("dataset", OK, f"toyworld: built on demand under {ds.cache_dir}/toyworld")
    if name == "lvis_v1":
        return check_lvis_layout(ds)
    keys = [k for k in ("train_json", "val_json") if k in ds]
    if not keys:
        return Check("dataset", SKIP, f"dataset {name!r}: built by {ds.get('_target_')}, not checked")
    missing = [str(ds[k]) for k in keys if not Path(str(ds[k])).expanduser().is_file()]
    if missing:
        return Check(
            "dataset",
            FAIL,
            f"dataset {name!r}: missing {', '.join(missing)}",
            f"put the files there or override dataset.* paths (conf/dataset/{name}.yaml)",
        )
    return Check("dataset", OK, f"dataset {name!r}: annotation files present")


# --- text-to-image weights ----------------------------------------------------------------------------------------


def sd_folder_problems(folder: Path, family: str = "unet") -> list[str]:
    """What a diffusers pipeline folder of `family` lacks (empty list: looks complete)."""
    if not (folder / "model_index.json").is_file():
        return ["model_index.json"]
    problems = []
    for comp in FAMILY_COMPONENTS[family]:
        sub = folder / comp
        if not sub.is_dir():
            problems.append(f"{comp}/")
        elif comp.startswith("tokenizer"):  # tokenizer.json, a CLIP's vocab.json + merges.txt or a T5's spiece.model
            if not (sub / "tokenizer.json").is_file() and not (sub / "spiece.model").is_file():
                problems += [f"{comp}/{f}" for f in ("vocab.json", "merges.txt") if not (sub / f).is_file()]
        elif comp == "scheduler":
            if not (sub / "scheduler_config.json").is_file():
                problems.append("scheduler/scheduler_config.json")
        else:
            if not (sub / "config.json").is_file():
                problems.append(f"{comp}/config.json")
            if not any(_first_entry(sub, s) for s in WEIGHT_SUFFIXES):
                problems.append(f"{comp}/ weights (*.safetensors or *.bin)")
    return problems


def toy_mmdit_problems(folder: Path) -> list[str]:
    """What a toy MM-DiT folder (mfexp/toyworld/toy_mmdit.py's layout) lacks."""
    wanted = (
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "text_projection.safetensors",
    )
    return [f for f in wanted if not (folder / f).is_file()]


def _looks_like_path(s: str) -> bool:
    """A filesystem path rather than a hub id (``org/name``)."""
    return s.startswith(("/", ".", "~")) or s.count("/") > 1 or "\\" in s


def check_generator_weights(model_cfg, allow_download: bool | None = None) -> Check:
    """generator.model.path: the shipped toy model, a built-in random one, a local diffusers folder or a hub id."""
    path = model_cfg.get("path")
    family = str(model_cfg.get("family", "unet"))
    if family not in FAMILY_COMPONENTS:
        return Check("generator", FAIL, f"generator.model.family={family!r}: not one of {', '.join(FAMILY_COMPONENTS)}")
    hub_id = "CompVis/stable-diffusion-v1-4" if family == "unet" else str(path)
    local = "models/" + hub_id.rsplit("/", 1)[-1]
    fix_dl = f"hf download {hub_id} --local-dir {local} (file filters: docs/lvis.md), then generator.model.path={local}"
    if path is None:
        from mfexp.assets import toy_t2i_path

        problems = sd_folder_problems(toy_t2i_path())
        if family == "sd3":  # the toy MM-DiT: its transformer around the toy UNet model's VAE and text encoder
            from mfexp.assets import toy_mmdit_path

            problems += toy_mmdit_problems(toy_mmdit_path())
        if problems:
            return Check(
                "generator",
                FAIL,
                f"shipped toy weights incomplete: {', '.join(problems)}",
                "reinstall the package (bash scripts/setup.sh) or retrain: python -m mfexp.toyworld.train_t2i",
            )
        what = "toy MM-DiT" if family == "sd3" else "toy text-to-image model"
        return Check("generator", OK, f"{what} (shipped weights)")
    if path == "tiny_random":
        return Check("generator", OK, f"tiny random {family} pipeline (built from config)")
    folder = Path(str(path)).expanduser()
    if family == "sd3" and (folder / "text_projection.safetensors").is_file():
        problems = toy_mmdit_problems(folder)
        if problems:
            return Check("generator", FAIL, f"{folder}: toy MM-DiT export incomplete: missing {', '.join(problems)}")
        return Check("generator", OK, f"toy MM-DiT export {folder}")
    if folder.is_dir():
        problems = sd_folder_problems(folder, family)
        if problems:
            return Check(
                "generator",
                FAIL,
                f"{folder} is not a complete diffusers {family} folder: missing {', '.join(problems)}",
                fix_dl,
            )
        return Check("generator", OK, f"diffusers pipeline folder {folder}")
    if _looks_like_path(str(path)) or folder.exists():
        return Check("generator", FAIL, f"generator.model.path={path}: no such folder", fix_dl)
    if allow_download is None:
        allow_download = _truthy(model_cfg.get("allow_download", False))
    if allow_download and os.environ.get("HF_HUB_OFFLINE") != "1":
        return Check("generator", OK, f"hub id {path!r}: downloaded at first use (downloads allowed)")
    return Check(
        "generator",
        FAIL,
        f"generator.model.path={path!r} is a hub id and downloads are off (no local folder)",
        fix_dl + "; or allow downloads: MFEXP_ALLOW_DOWNLOAD=true",
    )


# --- detector ImageNet weights ------------------------------------------------------------------------------------


def torch_hub_checkpoint(url: str) -> Path:
    """Where torch.hub (and so mmengine's http loader) caches a checkpoint URL."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def check_pretrained(pretrained, allow_download: bool = False) -> Check:
    """detector.pretrained: null (from scratch), a local checkpoint file, or a URL (cached by torch.hub)."""
    if not pretrained:
        return Check("pretrained", SKIP, "detector.pretrained=null: the backbone trains from scratch")
    pretrained = str(pretrained)
    scheme = urlparse(pretrained).scheme
    if scheme in ("http", "https"):
        cached = torch_hub_checkpoint(pretrained)
        if cached.is_file() and cached.stat().st_size > 0:
            return Check("pretrained", OK, f"{pretrained} cached at {cached}")
        if allow_download:
            return Check("pretrained", OK, f"{pretrained}: downloaded at first use to {cached} (downloads allowed)")
        return Check(
            "pretrained",
            FAIL,
            f"{pretrained} would be downloaded and is not in the torch hub cache ({cached})",
            f"mkdir -p {cached.parent} && curl -L -o {cached} {pretrained}  "
            "(or detector.pretrained=/path/to/resnet50.pth)",
        )
    if scheme and len(scheme) > 1:  # torchvision://, open-mmlab://, s3:// ... (not a Windows drive letter)
        return Check(
            "pretrained",
            FAIL,
            f"detector.pretrained={pretrained}: scheme {scheme}:// needs downloads "
            "or packages this project does not install",
            "download the checkpoint and set detector.pretrained=/path/to/file.pth",
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        return Check(
            "pretrained",
            FAIL,
            f"detector.pretrained={path}: no such file",
            "download https://download.pytorch.org/models/resnet50-0676ba61.pth there (docs/lvis.md)",
        )
    return Check("pretrained", OK, f"local checkpoint {path} ({path.stat().st_size / 1024**2:.0f} MiB)")


# --- devices ------------------------------------------------------------------------------------------------------


def wants_cuda(trainer_cfg, paper_scale: bool) -> bool:
    acc = str(trainer_cfg.get("accelerator", "auto")).lower()
    return acc in ("gpu", "cuda") or (acc == "auto" and paper_scale)


def requested_devices(trainer_cfg, available: int) -> int:
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, int):
        return available if devices == -1 else devices
    if isinstance(devices, str):
        if devices.strip() in ("auto", "-1"):
            return max(available, 1)
        if devices.strip().isdigit():
            return int(devices)
        return len([d for d in devices.split(",") if d.strip()])
    try:
        return len(list(devices))
    except TypeError:
        return 1


def check_gpu(trainer_cfg, paper_scale: bool, min_free_gib: float | None = None, cuda=None) -> Check:
    """CUDA devices for trainer.accelerator/devices and their free memory (``cuda``: torch.cuda, injectable)."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    acc = str(trainer_cfg.get("accelerator", "auto")).lower()
    need = wants_cuda(trainer_cfg, paper_scale)
    if min_free_gib is None:
        min_free_gib = GPU_FREE_GIB["paper" if paper_scale else "toy"]
    if acc == "cpu":
        return Check("gpu", SKIP, "trainer.accelerator=cpu")
    if not cuda.is_available():
        if need:
            why = f"trainer.accelerator={acc}" + (" and the paper-scale setting" if acc == "auto" else "")
            return Check(
                "gpu",
                FAIL,
                f"no CUDA GPU visible ({why} wants GPUs)",
                "run on a GPU node with the CUDA set-up (bash scripts/setup.sh --cuda); "
                "trainer.accelerator=cpu forces a (very slow) CPU run",
            )
        return Check("gpu", SKIP, "no CUDA GPU: stages run on the CPU")
    count = cuda.device_count()
    n = requested_devices(trainer_cfg, count)
    if n > count:
        return Check(
            "gpu",
            FAIL,
            f"trainer.devices={n} but {count} CUDA device(s) visible",
            f"trainer.devices={count} (or check CUDA_VISIBLE_DEVICES / the SLURM GPU request)",
        )
    low, parts = [], []
    for i in range(n):
        free, total = cuda.mem_get_info(i)
        parts.append(f"{i}: {free / GiB:.1f}/{total / GiB:.1f} GiB free")
        if free < min_free_gib * GiB:
            low.append(i)
    name = cuda.get_device_name(0)
    msg = f"{n} x {name} ({'; '.join(parts)}; need >= {min_free_gib:g} GiB free each)"
    if low:
        return Check(
            "gpu",
            FAIL,
            msg,
            f"free GPU(s) {low} (other processes: nvidia-smi) or pick others with CUDA_VISIBLE_DEVICES",
        )
    return Check("gpu", OK, msg)


def check_mmcv_ops(devices: list[str] | None = None) -> Check:
    """mmcv's compiled ops (RoIAlign, nms) on a tiny input on each device in ``devices`` (default: cpu [+ cuda])."""
    try:
        import torch
        from mmcv.ops import RoIAlign, get_compiling_cuda_version, nms
    except Exception as e:  # ImportError, or an undefined symbol from an mmcv built against another torch
        return Check(
            "mmcv-ops",
            FAIL,
            f"cannot import mmcv.ops: {type(e).__name__}: {str(e)[:200]}",
            "bash scripts/setup.sh (add --cuda on GPU nodes) rebuilds mmcv 2.1.0 against this torch",
        )
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    done = []
    for dev in devices:
        try:
            feat = torch.arange(2 * 8 * 8, dtype=torch.float32, device=dev).reshape(1, 2, 8, 8)
            rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0]], device=dev)
            out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2)(feat, rois)
            boxes = torch.tensor([[0, 0, 4, 4], [0.5, 0.5, 4, 4], [5, 5, 8, 8]], dtype=torch.float32, device=dev)
            _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device=dev), 0.5)
            if tuple(out.shape) != (1, 2, 2, 2) or keep.tolist() != [0, 2]:
                raise RuntimeError(f"wrong result (RoIAlign {tuple(out.shape)}, nms keep {keep.tolist()})")
        except Exception as e:
            cuda_build = get_compiling_cuda_version()
            return Check(
                "mmcv-ops",
                FAIL,
                f"RoIAlign/nms on {dev}: {type(e).__name__}: {str(e)[:160]} (mmcv compiled with CUDA: {cuda_build})",
                "bash scripts/setup.sh --cuda (mmcv built with FORCE_CUDA=1 for this torch/CUDA)"
                if dev != "cpu"
                else "bash scripts/setup.sh (rebuilds mmcv against this torch)",
            )
        done.append(dev)
    return Check(
        "mmcv-ops", OK, f"RoIAlign and nms run on {', '.join(done)} (mmcv CUDA: {get_compiling_cuda_version()})"
    )


# --- disk and versions --------------------------------------------------------------------------------------------


def existing_parent(path: Path) -> Path:
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(name: str, path, min_free_gib: float) -> Check:
    where = existing_parent(Path(str(path)))
    free = shutil.disk_usage(where).free
    msg = f"{path}: {free / GiB:.1f} GiB free (need >= {min_free_gib:g} GiB)"
    if free < min_free_gib * GiB:
        return Check(
            name,
            FAIL,
            msg,
            f"free space on {where} or point it elsewhere "
            f"({'paths.log_dir / MFEXP_OUTPUTS' if name == 'disk-logs' else 'paths.cache_dir / MFEXP_CACHE'})",
        )
    return Check(name, OK, msg)


def check_versions() -> Check:
    versions, failed = [], []
    for mod in ("torch", "mmcv", "mmengine", "mmdet", "diffusers", "transformers", "pytorch_lightning"):
        try:
            m = __import__(mod)
            versions.append(f"{mod} {m.__version__}")
        except Exception as e:
            failed.append(f"{mod} ({type(e).__name__}: {str(e)[:120]})")
    if failed:
        return Check("versions", FAIL, "cannot import " + ", ".join(failed), "bash scripts/setup.sh")
    import torch

    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    return Check("versions", OK, ", ".join(versions) + f" (torch: {cuda})")


# --- all ----------------------------------------------------------------------------------------------------------


def check_config(cfg) -> Check:
    """The ranges and choices `python -m mfexp` checks before any stage (mfexp.config.validate)."""
    from mfexp.config import validate

    try:
        validate(cfg)
    except ValueError as e:
        return Check("config", FAIL, str(e), "change that value (command line or conf/)")
    return Check("config", OK, "values in range")


def run_checks(cfg) -> list[Check]:
    from mfexp.augmenters import uses

    paper = is_paper_scale(cfg)
    scale = "paper" if paper else "toy"
    allow = _truthy(OmegaConf.select(cfg, "generator.model.allow_download", default=False))
    stages = [str(s) for s in OmegaConf.select(cfg, "stages", default=[])]
    augmenter = OmegaConf.select(cfg, "augmenter.name", default="?")
    if "generate" not in stages:
        generator = Check("generator", SKIP, "no generate stage")
    elif OmegaConf.select(cfg, "generate.reuse"):
        generator = Check("generator", SKIP, "generate.reuse copies a synthetic set")
    elif not uses(cfg, "text_to_image"):
        generator = Check("generator", SKIP, f"augmenter={augmenter} uses no text-to-image model")
    else:
        generator = check_generator_weights(cfg.generator.model)
    if "train" in stages:
        pretrained = check_pretrained(OmegaConf.select(cfg, "detector.pretrained"), allow_download=allow)
    else:
        pretrained = Check("pretrained", SKIP, "no train stage")
    checks = [check_config(cfg), check_versions(), check_dataset(cfg), generator, pretrained]
    family = str(OmegaConf.select(cfg, "generator.model.family", default="unet"))
    min_free = (
        FAMILY_GPU_FREE_GIB.get(family) if paper and "generate" in stages and uses(cfg, "text_to_image") else None
    )
    gpu = check_gpu(cfg.trainer, paper, min_free)
    acc = str(cfg.trainer.get("accelerator", "auto")).lower()
    checks += [
        check_mmcv_ops(["cpu"] if acc == "cpu" else None),
        gpu,
        check_disk("disk-logs", cfg.paths.log_dir, LOG_DIR_FREE_GIB[scale]),
        check_disk("disk-cache", cfg.paths.cache_dir, CACHE_DIR_FREE_GIB[scale]),
    ]
    return checks


def one_line(error: BaseException) -> str:
    """Hydra's several-line message of a config that does not compose (with its cause's), on one line."""
    cause = error.__cause__
    text = str(error) + (f" ({cause})" if cause is not None and str(cause) not in str(error) else "")
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.split("\n\n")[0] + "\n\nusage: python -m mfexp.check [hydra overrides, as for python -m mfexp]")
        return 0
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mfexp.compose import compose

    try:
        cfg = compose(argv)
    except (HydraException, OmegaConfBaseException) as e:  # a misspelt key or group, a value of the wrong type
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    checks = run_checks(cfg)
    for c in checks:
        print("\n".join(c.lines()))
    failed = [c.name for c in checks if c.status == FAIL]
    print(f"{len(failed)} failed: {', '.join(failed)}" if failed else "all checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
