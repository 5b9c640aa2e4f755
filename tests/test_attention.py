import pytest
import torch

from mfexp.mosaicfusion.attention import (
    AttentionStore,
    CaptureCall,
    CrossAttentionCapture,
    NaiveStore,
    capture_cross_attention,
    layer_info,
    selected_layers,
)


def unet_call(pipe, store, step, n=2, hw=(16, 16), tokens=(3, 5)):
    unet = pipe.unet
    g = torch.Generator().manual_seed(step)
    x = torch.randn(2 * n, 4, *hw, generator=g)
    enc = torch.randn(2 * n, 77, unet.config.cross_attention_dim, generator=g)
    store.call = CaptureCall([("m", r) for r in range(n)], list(tokens[:n]), hw, step)
    out = unet(x, 10, encoder_hidden_states=enc).sample
    store.call = None
    return x, enc, out


def test_layer_names_map_to_blocks_and_resolutions(tiny_pipe):
    # the tiny UNet: 2 levels on a VAE of stride 2 -> maps at 1/2 and 1/4 of the image
    stride = tiny_pipe.vae_scale_factor
    assert stride == 2
    seen = {layer_info(n, 2, stride) for n in tiny_pipe.unet.attn_processors if ".attn2." in n}
    assert seen == {("down", 2), ("down", 4), ("mid", 4), ("up", 4), ("up", 2)}
    # SD 1.x: 4 levels on a stride-8 VAE; up_blocks.1 runs at 1/32, up_blocks.2 at 1/16
    assert layer_info("up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor", 4, 8) == ("up", 32)
    assert layer_info("up_blocks.2.attentions.2.transformer_blocks.0.attn2.processor", 4, 8) == ("up", 16)
    assert layer_info("down_blocks.2.attentions.0.transformer_blocks.0.attn2.processor", 4, 8) == ("down", 32)


def test_capture_sees_exactly_the_configured_layers_and_steps_and_restores(tiny_pipe):
    unet = tiny_pipe.unet
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    layers = selected_layers(unet, 2, resolutions=[4], blocks=["down", "up"])
    assert layers and all(".attn2." in n and v == 4 and not n.startswith("mid") for n, v in layers.items())
    store = AttentionStore(step_window=(1, 3))
    with capture_cross_attention(unet, store, layers):
        procs = unet.attn_processors
        assert {n for n, p in procs.items() if isinstance(p, CrossAttentionCapture)} == set(layers)
        # self-attention keeps the fused default processor
        assert all(type(p) is before[n] for n, p in procs.items() if n not in layers)
        for step in range(5):
            unet_call(tiny_pipe, store, step)
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
    assert store.steps == {1, 2}
    assert store.layers == {4: set(layers)}
    maps = store.region_maps(("m", 0))
    assert set(maps) == {4} and maps[4].shape == (8, 8) and maps[4].dtype == torch.float32


def test_capture_restores_on_error(tiny_pipe):
    unet = tiny_pipe.unet
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    with pytest.raises(RuntimeError):
        with capture_cross_attention(unet, AttentionStore(), selected_layers(unet, 2, [2, 4], ["up"])):
            raise RuntimeError("boom")
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before


def test_capture_matches_default_output_and_explicit_attention(tiny_pipe):
    """The capturing processor computes the same UNet output, and the stored map is the object token's attention."""
    unet = tiny_pipe.unet
    store = AttentionStore()
    x, enc, reference = unet_call(tiny_pipe, AttentionStore(), 0)
    layers = selected_layers(unet, 2, [2, 4], ["down", "mid", "up"])
    with capture_cross_attention(unet, store, layers):
        _, _, out = unet_call(tiny_pipe, store, 0)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)
    # recompute one layer's attention by hand: softmax(q k^T / sqrt(d)) for the conditional half, token 3
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor"
    attn = unet.get_submodule(name.rsplit(".", 1)[0])
    seen = {}
    hook = attn.register_forward_pre_hook(lambda m, args, kw: seen.update(kw, x=args[0]), with_kwargs=True)
    one = AttentionStore()
    try:
        with capture_cross_attention(unet, one, {name: 2}):
            unet_call(tiny_pipe, one, 0)
    finally:
        hook.remove()
    heads = attn.heads
    q = attn.to_q(seen["x"]).detach()
    k = attn.to_k(seen["encoder_hidden_states"]).detach()
    q = q.view(q.shape[0], q.shape[1], heads, -1).transpose(1, 2)  # (batch, heads, seq, d)
    k = k.view(k.shape[0], k.shape[1], heads, -1).transpose(1, 2)
    probs = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
    expected = probs[2, :, :, 3].sum(0).view(16, 16)  # batch [uncond x2, cond x2]: region 0 is row 2
    torch.testing.assert_close(one.region_maps(("m", 0))[2], expected)
    naive = NaiveStore()
    with capture_cross_attention(unet, naive, {name: 2}):
        unet_call(tiny_pipe, naive, 0)
    (kept,) = naive.kept  # one layer, one step: (regions, seq)
    torch.testing.assert_close(kept[0].view(16, 16), expected)


def test_fused_and_explicit_capture_agree(tiny_pipe, monkeypatch):
    """The accelerator's way (SDPA output + the token's column by logsumexp) and the CPU's (one explicit softmax)
    give the same UNet output and the same maps."""
    unet = tiny_pipe.unet
    layers = selected_layers(unet, 2, [2, 4], ["down", "mid", "up"])
    results = {}
    for explicit in (True, False):
        monkeypatch.setattr(CrossAttentionCapture, "explicit_on_cpu", explicit)
        store = AttentionStore()
        with capture_cross_attention(unet, store, layers):
            _, _, out = unet_call(tiny_pipe, store, 0)
        results[explicit] = out, store.region_maps(("m", 1))
    (out_e, maps_e), (out_f, maps_f) = results[True], results[False]
    torch.testing.assert_close(out_e, out_f, rtol=1e-4, atol=1e-5)
    assert maps_e.keys() == maps_f.keys() == {2, 4}
    for res in maps_e:
        torch.testing.assert_close(maps_e[res], maps_f[res], rtol=1e-5, atol=1e-6)


def test_bad_attention_selection(tiny_pipe):
    with pytest.raises(ValueError, match="unknown block"):
        selected_layers(tiny_pipe.unet, 2, [2], ["left"])
    with pytest.raises(ValueError, match="selects no cross-attention layer"):
        selected_layers(tiny_pipe.unet, 2, [32], ["up"])
