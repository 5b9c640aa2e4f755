"""Denoiser families (SDXL, SD3, FLUX) on tiny random models: the captured object-token map equals a softmax
computed by hand from the block's weights, the block output is unchanged, and the object token is found for CLIP
and T5 (SentencePiece) tokenizers."""

import pytest
import torch
from omegaconf import OmegaConf

from mfexp.assets import load_t5_tokenizer, load_tokenizer
from mfexp.mosaicfusion.attention import AttentionStore, CaptureCall
from mfexp.mosaicfusion.families.flux import FluxFamily, image_ids, pack, unpack
from mfexp.mosaicfusion.families.flux import tiny_pipeline as tiny_flux
from mfexp.mosaicfusion.families.mmdit_attention import token_probability
from mfexp.mosaicfusion.families.sd3 import SD3Family
from mfexp.mosaicfusion.families.sd3 import tiny_pipeline as tiny_sd3
from mfexp.mosaicfusion.families.sdxl import SDXLFamily
from mfexp.mosaicfusion.families.sdxl import tiny_pipeline as tiny_sdxl
from mfexp.mosaicfusion.prompts import object_token_index

PROMPTS = ["a photo of a single bat (animal), a nocturnal mammal", "a photo of a single christmas tree, an ornament"]
NAMES = ["bat (animal)", "christmas tree"]
HW = (16, 16)  # latent crop: 8x8 = 64 tokens after the 2x2 patches


class RecordingStore:
    """The store's contract as the MM-DiT processors use it: active(), call, add(name, resolution, maps)."""

    def __init__(self):
        self.call, self.maps = None, {}

    def active(self):
        return self.call is not None

    def add(self, name, resolution, maps):
        self.maps[name] = (resolution, maps.float().clone())


def gcfg(family, resolutions, **model):
    base = dict(max_sequence_length=16, object_token="clip", joint_blocks=None, single_blocks=[], true_cfg_scale=1.0)
    model = {**(base if family != "sdxl" else {}), **model}
    return OmegaConf.create(
        dict(
            model=dict(family=family, **model),
            attention=dict(resolutions=resolutions, blocks=["down", "up"], steps=[0, None]),
            num_inference_steps=4,
            guidance_scale=5.0,
        )
    )


def inputs_of(module):
    """Register a hook that records the keyword inputs of `module`'s next call."""
    seen = {}

    def hook(mod, args, kwargs):
        seen.update(kwargs)
        for name, a in zip(("hidden_states", "encoder_hidden_states", "attention_mask", "image_rotary_emb"), args):
            seen[name] = a

    return seen, module.register_forward_pre_hook(hook, with_kwargs=True)


def heads(x, n_heads):
    """(b, s, heads*d) -> (b, heads, s, d)."""
    b, s, _ = x.shape
    return x.view(b, s, n_heads, -1).transpose(1, 2)


def softmax_column(q, k, key):
    """By hand: softmax over all keys of q k^T / sqrt(d), column `key[n]` for row n, summed over heads -> (n, q)."""
    d = q.shape[-1]
    probs = torch.softmax(q.double() @ k.double().transpose(-1, -2) / d**0.5, dim=-1)
    return torch.stack([probs[i, :, :, key[i]].sum(0) for i in range(q.shape[0])]).float()


def rope_by_hand(x, cos, sin):
    """FLUX's rotary embedding on (b, heads, s, d): pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)."""
    x0, x1 = x.double().unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack([-x1, x0], -1).flatten(-2)
    return x.double() * cos.double() + rotated * sin.double()


def run(family, store, token_index, n=2, uncond_rows=True):
    cond = family.encode(PROMPTS[:n])
    uncond = family.encode([""])
    sched = family.pipe.scheduler
    family.set_timesteps(sched, 4, HW)
    crops = torch.cat([family.initial_noise(HW, seed) for seed in range(n)])
    store.call = CaptureCall([("m", r) for r in range(n)], token_index, HW, 0)
    out = family.predict(crops, sched.timesteps[1], cond, uncond, [None] * n, 5.0)
    store.call = None
    return out


def test_token_probability_chunks_agree_with_one_softmax():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 2, 10, 8, generator=g), torch.randn(3, 2, 13, 8, generator=g)
    key = torch.tensor([0, 5, 12])
    for chunk in (1, 7, 1 << 20):
        torch.testing.assert_close(token_probability(q, k, key, chunk), softmax_column(q, k, key))


def test_object_token_for_clip_and_t5_tokenizers():
    clip, t5 = load_tokenizer(), load_t5_tokenizer()
    for tok in (clip, t5):
        for prompt, name in zip(PROMPTS, NAMES):
            i = object_token_index(tok, prompt, name)
            ids = tok(prompt).input_ids
            last = "animal" if "animal" in name else "tree"
            assert tok.convert_ids_to_tokens(ids[i]).lstrip("▁").replace("</w>", "") == last
    # SentencePiece: "(animal" -> "▁(", "animal": found through the characters' offsets
    assert t5.convert_ids_to_tokens(t5(PROMPTS[0]).input_ids)[6:8] == ["▁(", "animal"]
    assert object_token_index(t5, PROMPTS[0], NAMES[0]) == 7
    assert object_token_index(clip, PROMPTS[1], NAMES[1]) == 7  # BOS first
    with pytest.raises(ValueError, match="context"):
        object_token_index(t5, PROMPTS[1], NAMES[1], max_length=7)


@pytest.fixture(scope="module")
def sd3_pipe():
    return tiny_sd3(seed=0)


@pytest.mark.parametrize("object_token,patch", [("clip", 2), ("t5", 2), ("clip", 1)])
def test_sd3_capture_equals_hand_softmax_and_keeps_the_output(sd3_pipe, object_token, patch):
    """Patch 1 (the toy MM-DiT may be trained with it): one token per latent cell, 16x16 image tokens."""
    pipe = sd3_pipe if patch == 2 else tiny_sd3(seed=0, patch_size=1)
    stride = int(pipe.vae_scale_factor)
    fam = SD3Family(pipe, gcfg("sd3", [stride * patch], object_token=object_token))
    n_img = (HW[0] // patch) * (HW[1] // patch)
    assert fam.align == stride * patch and fam.blocks == [
        "transformer_blocks.0.attn.processor",
        "transformer_blocks.1.attn.processor",
    ]
    token = [fam.token_index(p, n) for p, n in zip(PROMPTS, NAMES)]
    assert token == ([8, 7] if object_token == "clip" else [77 + 7, 77 + 6])
    reference = run(fam, RecordingStore(), token)
    store = RecordingStore()
    attn = pipe.transformer.transformer_blocks[0].attn
    seen, hook = inputs_of(attn)
    with fam.capture(store):
        out = run(fam, store, token)
    hook.remove()
    torch.testing.assert_close(out, reference)
    assert set(store.maps) == set(fam.blocks) and all(r == fam.align for r, _ in store.maps.values())
    # by hand: rows = the last 2 (conditional); keys = [n_img image tokens, 93 text tokens]
    x, ctx = seen["hidden_states"][-2:], seen["encoder_hidden_states"][-2:]
    h = attn.heads
    q = attn.norm_q(heads(attn.to_q(x), h))
    k = torch.cat([attn.norm_k(heads(attn.to_k(x), h)), attn.norm_added_k(heads(attn.add_k_proj(ctx), h))], 2)
    expected = softmax_column(q, k, [n_img + t for t in token])
    resolution, got = store.maps["transformer_blocks.0.attn.processor"]
    assert got.shape == (2, n_img)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_sd3_without_t5_encodes_zeros():
    pipe = tiny_sd3(seed=0, t5=False)
    fam = SD3Family(pipe, gcfg("sd3", [4]))
    enc = fam.encode(PROMPTS)["encoder_hidden_states"]
    assert enc.shape == (2, 77 + 16, 32) and enc[:, 77:].abs().max() == 0
    with pytest.raises(ValueError, match="text_encoder_3"):
        SD3Family(pipe, gcfg("sd3", [4], object_token="t5"))
    with pytest.raises(ValueError, match="resolutions"):
        SD3Family(pipe, gcfg("sd3", [8, 4]))


@pytest.mark.parametrize("guidance_embeds", [False, True])
def test_flux_capture_equals_hand_softmax_double_and_single_blocks(guidance_embeds):
    pipe = tiny_flux(seed=0, guidance_embeds=guidance_embeds)
    fam = FluxFamily(pipe, gcfg("flux", [4], object_token="t5", single_blocks=[0]))
    token = [fam.token_index(p, n) for p, n in zip(PROMPTS, NAMES)]
    assert token == [7, 6]  # T5: no BOS; text first, so no offset
    reference = run(fam, RecordingStore(), token)
    store = RecordingStore()
    double, single = pipe.transformer.transformer_blocks[0].attn, pipe.transformer.single_transformer_blocks[0].attn
    seen_d, hook_d = inputs_of(double)
    seen_s, hook_s = inputs_of(single)
    with fam.capture(store):
        out = run(fam, store, token)
    hook_d.remove(), hook_s.remove()
    torch.testing.assert_close(out, reference)
    assert len(seen_d["hidden_states"]) == 2  # distilled: no unconditional rows
    h = double.heads
    cos, sin = seen_d["image_rotary_emb"]
    # double-stream: keys = [16 text tokens, 64 image tokens], rotary on both
    x, ctx = seen_d["hidden_states"], seen_d["encoder_hidden_states"]
    q = torch.cat([double.norm_added_q(heads(double.add_q_proj(ctx), h)), double.norm_q(heads(double.to_q(x), h))], 2)
    k = torch.cat([double.norm_added_k(heads(double.add_k_proj(ctx), h)), double.norm_k(heads(double.to_k(x), h))], 2)
    q, k = rope_by_hand(q, cos, sin), rope_by_hand(k, cos, sin)
    expected = softmax_column(q[:, :, 16:], k, token)
    torch.testing.assert_close(store.maps["transformer_blocks.0.attn.processor"][1], expected, rtol=1e-4, atol=1e-6)
    # single-stream: the hidden states are already [text, image]
    xs = seen_s["hidden_states"]
    q, k = single.norm_q(heads(single.to_q(xs), h)), single.norm_k(heads(single.to_k(xs), h))
    q, k = rope_by_hand(q, cos, sin), rope_by_hand(k, cos, sin)
    expected = softmax_column(q[:, :, 16:], k, token)
    got = store.maps["single_transformer_blocks.0.attn.processor"][1]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_flux_packing_ids_and_true_cfg():
    x = torch.arange(2 * 3 * 4 * 6.0).view(2, 3, 4, 6)
    assert torch.equal(unpack(pack(x), 4, 6), x)
    assert pack(x)[0, 1].tolist() == [x[0, c, i, j].item() for c in range(3) for i in (0, 1) for j in (2, 3)]
    assert image_ids(4, 6, "cpu", torch.float32)[4].tolist() == [0, 1, 1]  # token 4 of a 2x3 grid: row 1, col 1
    pipe = tiny_flux(seed=0)
    fam = FluxFamily(pipe, gcfg("flux", [4], object_token="t5", true_cfg_scale=3.0))
    store = RecordingStore()
    attn = pipe.transformer.transformer_blocks[0].attn
    seen, hook = inputs_of(attn)
    with fam.capture(store):
        run(fam, store, [7, 6])
    hook.remove()
    assert len(seen["hidden_states"]) == 4  # [uncond x 2, cond x 2]: the capture reads the last 2


def test_sdxl_time_ids_encoding_and_capture_equals_hand_softmax():
    pipe = tiny_sdxl(seed=0)
    fam = SDXLFamily(pipe, gcfg("sdxl", [4, 2]))
    assert fam.time_ids(16, 12, 1).tolist() == [[32, 24, 0, 0, 32, 24]]
    enc = fam.encode(["", PROMPTS[0]])
    assert enc["encoder_hidden_states"].shape == (2, 77, 64) and enc["text_embeds"].shape == (2, 32)
    assert enc["encoder_hidden_states"][0].abs().max() == 0 and enc["text_embeds"][1].abs().max() > 0  # zeros for ""
    token = [fam.token_index(p, n) for p, n in zip(PROMPTS, NAMES)]
    reference = run(fam, AttentionStore(), token)
    store = AttentionStore()
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    attn = pipe.unet.get_submodule(name)
    assert f"{name}.processor" in fam.layers
    fam.layers = {f"{name}.processor": 2}  # this layer alone
    seen, hook = inputs_of(attn)
    with fam.capture(store):
        out = run(fam, store, token)
    hook.remove()
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)
    x, ctx = seen["hidden_states"][-2:], seen["encoder_hidden_states"][-2:]
    q, k = heads(attn.to_q(x), attn.heads), heads(attn.to_k(ctx), attn.heads)
    expected = softmax_column(q, k, token)
    for r in range(2):
        torch.testing.assert_close(store.region_maps(("m", r))[2].flatten(), expected[r], rtol=1e-4, atol=1e-6)


def test_check_knows_each_familys_folder(tmp_path):
    from mfexp.check import FAIL, OK, check_generator_weights

    folder = tmp_path / "flux"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    for comp in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        (folder / comp).mkdir()
        (folder / comp / "config.json").write_text("{}")
        (folder / comp / "model.safetensors").write_bytes(b"")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text("{}")
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_2").mkdir()
    (folder / "tokenizer_2" / "spiece.model").write_bytes(b"")  # a T5 tokenizer
    model = OmegaConf.create({"family": "flux", "path": str(folder), "allow_download": False})
    assert check_generator_weights(model).status == OK
    sdxl = check_generator_weights(OmegaConf.create({**model, "family": "sdxl"}))
    assert sdxl.status == FAIL and "unet/" in sdxl.message


@pytest.mark.parametrize("model", ["tiny_sdxl", "tiny_sd3", "tiny_flux"])
def test_tiny_family_generates_a_valid_lvis_set(model, tmp_path, categories_file):
    """The generate stage end to end with a tiny random model of each family: LVIS annotations that validate."""
    from helpers import compose
    from lvis import LVIS

    from mfexp.augmenters import mosaicfusion as mf_augmenter

    cfg = compose(
        [
            f"generator/model={model}",
            f"generator.categories={categories_file}",
            "synthetic.images_per_category=2",
            "generator.num_objects=2",
            "generator.mask.min_area=0.1",  # random weights scatter attention: keep the largest blob
            "generator.mask.refine=none",
            "logger=none",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "trainer.enable_progress_bar=false",
            "stages=[generate]",
        ]
    )
    summary = mf_augmenter.generate_mosaicfusion(cfg, tmp_path)
    out = tmp_path / "synthetic"
    lvis = LVIS(str(out / "annotations.json"))
    assert summary["planned"] == 8 and summary["kept"] + summary["skipped"] == 8
    assert len(lvis.get_img_ids()) == summary["kept"] and len(lvis.get_ann_ids()) == 2 * summary["kept"]
    assert summary["kept"] > 0, summary


def test_flux_refuses_a_guidance_window():
    """FLUX guides through its guidance embedding (or true_cfg_scale): a window over classifier-free guidance's
    generator.guidance_scale would silently do something else there, so it is an error naming the key."""
    cfg = gcfg("flux", [4], object_token="t5")
    cfg.guidance_window = [0.3, 0.8, 8.0]
    with pytest.raises(ValueError, match="generator.guidance_window"):
        FluxFamily(tiny_flux(seed=0), cfg)
