"""MosaicFusion generation: plan mosaics, diffuse all regions on one latent canvas, turn attention into masks."""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from mfexp.synthetic import image_seed, objects_per_image

from .attention import AttentionStore, CaptureCall
from .families import make_family
from .layout import MosaicLayout, gaussian_weights, mosaic_layout
from .masks import MaskError, expand_to_canvas, region_mask
from .prompts import PromptError, display_name, region_prompt


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
    index: int, gcfg, scfg, main_categories: list, mixed_categories: list, token_index, align: int, seed: int
) -> MosaicPlan:
    """Main category = index // images_per_category; N-1 mixed ones drawn uniformly; order and layout random.
    `gcfg`: the generator's config (N = num_objects); `scfg`: the synthetic set's (images_per_category);
    `token_index(prompt, name)`: the object token's position; `align`: region coordinates' multiple (pixels)."""
    mosaic_seed = image_seed(seed, index)
    rng = np.random.default_rng(mosaic_seed)
    n = objects_per_image(gcfg.num_objects, seed, index)
    main = main_categories[index // int(scfg.images_per_category)]
    mixed = [mixed_categories[i] for i in rng.integers(len(mixed_categories), size=n - 1)]
    cats = [main, *mixed]
    order = rng.permutation(n)
    cats = [cats[i] for i in order]
    layout = mosaic_layout(
        n, gcfg.region_size, gcfg.overlap, gcfg.jitter, align, rng, gcfg.grid, gcfg.get("jitter_levels")
    )
    prompts = [region_prompt(gcfg.prompt, c) for c in cats]
    plan = MosaicPlan(index, mosaic_seed, layout, cats, prompts)
    try:
        plan.token_index = [token_index(p, display_name(c)) for p, c in zip(prompts, cats)]
    except PromptError as e:
        plan.reason = f"prompt: {e}"
    return plan


def scale_model_input(scheduler, latents: torch.Tensor, t) -> torch.Tensor:
    """The scheduler's input scaling (Euler, LMS: divided by sqrt(sigma^2 + 1)); flow-matching schedulers have none."""
    scale = getattr(scheduler, "scale_model_input", None)
    return latents if scale is None else scale(latents, t)


def check_guidance_window(window) -> None:
    """`generator.guidance_window`: null, or [low, high, scale] with 0 <= low < high <= 1 and scale >= 0."""
    if window is None:
        return
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window)
    if not (numbers and len(window) == 3 and 0 <= window[0] < window[1] <= 1 and window[2] >= 0):
        raise ValueError("must be null or [low, high, scale] with 0 <= low < high <= 1 and scale >= 0")


def guidance_at(scale: float, window, t, num_train_timesteps: int) -> float:
    """The classifier-free guidance scale of the step at timestep `t`: `window`'s scale where the noise level
    t / num_train_timesteps lies in [low, high] (the flow time s for flow-matching schedulers, t / 1000 for SD's
    DDPM ones), `scale` elsewhere and when `window` is None. Guidance only in a middle interval of noise levels:
    Kynkaanniemi et al. 2024."""
    if window is None:
        return float(scale)
    low, high, inside = (float(v) for v in window)
    level = float(t) / float(num_train_timesteps)
    return inside if low <= level <= high else float(scale)


DECODE_MODES = ("canvas", "regions")
DECODE_PIXELS = 2**21  # image pixels per VAE decode call (a batch of canvases or regions is split to stay below)


class MosaicFusionGenerator:
    """Runs MosaicFusion on batches of planned mosaics with one shared denoiser (`gcfg`: cfg.generator, N =
    num_objects regions per mosaic; `scfg`: cfg.synthetic, what to make: images_per_category, ...). What differs
    between model families (SD 1.x, SDXL, SD3, FLUX) is behind `self.family` (mfexp/mosaicfusion/families/).

    A batch of mosaics is denoised together: the region crops of every mosaic are grouped by shape, one denoiser
    call per shape and step (`generator.jitter_levels` makes regions of different mosaics share shapes); mosaics of
    one canvas shape share one scheduler step on their stacked latents."""

    def __init__(self, pipe, gcfg, scfg):
        self.pipe, self.cfg, self.synthetic = pipe, gcfg, scfg
        pipe.set_progress_bar_config(disable=True)
        self.family = make_family(pipe, gcfg)
        self.stride = self.family.stride
        start, end = gcfg.attention.steps
        steps = int(gcfg.num_inference_steps)
        if not (0 <= int(start) < (steps if end is None else min(int(end), steps + 1))):
            raise ValueError(f"generator.attention.steps={[start, end]} selects no step of {steps}")
        self.window = (int(start), None if end is None else int(end))
        try:
            check_guidance_window(gcfg.get("guidance_window"))
        except ValueError as e:
            raise ValueError(f"generator.guidance_window={gcfg.get('guidance_window')} {e}") from None
        self.decode_mode = str(gcfg.decode)
        if self.decode_mode not in DECODE_MODES:
            raise ValueError(f"generator.decode must be one of {', '.join(DECODE_MODES)}, got {self.decode_mode!r}")

    def plan(self, index, main_categories, mixed_categories, seed) -> MosaicPlan:
        return plan_mosaic(
            index,
            self.cfg,
            self.synthetic,
            main_categories,
            mixed_categories,
            self.family.token_index,
            self.family.align,
            seed,
        )

    @torch.no_grad()
    def __call__(self, plans: list[MosaicPlan], store: AttentionStore | None = None) -> list[MosaicResult]:
        results = {p.index: MosaicResult(p, reason=p.reason) for p in plans}
        active = [p for p in plans if p.reason is None]
        if active:
            store = store if store is not None else AttentionStore(self.window)
            with self.family.capture(store):
                latents = self.denoise(active, store)
            for plan, image in zip(active, self.decode(active, latents)):
                res = results[plan.index]
                res.image = image
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

    @torch.no_grad()
    def denoise(self, plans: list[MosaicPlan], store: AttentionStore) -> list[torch.Tensor]:
        """The canvas latent of each plan (1, C, h, w) after all steps.

        1. Encode every region's prompt and the negative prompt.
        2. Group the mosaics by canvas shape: each group's initial noise (from each plan's seed) is stacked under one
           scheduler. Group the regions of all mosaics by latent shape (buckets).
        3. Each step: one denoiser call per bucket on its crops; each prediction is added into its canvas with the
           region's Gaussian weight; then one scheduler step per canvas group on the weighted average.
        """
        fam, s = self.family, self.stride
        cond = fam.encode([p for plan in plans for p in plan.prompts])
        uncond = fam.encode([self.cfg.negative_prompt])
        first = np.cumsum([0] + [len(plan.prompts) for plan in plans])  # mosaic -> its first row in `cond`
        steps = int(self.cfg.num_inference_steps)
        nominal = tuple(int(v) // s for v in self.cfg.region_size)

        canvases = defaultdict(list)  # latent canvas shape -> mosaics (positions in `plans`)
        for m, plan in enumerate(plans):
            canvases[(plan.layout.height // s, plan.layout.width // s)].append(m)
        where = {m: (hw, j) for hw, ms in canvases.items() for j, m in enumerate(ms)}
        schedulers, latents = {}, {}
        for hw, ms in canvases.items():
            sched = copy.deepcopy(self.pipe.scheduler)
            fam.set_timesteps(sched, steps, nominal)
            noise = torch.cat([fam.initial_noise(hw, plans[m].seed) for m in ms])
            sigma = getattr(sched, "init_noise_sigma", 1.0)  # flow matching starts at sigma 1
            schedulers[hw], latents[hw] = sched, (noise * sigma).to(fam.device, fam.dtype)

        buckets = defaultdict(list)  # latent region shape -> [(mosaic, region)], one denoiser call per step
        for m, plan in enumerate(plans):
            for r, reg in enumerate(plan.layout.regions):
                buckets[(reg.height // s, reg.width // s)].append((m, r))
        weights = {
            hw: torch.from_numpy(gaussian_weights(*hw, float(self.cfg.blend_sigma))).to(fam.device, fam.dtype)
            for hw in buckets
        }
        first_scheduler = next(iter(schedulers.values()))
        timesteps, num_train = first_scheduler.timesteps, int(first_scheduler.config.num_train_timesteps)
        guidance_window = self.cfg.get("guidance_window")
        for step, t in enumerate(timesteps):
            scale = guidance_at(self.cfg.guidance_scale, guidance_window, t, num_train)
            model_in = {hw: scale_model_input(schedulers[hw], lat, t) for hw, lat in latents.items()}
            eps = {hw: torch.zeros_like(lat) for hw, lat in latents.items()}
            wsum = {hw: torch.zeros_like(lat[:, :1]) for hw, lat in latents.items()}
            for shape, members in buckets.items():
                boxes = [plans[m].layout.regions[r].latent(s) for m, r in members]
                crops = torch.cat(
                    [
                        model_in[where[m][0]][where[m][1] : where[m][1] + 1, :, q.top : q.bottom, q.left : q.right]
                        for (m, _), q in zip(members, boxes)
                    ]
                )
                rows = [int(first[m]) + r for m, r in members]
                store.call = CaptureCall(
                    [(plans[m].index, r) for m, r in members],
                    [plans[m].token_index[r] for m, r in members],
                    shape,
                    step,
                )
                e = fam.predict(crops, t, {k: v[rows] for k, v in cond.items()}, uncond, boxes, scale)
                w = weights[shape]
                for k, ((m, _), q) in enumerate(zip(members, boxes)):
                    hw, j = where[m]
                    eps[hw][j, :, q.top : q.bottom, q.left : q.right] += e[k] * w
                    wsum[hw][j, :, q.top : q.bottom, q.left : q.right] += w
            store.call = None
            latents = {hw: schedulers[hw].step(eps[hw] / wsum[hw], t, lat).prev_sample for hw, lat in latents.items()}
        return [latents[where[m][0]][where[m][1] : where[m][1] + 1] for m in range(len(plans))]

    @torch.no_grad()
    def decode(self, plans: list[MosaicPlan], latents: list[torch.Tensor]) -> list[np.ndarray]:
        """Canvas latents -> (H, W, 3) uint8 images, in batched VAE calls.

        `generator.decode=canvas` (the public code's way) decodes each whole canvas. `regions` decodes each region's
        latent crop on its own and blends the decoded regions with the same Gaussian weights as the noise
        predictions (a tiled decode): the VAE decoder's GroupNorm then normalises each region by its own statistics,
        as for a single image, instead of by the whole canvas's (the toy VAE, trained on single-object crops, shifts
        hues on multi-object canvases: benchmarks/toy_quality.py).
        """
        s = self.stride
        pieces = []  # (mosaic, pixel Region or None for the whole canvas, latent crop)
        for m, (plan, lat) in enumerate(zip(plans, latents)):
            if self.decode_mode == "canvas" or len(plan.layout.regions) == 1:
                pieces.append((m, None, lat))
            else:
                for reg in plan.layout.regions:
                    q = reg.latent(s)
                    pieces.append((m, reg, lat[:, :, q.top : q.bottom, q.left : q.right]))
        by_shape = defaultdict(list)
        for piece in pieces:
            by_shape[tuple(piece[2].shape[-2:])].append(piece)
        images = [torch.zeros(3, p.layout.height, p.layout.width, device=lat.device) for p, lat in zip(plans, latents)]
        wsums = [torch.zeros(1, p.layout.height, p.layout.width, device=lat.device) for p, lat in zip(plans, latents)]
        for (h, w), group in by_shape.items():
            chunk = max(1, DECODE_PIXELS // (h * w * s * s))
            for c in range(0, len(group), chunk):
                part = group[c : c + chunk]
                decoded = self.family.decode(torch.cat([crop for _, _, crop in part]))
                for (m, reg, _), img in zip(part, decoded):
                    if reg is None:
                        images[m] += img
                        wsums[m] += 1
                    else:
                        wt = torch.from_numpy(gaussian_weights(reg.height, reg.width, float(self.cfg.blend_sigma)))
                        images[m][:, reg.top : reg.bottom, reg.left : reg.right] += img * wt.to(img)
                        wsums[m][:, reg.top : reg.bottom, reg.left : reg.right] += wt.to(img)
        return [
            ((img / wsum).clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).cpu().numpy())
            for img, wsum in zip(images, wsums)
        ]
