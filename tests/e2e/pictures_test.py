"""Pictures end to end: `attnroll explain --png/--image/--colormap/--alpha`,
`--tokens/--html/--ansi`, `attnroll audit --pictures` and `attnroll demo`,
against a real attnroll-server.  The written PNGs are decoded with Pillow and
every pixel is checked against an independent recomputation: the map scaled to
[0, 1], upsampled with torch's bilinear interpolation (align_corners=False),
coloured by matplotlib's colour map (bytes=True) and blended over the image as
decoded by Pillow.  A planted hot cell must land in its block of pixels, the
colour bar's ends must be the table's ends, and bad options get exact errors.
Uses Debian's /usr/bin/python3 with python3-numpy, -pil, -matplotlib, -torch.
"""

import html
import os
import pty
import re
import subprocess
import sys

import numpy as np
from matplotlib import colormaps
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402
import numpy_reference as ref  # noqa: E402
import picture_reference as pics  # noqa: E402

GRID = (6, 8)
N = 1 + GRID[0] * GRID[1]
NAMES = "viridis, magma, inferno, plasma, gray or coolwarm"


def planted_attention(rng, hot, L=2, H=2, n=N, grid_w=GRID[1], boost=4.0):
    """[L, H, n, n]: row softmax of N(0, 1) logits, +boost on the key of patch `hot`."""
    z = rng.normal(size=(L, H, n, n))
    z[..., 1 + hot[0] * grid_w + hot[1]] += boost
    return ref.softmax(z).astype(np.float32)


class PicturesTest(e2e_harness.ServerTestCase):
    tmp_prefix = "attnroll_pictures_"

    def path(self, name):
        return os.path.join(self.tmp, name)

    def assert_picture(self, png, map2d, cmap, image=None, alpha=0.5, diverging=False):
        return pics.assert_picture(self, png, map2d, cmap, image, alpha, diverging)

    def explain_png(self, name, att, extra):
        att_path = self._write(name + "_att", att)
        out = self.path(name + ".npy")
        png = self.path(name + ".png")
        res = self.cli_ok(name, ["explain", "--attention", att_path, "--prefix", 1, "--grid",
                                 "%dx%d" % GRID, "--out", out, "--png", png] + extra)
        got_map = self.load_float32(out, name)
        want_map = ref.rollout_maps(att, prefix=1, grid=GRID)
        np.testing.assert_allclose(got_map, want_map, rtol=1e-5, atol=1e-7)
        return got_map[0], png, res

    def test_planted_cell_lands_in_its_block_over_a_png(self):
        rng = np.random.default_rng(1)
        hot = (2, 5)
        att = planted_attention(rng, hot)
        # 21 pixels a cell: pixel 21 r + 10 is cell r's centre exactly.
        image = rng.integers(0, 256, size=(GRID[0] * 21, GRID[1] * 21, 3), dtype=np.uint8)
        Image.fromarray(image).save(self.path("in.png"))
        map2d, png, res = self.explain_png("over_png", att, ["--image", self.path("in.png"),
                                                           "--colormap", "magma", "--alpha", "0.6"])
        self.assertEqual(np.unravel_index(np.argmax(map2d), GRID), hot)
        got = self.assert_picture(png, map2d, "magma", image, 0.6)
        y, x = 21 * hot[0] + 10, 21 * hot[1] + 10
        top = colormaps["magma"](255, bytes=True)[:3]
        want = np.floor(0.4 * image[y, x] + 0.6 * np.array(top, dtype=np.float64) + 0.5)
        np.testing.assert_array_equal(got[y, x], want)
        # The hottest heat lies in the hot cell's block of pixels.
        t = pics.expected_picture(map2d, "gray", None, cell=21)[..., 0]
        ys, xs = np.nonzero(t == t.max())
        self.assertTrue(((ys // 21 == hot[0]) & (xs // 21 == hot[1])).all())
        self.assertIn("wrote %s: 180 x 126 PNG, the 6 x 8 map over %s, magma from" % (png, self.path("in.png")),
                      res.stdout)

    def test_map_alone_and_over_a_jpeg(self):
        rng = np.random.default_rng(2)
        att = planted_attention(rng, (4, 1))
        map2d, png, _ = self.explain_png("alone", att, [])
        self.assert_picture(png, map2d, "viridis")
        with Image.open(png) as im:
            self.assertEqual(im.size, (128 + 4 + 8, 96))
        yy, xx = np.mgrid[0:90, 0:100]
        photo = np.dstack([xx * 2, yy * 2, (xx + yy)]).astype(np.uint8)
        Image.fromarray(photo).save(self.path("in.jpg"), quality=92)
        decoded = np.asarray(Image.open(self.path("in.jpg")).convert("RGB"))
        map2d, png, _ = self.explain_png("over_jpeg", att, ["--image", self.path("in.jpg"),
                                                            "--colormap", "gray"])
        self.assert_picture(png, map2d, "gray", decoded, 0.5)

    def test_tokens_html_and_ansi(self):
        rng = np.random.default_rng(3)
        tokens = ["[CLS]", "the", "<b>cat</b>", "sat", "on & off", "mat\x1b[31m"]
        n = len(tokens)
        z = rng.normal(size=(3, 2, n, n))
        z[..., 2] += 3.0
        att = ref.softmax(z).astype(np.float32)
        att_path = self._write("text_att", att)
        tok_path = self.path("tokens.txt")
        with open(tok_path, "w") as f:
            f.write("\n".join(tokens) + "\n")
        out, page = self.path("text.npy"), self.path("text.html")
        res = self.cli_ok("tokens", ["explain", "--attention", att_path, "--prefix", 1, "--out", out,
                                     "--tokens", tok_path, "--html", page, "--ansi", "always",
                                     "--colormap", "plasma"])
        values = ref.rollout_maps(att, prefix=1)[0]
        np.testing.assert_allclose(self.load_float32(out, "tokens")[0], values, rtol=1e-5, atol=1e-7)
        t, _, _ = pics.scaled(self.load_float32(out, "tokens")[0])
        colours = colormaps["plasma"](t, bytes=True)[:, :3]
        with open(page) as f:
            page_text = f.read()
        spans = re.findall(r'<span class="t" style="background:#([0-9a-f]{6});color:(#[0-9a-f]{6})" '
                           r'title="([^"]*)">(.*?)</span>', page_text)
        self.assertEqual(len(spans), n - 1)
        for (bg, fg, title, text), c, tok, v in zip(spans, colours, tokens[1:], values):
            self.assertEqual(bg, "%02x%02x%02x" % tuple(c))
            luma = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
            self.assertEqual(fg, "#000000" if luma > 127.5 else "#ffffff")
            self.assertEqual(html.unescape(text), tok)
            self.assertAlmostEqual(float(title), v, delta=1e-5 * abs(v))
        self.assertIn("&lt;b&gt;cat&lt;/b&gt;", page_text)
        ansi = res.stdout.splitlines()[0]
        found = re.findall(r"\x1b\[48;2;(\d+);(\d+);(\d+)m\x1b\[38;2;\d+;\d+;\d+m(.*?)\x1b\[0m", ansi)
        self.assertEqual([tuple(int(v) for v in f[:3]) for f in found], [tuple(int(v) for v in c) for c in colours])
        self.assertEqual([f[3] for f in found], ["the", "<b>cat</b>", "sat", "on & off", "mat[31m"])
        self.assertEqual(ansi.count("\x1b"), 3 * (n - 1), "a token's own escape bytes are dropped")
        # On a terminal, colours by default (auto); with --ansi never, none.
        for ansi_flag, coloured in (([], True), (["--ansi", "never", "--html", page], False)):
            master, slave = pty.openpty()
            proc = subprocess.run([self.cli_bin, "--server", "127.0.0.1:%d" % self.port, "explain",
                                   "--attention", att_path, "--prefix", "1", "--out", out, "--tokens",
                                   tok_path, "--colormap", "plasma"] + ansi_flag,
                                  stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, timeout=30)
            os.close(slave)
            tty_out = b""
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                tty_out += chunk
            os.close(master)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertEqual(b"\x1b[48;2;%d;%d;%dm" % tuple(int(v) for v in colours[1]) in tty_out, coloured)
        # Without --ansi on a pipe, nothing coloured reaches stdout.
        res = self.cli_ok("tokens_html_only", ["explain", "--attention", att_path, "--prefix", 1, "--out",
                                               out, "--tokens", tok_path, "--html", page])
        self.assertNotIn("\x1b", res.stdout)

    def usage(self, args, message, command="explain"):
        res = self.cli(*args)
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertEqual(res.stderr, "attnroll %s: %s (see attnroll %s --help)\n" % (command, message, command))

    def failed(self, args, line):
        res = self.cli(*args)
        self.assertEqual(res.returncode, 1, res.stderr)
        self.assertEqual(res.stderr, "attnroll: " + line + "\n")
        self.assertIsNone(self.server.poll())

    def test_bad_options_get_exact_errors(self):
        rng = np.random.default_rng(4)
        att = self._write("bad_att", planted_attention(rng, (0, 0)))
        base = ["explain", "--attention", att, "--prefix", 1, "--out", self.path("bad.npy")]
        grid = ["--grid", "6x8"]
        png = ["--png", self.path("bad.png")]
        self.usage(base + grid + png + ["--colormap", "jet"],
                   "--colormap: expected %s, got 'jet'" % NAMES)
        self.usage(base + grid + png + ["--alpha", "1.5"], "--alpha: expected a number in [0, 1], got '1.5'")
        self.usage(base + grid + png + ["--alpha", "x"], "--alpha: expected a number in [0, 1], got 'x'")
        self.usage(base + ["--image", self.path("in.png")], "--image and --alpha are only used with --png")
        self.usage(base + ["--colormap", "magma"], "--colormap is only used with --png or --tokens")
        self.usage(base + png, "--png needs the map on a grid: add --grid HxW")
        self.usage(base + ["--html", "x.html"], "--html and --ansi are only used with --tokens")
        self.usage(base + ["--tokens", "t.txt"],
                   "--tokens needs --html OUT.html or --ansi always (stdout is not a terminal)")
        self.usage(base + ["--tokens", "t.txt", "--ansi", "yes"], "--ansi: expected auto, always or never, got 'yes'")
        self.usage(base + ["--tokens", "t.txt", "--ansi", "always", "--json"], "--ansi always is not used with --json")
        self.failed(base + grid + png + ["--rows", "0,3"],
                    "INVALID_ARGUMENT: --png: expected one map on a grid ([1, h, w]: one row, one sequence, "
                    "--grid HxW), got shape [2, 6, 8]")
        self.failed(base + grid + png + ["--image", "/nonexistent/in.png"],
                    "NOT_FOUND: /nonexistent/in.png: cannot open")
        with open(self.path("notes.png"), "w") as f:
            f.write("not a picture")
        self.failed(base + grid + png + ["--image", self.path("notes.png")],
                    "INVALID_ARGUMENT: %s: expected a PNG or JPEG image, got 8 bytes of neither" % self.path("notes.png"))
        with open(self.path("few.txt"), "w") as f:
            f.write("a\nb\nc\n")
        self.failed(base + ["--tokens", self.path("few.txt"), "--html", self.path("x.html")],
                    "INVALID_ARGUMENT: --tokens: %s: expected one token per line for each of the 48 map "
                    "values (or 49 with the 1 prefix tokens first), got 3 lines" % self.path("few.txt"))
        self.usage(["explain-pair", "--baseline", att, "--candidate", att, "--png", "x.png"],
                   "unknown option '--png'", "explain-pair")
        audit = ["audit", "--baseline", self.tmp, "--candidate", self.tmp, "--report", self.path("r.json")]
        self.usage(audit + ["--image", "in.png"], "--image, --alpha and --colormap are only used with --pictures",
                   "audit")
        self.usage(audit + ["--pictures", self.path("pics")], "--pictures needs the maps on a grid: add --grid HxW",
                   "audit")
        self.usage(audit + ["--pictures", self.path("pics"), "--grid", "6x8", "--colormap", "hot"],
                   "--colormap: expected %s, got 'hot'" % NAMES, "audit")

    def test_audit_renders_mean_maps_and_shift(self):
        rng = np.random.default_rng(5)
        base_dir, cand_dir = self.path("audit_b"), self.path("audit_c")
        os.makedirs(base_dir)
        os.makedirs(cand_dir)
        a_cell, b_cell = (1, 2), (4, 6)
        base_maps, cand_maps = [], []
        for i in range(6):
            # Independent noise: no shift sits on the edge of two table entries.
            b = rng.uniform(0.0, 0.1, size=GRID).astype(np.float32)
            c = rng.uniform(0.0, 0.1, size=GRID).astype(np.float32)
            b[a_cell] += 1.0
            c[b_cell] += 1.0
            np.save(os.path.join(base_dir, "item%d.npy" % i), b)
            np.save(os.path.join(cand_dir, "item%d.npy" % i), c)
            base_maps.append(b.astype(np.float64) / b.sum())
            cand_maps.append(c.astype(np.float64) / c.sum())
        pics = self.path("audit_pics")
        res = self.cli_ok("audit_pictures", ["audit", "--baseline", base_dir, "--candidate", cand_dir,
                                             "--grid", "6x8", "--report", self.path("audit.json"),
                                             "--pictures", pics, "--colormap", "inferno"])
        mean_b, mean_c = np.mean(base_maps, axis=0), np.mean(cand_maps, axis=0)
        self.assert_picture(os.path.join(pics, "mean_baseline.png"), mean_b, "inferno")
        self.assert_picture(os.path.join(pics, "mean_candidate.png"), mean_c, "inferno")
        got = self.assert_picture(os.path.join(pics, "mean_shift.png"), mean_c - mean_b, "coolwarm",
                                  diverging=True)
        lut = colormaps["coolwarm"](np.arange(256), bytes=True)[:, :3]
        # Near the cells' centres (16 pixels a cell) the colour is the table's end: gained
        # mass at the candidate's cell red (the last entries), lost mass blue (the first).
        def entry(y, x):
            return int(np.argmin(np.abs(lut.astype(int) - got[y, x].astype(int)).sum(-1)))
        self.assertGreaterEqual(entry(16 * b_cell[0] + 8, 16 * b_cell[1] + 8), 230)
        self.assertLessEqual(entry(16 * a_cell[0] + 8, 16 * a_cell[1] + 8), 25)
        for name in ("mean_baseline", "mean_candidate", "mean_shift"):
            self.assertIn("wrote %s/%s.png: 140 x 96 PNG" % (pics, name), res.stdout)

    def test_demo_first_run(self):
        out_dir = self.path("demo")
        res = self.cli_ok("demo", ["demo", "--out-dir", out_dir, "--save-attention"])
        att = np.load(os.path.join(out_dir, "attention.npy"))
        self.assertEqual(att.shape, (12, 12, 197, 197))
        got = self.load_float32(os.path.join(out_dir, "map.npy"), "demo")
        want = ref.rollout_maps(att, prefix=1, grid=(14, 14))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        r, c = np.unravel_index(np.argmax(got[0]), (14, 14))
        self.assertTrue(3 <= r <= 5 and 8 <= c <= 10, (r, c))
        # The planted block holds the nine largest cells.
        top9 = {divmod(int(i), 14) for i in np.argsort(got[0].ravel())[-9:]}
        self.assertEqual(top9, {(r, c) for r in range(3, 6) for c in range(8, 11)})
        self.assertIn("hottest cell:  row %d, column %d (inside the planted block)" % (r, c), res.stdout)
        image = np.asarray(Image.open(os.path.join(out_dir, "input.png")).convert("RGB"))
        self.assertEqual(image.shape, (224, 224, 3))
        self.assert_picture(os.path.join(out_dir, "overlay.png"), got[0], "viridis", image, 0.5)
        # Another block, another seed: the map follows it.
        res = self.cli_ok("demo_region", ["demo", "--out-dir", self.path("demo2"), "--region", "9,1,2,4",
                                          "--seed", "7", "--size", "112", "--colormap", "magma"])
        got = np.load(os.path.join(self.path("demo2"), "map.npy"))[0]
        top8 = {divmod(int(i), 14) for i in np.argsort(got.ravel())[-8:]}
        self.assertEqual(top8, {(r, c) for r in range(9, 11) for c in range(1, 5)})
        image = np.asarray(Image.open(os.path.join(self.path("demo2"), "input.png")).convert("RGB"))
        self.assert_picture(os.path.join(self.path("demo2"), "overlay.png"), got, "magma", image, 0.5)
        self.usage(["demo", "--region", "12,12,3,3"],
                   "--region: expected TOP,LEFT,HEIGHT,WIDTH of a block inside the 14 x 14 grid, got '12,12,3,3'",
                   "demo")
        self.usage(["demo", "--size", "5"], "--size: expected an integer in [14, 2048], got '5'", "demo")


if __name__ == "__main__":
    e2e_harness.main()
