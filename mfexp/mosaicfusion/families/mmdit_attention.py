"""Object-token capture on MM-DiT joint attention (SD3 / SD3.5 and FLUX blocks).

diffusers' joint-attention processors never materialise attention probabilities (SDPA / `dispatch_attention_fn`).
`JointAttentionCapture` wraps the block's own processor: the block's output still comes from that processor (the
fused kernel); only when the store is active does it recompute the queries and keys of the conditional rows and,
for the image queries, the probability of the object token's key normalised over ALL keys (text and image):

    p[n, i] = sum_heads softmax_j(q[n, h, i] . k[n, h, j] / sqrt(d))[key(n)]

chunked over queries so that at most `chunk_elements` logits exist at once. `store.add(name, resolution, p)` gets
p of shape (regions, image tokens).

Key layout (the family tells the processor through `text_first`):
- SD3 (`JointAttnProcessor2_0`): keys = [image tokens, text tokens]; the object token's key is n_img + token.
- FLUX double-stream (`FluxAttnProcessor` with `encoder_hidden_states`): keys = [text tokens, image tokens], rotary
  embedding on both; the key is the token itself.
- FLUX single-stream (no `encoder_hidden_states`): the hidden states are already [text, image]; the number of image
  tokens comes from the store's call (the crop's latent grid divided by the patch size).
"""

from __future__ import annotations

import contextlib
import re

import torch


def token_probability(
    query: torch.Tensor, key: torch.Tensor, key_index: torch.Tensor, chunk_elements: int = 1 << 24
) -> torch.Tensor:
    """query (n, heads, q, d), key (n, heads, k, d), key_index (n,) -> (n, q) fp32: for each row n and query i, the
    softmax probability (over all k keys, scale 1/sqrt(d)) of key `key_index[n]`, summed over heads."""
    n, heads, sq, d = query.shape
    sk = key.shape[2]
    key = key.float()
    scale = d**-0.5
    chunk = max(1, chunk_elements // max(1, n * heads * sk))
    picked_key = key[torch.arange(n, device=key.device), :, key_index]  # (n, heads, d)
    out = []
    for s in range(0, sq, chunk):
        q = query[:, :, s : s + chunk].float() * scale
        logits = q @ key.transpose(-1, -2)  # (n, heads, c, k)
        token = (q * picked_key[:, :, None, :]).sum(-1)  # (n, heads, c)
        out.append((token - logits.logsumexp(-1)).exp().sum(1))
    return torch.cat(out, 1)


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(b, s, heads*d) -> (b, heads, s, d)."""
    return x.unflatten(-1, (-1, head_dim)).transpose(1, 2)


def _norm(norm, x: torch.Tensor) -> torch.Tensor:
    return x if norm is None else norm(x)


class JointAttentionCapture:
    """Wraps one joint-attention layer's own processor; adds the object token's probability map to `store`.

    `text_first`: False for SD3 (keys [image, text]), True for FLUX (keys [text, image]); `patch`: latent cells per
    token side (2 for FLUX and the released SD3s); `resolution`: the store's resolution key (image pixels per token).
    """

    def __init__(self, original, store, name: str, resolution: int, text_first: bool, patch: int = 2):
        self.original, self.store, self.name, self.resolution = original, store, name, resolution
        self.text_first, self.patch = text_first, patch
        self.chunk_elements = 1 << 24

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if image_rotary_emb is None:  # SD3's Attention passes no rotary embedding; FLUX's passes it positionally
            out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask)
        else:
            out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if self.store.active():
            with torch.no_grad():
                self.capture(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        return out

    def qk(self, attn, x: torch.Tensor, context: torch.Tensor | None):
        """Queries and keys (rows, heads, seq, d) in the processor's joint order, rotary embedding not yet applied."""
        head_dim = attn.to_k.out_features // attn.heads
        q = _norm(attn.norm_q, _heads(attn.to_q(x), head_dim))
        k = _norm(attn.norm_k, _heads(attn.to_k(x), head_dim))
        if context is None:
            return q, k
        cq = _norm(attn.norm_added_q, _heads(attn.add_q_proj(context), head_dim))
        ck = _norm(attn.norm_added_k, _heads(attn.add_k_proj(context), head_dim))
        if self.text_first:
            return torch.cat([cq, q], 2), torch.cat([ck, k], 2)
        return torch.cat([q, cq], 2), torch.cat([k, ck], 2)

    def capture(self, attn, hidden_states, encoder_hidden_states, image_rotary_emb) -> None:
        call = self.store.call
        n = len(call.region_ids)
        rows = slice(hidden_states.shape[0] - n, None)  # the conditional rows are the last n
        x = hidden_states[rows]
        context = None if encoder_hidden_states is None else encoder_hidden_states[rows]
        q, k = self.qk(attn, x, context)
        if image_rotary_emb is not None:
            from diffusers.models.embeddings import apply_rotary_emb

            q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=2)
            k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=2)
        h, w = call.latent_hw
        n_img = (h // self.patch) * (w // self.patch)
        n_text = q.shape[2] - n_img
        token = torch.as_tensor(call.token_index, device=q.device)
        if self.text_first:
            q_img, key_index = q[:, :, n_text:], token
        else:
            q_img, key_index = q[:, :, :n_img], token + n_img
        if int(token.max()) >= n_text:
            raise RuntimeError(f"{self.name}: object token {int(token.max())} past the {n_text} text tokens")
        probs = token_probability(q_img, k, key_index, self.chunk_elements)
        self.store.add(self.name, self.resolution, probs)


def block_index(name: str) -> tuple[str, int]:
    """('joint' | 'single', index) of an MM-DiT attention processor name: `transformer_blocks.3.attn.processor` is
    joint block 3, `single_transformer_blocks.5.attn.processor` single block 5 (FLUX)."""
    m = re.match(r"(single_)?transformer_blocks\.(\d+)\.attn\.processor$", name)
    if m is None:
        raise ValueError(f"not an MM-DiT joint-attention layer: {name!r}")
    return ("single" if m.group(1) else "joint"), int(m.group(2))


def selected_blocks(transformer, joint, single=()) -> list[str]:
    """Processor names of the joint blocks `joint` and (FLUX) single-stream blocks `single` (lists of indices;
    negative indices count from the end). SD3.5's extra image-only `attn2` layers are never captured."""
    names = {"joint": {}, "single": {}}
    for name in transformer.attn_processors:
        with contextlib.suppress(ValueError):
            kind, i = block_index(name)
            names[kind][i] = name
    chosen = []
    for kind, wanted in (("joint", joint), ("single", single)):
        count = len(names[kind])
        for i in wanted:
            j = int(i) + count if int(i) < 0 else int(i)
            if j not in names[kind]:
                raise ValueError(f"generator.attention: no {kind} block {i} (this model has {count})")
            chosen.append(names[kind][j])
    if not chosen:
        raise ValueError("generator.attention selects no MM-DiT block")
    return chosen


@contextlib.contextmanager
def capture_joint_attention(transformer, store, names: list[str], resolution: int, text_first: bool, patch: int = 2):
    """Wrap the processors of `names` in `JointAttentionCapture`; restore the originals on exit."""
    original = dict(transformer.attn_processors)
    wrapped = {
        name: JointAttentionCapture(proc, store, name, resolution, text_first, patch) if name in names else proc
        for name, proc in original.items()
    }
    transformer.set_attn_processor(wrapped)
    try:
        yield store
    finally:
        transformer.set_attn_processor(original)
