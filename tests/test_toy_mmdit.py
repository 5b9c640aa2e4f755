"""The toy MM-DiT (SD3 family): shipped weights, offline loading, a synthetic set from `generator/model=toy_mmdit`,
and the trainer's grounding capture."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from helpers import compose  # noqa: E402

from mfexp.assets import ASSETS_DIR, toy_mmdit_path  # noqa: E402
from mfexp.mosaicfusion.models import load_pipeline  # noqa: E402


def toy_categories(path, count: int = 3):
    """The first `count` toy-world categories as an LVIS categories file (all rare: every one can be a main one)."""
    from mfexp.toyworld.world import build_categories

    cats = build_categories()[:count]
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": cats}))
    return path


def test_shipped_folder_is_small_safetensors():
    folder = toy_mmdit_path()
    assert (folder / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert (folder / "text_projection.safetensors").is_file()
    assert not list(ASSETS_DIR.rglob("*.bin")) and not list(ASSETS_DIR.rglob("*.pt"))
    assert sum(p.stat().st_size for p in ASSETS_DIR.rglob("*") if p.is_file()) < 50 * 2**20
    info = json.loads((folder / "toy_mmdit.json").read_text())
    assert info["step"] > 0


def test_config_loads_the_shipped_toy_offline(monkeypatch):
    from diffusers import StableDiffusion3Pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose(["generator/model=toy_mmdit"])
    assert cfg.generator.model.family == "sd3" and cfg.generator.model.path is None
    pipe = load_pipeline(cfg.generator.model, cfg.generator.dtype)
    assert isinstance(pipe, StableDiffusion3Pipeline) and pipe.text_encoder_3 is None
    assert pipe.vae_scale_factor == 4 and pipe.transformer.config.patch_size == 1
    assert pipe.transformer.config.pos_embed_max_size == 32  # N = 4 region crops (up to 88 px = 22 tokens) fit
    assert pipe.tokenizer_max_length == 24  # the CLIP length it was trained with, recorded in text_projection
    assert pipe.text_encoder is pipe.text_encoder_2  # one toy CLIP serves as both


def test_generates_a_valid_synthetic_set(tmp_path):
    from lvis import LVIS

    from mfexp.augmenters import mosaicfusion as mf_augmenter
    from mfexp.lvis import decode_rle

    torch.set_num_threads(1)
    cfg = compose(
        [
            "generator/model=toy_mmdit",
            f"generator.categories={toy_categories(tmp_path / 'categories.json')}",
            "generator.num_inference_steps=4",
            "generator.num_objects=4",
            "synthetic.images_per_category=1",
            "logger=none",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "trainer.enable_progress_bar=false",
            "stages=[generate]",
        ]
    )
    summary = mf_augmenter.generate_mosaicfusion(cfg, tmp_path / "run")
    assert summary["planned"] == 3 and summary["kept"] + summary["skipped"] == 3 and summary["kept"] > 0
    out = tmp_path / "run" / "synthetic"
    lvis = LVIS(str(out / "annotations.json"))
    assert len(lvis.get_img_ids()) == summary["kept"]
    for img in lvis.dataset["images"]:
        assert (out / "images" / img["file_name"]).is_file()
        assert min(img["height"], img["width"]) >= 64  # regions of 64 px
    for ann in lvis.dataset["annotations"]:
        assert decode_rle(ann["segmentation"]).sum() == ann["area"] > 0


def test_grounding_capture_keeps_the_output():
    from mfexp.toyworld.train_mmdit import GroundingCapture, MMDiTTrainConfig, build_pipeline, grounding_loss

    torch.manual_seed(0)
    model = build_pipeline(MMDiTTrainConfig(layers=2)).transformer.eval()
    x = torch.randn(2, 4, 16, 16)
    kwargs = dict(
        timestep=torch.tensor([100.0, 900.0]),
        encoder_hidden_states=torch.randn(2, 85, 128),
        pooled_projections=torch.randn(2, 128),
        return_dict=False,
    )
    with torch.no_grad():
        ref = model(hidden_states=x, **kwargs)[0]
        maps: dict = {}
        wrapped = {n: GroundingCapture(p, maps, n) for n, p in model.attn_processors.items()}
        for c in wrapped.values():
            c.token_pos = torch.tensor([[5, 4], [6, 5]])
        model.set_attn_processor(wrapped)
        got = model(hidden_states=x, **kwargs)[0]
    assert torch.allclose(ref, got, atol=1e-6)
    assert len(maps) == 2 and {tuple(m.shape) for m in maps.values()} == {(2, 2, 64)}
    sums = torch.stack(list(maps.values()))
    assert bool((sums > 0).all()) and bool((sums.sum(-1) < 64).all())  # probabilities of one key, mean over heads
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 16:48, 16:48] = 1
    loss = grounding_loss(maps, mask, torch.tensor([1.0, 0.0]))
    assert 0 < float(loss) < 2 and np.isfinite(float(loss))


def test_trainer_keeps_an_ema_across_a_resume_and_exports_it(tmp_path):
    """`--ema-decay`: the EMA is checkpointed, goes on after a resume and is what the exported transformer holds;
    `--bf16` trains under autocast with fp32 weights."""
    from safetensors.torch import load_file

    from mfexp.toyworld.train_mmdit import MMDiTTrainConfig, train

    common = dict(out=str(tmp_path), threads=1, layers=1, batch_size=2, ckpt_every=1, log_every=1, keep_every=0)
    train(MMDiTTrainConfig(steps=2, ema_decay=0.5, bf16=1, **common))
    ckpt = tmp_path / "checkpoint"
    raw2, ema2 = load_file(str(ckpt / "transformer.safetensors")), load_file(str(ckpt / "ema.safetensors"))
    assert all(v.dtype == torch.float32 for v in raw2.values())
    assert any(not torch.equal(raw2[k], ema2[k]) for k in raw2)  # the EMA lags the weights
    train(MMDiTTrainConfig(steps=3, ema_decay=0.5, **common))
    raw3, ema3 = load_file(str(ckpt / "transformer.safetensors")), load_file(str(ckpt / "ema.safetensors"))
    for k in raw3:  # one more step of ema <- 0.5 ema + 0.5 weights, from the checkpointed EMA
        torch.testing.assert_close(ema3[k], 0.5 * ema2[k] + 0.5 * raw3[k])
    exported = load_file(str(tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"))
    for k in raw3:
        torch.testing.assert_close(exported[k], ema3[k])


def test_trainer_starts_from_shipped_weights(tmp_path):
    """`--init` (a shipped folder) and `--init-step`: training goes on from those weights at that step."""
    import json

    import pytest
    from safetensors.torch import load_file

    from mfexp.assets import toy_mmdit_path
    from mfexp.toyworld.train_mmdit import MMDiTTrainConfig, init_weights, train

    shipped = load_file(str(init_weights(toy_mmdit_path())))
    common = dict(out=str(tmp_path), threads=1, batch_size=2, ckpt_every=1, log_every=1, keep_every=0)
    shipped_arch = dict(patch_size=1, pos_grid=32, clip_length=24)  # as in its toy_mmdit.json
    train(MMDiTTrainConfig(steps=11, init=str(toy_mmdit_path()), init_step=10, **shipped_arch, **common))
    ckpt = tmp_path / "checkpoint"
    assert json.loads((ckpt / "state.json").read_text())["step"] == 11
    trained = load_file(str(ckpt / "transformer.safetensors"))
    changed = [k for k in shipped if not torch.equal(shipped[k], trained[k])]
    assert changed and max(float((shipped[k] - trained[k]).abs().max()) for k in shipped) < 0.01  # one small step
    with pytest.raises(FileNotFoundError, match="--init"):
        init_weights(tmp_path / "nowhere")
    # other architecture flags than the weights': a clear error before any step (a CLIP length would load silently)
    other = dict(shipped_arch, clip_length=77, out=str(tmp_path / "other"))
    with pytest.raises(ValueError, match="--clip-length 24 .this run: clip_length 77.: pass the same flags"):
        train(MMDiTTrainConfig(**{**common, **other}, steps=11, init=str(toy_mmdit_path()), init_step=10))
    with pytest.raises(ValueError, match="--patch-size 1 --pos-grid 32"):  # resuming the checkpoint: its metadata
        train(MMDiTTrainConfig(**common, steps=12, clip_length=24))
    assert not (tmp_path / "other" / "checkpoint").exists()


def test_trainer_checkpoint_survives_a_kill_while_saving_and_snapshots_export(tmp_path, capsys):
    """A kill between `save_checkpoint`'s two renames leaves `checkpoint.old` and a complete `checkpoint.new`: the
    next start resumes from the new one; a half-written `checkpoint.new` is dropped. A snapshot of a non-default
    architecture exports (its metadata records the architecture, the CLIP length included)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from mfexp.toyworld.toy_mmdit import export, load_toy_mmdit
    from mfexp.toyworld.train_mmdit import MMDiTTrainConfig, train

    common = dict(out=str(tmp_path), threads=1, layers=1, heads=2, clip_length=24, batch_size=2, ckpt_every=1)
    ckpt, old, new = (tmp_path / n for n in ("checkpoint", "checkpoint.old", "checkpoint.new"))
    train(MMDiTTrainConfig(steps=1, keep_every=0, **common))
    shutil.copytree(ckpt, old)
    train(MMDiTTrainConfig(steps=2, keep_every=0, **common))
    ckpt.rename(new)  # the kill: checkpoint/ renamed away, checkpoint.new/ not yet renamed in
    capsys.readouterr()
    train(MMDiTTrainConfig(steps=3, keep_every=1, **common))
    assert "resumed at step 2" in capsys.readouterr().out
    assert json.loads((ckpt / "state.json").read_text())["step"] == 3 and not old.exists() and not new.exists()
    new.mkdir()
    (new / "transformer.safetensors").write_bytes(b"half")  # killed while writing: no state.json
    train(MMDiTTrainConfig(steps=3, keep_every=1, **common))
    assert not new.exists() and json.loads((ckpt / "state.json").read_text())["step"] == 3

    pipe = load_toy_mmdit(export(tmp_path / "snapshots" / "transformer_3.safetensors", tmp_path / "exported"))
    assert pipe.transformer.config.num_layers == 1 and pipe.transformer.config.num_attention_heads == 2
    assert pipe.tokenizer_max_length == 24
    unrecorded = tmp_path / "unrecorded"  # a folder written before the CLIP length was recorded: 77
    shutil.copytree(toy_mmdit_path(), unrecorded)
    projection = unrecorded / "text_projection.safetensors"
    save_file(load_file(str(projection)), str(projection))  # the same weights, no metadata
    assert load_toy_mmdit(unrecorded).tokenizer_max_length == 77


def test_a_patch_1_model_takes_the_larger_crops_of_n4_mosaics(tmp_path):
    """At N=4 a region crop is 72 px (18 latent pixels): a patch-1 model's positional grid (32 tokens) holds it, as
    a patch-2 model's (16 tokens of 2) does; a file written before the grid was recorded still exports with 16."""
    from safetensors.torch import save_file

    from mfexp.toyworld.toy_mmdit import export, load_toy_mmdit
    from mfexp.toyworld.train_mmdit import MMDiTTrainConfig, architecture, build_pipeline

    for patch, grid in ((1, 32), (2, 16)):
        cfg = MMDiTTrainConfig(layers=1, patch_size=patch)
        model = build_pipeline(cfg).transformer
        assert model.config.pos_embed_max_size == grid and architecture(cfg)["pos_grid"] == grid
        with torch.no_grad():
            out = model(torch.randn(1, 4, 18, 18), torch.randn(1, 32, 128), torch.randn(1, 128), torch.tensor([500.0]))
        assert out.sample.shape == (1, 4, 18, 18)
    old = build_pipeline(MMDiTTrainConfig(layers=1, patch_size=1, pos_grid=16)).transformer
    shape = {k: v for k, v in architecture(MMDiTTrainConfig(layers=1, patch_size=1)).items() if k != "pos_grid"}
    save_file(old.state_dict(), str(tmp_path / "old.safetensors"), metadata={"architecture": json.dumps(shape)})
    pipe = load_toy_mmdit(export(tmp_path / "old.safetensors", tmp_path / "exported"))
    assert pipe.transformer.config.pos_embed_max_size == 16


def test_widening_the_positional_grid_keeps_what_the_model_was_trained_on(tmp_path):
    """`export --pos-grid`: a 16-token model widened to 32 predicts exactly what it did on the 16-token crops it saw
    (the table's centre is the old table; widening to the same size reproduces diffusers' own table), and now takes
    an N = 4 mosaic's 18-token crops; the exported folder loads with the wider grid. Bad sizes are refused."""
    from diffusers.models.embeddings import get_2d_sincos_pos_embed
    from safetensors.torch import save_file

    from mfexp.toyworld.toy_mmdit import export, load_toy_mmdit, widened_sincos
    from mfexp.toyworld.train_mmdit import MMDiTTrainConfig, architecture, build_pipeline

    own = get_2d_sincos_pos_embed(64, 16, base_size=16, interpolation_scale=1.0, output_type="pt")
    torch.testing.assert_close(widened_sincos(64, 16, 16, 16, 1.0), own)
    wide = widened_sincos(64, 16, 32, 16, 1.0).reshape(32, 32, 64)
    torch.testing.assert_close(wide[8:24, 8:24].reshape(-1, 64), own)
    assert not torch.allclose(wide[7, 8:24], wide[8, 8:24])  # new positions are new embeddings
    with pytest.raises(ValueError, match="even step"):
        widened_sincos(64, 16, 31, 16, 1.0)
    with pytest.raises(ValueError, match="even step"):
        widened_sincos(64, 16, 8, 16, 1.0)

    cfg = MMDiTTrainConfig(layers=1, patch_size=1, pos_grid=16)
    old = build_pipeline(cfg).transformer.eval()
    save_file(
        old.state_dict(), str(tmp_path / "old.safetensors"), metadata={"architecture": json.dumps(architecture(cfg))}
    )
    widened = load_toy_mmdit(export(tmp_path / "old.safetensors", tmp_path / "exported", pos_grid=32)).transformer
    assert widened.config.pos_embed_max_size == 32
    args = (torch.randn(2, 32, 128), torch.randn(2, 128), torch.tensor([500.0, 20.0]))
    x = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(widened(x, *args).sample, old(x, *args).sample)
        with pytest.raises(ValueError, match="pos_embed_max_size"):
            old(torch.randn(2, 4, 18, 18), *args)
        assert widened(torch.randn(2, 4, 18, 18), *args).sample.shape == (2, 4, 18, 18)


def test_a_shorter_clip_length_drops_only_padding():
    """`--clip-length`: the toy captions' CLIP states and pooled output are the same padded to 24 tokens as to
    SD3's 77 (CLIP's causal mask), so a shorter length changes what the transformer sees only by the padding."""
    from mfexp.toyworld.train_mmdit import MMDiTTrainConfig, build_pipeline
    from mfexp.toyworld.world import build_categories, caption

    prompts = [caption(c["name"], with_def) for c in build_categories()[::7] for with_def in (False, True)]
    out = {}
    for length in (77, 24):
        pipe = build_pipeline(MMDiTTrainConfig(layers=1, clip_length=length))
        with torch.no_grad():
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompts, None, None, device="cpu", do_classifier_free_guidance=False, max_sequence_length=8
            )
        out[length] = embeds, pooled
    (long, long_pooled), (short, short_pooled) = out[77], out[24]
    assert short.shape[1] == 24 + 8 and long.shape[1] == 77 + 8
    torch.testing.assert_close(short[:, :24], long[:, :24], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(short_pooled, long_pooled, rtol=1e-5, atol=1e-5)
    assert max(len(pipe.tokenizer(p).input_ids) for p in prompts) <= 24


def test_learning_rate_warms_up_holds_and_decays_to_zero():
    """`--warmup` from the start step, constant, then with `--decay N` linear to 0 at `--steps`."""
    from mfexp.toyworld.train_mmdit import MMDiTTrainConfig, lr_factor

    cfg = MMDiTTrainConfig(steps=1000, warmup=10, decay=100)
    assert lr_factor(cfg, 500, 500) == 0.1 and lr_factor(cfg, 500, 509) == 1.0  # a fresh optimizer from step 500
    assert lr_factor(cfg, 0, 900) == 1.0 and lr_factor(cfg, 0, 950) == 0.5 and lr_factor(cfg, 0, 999) == 0.01
    assert lr_factor(MMDiTTrainConfig(steps=1000, warmup=10), 0, 999) == 1.0  # no decay asked: constant


def test_loader_workers_and_a_time_limit_keep_the_data_of_each_step(tmp_path, capsys):
    """`--workers 2` renders the batches in other processes: the same data per step, so the same weights as in
    process; `--max-minutes` stops after the step in hand with a checkpoint at that step and the export."""
    from safetensors.torch import load_file

    from mfexp.toyworld.train_mmdit import MMDiTTrainConfig, StepBatches, train
    from mfexp.toyworld.world import build_categories

    common = dict(threads=1, layers=1, heads=2, clip_length=24, batch_size=2, ckpt_every=10, keep_every=0)
    weights = []
    for workers in (0, 2):
        out = tmp_path / f"workers{workers}"
        train(MMDiTTrainConfig(out=str(out), steps=2, workers=workers, **common))
        weights.append(load_file(str(out / "checkpoint" / "transformer.safetensors")))
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-5, atol=1e-6)
    names = [c["name"] for c in build_categories()]
    data = StepBatches(MMDiTTrainConfig(steps=5, **common), names, 2 * len(names) + 1, (4, 16, 16))
    again = StepBatches(MMDiTTrainConfig(steps=5, **common), names, 2 * len(names) + 1, (4, 16, 16))
    assert data[3]["noise"].shape == (2, 4, 16, 16) and data[3]["images"].shape[0] == 2
    assert all(torch.equal(v, again[3][k]) for k, v in data[3].items())  # the data of a step: its seed alone
    assert not torch.equal(data[3]["noise"], data[4]["noise"])

    out = tmp_path / "timed"
    capsys.readouterr()
    train(MMDiTTrainConfig(out=str(out), steps=50, max_minutes=1e-6, **common))
    assert "stopped at step 1" in capsys.readouterr().out
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 1
    assert json.loads((out / "toy_mmdit.json").read_text())["steps"] == 1
    assert (out / "transformer" / "diffusion_pytorch_model.safetensors").is_file()


def test_mask_weighted_flow_loss():
    """`--mask-weight`: object pixels weigh 1 + w, background 1, normalised by the mean weight."""
    from mfexp.toyworld.train_mmdit import mask_weighted_mean

    err = torch.zeros(1, 4, 2, 2)
    err[..., 0, 0] = 1.0  # the error sits on the object's latent pixel
    masks = torch.zeros(1, 1, 8, 8)
    masks[..., :4, :4] = 1  # the object covers latent pixel (0, 0)
    assert float(mask_weighted_mean(err, masks, 0.0)) == pytest.approx(0.25)
    assert float(mask_weighted_mean(err, torch.zeros_like(masks), 4.0)) == pytest.approx(0.25)
    assert float(mask_weighted_mean(err, masks, 4.0)) == pytest.approx(5 * 0.25 / 2)  # weights 5, 1, 1, 1: mean 2
    assert float(mask_weighted_mean(1 - err, masks, 4.0)) == pytest.approx(0.75 / 2)  # background error counts less


def test_teacher_time_and_velocity_conversions():
    """`--teacher`: flow time s maps to the DDPM step of the same signal level, and an exact epsilon (the noise
    itself) converts to exactly the flow target noise - x0."""
    from diffusers import DDPMScheduler

    from mfexp.toyworld.train_mmdit import ddpm_time, velocity_from_eps

    ab = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    k = torch.tensor([0, 10, 250, 500, 998])
    r = torch.sqrt(ab[k]) / torch.sqrt(1 - ab[k])  # (1 - s) / s at step k
    s = 1 / (1 + r)
    torch.testing.assert_close(ddpm_time(s, ab), k.double(), atol=1e-4, rtol=0)  # float32 s
    between = ddpm_time(torch.linspace(0.05, 0.9, 20), ab)
    assert bool((between.diff() > 0).all())  # more noise, later step
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    s = torch.tensor([0.1, 0.5, 0.8])[:, None, None, None]
    torch.testing.assert_close(velocity_from_eps((1 - s) * x0 + s * noise, s, noise), noise - x0)


def test_the_toy_unet_teacher_beats_the_plain_flow_target(tmp_path):
    """On real toy-world data the shipped toy UNet, read as a velocity, is nearer the flow target than zero and
    nearer it with the right caption than with another category's; a training step with `--teacher toy` runs."""
    from mfexp.toyworld.train_mmdit import (
        MMDiTTrainConfig,
        StepBatches,
        UNetTeacher,
        build_pipeline,
        caption_prompts,
        train,
    )
    from mfexp.toyworld.world import build_categories

    torch.manual_seed(0)
    cfg = MMDiTTrainConfig(batch_size=16, layers=1, caption_dropout=0.0)
    pipe = build_pipeline(cfg)
    names = [c["name"] for c in build_categories()]
    teacher = UNetTeacher("toy", caption_prompts(names), torch.device("cpu"))
    batch = StepBatches(cfg, names, 2 * len(names) + 1, (4, 16, 16))[0]
    with torch.no_grad():
        x0 = pipe.vae.encode(batch["images"]).latent_dist.mean * pipe.vae.config.scaling_factor
    s = torch.full_like(batch["s"], 0.5)
    xs, target = (1 - s) * x0 + s * batch["noise"], batch["noise"] - x0
    right = float(((teacher.velocity(xs, s, batch["row"]) - target) ** 2).mean())
    wrong_row = (batch["row"] + 12) % (2 * len(names))  # the same caption form of a category 6 further on
    wrong = float(((teacher.velocity(xs, s, wrong_row) - target) ** 2).mean())
    assert right < 0.5 * float((target**2).mean()) and right < wrong
    with pytest.raises(FileNotFoundError, match="--teacher"):
        UNetTeacher(str(tmp_path), ["a"], torch.device("cpu"))
    common = dict(out=str(tmp_path), threads=1, layers=1, batch_size=2, steps=1, keep_every=0)
    train(MMDiTTrainConfig(teacher="toy", **common))
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 1
    # feature distillation on that run: from step 1 on, with its head checkpointed; a resume takes the head back
    for steps in (2, 3):
        train(MMDiTTrainConfig(teacher="toy", feature_weight=0.5, **{**common, "steps": steps}))
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3 and len(state["feature_losses"]) == 2
    assert all(0 <= v <= 2 for v in state["feature_losses"])
    assert (tmp_path / "checkpoint" / "feature_head.safetensors").is_file()
    train(MMDiTTrainConfig(teacher="toy", **{**common, "steps": 4}))  # and without it again: the head is let go
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 4
    assert not (tmp_path / "checkpoint" / "feature_head.safetensors").exists()
    with pytest.raises(ValueError, match="--teacher"):
        train(MMDiTTrainConfig(feature_weight=0.5, **{**common, "out": str(tmp_path / "no_teacher")}))


def test_feature_loss_is_one_minus_cosine_on_the_pooled_grid():
    """The feature-distillation loss pools the image tokens to the teacher's grid: tokens that repeat the target
    (nearest-upsampled) cost 0 through an identity head, the opposite direction 2, and only the rows asked for count."""
    from mfexp.toyworld.train_mmdit import feature_loss

    torch.manual_seed(0)
    target = torch.randn(3, 8, 4, 4)
    tokens = (
        torch.nn.functional.interpolate(target, scale_factor=2).flatten(2).transpose(1, 2)
    )  # (3, 64, 8): a 8 x 8 token grid
    every = torch.ones(3, dtype=torch.bool)
    assert float(feature_loss(tokens, torch.nn.Identity(), target, every)) == pytest.approx(0, abs=1e-6)
    assert float(feature_loss(-tokens, torch.nn.Identity(), target, every)) == pytest.approx(2, abs=1e-6)
    mixed = torch.cat([tokens[:1], -tokens[1:]])
    first = torch.tensor([True, False, False])
    assert float(feature_loss(mixed, torch.nn.Identity(), target, first)) == pytest.approx(0, abs=1e-6)
    assert float(feature_loss(mixed, torch.nn.Identity(), target, ~first)) == pytest.approx(2, abs=1e-6)
    none = feature_loss(tokens.requires_grad_(), torch.nn.Identity(), target, torch.zeros(3, dtype=torch.bool))
    assert float(none) == 0 and none.requires_grad


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    """`--compile 1` (torch.compile of the forward, ~1 min to compile here): the same two steps give the same weights
    and losses as eager, within float tolerance, and the checkpoint keeps the plain parameter names."""
    from safetensors.torch import load_file

    from mfexp.toyworld.train_mmdit import MMDiTTrainConfig, train

    common = dict(threads=1, layers=1, heads=2, clip_length=24, batch_size=2, steps=2, ckpt_every=2, keep_every=0)
    states = []
    for compile_ in (0, 1):
        out = tmp_path / f"compile{compile_}"
        train(MMDiTTrainConfig(out=str(out), compile=compile_, **common))
        state = json.loads((out / "checkpoint" / "state.json").read_text())
        states.append((load_file(str(out / "checkpoint" / "transformer.safetensors")), state))
    (eager, eager_state), (compiled, compiled_state) = states
    assert eager.keys() == compiled.keys()
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(compiled_state["losses"], eager_state["losses"], rtol=1e-4)


def test_shape_gap_benchmark_reads_a_snapshot(tmp_path):
    """benchmarks/toy_shape_gap.py on a trainer snapshot: every figure finite, the same figures on a second run
    (deterministic), and the toy UNet teacher far better with its own shape word than with another shape's."""
    import subprocess
    import sys

    from helpers import ROOT

    from mfexp.toyworld.train_mmdit import MMDiTTrainConfig, train

    train(MMDiTTrainConfig(out=str(tmp_path), threads=1, layers=1, batch_size=2, steps=1, keep_every=1))
    snapshot = tmp_path / "snapshots" / "transformer_1.safetensors"
    cmd = [sys.executable, str(ROOT / "benchmarks/toy_shape_gap.py"), str(snapshot), "--s", "0.5", "--batches", "1"]
    reports = []
    for k in range(2):
        out = tmp_path / f"gap{k}.json"
        proc = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports.append(json.loads(out.read_text()))
    assert reports[0] == reports[1]
    row = reports[0][str(snapshot)]["0.5"]
    assert all(np.isfinite(v) for v in row.values())
    assert row["teacher_shape_gap"] > 0.1 and row["teacher_right"] < row["right"]  # a 1-step model knows nothing yet
    assert abs(row["shape_gap"] - (row["wrong_shape"] - row["right"])) < 1e-3
