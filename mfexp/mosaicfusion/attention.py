"""Cross-attention capture through diffusers' attention-processor API.

`capture_cross_attention(unet, store, ...)` installs `CrossAttentionCapture` on the selected `attn2` layers (by block
and resolution) and restores the original processors on exit. Every other layer keeps its processor (fused SDPA).
The store sums, in place and in fp32, the object token's attention of each region under explicit keys
(resolution -> region id), and counts the layers and steps it saw: memory O(regions x H x W).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

import torch

BLOCKS = ("down", "mid", "up")


@dataclass
class CaptureCall:
    """What the next UNet call holds: regions (ids) in batch order, each region's object token, latent shape."""

    region_ids: list
    token_index: list[int]
    latent_hw: tuple[int, int]
    step: int


@dataclass
class AttentionStore:
    """Object-token cross-attention summed over heads, layers and the step window, per resolution and region."""

    step_window: tuple[int, int | None] = (0, None)
    sums: dict = field(default_factory=dict)  # resolution -> {region id: (h, w) fp32 tensor}
    layers: dict = field(default_factory=dict)  # resolution -> set of layer names seen
    steps: set = field(default_factory=set)
    call: CaptureCall | None = None

    def active(self) -> bool:
        start, end = self.step_window
        return self.call is not None and self.call.step >= start and (end is None or self.call.step < end)

    def add(self, name: str, resolution: int, probs: torch.Tensor, heads: int) -> None:
        """probs: (batch*heads, seq, tokens) of one layer; batch = [unconditional..., conditional...]."""
        call = self.call
        assert call is not None, "AttentionStore.add outside a UNet call"  # active() is checked first
        n = len(call.region_ids)
        batch = probs.shape[0] // heads
        cond = probs.view(batch, heads, probs.shape[1], probs.shape[2])[batch - n :]
        token = torch.as_tensor(call.token_index, device=probs.device)
        picked = cond[torch.arange(n, device=probs.device), :, :, token]  # (n, heads, seq)
        hl, wl = _map_shape(call.latent_hw, probs.shape[1])
        maps = picked.float().sum(1).view(n, hl, wl)
        bucket = self.sums.setdefault(resolution, {})
        for region, m in zip(call.region_ids, maps):
            if region in bucket:
                bucket[region] += m
            else:
                bucket[region] = m.clone()
        self.layers.setdefault(resolution, set()).add(name)
        self.steps.add(call.step)

    def region_maps(self, region) -> dict[int, torch.Tensor]:
        """Map per resolution for one region: the sum divided by the layers and steps seen (heads stay summed)."""
        n_steps = max(len(self.steps), 1)
        return {
            res: bucket[region] / (len(self.layers[res]) * n_steps)
            for res, bucket in sorted(self.sums.items())
            if region in bucket
        }

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for b in self.sums.values() for t in b.values())


def _map_shape(latent_hw, seq_len: int) -> tuple[int, int]:
    """Spatial shape of a layer's map: the latent shape halved (ceil, as strided convs do) until it fits."""
    h, w = latent_hw
    while h * w > seq_len:
        h, w = -(-h // 2), -(-w // 2)
    if h * w != seq_len:
        raise RuntimeError(f"cannot place a {seq_len}-token attention map on a {latent_hw} latent")
    return h, w


class CrossAttentionCapture:
    """AttnProcessor for one `attn2` layer: the standard (non-fused) computation, plus capture of the object token."""

    def __init__(self, store, name: str, resolution: int):
        self.store, self.name, self.resolution = store, name, resolution

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *a, **kw):
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states if encoder_hidden_states is None else encoder_hidden_states
        ).shape
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(attn.head_to_batch_dim(query), key, attention_mask)
        if self.store.active():
            self.store.add(self.name, self.resolution, probs, attn.heads)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def layer_info(name: str, num_levels: int, vae_stride: int) -> tuple[str, int]:
    """(block, resolution denominator) of an attention processor name, e.g. ('up', 16) = 1/16 of the image."""
    m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.|mid_block\.", name)
    if m is None:
        raise ValueError(f"unexpected attention layer name {name!r}")
    if m.group(1) is None:
        return "mid", vae_stride * 2 ** (num_levels - 1)
    level = int(m.group(2))
    if m.group(1) == "up_blocks":
        return "up", vae_stride * 2 ** (num_levels - 1 - level)
    return "down", vae_stride * 2**level


def selected_layers(unet, vae_stride: int, resolutions, blocks) -> dict[str, int]:
    """Cross-attention layer names to capture -> their resolution denominator."""
    bad = [b for b in blocks if b not in BLOCKS]
    if bad:
        raise ValueError(f"generator.attention.blocks: unknown block(s) {bad}; choose from {list(BLOCKS)}")
    num_levels = len(unet.config.block_out_channels)
    chosen, available = {}, set()
    for name in unet.attn_processors:
        if ".attn2." not in name:
            continue
        block, res = layer_info(name, num_levels, vae_stride)
        available.add(res)
        if block in blocks and res in resolutions:
            chosen[name] = res
    if not chosen:
        raise ValueError(
            f"generator.attention selects no cross-attention layer: resolutions {list(resolutions)} "
            f"x blocks {list(blocks)}; this model has 1/{sorted(available)} maps"
        )
    return chosen


@contextlib.contextmanager
def capture_cross_attention(unet, store, layers: dict[str, int], processor=CrossAttentionCapture):
    """Install `processor(store, name, resolution)` on `layers`; restore the original processors on exit."""
    original = dict(unet.attn_processors)
    replaced = {
        name: (processor(store, name, layers[name]) if name in layers else proc) for name, proc in original.items()
    }
    unet.set_attn_processor(replaced)
    try:
        yield store
    finally:
        unet.set_attn_processor(dict(original))


class NaiveStore(AttentionStore):
    """The public code's way, for benchmarks: keep every cross-attention map (all tokens, heads) of every step."""

    def __init__(self):
        super().__init__()
        self.kept: list[torch.Tensor] = []

    def add(self, name, resolution, probs, heads):
        batch = probs.shape[0] // heads
        self.kept.append(probs.view(batch, heads, *probs.shape[1:])[batch // 2 :].detach().clone())

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.kept)
