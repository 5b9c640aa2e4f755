"""Train the toy MM-DiT: a small SD3-architecture transformer on the toy world's caption corpus (issue 22 item 5).

    python -m mfexp.toyworld.train_mmdit [--out DIR] [--steps N] [--batch-size B] [--threads T] ...

The shipped toy model's VAE (stride 4: 64 px images -> 16x16x4 latents), tokenizer and CLIP text encoder are
reused, frozen; the text encoder is loaded as a `CLIPTextModelWithProjection` (its projection random and frozen)
and serves as both of SD3's CLIP encoders, with no T5 (zeros, as diffusers does without `text_encoder_3`). Only the
`SD3Transformer2DModel` is trained, with rectified flow matching: x_s = (1 - s) x0 + s noise, s ~ logit-normal,
target noise - x0; 10 % of the captions are dropped to "" (classifier-free guidance). Data: the same uniform
single-object corpus as the toy UNet (`train_t2i`), rendered on the fly.

Grounding loss (unless `--attn-loss-weight 0`), as the toy UNet's: in every joint block, the image queries'
attention probability of the shape and the colour token (softmax over all keys, image and text, mean over heads --
the quantity MosaicFusion's capture reads) should lie on the object's mask, which the renderer knows:
1 - soft Dice(map / max(map), mask) + token mass outside the mask. A stand-in for what web-scale pretraining gives
the real SD3 models: a toy trained on a few thousand steps has no reason to ground its tokens otherwise.

Distillation (`--teacher toy` or a toy UNet folder): rows with s < `--teacher-max-s` (0.8) take the toy UNet's
velocity for their caption as the flow target instead of the sampled noise - x0 (its epsilon prediction at the DDPM
step of the same signal level, converted); a lower-variance target. Measured (benchmarks/toy_shape_gap.py,
docs/toy_world.md): a small, steady gain from scratch, none that shows in class fidelity from step 6600. Off by
default.

Feature distillation (`--feature-weight W`, with `--teacher`): REPA's alignment loss (Yu et al. 2024, who align a
DiT's hidden states with a pretrained image encoder's) with the toy UNet as the encoder -- the image tokens after
the middle block, pooled to the UNet's 8x8 mid-block grid and mapped by a small trainable head, should point where
the UNet's mid-block features for the same x_s and caption point (1 - cosine similarity). The head lives in the
checkpoint (`feature_head.safetensors`), never in the export. Measured in docs/toy_world.md. Off by default.

Resumable: every `--ckpt-every` steps `<out>/checkpoint/` gets the transformer's weights (safetensors) and the
optimizer state with the step and losses; a run started on the same `--out` goes on from there. With no checkpoint,
`--init FILE_OR_FOLDER --init-step N` starts from given weights (e.g. the shipped `mfexp/assets/toy_mmdit` and the
step its `toy_mmdit.json` names) with a fresh optimizer that warms up again. The architecture flags must be the
ones the weights were trained with (`--patch-size 1 --clip-length 24` for the shipped ones); a mismatch, on `--init`
or on a resume, is an error that names them. At the end the
pipeline is saved to `<out>` (`StableDiffusion3Pipeline` folder, safetensors) with `toy_mmdit.json`; also when
`--max-minutes` runs out first.

On a GPU: `--device cuda --workers 8 --compile 1` (the batches rendered ahead in 8 processes, each still drawn from
its step's seed); `scripts/gpu_train_mmdit.sh` runs it on the borrowed GPU machine.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mfexp.fileio import atomic_path
from mfexp.mosaicfusion.families.mmdit_attention import token_probability
from mfexp.toyworld.train_t2i import CaptionTable, render_batch
from mfexp.toyworld.world import build_categories, caption


@dataclass
class MMDiTTrainConfig:
    out: str = "toy_mmdit_run"
    seed: int = 0
    threads: int = 2
    steps: int = 4000
    batch_size: int = 32
    lr: float = 3e-4
    warmup: int = 100
    caption_dropout: float = 0.1
    def_prob: float = 0.5
    ckpt_every: int = 200
    log_every: int = 50
    layers: int = 6
    heads: int = 4
    head_dim: int = 32
    patch_size: int = 2  # latent pixels per token side: 2 -> 8x8 image tokens, 1 -> 16x16
    pos_grid: int = 0  # SD3's pos_embed_max_size, tokens a side: 0 = 32 // patch_size, twice the 64 px training
    # grid, so the larger overlapping region crops of N > 1 mosaics (72 px at N=4) fit (trained on its central part)
    clip_length: int = 77  # the CLIP tokens each caption is padded to (SD3 pads to the tokenizer's 77); the toy's
    # captions are at most 18 tokens and CLIP's causal mask makes the first tokens' states independent of the
    # padding after them, so a shorter length drops only padding: 24 makes a patch-2 step about 2x faster
    init: str = ""  # with no checkpoint in --out: start from these transformer weights (a .safetensors file, or a
    # shipped / exported folder with transformer/), fresh optimizer, at step --init-step
    init_step: int = 0
    max_sequence_length: int = 8  # the (zero) T5 part: short, it carries nothing
    attn_loss_weight: float = 0.1
    mask_weight: float = 0.0  # > 0: the flow loss weighs each latent pixel 1 + this x its object coverage (normalised
    # to the batch's mean weight), so the object, a quarter of the image, is not outweighed by the background
    keep_every: int = 500  # also keep <out>/snapshots/transformer_<step>.safetensors every this many steps (0: never)
    bf16: int = 0  # 1: forward/backward under bf16 autocast (fp32 weights and optimizer); no faster on this AMX CPU
    device: str = "cpu"  # cuda: the transformer, VAE encode and EMA run there (the data is drawn on the CPU)
    workers: int = 0  # processes rendering the batches ahead (0: in the training process, between steps)
    max_minutes: float = 0.0  # > 0: stop after this much training time, with a checkpoint and the export as at the end
    compile: int = 0  # 1: torch.compile the transformer's forward (about 2 min to compile; a patch-1 step on 2 CPU
    # threads: 1.2-1.3 s instead of 1.6-1.8 s, measured); weights, checkpoints and snapshots are as without
    decay: int = 0  # > 0: the learning rate falls linearly to 0 over the last this many steps before --steps
    ema_decay: float = 0.0  # > 0: keep an EMA of the weights (checkpointed), exported instead of the raw weights
    teacher: str = ""  # a toy UNet pipeline folder ("toy": the shipped mfexp/assets/toy_t2i): distil from it -- rows
    # with s < --teacher-max-s take the teacher's velocity for the caption as the flow target instead of noise - x0
    teacher_max_s: float = 0.8  # above it the teacher's converted estimate is worse than the plain target (measured)
    feature_weight: float = 0.0  # > 0 (needs --teacher): feature distillation, REPA's loss on the teacher's features --
    # the image tokens after block --feature-block, average-pooled to the teacher's mid-block grid and mapped by a
    # small trainable head (checkpointed, never exported), should point where the toy UNet's mid-block features for
    # the same x_s and caption point: + this x (1 - cosine similarity), on the rows the teacher teaches
    feature_block: int = -1  # the block whose image tokens are aligned (-1: the middle one, layers // 2)


def pos_grid(cfg: MMDiTTrainConfig) -> int:
    """SD3's `pos_embed_max_size` for `cfg`: `--pos-grid`, or by default twice the 64 px training grid."""
    return cfg.pos_grid or 32 // cfg.patch_size


def build_pipeline(cfg: MMDiTTrainConfig):
    """The toy SD3 pipeline: the toy model's frozen VAE / tokenizer / CLIP (projection drawn from `cfg.seed`), a fresh
    transformer (mfexp/toyworld/toy_mmdit.py assembles it)."""
    from diffusers import SD3Transformer2DModel

    from mfexp.toyworld.toy_mmdit import assemble, toy_parts

    parts = toy_parts(cfg.seed, cfg.clip_length)
    vae, text = parts["vae"], parts["text_encoder"]
    width = text.config.hidden_size
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=cfg.patch_size,
        in_channels=vae.config.latent_channels,
        out_channels=vae.config.latent_channels,
        num_layers=cfg.layers,
        attention_head_dim=cfg.head_dim,
        num_attention_heads=cfg.heads,
        joint_attention_dim=2 * width,  # both CLIPs side by side (the T5 width when there is a T5)
        caption_projection_dim=cfg.heads * cfg.head_dim,
        pooled_projection_dim=2 * text.config.projection_dim,
        pos_embed_max_size=pos_grid(cfg),
        qk_norm="rms_norm",
    )
    return assemble(transformer, parts)


def caption_prompts(names: list[str]) -> list[str]:
    """Every caption form of every category (row 2 x category + with_def), and "" last."""
    return [caption(n, with_def) for n in names for with_def in (False, True)] + [""]


def caption_bank(pipe, names: list[str], max_sequence_length: int):
    """Text embeddings of every caption form of every category, and of "" (computed once: the encoders are frozen)."""
    prompts = caption_prompts(names)
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompts,
            None,
            None,
            device="cpu",
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
        )
    return embeds, pooled


class GroundingCapture:
    """Wraps a joint block's processor (SD3 key layout [image, text]); with `token_pos` set (rows, tokens) it keeps,
    with grad, the image queries' probability of those text tokens: `maps[name]` (rows, tokens, image tokens)."""

    def __init__(self, original, maps: dict, name: str):
        self.original, self.maps, self.name = original, maps, name
        self.token_pos: torch.Tensor | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask)
        if self.token_pos is not None:
            d = attn.to_k.out_features // attn.heads

            def heads(x, norm):
                x = x.unflatten(-1, (-1, d)).transpose(1, 2)
                return x if norm is None else norm(x)

            q = heads(attn.to_q(hidden_states), attn.norm_q)
            k = heads(attn.to_k(hidden_states), attn.norm_k)
            ck = heads(attn.add_k_proj(encoder_hidden_states), attn.norm_added_k)
            n_img = q.shape[2]
            keys = torch.cat([k, ck], 2)
            maps = [token_probability(q, keys, n_img + pos) / attn.heads for pos in self.token_pos.T]
            self.maps[self.name] = torch.stack(maps, 1)
        return out


def grounding_loss(maps: dict, masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over blocks and tokens of 1 - soft Dice(map / max, mask) + the map's mass outside the mask, over the
    rows with a caption (`valid`); `masks` (rows, 1, H, W) in [0, 1]."""
    if not bool(valid.any()):
        return torch.zeros(())
    losses = []
    for p in maps.values():  # (rows, tokens, n)
        side = int(round(p.shape[-1] ** 0.5))
        m = F.adaptive_avg_pool2d(masks, side).flatten(1)[:, None]  # (rows, 1, n)
        a = p / (p.amax(-1, keepdim=True) + 1e-8)
        dice = 2 * (a * m).sum(-1) / (a.sum(-1) + m.sum(-1) + 1e-6)
        outside = 1 - (p * m).sum(-1) / (p.sum(-1) + 1e-8)
        per_row = (1 - dice + outside).mean(1)
        losses.append((per_row * valid).sum() / valid.sum())
    return torch.stack(losses).mean()


class StepBatches(torch.utils.data.Dataset):
    """Item k is the data of training step k, drawn from the generator seeded (seed, k) alone: rendered images and
    masks, caption rows (with `--caption-dropout` rows set to the last caption, ""), noise and flow times. So a resumed
    run, and any number of `--workers`, see the same data at the same step."""

    def __init__(self, cfg: MMDiTTrainConfig, names: list[str], captions: int, latent_shape: tuple[int, ...]):
        self.cfg, self.names, self.captions, self.latent_shape = cfg, names, captions, latent_shape

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        rng = np.random.default_rng((cfg.seed, step))
        cats = rng.integers(len(self.names), size=cfg.batch_size)
        images, masks = render_batch([self.names[c] for c in cats], 64, rng)
        row = torch.from_numpy(2 * cats + (rng.random(cfg.batch_size) < cfg.def_prob))
        row[torch.from_numpy(rng.random(cfg.batch_size) < cfg.caption_dropout)] = self.captions - 1
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        noise = torch.randn((cfg.batch_size, *self.latent_shape), generator=gen)
        s = torch.sigmoid(torch.randn(cfg.batch_size, generator=gen))[:, None, None, None]  # logit-normal
        return {"images": images, "masks": masks, "row": row, "noise": noise, "s": s}


def mask_weighted_mean(err: torch.Tensor, masks: torch.Tensor, weight: float) -> torch.Tensor:
    """The mean of `err` (rows, channels, h, w) with each latent pixel weighed 1 + `weight` x the share of it that
    the object covers (`masks` (rows, 1, H, W) in [0, 1], pooled to h x w), divided by the mean weight: the plain
    mean when `weight` is 0 or no pixel holds an object."""
    if weight <= 0:
        return err.mean()
    w = 1 + weight * F.adaptive_avg_pool2d(masks, err.shape[-2:])
    return (err * w).mean() / w.mean()


def predict_velocity(transformer, xs: torch.Tensor, s: torch.Tensor, text: torch.Tensor, pooled: torch.Tensor):
    """The transformer's flow velocity at x_s, flow times `s` (rows, 1, 1, 1) given as SD3's timesteps s x 1000."""
    return transformer(
        hidden_states=xs,
        timestep=s.flatten() * 1000,
        encoder_hidden_states=text,
        pooled_projections=pooled,
        return_dict=False,
    )[0]


def ddpm_time(s: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The (fractional) DDPM timestep whose signal level matches flow time `s`: x_s = (1 - s) x0 + s noise is
    x_t = sqrt(a) x0 + sqrt(1 - a) noise scaled by sqrt((1 - s)^2 + s^2), with a = (1 - s)^2 / ((1 - s)^2 + s^2);
    log(alphas_cumprod) is interpolated linearly between the integer steps, clamped to [0, T - 1]."""
    s = s.double()
    log_a = 2 * torch.log1p(-s) - torch.log((1 - s) ** 2 + s**2)
    log_ab = torch.log(alphas_cumprod.double())  # falling
    i = torch.searchsorted(-log_ab, -log_a).clamp(1, len(log_ab) - 1)
    lo, hi = log_ab[i - 1], log_ab[i]
    return ((i - 1) + (lo - log_a) / (lo - hi)).clamp(0, len(log_ab) - 1)


def velocity_from_eps(xs: torch.Tensor, s: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The flow velocity noise - x0 that an epsilon prediction `eps` at x_s (`s` shaped (rows, 1, 1, 1)) implies:
    x0 = (x_s - s eps) / (1 - s) (the DDPM estimate, the factors sqrt((1 - s)^2 + s^2) cancel) and, with
    noise = (x_s - (1 - s) x0) / s, v = noise - x0 = (eps - x_s) / (1 - s)."""
    return (eps - xs) / (1 - s)


class UNetTeacher:
    """The toy UNet (epsilon prediction, DDPM time) as a flow-velocity oracle for the MM-DiT's captions: `velocity`
    of x_s at flow times `s` for caption rows `row` (the trainer's caption order, "" last)."""

    def __init__(self, folder: str, prompts: list[str], device: torch.device):
        from diffusers import StableDiffusionPipeline

        from mfexp.assets import toy_t2i_path

        path = toy_t2i_path() if folder == "toy" else Path(folder)
        if not (path / "unet").is_dir():
            raise FileNotFoundError(f"--teacher {folder}: no unet/ there ('toy': the shipped toy UNet)")
        sd = StableDiffusionPipeline.from_pretrained(path, local_files_only=True, safety_checker=None)
        if sd.scheduler.config.prediction_type != "epsilon":
            raise ValueError(f"--teacher {folder}: an epsilon-prediction UNet is needed")
        length = sd.tokenizer.model_max_length  # the UNet's own caption length (SD's 77)
        tokens = sd.tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        ids = tokens.input_ids
        with torch.no_grad():
            self.embeds = sd.text_encoder(ids)[0].to(device)
        self.unet = sd.unet.to(device).eval().requires_grad_(False)
        self.alphas_cumprod = sd.scheduler.alphas_cumprod.to(device)
        self.features: torch.Tensor | None = None  # the mid block's output of the last `velocity` call
        self.unet.mid_block.register_forward_hook(lambda _m, _i, out: setattr(self, "features", out))

    @torch.no_grad()
    def velocity(self, xs: torch.Tensor, s: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        t = ddpm_time(s.flatten(), self.alphas_cumprod).float()
        xt = xs / torch.sqrt((1 - s) ** 2 + s**2)
        eps = self.unet(xt, t, encoder_hidden_states=self.embeds[row]).sample
        return velocity_from_eps(xs, s, eps)


def feature_loss(tokens: torch.Tensor, head: torch.nn.Module, target: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """1 - the cosine similarity of `head`(image tokens (batch, h*w, width), average-pooled to the grid of `target`
    (batch, channels, H, W)) and `target`, per position, averaged over the positions of the `rows` (bool) selected."""
    side = int(tokens.shape[1] ** 0.5)
    grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
    grid = F.adaptive_avg_pool2d(grid, target.shape[-2:])
    mapped = head(grid.flatten(2).transpose(1, 2))  # (batch, H*W, channels)
    cos = F.cosine_similarity(mapped, target.flatten(2).transpose(1, 2).to(mapped.dtype), dim=-1)
    return (1 - cos)[rows].mean() if rows.any() else cos.sum() * 0


def on_cpu(weights: dict) -> dict:
    """A state dict's tensors on the CPU (safetensors writes CPU tensors)."""
    return {k: v.detach().cpu() for k, v in weights.items()}


def architecture(cfg: MMDiTTrainConfig) -> dict:
    """The settings that shape the transformer (what `build_pipeline` reads besides the seed)."""
    shape = {k: getattr(cfg, k) for k in ("layers", "heads", "head_dim", "patch_size", "clip_length")}
    return {**shape, "pos_grid": pos_grid(cfg)}


def checkpoint_siblings(ckpt: Path) -> tuple[Path, Path]:
    """`<ckpt>.new/` (being written) and `<ckpt>.old/` (being replaced) beside the checkpoint folder."""
    return ckpt.with_name(ckpt.name + ".new"), ckpt.with_name(ckpt.name + ".old")


def save_checkpoint(
    ckpt: Path, weights: dict, optimizer: dict, ema: dict | None, state: dict, meta: dict, head: dict | None = None
) -> None:
    """Write `ckpt/` as a whole or not at all: the files go to `<ckpt>.new/`, which then replaces `ckpt/` by two
    renames (a kill between them leaves two complete folders, which `recover_checkpoint` sorts out). `head`: the
    feature-distillation head's weights (`feature_head.safetensors`)."""
    import shutil

    from safetensors.torch import save_file

    new, old = checkpoint_siblings(ckpt)
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    save_file(weights, str(new / "transformer.safetensors"), metadata=meta)
    torch.save(optimizer, new / "optimizer.pt")
    if ema is not None:
        save_file(ema, str(new / "ema.safetensors"), metadata=meta)
    if head is not None:
        save_file(head, str(new / "feature_head.safetensors"))
    (new / "state.json").write_text(json.dumps(state))  # last: a folder with state.json is complete
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        ckpt.rename(old)
    new.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def recover_checkpoint(ckpt: Path) -> None:
    """After a kill inside `save_checkpoint`: the newest complete folder becomes `ckpt/`, the rest is removed."""
    import shutil

    new, old = checkpoint_siblings(ckpt)
    if not (ckpt / "state.json").is_file():
        for candidate in (new, old):
            if (candidate / "state.json").is_file():
                shutil.rmtree(ckpt, ignore_errors=True)
                candidate.rename(ckpt)
                break
    for leftover in (new, old):
        shutil.rmtree(leftover, ignore_errors=True)


def lr_factor(cfg: MMDiTTrainConfig, start: int, step: int) -> float:
    """The learning rate at `step` as a fraction of `--lr`: a linear warm-up over `--warmup` steps from `start`, then
    constant; with `--decay N`, linear down to 0 over the last N steps before `--steps` (warm-up, stable, decay)."""
    factor = min(1.0, (step - start + 1) / cfg.warmup)
    if cfg.decay > 0:
        factor = min(factor, max(0.0, (cfg.steps - step) / cfg.decay))
    return factor


def init_weights(path: Path) -> Path:
    """The transformer weights file of `path`: the file itself, or a folder's transformer/ weights."""
    if path.is_file():
        return path
    weights = path / "transformer" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"--init {path}: neither a weights file nor a folder with {weights.relative_to(path)}")
    return weights


def recorded_architecture(path: Path) -> dict:
    """The architecture `path` was trained with: a weights file's `architecture` metadata (empty for files written
    before the trainer recorded it), or an exported / shipped folder's transformer config and CLIP length."""
    from safetensors import safe_open

    if path.is_file():
        with safe_open(str(path), "pt") as f:
            return json.loads((f.metadata() or {}).get("architecture", "{}"))
    from mfexp.toyworld.toy_mmdit import recorded_clip_length

    config = json.loads((path / "transformer" / "config.json").read_text())
    names = {"layers": "num_layers", "heads": "num_attention_heads", "head_dim": "attention_head_dim"}
    names.update(patch_size="patch_size", pos_grid="pos_embed_max_size")
    return {**{k: config[v] for k, v in names.items()}, "clip_length": recorded_clip_length(path)}


def check_architecture(cfg: MMDiTTrainConfig, source: Path) -> None:
    """A clear error when the weights a run starts from were trained with other architecture flags than `cfg`'s (a
    different --clip-length would load without complaint and silently pad the captions otherwise)."""
    recorded, wanted = recorded_architecture(source), architecture(cfg)
    differ = [k for k in recorded if k in wanted and recorded[k] != wanted[k]]
    if differ:
        flags = " ".join(f"--{k.replace('_', '-')} {recorded[k]}" for k in differ)
        ours = ", ".join(f"{k} {wanted[k]}" for k in differ)
        raise ValueError(f"{source} was trained with {flags} (this run: {ours}): pass the same flags")


def train(cfg: MMDiTTrainConfig) -> Path:
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    out = Path(cfg.out)
    ckpt = out / "checkpoint"
    recover_checkpoint(ckpt)
    if (ckpt / "state.json").is_file():
        check_architecture(cfg, ckpt / "transformer.safetensors")
    elif cfg.init:
        init_weights(Path(cfg.init))  # a clear error for a path without weights, before the folder is read
        check_architecture(cfg, Path(cfg.init))
    pipe = build_pipeline(cfg)
    names = [c["name"] for c in build_categories()]
    embeds, pooled = caption_bank(pipe, names, cfg.max_sequence_length)
    table = CaptionTable(pipe.tokenizer, names)  # same caption order as caption_bank: row 2 * category + with_def
    token_pos = torch.cat([torch.stack([table.shape_pos.flatten(), table.colour_pos.flatten()], 1), torch.zeros(1, 2)])
    pipe.to(device)
    model, vae = pipe.transformer, pipe.vae
    embeds, pooled, token_pos = embeds.to(device), pooled.to(device), token_pos.to(device)
    teacher = UNetTeacher(cfg.teacher, caption_prompts(names), device) if cfg.teacher else None
    maps: dict = {}
    captures = []
    if cfg.attn_loss_weight > 0:
        original = dict(model.attn_processors)
        wrapped = {n: GroundingCapture(p, maps, n) for n, p in original.items()}
        captures = list(wrapped.values())
        model.set_attn_processor(wrapped)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    step, losses, attn_losses, feature_losses = 0, [], [], []
    head = None
    if cfg.feature_weight > 0:
        if teacher is None:
            raise ValueError("--feature-weight needs --teacher (the features come from the toy UNet)")
        width, channels = cfg.heads * cfg.head_dim, teacher.unet.mid_block.resnets[-1].out_channels
        head = torch.nn.Sequential(
            torch.nn.Linear(width, 4 * width), torch.nn.SiLU(), torch.nn.Linear(4 * width, channels)
        ).to(device)
        tokens: dict = {}
        block = cfg.feature_block if cfg.feature_block >= 0 else cfg.layers // 2
        model.transformer_blocks[block].register_forward_hook(lambda _m, _i, out: tokens.update(x=out[1]))
        if (ckpt / "feature_head.safetensors").is_file():  # its optimizer group is in the checkpoint: add it first
            head.load_state_dict(load_file(str(ckpt / "feature_head.safetensors"), device=str(device)))
            opt.add_param_group({"params": head.parameters()})
    meta = {"architecture": json.dumps(architecture(cfg))}  # in every weights file: `toy_mmdit.export` rebuilds it
    if (ckpt / "state.json").is_file():
        model.load_state_dict(load_file(str(ckpt / "transformer.safetensors")))
        saved = torch.load(ckpt / "optimizer.pt", weights_only=True, map_location=device)
        kept = len(opt.param_groups)  # a feature head the run no longer trains (--feature-weight 0): drop its group
        dropped = {i for group in saved["param_groups"][kept:] for i in group["params"]}
        moments = {k: v for k, v in saved["state"].items() if k not in dropped}
        opt.load_state_dict({"state": moments, "param_groups": saved["param_groups"][:kept]})
        state = json.loads((ckpt / "state.json").read_text())
        step, losses, attn_losses = state["step"], state["losses"], state.get("attn_losses", [])
        feature_losses = state.get("feature_losses", [])
        print(f"resumed at step {step}")
    elif cfg.init:
        model.load_state_dict(load_file(str(init_weights(Path(cfg.init)))))
        step = cfg.init_step
        print(f"started from {cfg.init} at step {step}")
    ema = None
    if cfg.ema_decay > 0:  # starts from the weights in hand when a run first asks for it
        ema_file = ckpt / "ema.safetensors"
        ema = (
            load_file(str(ema_file), device=str(device))
            if ema_file.is_file()
            else {k: v.detach().clone() for k, v in model.state_dict().items()}
        )
    if head is not None and len(opt.param_groups) == 1:  # a new head (on a run that had none: from here on)
        opt.add_param_group({"params": head.parameters(), "lr": cfg.lr})
    start = cfg.init_step if cfg.init else 0  # a fresh optimizer warms up again
    for group in opt.param_groups:  # the scheduler starts at `step` from --lr (a resume may change it)
        group["initial_lr"] = cfg.lr
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, start, s), last_epoch=step - 1)
    scale, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
    model.train()
    forward = torch.compile(model) if cfg.compile else model  # shares the weights: `model` is what gets saved
    latent = (vae.config.latent_channels, 64 // pipe.vae_scale_factor, 64 // pipe.vae_scale_factor)
    data = torch.utils.data.DataLoader(
        StepBatches(cfg, names, len(embeds), latent),
        batch_size=None,
        sampler=range(step, cfg.steps),
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
    )
    t0 = time.time()
    for batch in data:
        images, masks, row, noise, s = (batch[k].to(device) for k in ("images", "masks", "row", "noise", "s"))
        with torch.no_grad():
            x0 = (vae.encode(images).latent_dist.sample() - shift) * scale
        xs = (1 - s) * x0 + s * noise
        target = noise - x0
        if teacher is not None:
            taught = s < cfg.teacher_max_s
            target = torch.where(taught, teacher.velocity(xs, s.clamp(max=cfg.teacher_max_s), row), target)
        for c in captures:
            c.token_pos = token_pos[row].long()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(cfg.bf16)):
            pred = predict_velocity(forward, xs, s, embeds[row], pooled[row])
        err = (pred.float() - target) ** 2
        flow_loss = ((pred.detach().float() - (noise - x0)) ** 2).mean()  # logged against noise - x0, whatever the
        # weighting or the teacher
        loss = mask_weighted_mean(err, masks, cfg.mask_weight)
        if head is not None:
            assert teacher is not None and teacher.features is not None  # a head is made only beside a teacher
            feature = feature_loss(tokens.pop("x"), head, teacher.features, taught.flatten())
            loss = loss + cfg.feature_weight * feature
            feature_losses.append(feature.item())
        if captures:
            maps.update({k: v.float() for k, v in maps.items()})
            attn_loss = grounding_loss(maps, masks, (row != len(embeds) - 1).float())
            loss = loss + cfg.attn_loss_weight * attn_loss
            attn_losses.append(attn_loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    ema[k].lerp_(v, 1 - cfg.ema_decay)
        step += 1
        losses.append(flow_loss.item())
        if step % cfg.log_every == 0:
            recent = np.mean(losses[-cfg.log_every :])
            grounding = np.mean(attn_losses[-cfg.log_every :]) if captures else 0.0  # (a resume may drop it)
            feat = f" feature_loss {np.mean(feature_losses[-cfg.log_every :]):.4f}" if head is not None else ""
            print(
                f"step {step} loss {recent:.4f} attn_loss {grounding:.4f}{feat} ({(time.time() - t0) / 60:.1f} min)",
                flush=True,
            )
        timed_out = cfg.max_minutes > 0 and time.time() - t0 > 60 * cfg.max_minutes
        if step % cfg.ckpt_every == 0 or step == cfg.steps or timed_out:
            state = {"step": step, "losses": losses, "attn_losses": attn_losses, "feature_losses": feature_losses}
            ema_cpu = None if ema is None else on_cpu(ema)
            head_cpu = None if head is None else on_cpu(head.state_dict())
            save_checkpoint(ckpt, on_cpu(model.state_dict()), opt.state_dict(), ema_cpu, state, meta, head_cpu)
        if cfg.keep_every and step % cfg.keep_every == 0:
            (out / "snapshots").mkdir(parents=True, exist_ok=True)
            with atomic_path(out / "snapshots" / f"transformer_{step}.safetensors") as tmp:
                save_file(on_cpu(model.state_dict() if ema is None else ema), str(tmp), metadata=meta)
        if timed_out:
            print(f"--max-minutes {cfg.max_minutes:g}: stopped at step {step}", flush=True)
            break
    model.eval()
    if ema is not None:
        model.load_state_dict(ema)
    if captures:
        model.set_attn_processor(original)
    pipe.save_pretrained(str(out), safe_serialization=True)
    info = {
        "config": asdict(cfg),
        "steps": step,
        "loss_first_50": np.mean(losses[:50]),
        "loss_last_50": np.mean(losses[-50:]),
    }
    (out / "toy_mmdit.json").write_text(json.dumps(info, indent=1))
    return out


def parse_args(argv: list[str] | None = None) -> MMDiTTrainConfig:
    p = argparse.ArgumentParser(description="Train the toy MM-DiT (see module docstring).")
    for k, v in asdict(MMDiTTrainConfig()).items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    return MMDiTTrainConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    print(train(parse_args(argv)))


if __name__ == "__main__":
    main()
