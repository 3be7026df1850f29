"""The independent reference of the CLI's pictures (docs/conventions.md,
"Pictures (client side)"): the map scaled to [0, 1] (centred on zero for a
diverging colour map), upsampled with torch's bilinear interpolation
(align_corners=False), coloured by matplotlib's colour map (bytes=True) and
blended over the image as Pillow decodes it; the colour bar and the PNG's
text chunks. Used by pictures_test.py and monitor_test.py.
Uses Debian's /usr/bin/python3 with python3-numpy, -pil, -matplotlib, -torch.
"""

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image


def scaled(values, diverging=False):
    v = np.asarray(values, dtype=np.float64)
    lo, hi = v.min(), v.max()
    if diverging:
        m = max(abs(lo), abs(hi))
        lo, hi = -m, m
    if hi > lo:
        return (v - lo) / (hi - lo), lo, hi
    return np.full(v.shape, 0.5 if diverging else 0.0), lo, hi


def expected_picture(map2d, cmap, image=None, alpha=0.5, cell=16, diverging=False):
    """The heatmap part, [H, W, 3] uint8, recomputed independently."""
    t, _, _ = scaled(map2d, diverging)
    h, w = t.shape
    size = image.shape[:2] if image is not None else (h * cell, w * cell)
    up = torch.nn.functional.interpolate(torch.from_numpy(t)[None, None], size=size, mode="bilinear",
                                         align_corners=False)[0, 0].numpy()
    heat = colormaps[cmap](up, bytes=True)[..., :3].astype(np.float64)
    if image is None:
        return heat.astype(np.uint8)
    out = (1 - alpha) * image.astype(np.float64) + alpha * heat
    return np.floor(out + 0.5).clip(0, 255).astype(np.uint8)


def bar_geometry(width):
    return width + max(4, width // 50), max(8, width // 20)


def assert_picture(test, png, map2d, cmap, image=None, alpha=0.5, diverging=False):
    """Decodes png and checks, with `test`'s assertions, the heatmap part pixel
    by pixel, the gap, the colour bar's rows and the text chunks; returns the
    decoded array."""
    with Image.open(png) as im:
        im.load()
    test.assertEqual(im.mode, "RGB")
    got = np.asarray(im)
    want = expected_picture(map2d, cmap, image, alpha, diverging=diverging)
    H, W = want.shape[:2]
    x0, bar = bar_geometry(W)
    test.assertEqual(got.shape, (H, x0 + bar, 3))
    diff = np.abs(got[:, :W].astype(int) - want.astype(int))
    # A value on the edge of two table entries may round either way in
    # float64 here and there; everything else is exact.
    test.assertGreaterEqual(np.mean(diff.max(-1) == 0), 0.995, png)
    test.assertLessEqual(diff.max(), 8, png)
    test.assertTrue((got[:, W:x0] == 255).all(), "the gap is white")
    lut = colormaps[cmap](np.arange(256), bytes=True)[:, :3]
    rows = np.rint(255.0 * (H - 1 - np.arange(H)) / (H - 1)).astype(int)
    np.testing.assert_array_equal(got[:, x0:x0 + bar], np.repeat(lut[rows][:, None], bar, axis=1))
    np.testing.assert_array_equal(got[0, x0], lut[255])
    np.testing.assert_array_equal(got[-1, x0], lut[0])
    _, lo, hi = scaled(map2d, diverging)
    test.assertEqual(im.text["attnroll.colormap"], cmap)
    test.assertEqual(im.text["attnroll.grid"], "%dx%d" % map2d.shape)
    # The range of the float32 map, printed with 9 significant digits.
    test.assertAlmostEqual(float(im.text["attnroll.min"]), lo, delta=1e-6 * max(1e-3, abs(lo)))
    test.assertAlmostEqual(float(im.text["attnroll.max"]), hi, delta=1e-6 * max(1e-3, abs(hi)))
    return got
