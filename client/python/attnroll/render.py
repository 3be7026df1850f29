"""Pictures of saliency maps with Pillow and matplotlib's colour maps.

heatmap() colours a map, overlay() upsamples it to an image and
alpha-blends it over it, both with a colour bar on the right; tokens_html()
and tokens_ansi() colour text tokens by saliency.
"""

import html
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

BAR_GAP = 8       # pixels between the picture and the colour bar
BAR_WIDTH = 16
LABEL_WIDTH = 48  # room for the bar's labels


def _colormap(name: str):
    import matplotlib
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise ValueError("colormap: expected a matplotlib colour map (viridis, magma, inferno, "
                         "plasma, cividis, ...), got %r" % (name,)) from None


def _normalised(saliency, symmetric: bool = False) -> Tuple[np.ndarray, float, float]:
    s = np.asarray(saliency, dtype=np.float64)
    s = np.squeeze(s)
    if s.ndim != 2:
        raise ValueError("saliency: expected a 2-D map (e.g. [14, 14]), got shape %s"
                         % (list(np.shape(saliency)),))
    lo, hi = float(np.nanmin(s)), float(np.nanmax(s))
    if symmetric:  # a signed map: 0 in the middle of the colour map
        hi = max(abs(lo), abs(hi))
        lo = -hi
    return (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s), lo, hi


def colourise(values01: np.ndarray, colormap: str = "viridis") -> np.ndarray:
    """uint8 RGB [..., 3] of values in [0, 1] through the colour map."""
    rgba = _colormap(colormap)(np.clip(values01, 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def _with_colour_bar(picture: Image.Image, lo: float, hi: float, colormap: str) -> Image.Image:
    w, h = picture.size
    out = Image.new("RGB", (w + BAR_GAP + BAR_WIDTH + LABEL_WIDTH, h), (255, 255, 255))
    out.paste(picture, (0, 0))
    ramp = np.linspace(1.0, 0.0, h)[:, None].repeat(BAR_WIDTH, axis=1)
    out.paste(Image.fromarray(colourise(ramp, colormap), "RGB"), (w + BAR_GAP, 0))
    draw = ImageDraw.Draw(out)
    x = w + BAR_GAP + BAR_WIDTH + 3
    draw.text((x, 0), "%.3g" % hi, fill=(0, 0, 0))
    draw.text((x, max(0, h - 12)), "%.3g" % lo, fill=(0, 0, 0))
    return out


def heatmap(saliency, size: Optional[Tuple[int, int]] = None, colormap: str = "viridis",
            colour_bar: bool = True, symmetric: bool = False,
            smooth: bool = True) -> Image.Image:
    """The map as a heatmap (min to max over the colour map; with
    symmetric, -max|x| to +max|x| for a signed map), upsampled (bilinear) to
    size=(width, height) when given (nearest cell without smooth), with a
    colour bar."""
    s01, lo, hi = _normalised(saliency, symmetric)
    if size is not None:
        img = Image.fromarray(s01.astype(np.float32), "F").resize(
            size, Image.BILINEAR if smooth else Image.NEAREST)
        s01 = np.asarray(img, dtype=np.float64)
    pic = Image.fromarray(colourise(s01, colormap), "RGB")
    return _with_colour_bar(pic, lo, hi, colormap) if colour_bar else pic


def overlay(saliency, image, alpha: float = 0.5, colormap: str = "viridis",
            colour_bar: bool = True) -> Image.Image:
    """The map upsampled to image's size and alpha-blended over it
    (alpha = the heatmap's weight), with a colour bar. image: a PIL image,
    a path, or an array [H, W, 3] (uint8, or float in [0, 1])."""
    if isinstance(image, str):
        image = Image.open(image)
    if not isinstance(image, Image.Image):
        a = np.asarray(image)
        if a.dtype != np.uint8:
            a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        image = Image.fromarray(a)
    image = image.convert("RGB")
    _, lo, hi = _normalised(saliency)
    heat = heatmap(saliency, image.size, colormap, colour_bar=False)
    pic = Image.blend(image, heat, float(alpha))
    return _with_colour_bar(pic, lo, hi, colormap) if colour_bar else pic


def save_overlay(path: str, saliency, image=None, **kw) -> Image.Image:
    """overlay() (or heatmap() without an image) saved to path (PNG, JPEG,
    ... by its suffix); returns the picture."""
    pic = heatmap(saliency, **kw) if image is None else overlay(saliency, image, **kw)
    pic.save(path)
    return pic


def save_audit_maps(prefix: str, report, scale: int = 16) -> list:
    """The mean maps of an audit report (Client.audit(...).report, or one of
    its groups) as PNGs: PREFIX_mean_baseline.png, PREFIX_mean_candidate.png
    (colour map viridis) and PREFIX_mean_shift.png (candidate - baseline,
    coolwarm, 0 in the middle), each cell scale x scale pixels. Returns the
    paths written."""
    agg = report.get("overall", report)
    paths = []
    for key, cmap, sym in (("mean_baseline", "viridis", False),
                           ("mean_candidate", "viridis", False),
                           ("mean_shift", "coolwarm", True)):
        m = agg.get(key)
        if m is None or np.size(m) == 0:
            continue
        m = np.asarray(m)
        if m.ndim == 1:
            m = m[None]
        path = "%s_%s.png" % (prefix, key)
        heatmap(m, (m.shape[1] * scale, m.shape[0] * scale), cmap, symmetric=sym,
                smooth=False).save(path)
        paths.append(path)
    return paths


def tokens_html(tokens: Sequence[str], saliency, colormap: str = "viridis") -> str:
    """The tokens as HTML spans whose background is their saliency's colour
    (min to max over the colour map) and whose title is the value."""
    s = np.asarray(saliency, dtype=np.float64).ravel()
    if len(tokens) != s.size:
        raise ValueError("tokens: expected one per saliency value (%d), got %d"
                         % (s.size, len(tokens)))
    lo, hi = float(s.min()), float(s.max())
    rgb = colourise((s - lo) / (hi - lo) if hi > lo else np.zeros_like(s), colormap)
    spans = []
    for t, v, (r, g, b) in zip(tokens, s, rgb):
        fg = "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"
        spans.append('<span style="background:#%02x%02x%02x;color:%s" title="%.4g">%s</span>'
                     % (r, g, b, fg, v, html.escape(t)))
    return "<p>" + " ".join(spans) + "</p>\n"


def tokens_ansi(tokens: Sequence[str], saliency, colormap: str = "viridis") -> str:
    """The tokens with 24-bit ANSI background colours, for a terminal."""
    s = np.asarray(saliency, dtype=np.float64).ravel()
    if len(tokens) != s.size:
        raise ValueError("tokens: expected one per saliency value (%d), got %d"
                         % (s.size, len(tokens)))
    lo, hi = float(s.min()), float(s.max())
    rgb = colourise((s - lo) / (hi - lo) if hi > lo else np.zeros_like(s), colormap)
    return " ".join("\x1b[48;2;%d;%d;%dm%s\x1b[0m" % (r, g, b, t)
                    for t, (r, g, b) in zip(tokens, rgb))
