"""MosaicFusion generation: plan mosaics, diffuse all regions on one latent canvas, turn attention into masks."""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from mfexp.augmenters import image_seed

from .attention import AttentionStore, CaptureCall, capture_cross_attention, selected_layers
from .layout import MosaicLayout, gaussian_weights, mosaic_layout
from .masks import MaskError, expand_to_canvas, region_mask
from .prompts import PromptError, display_name, object_token_index, region_prompt


@dataclass
class MosaicPlan:
    """Everything random about one mosaic, fixed by (run seed, index) alone (so shards reproduce a single process)."""

    index: int
    seed: int
    layout: MosaicLayout
    categories: list
    prompts: list
    token_index: list = field(default_factory=list)
    reason: str | None = None  # set when the mosaic is skipped before diffusion


@dataclass
class MosaicResult:
    plan: MosaicPlan
    image: np.ndarray | None = None  # (H, W, 3) uint8
    masks: list = field(default_factory=list)  # per region, canvas-sized bool arrays
    reason: str | None = None

    @property
    def kept(self) -> bool:
        return self.reason is None


def plan_mosaic(
    index: int, gcfg, scfg, main_categories: list, mixed_categories: list, tokenizer, stride: int, seed: int
) -> MosaicPlan:
    """Main category = index // images_per_category; N-1 mixed ones drawn uniformly; order and layout random.
    `gcfg`: the generator's config; `scfg`: the synthetic set's (N = num_objects, images_per_category)."""
    mosaic_seed = image_seed(seed, index)
    rng = np.random.default_rng(mosaic_seed)
    n = scfg.num_objects
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"synthetic.num_objects must be a positive integer, got {n!r}")
    main = main_categories[index // int(scfg.images_per_category)]
    mixed = [mixed_categories[i] for i in rng.integers(len(mixed_categories), size=n - 1)]
    cats = [main, *mixed]
    order = rng.permutation(n)
    cats = [cats[i] for i in order]
    layout = mosaic_layout(n, gcfg.region_size, gcfg.overlap, gcfg.jitter, stride, rng, gcfg.grid)
    prompts = [region_prompt(gcfg.prompt, c) for c in cats]
    plan = MosaicPlan(index, mosaic_seed, layout, cats, prompts)
    try:
        plan.token_index = [object_token_index(tokenizer, p, display_name(c)) for p, c in zip(prompts, cats)]
    except PromptError as e:
        plan.reason = f"prompt: {e}"
    return plan


DECODE_MODES = ("canvas", "regions")


class MosaicFusionGenerator:
    """Runs MosaicFusion on batches of planned mosaics with one shared UNet (`gcfg`: cfg.generator; `scfg`:
    cfg.synthetic, what to make: N = num_objects regions per mosaic, images_per_category)."""

    def __init__(self, pipe, gcfg, scfg):
        self.pipe, self.cfg, self.synthetic = pipe, gcfg, scfg
        pipe.set_progress_bar_config(disable=True)
        self.stride = pipe.vae_scale_factor
        att = gcfg.attention
        self.layers = selected_layers(pipe.unet, self.stride, list(att.resolutions), list(att.blocks))
        start, end = att.steps
        steps = int(gcfg.num_inference_steps)
        if not (0 <= int(start) < (steps if end is None else min(int(end), steps + 1))):
            raise ValueError(f"generator.attention.steps={[start, end]} selects no step of {steps}")
        self.window = (int(start), None if end is None else int(end))
        self.decode_mode = str(gcfg.decode)
        if self.decode_mode not in DECODE_MODES:
            raise ValueError(f"generator.decode must be one of {', '.join(DECODE_MODES)}, got {self.decode_mode!r}")

    def plan(self, index, main_categories, mixed_categories, seed) -> MosaicPlan:
        return plan_mosaic(
            index, self.cfg, self.synthetic, main_categories, mixed_categories, self.pipe.tokenizer, self.stride, seed
        )

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        tok = self.pipe.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        enc = self.pipe.text_encoder
        return enc(tok.input_ids.to(enc.device))[0]

    @torch.no_grad()
    def __call__(self, plans: list[MosaicPlan], store: AttentionStore | None = None) -> list[MosaicResult]:
        results = {p.index: MosaicResult(p, reason=p.reason) for p in plans}
        active = [p for p in plans if p.reason is None]
        if active:
            store = store if store is not None else AttentionStore(self.window)
            with capture_cross_attention(self.pipe.unet, store, self.layers):
                latents = self.denoise(active, store)
            for plan, lat in zip(active, latents):
                res = results[plan.index]
                res.image = self.decode(lat, plan.layout)
                try:
                    res.masks = [self.mask(res.image, plan, r, store) for r in range(len(plan.layout.regions))]
                except MaskError as e:
                    res.reason, res.masks = f"mask: {e}", []
        return [results[p.index] for p in plans]

    def mask(self, image, plan: MosaicPlan, r: int, store: AttentionStore) -> np.ndarray:
        region = plan.layout.regions[r]
        maps = {res: m.cpu().numpy() for res, m in store.region_maps((plan.index, r)).items()}
        crop = image[region.top : region.bottom, region.left : region.right]
        try:
            m = region_mask(maps, crop, self.cfg.mask)
        except MaskError as e:
            raise MaskError(f"region {r} ({plan.categories[r]['name']}): {e}") from None
        return expand_to_canvas(m, region, plan.layout.height, plan.layout.width)

    def denoise(self, plans: list[MosaicPlan], store: AttentionStore) -> list[torch.Tensor]:
        pipe, unet = self.pipe, self.pipe.unet
        device, dtype = unet.device, unet.dtype
        s = self.stride
        cond = self.encode([p for plan in plans for p in plan.prompts]).to(dtype)
        uncond = self.encode([self.cfg.negative_prompt]).to(dtype)
        first = {}  # mosaic position -> offset of its regions in `cond`
        offset = 0
        for m, plan in enumerate(plans):
            first[m] = offset
            offset += len(plan.prompts)
        schedulers, latents = [], []
        for plan in plans:
            sched = copy.deepcopy(pipe.scheduler)
            sched.set_timesteps(int(self.cfg.num_inference_steps), device=device)
            schedulers.append(sched)
            gen = torch.Generator("cpu").manual_seed(plan.seed)
            shape = (1, unet.config.in_channels, plan.layout.height // s, plan.layout.width // s)
            latents.append((torch.randn(shape, generator=gen) * sched.init_noise_sigma).to(device, dtype))
        groups = defaultdict(list)  # latent region shape -> [(mosaic, region)], one UNet call per shape
        for m, plan in enumerate(plans):
            for r, reg in enumerate(plan.layout.regions):
                groups[(reg.height // s, reg.width // s)].append((m, r))
        weights = {
            hw: torch.from_numpy(gaussian_weights(*hw, float(self.cfg.blend_sigma))).to(device, dtype) for hw in groups
        }
        g = float(self.cfg.guidance_scale)
        for step, t in enumerate(schedulers[0].timesteps):
            model_in = [sched.scale_model_input(lat, t) for sched, lat in zip(schedulers, latents)]
            eps = [torch.zeros_like(lat) for lat in latents]
            wsum = [torch.zeros_like(lat[:, :1]) for lat in latents]
            for hw, members in groups.items():
                regs = [plans[m].layout.regions[r].latent(s) for m, r in members]
                crops = torch.cat(
                    [model_in[m][:, :, q.top : q.bottom, q.left : q.right] for (m, _), q in zip(members, regs)]
                )
                enc = torch.cat([uncond.expand(len(members), -1, -1), cond[[first[m] + r for m, r in members]]])
                store.call = CaptureCall(
                    [(plans[m].index, r) for m, r in members], [plans[m].token_index[r] for m, r in members], hw, step
                )
                out = unet(torch.cat([crops, crops]), t, encoder_hidden_states=enc).sample
                e_u, e_c = out.chunk(2)
                e = e_u + g * (e_c - e_u)
                w = weights[hw]
                for k, ((m, _), q) in enumerate(zip(members, regs)):
                    eps[m][:, :, q.top : q.bottom, q.left : q.right] += e[k] * w
                    wsum[m][:, :, q.top : q.bottom, q.left : q.right] += w
            store.call = None
            latents = [
                sched.step(e / w, t, lat).prev_sample for sched, e, w, lat in zip(schedulers, eps, wsum, latents)
            ]
        return latents

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, layout: MosaicLayout | None = None) -> np.ndarray:
        """The canvas latent -> (H, W, 3) uint8 image.

        `generator.decode=canvas` (the public code's way) decodes the whole canvas in one VAE call. `regions` decodes
        each region's latent crop on its own and blends the decoded regions with the same Gaussian weights as the
        noise predictions (a tiled decode): the VAE decoder's GroupNorm then normalises each region by its own
        statistics, as for a single image, instead of by the whole canvas's. The toy VAE (trained on single-object
        crops) shifts hues on multi-object canvases (red -> orange/yellow, cyan -> blue; benchmarks/toy_quality.py).
        """
        vae = self.pipe.vae
        scale = vae.config.scaling_factor
        if self.decode_mode == "canvas" or layout is None or len(layout.regions) == 1:
            image = vae.decode(latent.to(vae.dtype) / scale).sample[0].float()
        else:
            s = self.stride
            image = torch.zeros(3, layout.height, layout.width, device=latent.device)
            wsum = torch.zeros(1, layout.height, layout.width, device=latent.device)
            for reg in layout.regions:
                q = reg.latent(s)
                crop = latent[:, :, q.top : q.bottom, q.left : q.right].to(vae.dtype) / scale
                w = torch.from_numpy(gaussian_weights(reg.height, reg.width, float(self.cfg.blend_sigma))).to(image)
                image[:, reg.top : reg.bottom, reg.left : reg.right] += vae.decode(crop).sample[0].float() * w
                wsum[:, reg.top : reg.bottom, reg.left : reg.right] += w
            image = image / wsum
        image = ((image.clamp(-1, 1) + 1) * 127.5).round().byte()
        return image.permute(1, 2, 0).cpu().numpy()
