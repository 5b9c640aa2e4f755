"""Cross-attention capture through diffusers' attention-processor API.

`capture_cross_attention(unet, store, ...)` installs `CrossAttentionCapture` on the selected `attn2` layers (by block
and resolution) and restores the original processors on exit. On an accelerator every layer's output comes from the
fused kernel (SDPA) and a capturing layer also computes its object token's column of the attention probabilities; on
the CPU, where the fused kernel gains nothing over a few dozen text keys, a capturing layer computes the probabilities
once, in fp32, and takes both its output and the token's column from them.
The store sums, in place and in fp32, the object token's attention of each region under explicit keys
(resolution -> region id), and counts the layers and steps it saw: memory O(regions x H x W).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

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
    """Object-token attention summed over heads, layers and the step window, per resolution and region."""

    step_window: tuple[int, int | None] = (0, None)
    sums: dict = field(default_factory=dict)  # resolution -> {region id: (h, w) fp32 tensor}
    layers: dict = field(default_factory=dict)  # resolution -> set of layer names seen
    steps: set = field(default_factory=set)
    call: CaptureCall | None = None

    def active(self) -> bool:
        start, end = self.step_window
        return self.call is not None and self.call.step >= start and (end is None or self.call.step < end)

    def add(self, name: str, resolution: int, maps: torch.Tensor) -> None:
        """maps: (regions, seq) of one layer, in `call.region_ids` order: the object token's attention probability
        of each query (normalised over all keys), summed over heads. Summed in place, in fp32."""
        call = self.call
        assert call is not None, "AttentionStore.add outside a denoiser call"  # active() is checked first
        hl, wl = _map_shape(call.latent_hw, maps.shape[1])
        maps = maps.float().view(len(call.region_ids), hl, wl)
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


def token_attention(query: torch.Tensor, key: torch.Tensor, token_index, scale: float) -> torch.Tensor:
    """The attention probability of one key per row (`token_index[i]` for row i), normalised over all keys and summed
    over heads, in fp32: query (n, heads, seq, d), key (n, heads, keys, d) -> (n, seq). Only the selected key's
    column is kept; the layer's output is left to the fused kernel."""
    logits = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
    return (token_column(logits, token_index) - logits.logsumexp(-1)).exp().sum(1)


def token_column(scores: torch.Tensor, token_index) -> torch.Tensor:
    """Row i's column `token_index[i]` of per-key scores (n, heads, seq, keys) -> (n, heads, seq)."""
    n = scores.shape[0]
    token = torch.as_tensor(token_index, device=scores.device)
    return scores[torch.arange(n, device=scores.device), :, :, token]


def _map_shape(latent_hw, seq_len: int) -> tuple[int, int]:
    """Spatial shape of a layer's map: the latent shape halved (ceil, as strided convs do) until it fits."""
    h, w = latent_hw
    while h * w > seq_len:
        h, w = -(-h // 2), -(-w // 2)
    if h * w != seq_len:
        raise RuntimeError(f"cannot place a {seq_len}-token attention map on a {latent_hw} latent")
    return h, w


class CrossAttentionCapture:
    """AttnProcessor for one `attn2` layer: the output from `scaled_dot_product_attention` (fused), plus, while the
    store is active, the object token's attention of the conditional rows (the last `len(call.region_ids)` rows);
    on the CPU while the store is active, both from one explicit fp32 softmax (`explicit`)."""

    explicit_on_cpu = True  # False: the accelerator's way (fused output + the token's column) on the CPU too

    def __init__(self, store, name: str, resolution: int):
        self.store, self.name, self.resolution = store, name, resolution

    @torch.compiler.disable
    def capture(self, query: torch.Tensor, key: torch.Tensor, scale: float) -> None:
        store = self.store
        if store.active():
            n = len(store.call.region_ids)
            store.add(self.name, self.resolution, token_attention(query[-n:], key[-n:], store.call.token_index, scale))

    @torch.compiler.disable
    def explicit(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float):
        """While the store is active: the layer's attention output from fp32 probabilities computed once, the object
        token's column of the conditional rows added to the store. None when inactive (the caller uses SDPA)."""
        store = self.store
        if not store.active():
            return None
        probs = (torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale).softmax(-1)
        n = len(store.call.region_ids)
        store.add(self.name, self.resolution, token_column(probs[-n:], store.call.token_index).sum(1))
        return torch.matmul(probs, value.float()).to(value.dtype)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *a, **kw):
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states if encoder_hidden_states is None else encoder_hidden_states
        ).shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        hidden_states = None
        if self.explicit_on_cpu and query.device.type == "cpu" and attention_mask is None:
            hidden_states = self.explicit(query, key, value, attn.scale)  # None while the store is inactive
        else:
            self.capture(query, key, attn.scale)
        if hidden_states is None:
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, scale=attn.scale
            )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
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
def installed(model, processors: dict):
    """Install `processors` (name -> processor) on `model`'s attention layers, the others unchanged; restore the
    original processors on exit."""
    original = dict(model.attn_processors)
    model.set_attn_processor({name: processors.get(name, proc) for name, proc in original.items()})
    try:
        yield model
    finally:
        model.set_attn_processor(dict(original))


def capture_cross_attention(unet, store, layers: dict[str, int], processor=CrossAttentionCapture):
    """Install `processor(store, name, resolution)` on `layers`; restore the original processors on exit."""
    return installed(unet, {name: processor(store, name, res) for name, res in layers.items()})


class NaiveStore(AttentionStore):
    """For benchmarks: keep every captured map (each layer, each step) instead of summing them in place."""

    def __init__(self):
        super().__init__()
        self.kept: list[torch.Tensor] = []

    def add(self, name, resolution, maps):
        self.kept.append(maps.detach().float().clone())

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.kept)
