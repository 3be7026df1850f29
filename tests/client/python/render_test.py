#!/usr/bin/python3
"""attnroll.render (Pillow + matplotlib): the PNGs are decoded and their
pixels checked: a planted hot region lands where it should, blended over
the image with the stated alpha, the colour bar runs from the map's maximum
(top) to its minimum, and tokens are coloured by saliency.

Run: PYTHONPATH=BUILD_DIR/python /usr/bin/python3 tests/client/python/render_test.py
"""

import os
import tempfile
import unittest

import matplotlib
import numpy as np
from PIL import Image

from attnroll import render


def cmap(name, v):
    return np.round(np.array(matplotlib.colormaps[name](v)[:3]) * 255)


class RenderTest(unittest.TestCase):
    def setUp(self):
        self.sal = np.zeros((14, 14), np.float32)
        self.sal[2:5, 9:12] = 1.0      # hot: rows 2-4, columns 9-11 of the grid
        self.tmp = tempfile.mkdtemp(prefix="attnroll_render_")

    def tearDown(self):
        for f in os.listdir(self.tmp):
            os.remove(os.path.join(self.tmp, f))
        os.rmdir(self.tmp)

    def test_overlay_puts_the_hot_region_where_it_belongs(self):
        image = np.full((224, 224, 3), 100, np.uint8)
        path = os.path.join(self.tmp, "o.png")
        render.save_overlay(path, self.sal, image, alpha=0.5, colormap="magma")
        pic = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
        self.assertEqual(pic.shape[0], 224)
        self.assertEqual(pic.shape[1], 224 + render.BAR_GAP + render.BAR_WIDTH + render.LABEL_WIDTH)
        hot = 100 * 0.5 + cmap("magma", 1.0) * 0.5
        cold = 100 * 0.5 + cmap("magma", 0.0) * 0.5
        # Grid cell (r, c) covers pixels [16 r, 16 r + 16) x [16 c, 16 c + 16).
        np.testing.assert_allclose(pic[16 * 3 + 8, 16 * 10 + 8], hot, atol=2)
        np.testing.assert_allclose(pic[200, 30], cold, atol=2)
        ys, xs = np.nonzero(np.abs(pic[:, :224] - hot).max(axis=2) < 3)
        self.assertTrue(16 * 2 <= ys.min() and ys.max() < 16 * 5, (ys.min(), ys.max()))
        self.assertTrue(16 * 9 <= xs.min() and xs.max() < 16 * 12, (xs.min(), xs.max()))
        bar_x = 224 + render.BAR_GAP + render.BAR_WIDTH // 2
        np.testing.assert_allclose(pic[0, bar_x], cmap("magma", 1.0), atol=2)
        np.testing.assert_allclose(pic[223, bar_x], cmap("magma", 0.0), atol=2)

    def test_heatmap_without_image(self):
        pic = np.asarray(render.heatmap(self.sal, size=(140, 140), colour_bar=False))
        self.assertEqual(pic.shape, (140, 140, 3))
        np.testing.assert_allclose(pic[35, 105], cmap("viridis", 1.0), atol=2)
        np.testing.assert_allclose(pic[120, 10], cmap("viridis", 0.0), atol=2)

    def test_audit_mean_maps_and_the_signed_shift(self):
        base = np.full((4, 4), 1 / 16, np.float32)
        shift = np.zeros((4, 4), np.float32)
        shift[0, 3], shift[3, 0] = 0.05, -0.025
        report = {"overall": {"mean_baseline": base, "mean_candidate": base + shift,
                              "mean_shift": shift}}
        paths = render.save_audit_maps(os.path.join(self.tmp, "audit"), report, scale=10)
        self.assertEqual([os.path.basename(p) for p in paths],
                         ["audit_mean_baseline.png", "audit_mean_candidate.png",
                          "audit_mean_shift.png"])
        pic = np.asarray(Image.open(paths[2]).convert("RGB"))
        np.testing.assert_allclose(pic[5, 35], cmap("coolwarm", 1.0), atol=2)    # +0.05: top
        np.testing.assert_allclose(pic[35, 5], cmap("coolwarm", 0.25), atol=2)   # -0.025
        np.testing.assert_allclose(pic[15, 15], cmap("coolwarm", 0.5), atol=2)   # 0: the middle

    def test_tokens(self):
        html = render.tokens_html(["a", "<b>", "c"], [0.0, 1.0, 0.5])
        r, g, b = cmap("viridis", 1.0).astype(int)
        self.assertIn('background:#%02x%02x%02x' % (r, g, b), html)
        self.assertIn("&lt;b&gt;", html)
        ansi = render.tokens_ansi(["a", "b"], [0.0, 1.0])
        self.assertIn("\x1b[48;2;%d;%d;%dmb\x1b[0m" % (r, g, b), ansi)
        with self.assertRaises(ValueError):
            render.tokens_html(["a"], [1.0, 2.0])
        with self.assertRaises(ValueError):
            render.heatmap(self.sal, colormap="no-such-map")


if __name__ == "__main__":
    unittest.main()
