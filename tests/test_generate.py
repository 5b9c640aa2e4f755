"""The MosaicFusion generate stage end to end on the tiny random pipeline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import ROOT, compose
from pycocotools.coco import COCO

from mfexp.augmenters import mosaicfusion as mf_augmenter
from mfexp.fileio import encode_jpeg, read_rgb
from mfexp.lvis import decode_rle, load_categories, select_categories
from mfexp.mosaicfusion.models import load_pipeline
from mfexp.mosaicfusion.pipeline import MosaicFusionGenerator, MosaicPlan


def overrides(categories_file, *extra):
    return [
        "generator/model=tiny_random",
        f"generator.categories={categories_file}",
        "synthetic.images_per_category=3",
        "generator.num_objects=2",
        "generator.mask.min_area=0.02",
        "logger=none",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.enable_progress_bar=false",
        "stages=[generate]",
        *extra,
    ]


def read_outputs(out: Path):
    ann = json.loads((out / "annotations.json").read_text())
    images = {p.name: p.read_bytes() for p in sorted((out / "images").glob("*.jpg"))}
    return ann, images


@pytest.fixture(scope="module")
def generated(tmp_path_factory, categories_file):
    cfg = compose(overrides(categories_file))
    run_dir = tmp_path_factory.mktemp("run")
    summary = mf_augmenter.generate_mosaicfusion(cfg, run_dir)
    return cfg, run_dir, summary


def test_annotations_are_valid_lvis_and_coco(generated, categories_file):
    from lvis import LVIS

    cfg, run_dir, summary = generated
    out = run_dir / "synthetic"
    lvis = LVIS(str(out / "annotations.json"))
    coco = COCO(str(out / "annotations.json"))
    assert summary["planned"] == 4 * 3 and summary["kept"] + summary["skipped"] == 12
    assert summary["kept"] > 0, summary
    assert len(lvis.get_img_ids()) == summary["kept"] == len(coco.getImgIds())
    assert len(lvis.get_ann_ids()) == 2 * summary["kept"]
    assert [c["id"] for c in lvis.dataset["categories"]] == [c["id"] for c in load_categories(categories_file)]
    assert (out / "gallery.jpg").stat().st_size > 0
    for img in lvis.dataset["images"]:
        assert (out / "images" / img["file_name"]).exists()
        assert {"neg_category_ids", "not_exhaustive_category_ids"} <= set(img)
    # every kept mosaic has a rare main category
    rare = {c["id"] for c in load_categories(categories_file) if c["frequency"] == "r"}
    for img_id in lvis.get_img_ids():
        cats = {a["category_id"] for a in lvis.load_anns(lvis.get_ann_ids(img_ids=[img_id]))}
        assert cats & rare


def test_decoded_masks_equal_the_computed_masks(generated, categories_file):
    cfg, run_dir, _ = generated
    gcfg = cfg.generator
    cats = load_categories(categories_file)
    main, mixed = select_categories(cats, ["r"], "m"), select_categories(cats, ["r", "c", "f"], "x")
    gen = MosaicFusionGenerator(load_pipeline(gcfg.model, gcfg.dtype), gcfg, cfg.synthetic)
    ann = json.loads((run_dir / "synthetic" / "annotations.json").read_text())
    kept = [img["id"] - 10_000_000 for img in ann["images"]]
    results = gen([gen.plan(i, main, mixed, int(cfg.seed)) for i in kept[:2]])
    for res in results:
        assert res.kept
        image_id = 10_000_000 + res.plan.index
        anns = sorted((a for a in ann["annotations"] if a["image_id"] == image_id), key=lambda a: a["id"])
        assert [a["category_id"] for a in anns] == [c["id"] for c in res.plan.categories]
        for a, m in zip(anns, res.masks):
            decoded = decode_rle(a["segmentation"])
            assert np.array_equal(decoded, m)
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert a["area"] == m.sum()
        saved = read_rgb(run_dir / "synthetic" / "images" / f"{res.plan.index:07d}.jpg")
        assert np.array_equal(
            saved,
            cv2.cvtColor(
                cv2.imdecode(np.frombuffer(encode_jpeg(res.image, 95), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
            ),
        )


def test_resume_after_a_crash_loses_and_duplicates_nothing(generated, tmp_path, monkeypatch, categories_file):
    cfg, ref_dir, _ = generated
    real_write = mf_augmenter.write_part
    calls = {"n": 0}

    def crashing_write(out, result, q):
        if calls["n"] == 5:
            raise RuntimeError("killed")
        calls["n"] += 1
        real_write(out, result, q)

    monkeypatch.setattr(mf_augmenter, "write_part", crashing_write)
    with pytest.raises(RuntimeError, match="killed"):
        mf_augmenter.generate_mosaicfusion(cfg, tmp_path)
    out = tmp_path / "synthetic"
    assert len(list((out / "parts").glob("*.json"))) == 5 and not (out / "annotations.json").exists()
    monkeypatch.setattr(mf_augmenter, "write_part", real_write)
    summary = mf_augmenter.generate_mosaicfusion(cfg, tmp_path)
    assert summary["planned"] == 12
    assert read_outputs(out) == read_outputs(ref_dir / "synthetic")
    ids = [a["id"] for a in json.loads((out / "annotations.json").read_text())["annotations"]]
    assert len(ids) == len(set(ids))


def test_changed_config_refuses_to_mix(generated):
    cfg, run_dir, _ = generated
    cfg.generator.guidance_scale = 3.0
    try:
        with pytest.raises(ValueError, match="another configuration"):
            mf_augmenter.generate_mosaicfusion(cfg, run_dir)
    finally:
        cfg.generator.guidance_scale = 7.5


def run_cli(args, tmp_path, timeout=600):
    env = dict(os.environ, MFEXP_OUTPUTS=str(tmp_path), PYTHONPATH=str(ROOT), WANDB_MODE="disabled")
    return subprocess.run(
        [sys.executable, "-m", "mfexp", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_one_and_two_processes_give_identical_files(tmp_path, categories_file):
    """Batches are fixed runs of mosaic indices (3 here, 4 batches), dealt to the ranks whole: each mosaic is denoised
    beside the same others in one process or two, so the files are byte-identical."""
    batched = "generator.batch_size=3"
    one = run_cli(overrides(categories_file, "hydra.run.dir=one", batched), tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_cli(
        overrides(categories_file, "hydra.run.dir=two", batched, "trainer.devices=2", "trainer.strategy=ddp"), tmp_path
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = read_outputs(tmp_path / "one" / "synthetic"), read_outputs(tmp_path / "two" / "synthetic")
    assert a == b and len(a[1]) > 0


@pytest.mark.parametrize(
    "extra,msg",
    [
        (["generator.num_objects=0"], "generator.num_objects=0 must be a positive integer"),
        (["generator.region_size=[31,32]"], "not divisible"),
        (["synthetic.main_frequency=[x]"], "unknown frequency"),
        (["generator.attention.blocks=[left]"], "unknown block"),
        (["generator/model=sd14", "generator.model.path=not/a/model"], "hub downloads are off"),
        (["generator.categories=/nonexistent.json"], "not found"),
        (["synthetic.max_images=-1"], "synthetic.max_images=-1 must be >= 1"),  # the config's checks: test_config.py
        (["generator.dtype=fp16"], "generator.dtype=fp16 needs a GPU"),  # trainer.accelerator=cpu
    ],
)
def test_bad_input_is_one_line_error_and_writes_nothing(tmp_path, categories_file, extra, msg):
    res = run_cli(overrides(categories_file, "hydra.run.dir=bad", *extra), tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and msg in last, last
    assert not (tmp_path / "bad" / "synthetic").exists()


def test_unknown_config_key_is_refused(tmp_path, categories_file):
    res = run_cli(overrides(categories_file, "generator.no_such_key=1"), tmp_path)
    assert res.returncode != 0 and "no_such_key" in res.stderr


@pytest.mark.parametrize(
    "extra,dtype",
    [([], torch.float32), (["generator.dtype=bf16"], torch.bfloat16), (["generator.model.dtype=bf16"], torch.bfloat16)],
)
def test_generator_dtype_is_the_pipelines(categories_file, extra, dtype):
    """generator.dtype (by default the model's) sets the weights' dtype, and a mosaic diffuses in it."""
    cfg = compose(overrides(categories_file, *extra))
    pipe = load_pipeline(cfg.generator.model, cfg.generator.dtype)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == dtype
    gen = MosaicFusionGenerator(pipe, cfg.generator, cfg.synthetic)
    cats = load_categories(categories_file)
    (result,) = gen([gen.plan(0, select_categories(cats, ["r"], "main"), cats, 0)])
    assert result.image.dtype == np.uint8 and result.image.shape == (
        result.plan.layout.height,
        result.plan.layout.width,
        3,
    )


def _decode_generator(tiny_pipe, mode, n=4):
    extra = [] if mode is None else [f"++generator.decode={mode}"]
    cfg = compose(["generator/model=tiny_random", f"generator.num_objects={n}", *extra])
    return MosaicFusionGenerator(tiny_pipe, cfg.generator, cfg.synthetic)


def decode(gen, latent, layout):
    """One canvas latent through the generator's (batched) decode."""
    return gen.decode([MosaicPlan(0, 0, layout, [], [])], [latent])[0]


def _layout_and_latent(gen, seed=3):
    from mfexp.mosaicfusion.layout import mosaic_layout

    g = gen.cfg
    layout = mosaic_layout(
        int(gen.cfg.num_objects), g.region_size, g.overlap, g.jitter, gen.stride, np.random.default_rng(seed)
    )
    s = gen.stride
    latent = torch.randn((1, 4, layout.height // s, layout.width // s), generator=torch.Generator().manual_seed(seed))
    return layout, latent


def _exclusive(layout, r):
    """Pixels of region r that no other region covers."""
    cover = np.zeros((len(layout.regions), layout.height, layout.width), bool)
    for k, reg in enumerate(layout.regions):
        cover[k, reg.top : reg.bottom, reg.left : reg.right] = True
    return cover[r] & (cover.sum(0) == 1)


def test_decode_default_is_the_canvas_and_unknown_mode_is_refused(tiny_pipe):
    gen = _decode_generator(tiny_pipe, None)
    assert gen.decode_mode == "canvas"
    layout, latent = _layout_and_latent(gen)
    vae = tiny_pipe.vae
    with torch.no_grad():
        whole = vae.decode(latent / vae.config.scaling_factor).sample[0]
    expected = ((whole.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(decode(gen, latent, layout), expected)
    with pytest.raises(ValueError, match="generator.decode"):
        _decode_generator(tiny_pipe, "tiles")


def test_decode_by_regions_decodes_each_region_alone(tiny_pipe):
    """decode=regions: a region's own pixels are its latent crop decoded alone (blended only where regions overlap),
    so they do not depend on the other regions' content; a whole-canvas decode mixes every region's statistics."""
    regions, canvas = _decode_generator(tiny_pipe, "regions"), _decode_generator(tiny_pipe, "canvas")
    layout, latent = _layout_and_latent(regions)
    image = decode(regions, latent, layout)
    assert image.shape == (layout.height, layout.width, 3) and image.dtype == np.uint8
    vae, s = tiny_pipe.vae, regions.stride
    for r, reg in enumerate(layout.regions):
        q = reg.latent(s)
        with torch.no_grad():
            alone = vae.decode(latent[:, :, q.top : q.bottom, q.left : q.right] / vae.config.scaling_factor).sample[0]
        alone = ((alone.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
        own = _exclusive(layout, r)[reg.top : reg.bottom, reg.left : reg.right]
        got = image[reg.top : reg.bottom, reg.left : reg.right].astype(np.float32)
        assert own.any() and np.abs(got[own] - alone[own]).max() <= 1
    # change region 3's latent outside region 0: region 0's own pixels stay with regions, move with the canvas
    changed = latent.clone()
    q0, q3 = layout.regions[0].latent(s), layout.regions[3].latent(s)
    changed[:, :, q0.bottom : q3.bottom, q0.right : q3.right] *= 3.0
    changed[:, :, q0.bottom : q3.bottom, q0.right : q3.right] += 2.0
    own0 = _exclusive(layout, 0)
    assert np.array_equal(decode(regions, changed, layout)[own0], image[own0])
    assert not np.array_equal(decode(canvas, changed, layout)[own0], decode(canvas, latent, layout)[own0])


def test_decode_by_regions_of_a_single_region_is_the_canvas_decode(tiny_pipe):
    regions, canvas = _decode_generator(tiny_pipe, "regions", n=1), _decode_generator(tiny_pipe, "canvas", n=1)
    layout, latent = _layout_and_latent(regions)
    assert len(layout.regions) == 1
    assert np.array_equal(decode(regions, latent, layout), decode(canvas, latent, layout))


def test_run_seeds_plan_unrelated_mosaics(tiny_pipe, categories_file):
    """A mosaic's plan is fixed by (run seed, index) alone, and runs with other seeds plan other mosaics: under the
    old per-mosaic seed ``seed + index``, mosaic i of seed 1 was mosaic i + 1 of seed 0 within a main category."""
    gen = _decode_generator(tiny_pipe, None)
    cats = load_categories(categories_file)
    main = select_categories(cats, ["r"], "main")

    def plan(seed, index):
        p = gen.plan(index, main, cats, seed)
        return [c["name"] for c in p.categories], [(r.top, r.left, r.bottom, r.right) for r in p.layout.regions]

    assert plan(0, 3) == plan(0, 3)
    per_category = int(gen.synthetic.images_per_category)
    shifted = [plan(1, i) == plan(0, i + 1) for i in range(per_category - 1)]
    assert not any(shifted)


def test_batches_are_fixed_runs_of_indices_pending_until_complete():
    assert mf_augmenter.batches(7, 3, set()) == [[0, 1, 2], [3, 4, 5], [6]]
    # a batch with one mosaic missing is made again whole (its other parts are rewritten with the same bytes)
    assert mf_augmenter.batches(7, 3, {0, 1, 2, 3, 5}) == [[3, 4, 5], [6]]
    assert mf_augmenter.batches(7, 3, set(range(7))) == []


def test_a_batch_of_mosaics_shares_denoiser_calls_and_matches_one_at_a_time(tiny_pipe, categories_file):
    """With quantised jitter the regions of several mosaics share shapes: a batch of 6 N=2 mosaics makes fewer
    denoiser calls per step than 6 batches of one, and the same images up to float noise (a few grey levels)."""
    cats = load_categories(categories_file)
    cfg = compose(["generator/model=tiny_random", "generator.num_objects=2", "generator.jitter_levels=2"])
    gen = MosaicFusionGenerator(tiny_pipe, cfg.generator, cfg.synthetic)
    plans = [gen.plan(i, cats, cats, 0) for i in range(6)]
    calls = {"n": 0}
    real = gen.family.predict

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    gen.family.predict = counting
    alone = [gen([p])[0] for p in plans]
    evaluations = calls["n"] / 12  # denoiser evaluations per mosaic: 2 regions of 2 shapes each, one call per shape
    calls["n"] = 0
    together = gen(plans)
    shapes = {(r.height, r.width) for p in plans for r in p.layout.regions}
    assert calls["n"] == len(shapes) * evaluations and len(shapes) < 12
    for a, b in zip(alone, together):
        assert a.plan.index == b.plan.index
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2


@pytest.mark.slow
def test_compiled_denoiser_makes_the_same_mosaics(tiny_pipe, categories_file):
    """generator.compile=true: the UNet under torch.compile (the capture stays eager) gives the same images and
    masks up to float noise."""
    cats = load_categories(categories_file)
    made = []
    for compiled in (False, True):
        cfg = compose(["generator/model=tiny_random", "generator.num_objects=2", f"generator.compile={compiled}"])
        gen = MosaicFusionGenerator(tiny_pipe, cfg.generator, cfg.synthetic)
        made.append(gen([gen.plan(i, cats, cats, 0) for i in range(2)]))
    for a, b in zip(*made):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2
        assert a.reason == b.reason


def test_sd1_mosaics_are_pinned(tiny_pipe, categories_file):
    """The SD 1.x path's output for a fixed seed, recorded when the families were split out (issue 22): a change of
    the algorithm or of the unet family shows here first. Means of the uint8 images; the skip reasons' areas."""
    cats = load_categories(categories_file)
    cfg = compose(["generator/model=tiny_random", "generator.num_objects=2", "generator.mask.min_area=0.02"])
    gen = MosaicFusionGenerator(tiny_pipe, cfg.generator, cfg.synthetic)
    pinned = {
        0: ((64, 32, 3), 107.38004557291667, "largest areas [34, 62, 284, 325] px"),
        1: ((32, 64, 3), 106.76676432291667, "largest areas [31, 54, 195, 333] px"),
        2: ((32, 64, 3), 109.15869140625, "largest areas [1, 1, 217, 467] px"),
    }
    for i, (shape, mean, areas) in pinned.items():
        (res,) = gen([gen.plan(i, cats, cats, 0)])
        assert res.image.shape == shape and abs(res.image.astype(np.float64).mean() - mean) < 0.05
        assert areas in res.reason


@pytest.mark.parametrize("model", ["tiny_random", "tiny_sdxl", "tiny_sd3"])
def test_guidance_window_sets_each_steps_scale(model, categories_file):
    """generator.guidance_window=[low, high, g]: the steps whose noise level t / T lies in [low, high] guide with g,
    the others with guidance_scale (SD 1.x's and SDXL's timesteps and SD3's flow times alike); a window over every step
    makes the same mosaic as guidance_scale=g, and a window over some steps a different one. On SD3 a scale of 1
    outside the window runs the transformer on the conditional rows only there."""
    cats = load_categories(categories_file)
    pipe = None

    def generator(*extra):
        nonlocal pipe
        cfg = compose([f"generator/model={model}", "generator.num_objects=2", "generator.mask.min_area=0.02", *extra])
        pipe = pipe or load_pipeline(cfg.generator.model, cfg.generator.dtype)
        gen = MosaicFusionGenerator(pipe, cfg.generator, cfg.synthetic)
        real, seen = gen.family.predict, []

        def recording(crops, t, cond, uncond, boxes, scale):
            rows = {}

            def count(mod, args, kwargs):
                rows.setdefault("n", (args[0] if args else kwargs["hidden_states"]).shape[0])

            hook = gen.family.model.register_forward_pre_hook(count, with_kwargs=True)
            try:
                out = real(crops, t, cond, uncond, boxes, scale)
            finally:
                hook.remove()
            seen.append((float(t) / pipe.scheduler.config.num_train_timesteps, scale, rows["n"] / crops.shape[0]))
            return out

        gen.family.predict = recording
        (res,) = gen([gen.plan(0, cats, cats, 0)])
        return res.image, seen

    steps = 4
    windowed, seen = generator(
        "generator.guidance_scale=3", f"generator.num_inference_steps={steps}", "generator.guidance_window=[0.3,0.8,8]"
    )
    inside = {scale for level, scale, _ in seen if 0.3 <= level <= 0.8}
    outside = {scale for level, scale, _ in seen if not 0.3 <= level <= 0.8}
    assert inside == {8.0} and outside == {3.0}, seen
    everywhere, _ = generator(
        "generator.guidance_scale=3", f"generator.num_inference_steps={steps}", "generator.guidance_window=[0,1,8]"
    )
    plain, _ = generator("generator.guidance_scale=8", f"generator.num_inference_steps={steps}")
    assert np.array_equal(everywhere, plain)
    assert not np.array_equal(windowed, plain)
    if model == "tiny_sd3":
        _, seen = generator(
            "generator.guidance_scale=1",
            f"generator.num_inference_steps={steps}",
            "generator.guidance_window=[0.3,0.8,8]",
        )
        assert {(scale, rows) for _, scale, rows in seen} == {(8.0, 2.0), (1.0, 1.0)}, seen


def test_skip_reasons_are_counted_by_kind():
    """The stage's log groups skips by kind: the per-mosaic numbers (areas, names) are dropped."""
    from mfexp.augmenters.mosaicfusion import reason_kind

    a = "mask: region 2 (red circle): 0 components within 5%-95% of the region (286-5426 px; largest areas [256] px)"
    b = "mask: region 0 (blue star): 0 components within 5%-95% of the region (219-4149 px; largest areas [181] px)"
    assert reason_kind(a) == reason_kind(b) == "mask: 0 components within 5%-95% of the region"
    c = "mask: region 1 (x): 2 components within 5%-95% of the nominal region (4096 px) (2-3 px; largest areas [9] px)"
    assert reason_kind(c) == "mask: 2 components within 5%-95% of the nominal region"
