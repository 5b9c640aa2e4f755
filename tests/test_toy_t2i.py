"""The toy text-to-image model: shipped weights, training command, loading errors."""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from mfexp.assets import tokenizer_path, toy_t2i_path  # noqa: E402
from mfexp.mosaicfusion.models import load_folder  # noqa: E402
from mfexp.toyworld.t2i import ToyT2IConfig, build_components  # noqa: E402

TINY_MODEL = {
    "image_size": 32,
    "vae_channels": [8, 16],
    "unet_channels": [16, 32],
    "unet_heads": 2,
    "text_hidden": 32,
    "text_layers": 1,
    "text_heads": 2,
    "text_intermediate": 64,
}


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)
    pipe = load_folder(toy_t2i_path())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_shipped_weights_load_like_sd(shipped):
    from diffusers import StableDiffusionPipeline

    folder = toy_t2i_path()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert sorted(p.name for p in folder.rglob("*.safetensors"))
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 20e6
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear" and pipe.scheduler.config.num_train_timesteps == 1000
    assert pipe.tokenizer.get_vocab() == json.loads((tokenizer_path() / "vocab.json").read_text(encoding="utf-8"))
    assert shipped.vae.config.scaling_factor != 1.0


def test_shipped_model_draws_the_requested_colour(shipped):
    from mfexp.toyworld.world import classify_colour, segment_saturated

    for prompt, colour in [
        ("a photo of a single red circle", "red"),
        ("a photo of a single blue square, a flat blue shape with four equal sides", "blue"),
    ]:
        # the sampling settings of conf/generator/model/toy.yaml (25 PNDM steps, guidance 3.0)
        img = shipped(
            prompt,
            num_inference_steps=25,
            guidance_scale=3.0,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images[0]
        rgb = (img * 255).round().astype(np.uint8)
        assert rgb.shape == (64, 64, 3)
        obj = segment_saturated(rgb)
        assert obj.sum() > 40, prompt
        assert classify_colour(rgb, obj) == colour, prompt


def test_grounding_processor_matches_default_attention():
    from mfexp.toyworld.train_t2i import grounding_processors

    comps = build_components(ToyT2IConfig.from_dict(TINY_MODEL), seed=0)
    unet = comps["unet"]
    x, t, h = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 77, 32)
    with torch.no_grad():
        ref = unet(x, t, h).sample
        store = {}
        unet.set_attn_processor(grounding_processors(unet, store))
        got = unet(x, t, h).sample
    assert torch.allclose(ref, got, atol=1e-5)
    assert store and all(k.endswith("attn2.processor") for k in store)
    assert {v.shape[-2] for v in store.values()} == {64, 16}  # 8x8 and 4x4 latents


def test_training_runs_loss_falls_and_resumes(tmp_path):
    from mfexp.toyworld.train_t2i import TrainConfig, train

    cfg = TrainConfig(
        out=str(tmp_path / "run"),
        threads=1,
        vae_steps=4,
        vae_batch_size=4,
        vae_crop=16,
        steps=40,
        batch_size=8,
        lr=3e-3,
        warmup=1,
        bank_size=64,
        ckpt_every=20,
        log_every=10,
        keep_checkpoint=True,
        model=TINY_MODEL,
    )
    out = train(cfg)
    info = json.loads((out / "toy_t2i.json").read_text())
    assert info["final"]["step"] == 40 and info["model"]["image_size"] == 32
    log = (out / "train_log.txt").read_text().splitlines()
    eps = [float(line.split("eps_loss ")[1].split()[0]) for line in log if "unet step" in line]
    assert len(eps) == 4 and eps[-1] < eps[0]
    pipe = load_folder(out)
    assert pipe.unet.config.sample_size == 16 and pipe.vae.config.scaling_factor > 0
    # resume: more steps continue from the kept checkpoint
    train(TrainConfig(**{**cfg.__dict__, "steps": 50}))
    log = (out / "train_log.txt").read_text()
    assert "resumed from" in log and "unet step 50/50" in log and "unet step 10/50" not in log


def test_corrupt_or_missing_weights_raise_clear_error(tmp_path):
    bad = tmp_path / "toy"
    shutil.copytree(toy_t2i_path(), bad)
    (bad / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt") as e:
        load_folder(bad)
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_folder(tmp_path / "empty")


def test_min_snr_weights():
    from mfexp.toyworld.train_t2i import snr_weights

    alpha_bar = torch.tensor([0.01, 0.5, 0.8, 0.95, 0.999])  # noisy ... clean; SNR 0.0101, 1, 4, 19, 999
    assert torch.equal(snr_weights(alpha_bar, 0.0), torch.ones(5))
    w = snr_weights(alpha_bar, 5.0)
    assert torch.allclose(w[:3], torch.ones(3))  # SNR <= gamma: plain MSE
    assert torch.allclose(w[3:], torch.tensor([5 / 19, 5 / 999]), rtol=1e-3)  # low noise: gamma / SNR
