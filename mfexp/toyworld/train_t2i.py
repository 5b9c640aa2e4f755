"""Train the toy text-to-image model (the shipped ``mfexp/assets/toy_t2i`` comes from this command).

    python -m mfexp.toyworld.train_t2i [--out DIR] [--vae-steps N] [--steps N] [--batch-size B] ...

Data: a *uniform* single-object corpus over ALL toy categories (novel ones included -- the model plays the web
pretrained generator that knows categories the detector's data lacks): captions ``"a photo of a single {colour}
{shape}"`` or, as MosaicFusion prompts, ``"a photo of a single {colour} {shape}, {def}"``; images rendered on the
fly (one object, random position/scale/rotation, textured background).

Stage 1 trains the VAE (L1 + L2 reconstruction + tiny KL, on random crops: the VAE is fully convolutional).
Stage 2 freezes it and trains UNet + text encoder with the epsilon-prediction loss, 10 % caption dropout to ``""``
(for classifier-free guidance), EMA weights, and -- unless ``--attn-loss-weight 0`` -- an auxiliary token-grounding
loss on the cross-attention maps (TokenCompose-style: the shape/colour tokens' attention should lie on the object
mask, which the renderer knows). The grounding loss stands in for what web-scale pretraining gives SD: cross-attention
that localises the named object.

Resumable: a checkpoint is written every ``--ckpt-every`` steps to ``<out>/checkpoint/`` and resumed from when
present; at the end the EMA pipeline is saved to ``<out>`` (``StableDiffusionPipeline`` folder, safetensors) with
``toy_t2i.json`` (config, steps, losses, timings) and the checkpoint is removed unless ``--keep-checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mfexp.fileio import atomic_path
from mfexp.toyworld.t2i import ToyT2IConfig, assemble_pipeline, build_components, save_toy_pipeline
from mfexp.toyworld.world import build_categories, caption, render_single_object_image, split_name


@dataclass
class TrainConfig:
    out: str = "toy_t2i_run"
    seed: int = 0
    device: str = "auto"
    threads: int = 2
    # stage 1: VAE
    vae_steps: int = 600
    vae_batch_size: int = 16
    vae_crop: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    # stage 2: UNet + text encoder
    steps: int = 6000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 200
    lr_decay_steps: int = 0  # cosine decay to 0.1 x lr over the last N steps (0 = constant after warmup)
    bank_size: int = 12000  # pre-rendered + pre-encoded single-object samples (stage 2 data)
    caption_dropout: float = 0.1
    def_prob: float = 0.5  # share of (non-dropped) captions with ", {def}"
    attn_loss_weight: float = 0.1
    snr_gamma: float = 0.0  # Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is their choice); 0 = plain MSE
    ema_decay: float = 0.999
    # bookkeeping
    ckpt_every: int = 500
    log_every: int = 50
    keep_checkpoint: bool = False
    model: dict = field(default_factory=dict)  # ToyT2IConfig overrides


# ----------------------------------------------------------------------------------------------------------------
# attention capture for the grounding loss (diffusers attention-processor API)
# ----------------------------------------------------------------------------------------------------------------
class GroundingAttnProcessor:
    """Cross-attention processor that computes attention explicitly and keeps the probabilities (with grad)."""

    def __init__(self, store: dict, name: str):
        self.store, self.name = store, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        b, n, _ = hidden_states.shape
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        v = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(q, k, None)  # (b * heads, n, tokens)
        self.store[self.name] = probs.view(b, attn.heads, n, -1)
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def grounding_processors(unet, store: dict) -> dict:
    """Processors for ``unet.set_attn_processor``: capture for cross-attention (attn2), SDPA for the rest."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    return {
        name: GroundingAttnProcessor(store, name) if name.endswith("attn2.processor") else AttnProcessor2_0()
        for name in unet.attn_processors
    }


def grounding_loss(
    store: dict, shape_pos: torch.Tensor, colour_pos: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean over cross-attention layers of BCE(shape-token prob, mask) + token-mass-outside-mask for shape & colour."""
    if not bool(valid.any()):
        return torch.zeros((), device=masks.device)
    losses = []
    idx = torch.arange(len(shape_pos), device=masks.device)
    for probs in store.values():
        p = probs.mean(1)  # (b, n, tokens), mean over heads
        side = int(round(math.sqrt(p.shape[1])))
        m = F.adaptive_avg_pool2d(masks, side).flatten(1)  # (b, n) soft mask at this resolution
        a_shape = p[idx, :, shape_pos]
        a_colour = p[idx, :, colour_pos]
        bce = F.binary_cross_entropy(a_shape.clamp(1e-6, 1 - 1e-6), m, reduction="none").mean(1)
        tok = 0.0
        for a in (a_shape, a_colour):
            tok = tok + 1.0 - (a * m).sum(1) / (a.sum(1) + 1e-6)
        losses.append(((bce + 0.5 * tok) * valid).sum() / valid.sum())
    return torch.stack(losses).mean()


# ----------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------
def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1.0


def render_batch(names: list[str], image_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, masks = [], []
    for n in names:
        rgb, m = render_single_object_image(n, image_size, rng)
        imgs.append(_to_tensor(rgb))
        masks.append(torch.from_numpy(m))
    return torch.stack(imgs), torch.stack(masks).float()[:, None]


class CaptionTable:
    """Token ids of every category's two caption forms (+ the empty caption) and the object-token positions."""

    def __init__(self, tokenizer, names: list[str]):
        self.names = names
        ids, shape_pos, colour_pos = [], [], []
        for n in names:
            colour, shape = split_name(n)
            for with_def in (False, True):
                enc = tokenizer(
                    caption(n, with_def), padding="max_length", max_length=tokenizer.model_max_length, truncation=True
                )
                toks = tokenizer.convert_ids_to_tokens(enc.input_ids)
                ids.append(enc.input_ids)
                shape_pos.append(toks.index(shape + "</w>"))  # first occurrence of the name's last token
                colour_pos.append(toks.index(colour + "</w>"))
        self.ids = torch.tensor(ids).view(len(names), 2, -1)
        self.shape_pos = torch.tensor(shape_pos).view(len(names), 2)
        self.colour_pos = torch.tensor(colour_pos).view(len(names), 2)
        self.empty = torch.tensor(tokenizer("", padding="max_length", max_length=tokenizer.model_max_length).input_ids)

    def sample(self, cats: np.ndarray, rng: np.random.Generator, dropout: float, def_prob: float):
        form = torch.from_numpy((rng.random(len(cats)) < def_prob).astype(np.int64))
        c = torch.from_numpy(cats)
        ids = self.ids[c, form].clone()
        drop = torch.from_numpy(rng.random(len(cats)) < dropout)
        ids[drop] = self.empty
        return ids, self.shape_pos[c, form], self.colour_pos[c, form], (~drop).float()


# ----------------------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def snr_weights(alpha_bar: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights for epsilon prediction, min(SNR, gamma) / SNR; all ones when ``gamma`` <= 0.

    Down-weights the low-noise timesteps (fine texture), so the small model spends its capacity on the high-noise
    steps that decide an object's shape.
    """
    if gamma <= 0:
        return torch.ones_like(alpha_bar)
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / snr


def _lr_lambda(warmup: int, steps: int, decay: int):
    def f(s: int) -> float:
        if s < warmup:
            return (s + 1) / max(1, warmup)
        if decay > 0 and s >= steps - decay:
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - (steps - decay)) / decay)))
        return 1.0

    return f


class _Log:
    def __init__(self, path: Path):
        self.path = path

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


@dataclass
class _Run:
    """What the training stages share: settings, device, category names, the resumable state and its file."""

    cfg: TrainConfig
    mcfg: ToyT2IConfig
    dev: torch.device
    names: list[str]
    state: dict
    ckpt_path: Path
    log: _Log

    def save(self, vae, extra: dict) -> None:
        """Checkpoint: the state updated with ``extra``, plus the VAE's weights (atomic)."""
        self.state.update(extra)
        self.state["vae"] = vae.state_dict()
        with atomic_path(self.ckpt_path) as tmp:
            torch.save(self.state, tmp)


def train(cfg: TrainConfig) -> Path:
    """Both stages, resumable, then the EMA pipeline saved to ``cfg.out``; returns that folder."""
    torch.set_num_threads(max(1, cfg.threads))
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoint"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / "train_state.pt"
    log = _Log(ckpt_dir / "train_log.txt")
    mcfg = ToyT2IConfig.from_dict(cfg.model)
    comps = build_components(mcfg, seed=cfg.seed)
    names = [c["name"] for c in build_categories()]
    table = CaptionTable(comps["tokenizer"], names)

    state = {"stage": 1, "step": 0, "history": [], "elapsed": {"vae": 0.0, "unet": 0.0}}
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        comps["vae"].load_state_dict(state["vae"])
        log(f"resumed from {ckpt_path}: stage {state['stage']} step {state['step']}")
    run = _Run(cfg, mcfg, _device(cfg.device), names, state, ckpt_path, log)
    comps["vae"].to(run.dev)

    train_vae(run, comps["vae"])
    bank = encode_bank(run, comps["vae"])
    params, ema = train_unet(run, comps, table, bank)
    export(run, comps, params, ema, out)
    if not cfg.keep_checkpoint:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return out


def train_vae(run: _Run, vae) -> None:
    """Stage 1: the VAE (or, when resumed past it, its scaling factor); leaves it frozen in eval mode."""
    from tqdm import tqdm

    cfg, mcfg, state, dev, names, log = run.cfg, run.mcfg, run.state, run.dev, run.names, run.log
    if state["stage"] == 1:
        opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
        if "vae_opt" in state:
            opt.load_state_dict(state["vae_opt"])
        vae.train()
        t0, losses = time.time() - state["elapsed"]["vae"], []
        bar = tqdm(range(state["step"], cfg.vae_steps), desc="vae", initial=state["step"], total=cfg.vae_steps)
        for step in bar:
            rng = np.random.default_rng([cfg.seed, 1, step])
            x, _ = render_batch(
                [names[i] for i in rng.integers(len(names), size=cfg.vae_batch_size)], mcfg.image_size, rng
            )
            if cfg.vae_crop and cfg.vae_crop < mcfg.image_size:
                oy, ox = (int(v) for v in rng.integers(0, mcfg.image_size - cfg.vae_crop + 1, size=2))
                x = x[:, :, oy : oy + cfg.vae_crop, ox : ox + cfg.vae_crop]
            x = x.to(dev)
            for g in opt.param_groups:
                g["lr"] = cfg.vae_lr * 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.vae_steps)))
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
            rec_loss = (rec - x).abs().mean() + (rec - x).pow(2).mean()
            loss = rec_loss + cfg.kl_weight * post.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            losses.append(rec_loss.item())
            if (step + 1) % cfg.log_every == 0:
                m = float(np.mean(losses))
                state["history"].append({"stage": "vae", "step": step + 1, "rec_loss": m})
                log(f"vae step {step + 1}/{cfg.vae_steps} rec_loss {m:.4f} ({time.time() - t0:.0f}s)")
                bar.set_postfix(rec=f"{m:.4f}")
                losses = []
            if (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.vae_steps:
                state["elapsed"]["vae"] = time.time() - t0
                run.save(vae, {"step": step + 1, "vae_opt": opt.state_dict()})
        state["elapsed"]["vae"] = time.time() - t0
        vae.eval()
        # latent scaling factor (SD: 0.18215): unit variance of the encoder's latents
        with torch.no_grad():
            rng = np.random.default_rng([cfg.seed, 2])
            x, _ = render_batch([names[i % len(names)] for i in range(256)], mcfg.image_size, rng)
            z = torch.cat([vae.encode(x[i : i + 64].to(dev)).latent_dist.mean for i in range(0, 256, 64)])
            vae.register_to_config(scaling_factor=float(1.0 / z.std()))
        log(f"vae done in {state['elapsed']['vae']:.0f}s; scaling_factor {vae.config.scaling_factor:.4f}")
        state.pop("vae_opt", None)
        run.save(vae, {"stage": 2, "step": 0, "scaling_factor": vae.config.scaling_factor})
    else:
        vae.register_to_config(scaling_factor=state["scaling_factor"])
    vae.eval().requires_grad_(False)


def encode_bank(run: _Run, vae) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Stage 2's data: ``bank_size`` rendered single-object samples as (categories, scaled latents, latent-size
    masks)."""
    from tqdm import tqdm

    cfg, mcfg, names = run.cfg, run.mcfg, run.names
    sf = vae.config.scaling_factor
    run.log(f"rendering + encoding a bank of {cfg.bank_size} samples")
    bank_cats = np.arange(cfg.bank_size) % len(names)
    bank_lat, bank_mask = [], []
    with torch.no_grad():
        for i in tqdm(range(0, cfg.bank_size, 64), desc="bank"):
            rng = np.random.default_rng([cfg.seed, 3, i])
            x, m = render_batch([names[c] for c in bank_cats[i : i + 64]], mcfg.image_size, rng)
            bank_lat.append(vae.encode(x.to(run.dev)).latent_dist.mean.cpu() * sf)
            bank_mask.append(F.adaptive_avg_pool2d(m, mcfg.latent_size).half())
    return bank_cats, torch.cat(bank_lat), torch.cat(bank_mask)


def train_unet(run: _Run, comps: dict, table: CaptionTable, bank) -> tuple[list, list]:
    """Stage 2: UNet + text encoder on the bank (epsilon loss, grounding loss, EMA); returns (params, EMA copies)."""
    from diffusers import DDPMScheduler
    from tqdm import tqdm

    cfg, state, dev, log = run.cfg, run.state, run.dev, run.log
    vae, unet, te = comps["vae"], comps["unet"], comps["text_encoder"]
    bank_cats, bank_lat, bank_mask = bank
    noise_sched = DDPMScheduler.from_config(comps["scheduler"].config)
    unet.to(dev).train()
    te.to(dev).train()
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup, cfg.steps, cfg.lr_decay_steps))
    ema = [p.detach().clone() for p in params]
    start = state["step"]
    if start > 0:
        unet.load_state_dict(state["unet"])
        te.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        ema = [t.to(dev) for t in state["ema"]]

    def save(step: int) -> None:
        run.save(
            vae,
            {
                "step": step,
                "unet": unet.state_dict(),
                "text_encoder": te.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "ema": [e.cpu() for e in ema],
            },
        )

    store: dict = {}
    use_attn = cfg.attn_loss_weight > 0
    if use_attn:
        unet.set_attn_processor(grounding_processors(unet, store))
    alphas = noise_sched.alphas_cumprod.to(dev)
    t0, run_eps, run_attn = time.time() - state["elapsed"]["unet"], [], []
    t_run = time.time()
    bar = tqdm(range(start, cfg.steps), desc="unet", initial=start, total=cfg.steps)
    for step in bar:
        rng = np.random.default_rng([cfg.seed, 4, step])
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        idx = rng.integers(cfg.bank_size, size=cfg.batch_size)
        z0 = bank_lat[idx].to(dev)
        masks = bank_mask[idx].float().to(dev)
        ids, shape_pos, colour_pos, valid = table.sample(bank_cats[idx], rng, cfg.caption_dropout, cfg.def_prob)
        noise = torch.randn(z0.shape, generator=gen).to(dev)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen).to(dev)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        store.clear()
        hidden = te(ids.to(dev))[0]
        pred = unet(zt, t, hidden).sample
        per_sample = (pred - noise).pow(2).mean((1, 2, 3))
        eps_loss = per_sample.mean()  # logged unweighted, comparable across --snr-gamma
        loss = (per_sample * snr_weights(a.flatten(), cfg.snr_gamma)).mean()
        if use_attn:
            attn_loss = grounding_loss(store, shape_pos.to(dev), colour_pos.to(dev), masks, valid.to(dev))
            loss = loss + cfg.attn_loss_weight * attn_loss
            run_attn.append(attn_loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        d = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(d).add_(p.detach(), alpha=1 - d)
        run_eps.append(eps_loss.item())
        if (step + 1) % cfg.log_every == 0:
            m_eps = float(np.mean(run_eps))
            m_attn = float(np.mean(run_attn)) if run_attn else 0.0
            state["history"].append({"stage": "unet", "step": step + 1, "eps_loss": m_eps, "attn_loss": m_attn})
            el = time.time() - t0
            log(
                f"unet step {step + 1}/{cfg.steps} eps_loss {m_eps:.4f} attn_loss {m_attn:.4f} "
                f"({el:.0f}s, {(step + 1 - start) / max(time.time() - t_run, 1e-6):.2f} it/s)"
            )
            bar.set_postfix(eps=f"{m_eps:.4f}", attn=f"{m_attn:.3f}")
            run_eps, run_attn = [], []
        if (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
            state["elapsed"]["unet"] = time.time() - t0
            save(step + 1)
    state["elapsed"]["unet"] = time.time() - t0
    if cfg.keep_checkpoint:  # lets a later run with more --steps continue from here
        save(max(start, cfg.steps))
    return params, ema


def export(run: _Run, comps: dict, params: list, ema: list, out: Path) -> None:
    """The EMA weights with the default attention processors, saved as a pipeline folder with its provenance."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    state, cfg = run.state, run.cfg
    vae, unet, te = comps["vae"], comps["unet"], comps["text_encoder"]
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    unet.set_attn_processor(AttnProcessor2_0())
    for m in (vae, unet, te):
        m.to("cpu").eval()
    pipe = assemble_pipeline({**comps, "vae": vae, "unet": unet, "text_encoder": te})
    final = [h for h in state["history"] if h["stage"] == "unet"][-1:] or [{}]
    info = {
        "train": {k: v for k, v in asdict(cfg).items() if k != "out"},
        "vae_seconds": round(state["elapsed"]["vae"], 1),
        "unet_seconds": round(state["elapsed"]["unet"], 1),
        "final": final[0],
        "device": str(run.dev),
        "torch": torch.__version__,
    }
    save_toy_pipeline(pipe, out, run.mcfg, info)
    run.log(f"saved pipeline to {out}")
    shutil.copy(run.ckpt_path.parent / "train_log.txt", out / "train_log.txt")


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    d = TrainConfig()
    p = argparse.ArgumentParser(description="Train the toy text-to-image model (see module docstring).")
    p.add_argument("--out", default=None, help="output pipeline folder (default: ./toy_t2i_run)")
    for k, v in asdict(d).items():
        if k in ("out", "model", "keep_checkpoint"):
            continue
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    p.add_argument("--keep-checkpoint", action="store_true")
    p.add_argument("--model", default="{}", help="JSON overrides of ToyT2IConfig, e.g. '{\"unet_channels\": [32, 64]}'")
    a = vars(p.parse_args(argv))
    a["model"] = json.loads(a["model"])
    a["out"] = a["out"] or d.out
    return TrainConfig(**a)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    out = Path(cfg.out)
    if (out / "model_index.json").is_file() and not (out / "checkpoint" / "train_state.pt").is_file():
        print(f"{out} already holds a trained pipeline; choose another --out or remove it", file=sys.stderr)
        sys.exit(1)
    train(cfg)


if __name__ == "__main__":
    main()
