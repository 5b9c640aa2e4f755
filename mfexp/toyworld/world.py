"""The toy world's vocabulary and pure rendering functions.

Categories are ``colour x shape`` (6 x 8 = 48 by default), named LVIS style (``red_circle``) with LVIS fields.
Rendering is pure: every function takes an explicit ``numpy.random.Generator`` and returns arrays; masks are exact
(objects are drawn without anti-aliasing, so the mask is precisely the set of object pixels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# name -> RGB (hues far apart, all saturated, so they stay distinct from the grey-ish backgrounds and each other)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (235, 215, 35),
    "green": (45, 175, 60),
    "cyan": (40, 200, 215),
    "blue": (45, 75, 225),
    "purple": (165, 55, 210),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon", "heart")

# short LVIS-style definitions; "{colour}" is filled in
SHAPE_DEFS: dict[str, str] = {
    "circle": "a round flat {colour} shape",
    "square": "a flat {colour} shape with four equal sides",
    "triangle": "a flat {colour} shape with three sides",
    "star": "a {colour} shape with five points",
    "cross": "a {colour} shape like a plus sign",
    "ring": "a hollow round {colour} band",
    "hexagon": "a flat {colour} shape with six sides",
    "heart": "a {colour} shape like a heart symbol",
}

SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("disc", "disk"),
    "square": ("box",),
    "triangle": (),
    "star": (),
    "cross": ("plus_sign",),
    "ring": ("hoop", "annulus"),
    "hexagon": (),
    "heart": (),
}

CAPTION_TEMPLATE = "a photo of a single {name}"
CAPTION_WITH_DEF_TEMPLATE = "a photo of a single {name}, {definition}"


# ----------------------------------------------------------------------------------------------------------------
# categories
# ----------------------------------------------------------------------------------------------------------------
def category_name(colour: str, shape: str) -> str:
    return f"{colour}_{shape}"


def split_name(name: str) -> tuple[str, str]:
    """``"red_circle"`` -> ``("red", "circle")``; raises ``ValueError`` for names outside the toy world."""
    colour, _, shape = name.partition("_")
    if colour not in COLOURS or shape not in SHAPES:
        raise ValueError(f"not a toy-world category name: {name!r}")
    return colour, shape


def build_categories(colours: Sequence[str] | None = None, shapes: Sequence[str] | None = None) -> list[dict]:
    """LVIS category dicts (counts zero, frequency ``r``; the dataset fills them from the generated images).

    Order: shape-major (all colours of the first shape, then the next shape...), ids 1-based.
    """
    colours = list(COLOURS) if colours is None else list(colours)
    shapes = list(SHAPES) if shapes is None else list(shapes)
    for c in colours:
        if c not in COLOURS:
            raise ValueError(f"unknown toy-world colour {c!r}; known: {sorted(COLOURS)}")
    for s in shapes:
        if s not in SHAPES:
            raise ValueError(f"unknown toy-world shape {s!r}; known: {list(SHAPES)}")
    if not colours or not shapes:
        raise ValueError("the toy world needs at least one colour and one shape")
    cats = []
    for shape in shapes:
        for colour in colours:
            name = category_name(colour, shape)
            cats.append(
                {
                    "id": len(cats) + 1,
                    "name": name,
                    "synonyms": [name] + [f"{colour}_{syn}" for syn in SHAPE_SYNONYMS[shape]],
                    "def": SHAPE_DEFS[shape].format(colour=colour),
                    "synset": f"{name}.n.01",
                    "frequency": "r",
                    "image_count": 0,
                    "instance_count": 0,
                }
            )
    return cats


def caption(name: str, with_def: bool = False) -> str:
    """The MosaicFusion region prompt for a toy category (``name`` with ``_`` -> space, optional definition)."""
    colour, shape = split_name(name)
    text = CAPTION_TEMPLATE.format(name=f"{colour} {shape}")
    if with_def:
        text = CAPTION_WITH_DEF_TEMPLATE.format(
            name=f"{colour} {shape}", definition=SHAPE_DEFS[shape].format(colour=colour)
        )
    return text


def vocabulary_words() -> list[str]:
    """Every word that appears in toy-world names, synonyms, definitions and captions (for the tokenizer)."""
    words: list[str] = []
    texts = [CAPTION_TEMPLATE, CAPTION_WITH_DEF_TEMPLATE, "shape", "photo", "single"]
    texts += list(COLOURS) + list(SHAPES)
    texts += [d.format(colour="") for d in SHAPE_DEFS.values()]
    texts += [s.replace("_", " ") for syns in SHAPE_SYNONYMS.values() for s in syns]
    for t in texts:
        for w in t.replace("{name}", " ").replace("{definition}", " ").replace(",", " ").split():
            if w not in words:
                words.append(w)
    return words


# ----------------------------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------------------------
def _regular_polygon(n: int, radius: float, phase_deg: float = 90.0) -> np.ndarray:
    ang = np.deg2rad(phase_deg + 360.0 * np.arange(n) / n)
    return np.stack([radius * np.cos(ang), radius * np.sin(ang)], axis=1)


def _star_polygon(points: int = 5, outer: float = 0.97, inner: float = 0.42) -> np.ndarray:
    ang = np.deg2rad(90.0 + 180.0 * np.arange(2 * points) / points)
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1)


def _points_in_polygon(x: np.ndarray, y: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points."""
    inside = np.zeros(x.shape, dtype=bool)
    n = len(verts)
    for i in range(n):
        x0, y0 = verts[i]
        x1, y1 = verts[(i + 1) % n]
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < xint)
    return inside


def shape_mask(shape: str, size: int, rotation: float = 0.0) -> np.ndarray:
    """Boolean ``size x size`` mask of ``shape`` inscribed in the square, rotated by ``rotation`` degrees."""
    if shape not in SHAPES:
        raise ValueError(f"unknown toy-world shape {shape!r}")
    size = int(size)
    if size < 1:
        raise ValueError(f"object size must be >= 1 pixel, got {size}")
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    xx, yy = np.meshgrid(c, -c)  # y up
    t = np.deg2rad(rotation)
    u = np.cos(t) * xx + np.sin(t) * yy
    v = -np.sin(t) * xx + np.cos(t) * yy
    r2 = u * u + v * v
    if shape == "circle":
        m = r2 <= 0.95**2
    elif shape == "ring":
        m = (r2 <= 0.97**2) & (r2 >= 0.55**2)
    elif shape == "square":
        m = (np.abs(u) <= 0.68) & (np.abs(v) <= 0.68)
    elif shape == "triangle":
        m = _points_in_polygon(u, v - 0.12, _regular_polygon(3, 0.97))
    elif shape == "star":
        m = _points_in_polygon(u, v - 0.05, _star_polygon())
    elif shape == "cross":
        m = ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.92)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.92))
    elif shape == "hexagon":
        m = _points_in_polygon(u, v, _regular_polygon(6, 0.95, phase_deg=0.0))
    else:  # heart: (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, y in [-1, 1.25]
        x = u * 1.2
        y = v * 1.2 + 0.125
        m = (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0
    return m


# ----------------------------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------------------------
def _category_parts(category: str | Mapping) -> tuple[str, str]:
    name = category if isinstance(category, str) else category["name"]
    return split_name(name)


def render_object(
    category: str | Mapping, size: int, rotation: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Render one object on a ``size x size`` patch.

    Returns ``(rgb, mask)``: ``rgb`` uint8 ``(size, size, 3)`` (meaningful where ``mask``), ``mask`` bool
    ``(size, size)`` -- exactly the pixels the object covers. The colour gets a mild random brightness, a linear
    shading and a little pixel noise, so instances differ while the hue stays the category's.
    """
    colour, shape = _category_parts(category)
    mask = shape_mask(shape, size, rotation)
    base = np.asarray(COLOURS[colour], dtype=np.float32)
    brightness = rng.uniform(0.85, 1.1)
    g = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    shade = 1.0 + 0.1 * (np.cos(ang) * g[None, :] + np.sin(ang) * g[:, None])
    noise = rng.normal(0.0, 5.0, size=(size, size, 3)).astype(np.float32)
    rgb = base[None, None, :] * (brightness * shade)[..., None] + noise
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    rgb[~mask] = 0
    return rgb, mask


BACKGROUND_KINDS = ("noise", "stripes", "gradient", "blobs")


def _smooth_noise(h: int, w: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.normal(0.0, 1.0, size=(gh, gw)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((w, h), resample=Image.BICUBIC)
    out = np.asarray(img, dtype=np.float32)
    return out / (np.abs(out).max() + 1e-6)


def render_background(height: int, width: int, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """A textured, low-saturation, mid-grey-ish background, uint8 ``(height, width, 3)``."""
    kind = kind if kind is not None else BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    h, w = int(height), int(width)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "noise":
        pattern = _smooth_noise(h, w, int(rng.integers(4, 17)), rng)
    elif kind == "stripes":
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(6, 24)
        pattern = np.sin((np.cos(ang) * xx + np.sin(ang) * yy) * 2 * np.pi / period + rng.uniform(0, 2 * np.pi))
    elif kind == "gradient":
        ang = rng.uniform(0, 2 * np.pi)
        proj = np.cos(ang) * (xx / max(w, 1)) + np.sin(ang) * (yy / max(h, 1))
        pattern = 2.0 * (proj - proj.min()) / (np.ptp(proj) + 1e-6) - 1.0
    elif kind == "blobs":
        pattern = np.tanh(3.0 * _smooth_noise(h, w, int(rng.integers(16, 40)), rng))
    else:
        raise ValueError(f"unknown background kind {kind!r}; known: {BACKGROUND_KINDS}")
    grey = rng.uniform(95, 160)
    tint = rng.uniform(-12, 12, size=3)
    amp = rng.uniform(12, 30)
    rgb = grey + tint[None, None, :] + amp * pattern[..., None] + rng.normal(0.0, 3.0, size=(h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def paste(canvas: np.ndarray, rgb: np.ndarray, mask: np.ndarray, top: int, left: int) -> np.ndarray:
    """Paste an object patch onto ``canvas`` in place (clipped at the borders); returns the object's
    full-canvas mask."""
    H, W = canvas.shape[:2]
    h, w = mask.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, H), min(left + w, W)
    full = np.zeros((H, W), dtype=bool)
    if y1 <= y0 or x1 <= x0:
        return full
    sub_m = mask[y0 - top : y1 - top, x0 - left : x1 - left]
    sub_rgb = rgb[y0 - top : y1 - top, x0 - left : x1 - left]
    region = canvas[y0:y1, x0:x1]
    region[sub_m] = sub_rgb[sub_m]
    full[y0:y1, x0:x1] = sub_m
    return full


def render_single_object_image(
    category: str | Mapping,
    image_size: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.35, 0.75),
    max_offset: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """One object roughly centred (random scale, offset, rotation) on a textured background: ``(rgb, mask)``."""
    rgb = render_background(image_size, image_size, rng)
    size = max(4, int(round(rng.uniform(*scale_range) * image_size)))
    cy = image_size / 2 + rng.uniform(-max_offset, max_offset) * image_size
    cx = image_size / 2 + rng.uniform(-max_offset, max_offset) * image_size
    obj, m = render_object(category, size, rng.uniform(0, 360), rng)
    top = int(round(cy - size / 2))
    left = int(round(cx - size / 2))
    top = min(max(top, 0), image_size - size)
    left = min(max(left, 0), image_size - size)
    mask = paste(rgb, obj, m, top, left)
    return rgb, mask


# ----------------------------------------------------------------------------------------------------------------
# reference annotator: exact-enough segmentation and classification of toy-world objects from pixels
# ----------------------------------------------------------------------------------------------------------------
def segment_saturated(rgb: np.ndarray, min_saturation: int = 70, largest: bool = True) -> np.ndarray:
    """Object pixels of a toy-world image: saturated colour (objects) vs grey-ish background.

    With ``largest`` only the largest 8-connected component is kept (single-object images). On the toy world's own
    renders this recovers the object masks exactly.
    """
    rgb = np.asarray(rgb).astype(np.int16)
    m = (rgb.max(-1) - rgb.min(-1)) > min_saturation
    if largest and m.any():
        from scipy import ndimage

        lab, n = ndimage.label(m, structure=np.ones((3, 3), dtype=int))
        if n > 1:
            sizes = np.bincount(lab.ravel())[1:]
            m = lab == (1 + int(np.argmax(sizes)))
    return m


def _hue(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    d = np.maximum(mx - mn, 1e-9)
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return h * 60.0


def classify_colour(rgb: np.ndarray, mask: np.ndarray) -> str:
    """The toy colour whose hue is nearest to the median hue of the masked pixels."""
    hues = _hue(np.asarray(rgb)[mask])
    ang = np.deg2rad(hues)
    mean = np.rad2deg(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())) % 360
    ref = {c: float(_hue(np.array(v))) for c, v in COLOURS.items()}
    return min(ref, key=lambda c: min(abs(ref[c] - mean), 360 - abs(ref[c] - mean)))


_TEMPLATES: dict = {}


def _shape_templates(size: int = 40, step: int = 5):
    if (size, step) not in _TEMPLATES:
        names, masks = [], []
        for s in SHAPES:
            for r in range(0, 360, step):
                names.append(s)
                masks.append(shape_mask(s, size, r))
        masks = np.stack(masks)
        yy, xx = np.mgrid[0:size, 0:size]
        area = masks.sum((1, 2)).astype(np.float64)
        cy = (masks * yy).sum((1, 2)) / area
        cx = (masks * xx).sum((1, 2)) / area
        _TEMPLATES[(size, step)] = (names, masks, area, cy, cx)
    return _TEMPLATES[(size, step)]


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """Nearest toy shape by template matching (centroid + area normalised, all rotations): ``(shape, IoU)``."""
    mask = np.asarray(mask, dtype=bool)
    if mask.sum() < 4:
        return SHAPES[0], 0.0
    names, tmpl, area_t, cy_t, cx_t = _shape_templates()
    size = tmpl.shape[-1]
    ys, xs = np.nonzero(mask)
    cy_q, cx_q, area_q = ys.mean(), xs.mean(), float(len(ys))
    scale = np.sqrt(area_q / area_t)  # template px -> query px
    g = np.arange(size, dtype=np.float64)
    qy = cy_q + (g[None, :, None] - cy_t[:, None, None]) * scale[:, None, None]
    qx = cx_q + (g[None, None, :] - cx_t[:, None, None]) * scale[:, None, None]
    iy, ix = np.round(qy).astype(int), np.round(qx).astype(int)
    H, W = mask.shape
    inb = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    sampled = np.zeros(inb.shape, dtype=bool)
    sampled[inb] = mask[np.clip(iy, 0, H - 1), np.clip(ix, 0, W - 1)][inb]
    inter = (sampled & tmpl).sum((1, 2))
    union = (sampled | tmpl).sum((1, 2))
    iou = inter / np.maximum(union, 1)
    best = int(np.argmax(iou))
    return names[best], float(iou[best])
