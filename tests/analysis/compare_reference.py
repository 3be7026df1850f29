#!/usr/bin/python3
"""Reference comparison metrics with scipy, for tests/analysis/compare_test.cc.

Independent of server/analysis/compare.cc: scipy's own functions where scipy has
the metric, numpy from the definition (docs/conventions.md) where it does not.

  spearman        scipy.stats.spearmanr
  kendall         scipy.stats.kendalltau(variant='b')
  pearson         scipy.stats.pearsonr
  cosine          1 - scipy.spatial.distance.cosine
  top sets / IoU  numpy: stable argsort of -x (ties: lower index first); k largest,
                  or the smallest prefix whose cumulative sum reaches top_mass * sum
  l1, l2          numpy, of the sum-normalised maps
  js              scipy.spatial.distance.jensenshannon(p, q) ** 2 (natural log)
  ssim            skimage.metrics.structural_similarity's algorithm with its
                  defaults (skimage is not packaged in Debian 12, so this is that
                  code rewritten from its definition): scipy.ndimage.uniform_filter
                  of size win on the float64 images, sample covariance
                  (cov_norm = N / (N - 1)), K1 = 0.01, K2 = 0.03,
                  data_range = joint max - min, mean over the image cropped by
                  (win - 1) // 2 on every side. Undefined (nan) when h or w < win.
  emd_lp          scipy.optimize.linprog (HiGHS dual simplex) on the FULL n x n
                  transportation problem between p and q, Euclidean ground
                  distance between cell centres (only when asked: it is slow).
  emd_1d          scipy.stats.wasserstein_distance on a 1 x w or h x 1 grid.
  com_*           numpy centres of mass (row, col) of p and q, and the shift.
  region_*        share of each map's mass where region != 0.

Input file: first line the number of cases, then per case four lines:
    n h w top_k top_mass ssim_window emd_lp(0/1)
    the n values of a
    the n values of b
    the n values of region, or "-" for none
Values are float32 written with 9 significant digits; they are read back as
float32 and widened to float64, as the C++ code does. Output: per case a line
"case I" then "name value" lines (17 significant digits; "nan" = undefined).

Usage: compare_reference.py CASES_FILE
"""
import sys
import warnings

import numpy as np
from scipy import ndimage, optimize, sparse, stats
from scipy.spatial import distance


def top_set(x, k, mass):
    order = np.argsort(-x, kind="stable")
    if k > 0:
        size = k
    else:
        cs = np.cumsum(x[order])  # sequential, in the sorted order
        size = int(np.argmax(cs >= mass * cs[-1])) + 1
    return set(order[:size].tolist())


def ssim(a, b, win):
    # skimage.metrics.structural_similarity(a, b, data_range=...), defaults.
    data_range = max(a.max(), b.max()) - min(a.min(), b.min())
    k1, k2 = 0.01, 0.03
    npx = win ** a.ndim
    cov_norm = npx / (npx - 1)
    ux = ndimage.uniform_filter(a, size=win)
    uy = ndimage.uniform_filter(b, size=win)
    uxx = ndimage.uniform_filter(a * a, size=win)
    uyy = ndimage.uniform_filter(b * b, size=win)
    uxy = ndimage.uniform_filter(a * b, size=win)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return s[pad:s.shape[0] - pad, pad:s.shape[1] - pad].mean(dtype=np.float64)


def cell_centres(h, w):
    rows, cols = np.divmod(np.arange(h * w), w)
    return np.stack([rows, cols], axis=1).astype(np.float64)


def emd_linprog(p, q, h, w):
    n = h * w
    xy = cell_centres(h, w)
    cost = distance.cdist(xy, xy)  # Euclidean
    # x[i * n + j] = mass moved from cell i (of p) to cell j (of q).
    rows_out = sparse.kron(sparse.eye(n), np.ones((1, n)))
    rows_in = sparse.kron(np.ones((1, n)), sparse.eye(n))
    a_eq = sparse.vstack([rows_out, rows_in]).tocsr()
    b_eq = np.concatenate([p, q])
    res = optimize.linprog(cost.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None),
                           method="highs-ds",
                           options={"primal_feasibility_tolerance": 1e-10,
                                    "dual_feasibility_tolerance": 1e-10})
    if res.status != 0:
        raise SystemExit("linprog failed: %s" % res.message)
    return res.fun


def centre(p, h, w):
    xy = cell_centres(h, w)
    return xy[:, 0] @ p, xy[:, 1] @ p


def one_case(header, a_line, b_line, region_line, out):
    n, h, w, top_k = (int(t) for t in header[:4])
    top_mass, win, want_lp = float(header[4]), int(header[5]), int(header[6])
    a = np.array(a_line.split(), dtype=np.float32).astype(np.float64)
    b = np.array(b_line.split(), dtype=np.float32).astype(np.float64)
    assert a.size == n and b.size == n, (a.size, b.size, n)
    region = None if region_line.strip() == "-" else np.array(region_line.split(), dtype=np.int64)

    def put(name, value):
        out.write("%s %.17g\n" % (name, value))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: nan, said by the value
        put("spearman", stats.spearmanr(a, b).correlation)
        put("kendall", stats.kendalltau(a, b, variant="b").statistic)
        put("pearson", stats.pearsonr(a, b).statistic)
    put("cosine", 1.0 - distance.cosine(a, b))

    if top_k == 0 and top_mass == 0:
        top_k = (n + 9) // 10
    ta, tb = top_set(a, top_k, top_mass), top_set(b, top_k, top_mass)
    put("top_k_iou", len(ta & tb) / len(ta | tb))
    put("top_k_used_a", len(ta))
    put("top_k_used_b", len(tb))

    p, q = a / a.sum(), b / b.sum()
    put("l1", np.abs(p - q).sum())
    put("l2", np.sqrt(((p - q) ** 2).sum()))
    put("js", distance.jensenshannon(p, q) ** 2)

    if h > 0:
        ga, gb = a.reshape(h, w), b.reshape(h, w)
        put("ssim", ssim(ga, gb, win) if min(h, w) >= win else float("nan"))
        if want_lp:
            put("emd_lp", emd_linprog(p, q, h, w))
        if h == 1 or w == 1:
            pos = np.arange(n, dtype=np.float64)
            put("emd_1d", stats.wasserstein_distance(pos, pos, p, q))
        ra, ca = centre(p, h, w)
        rb, cb = centre(q, h, w)
        put("com_a_row", ra)
        put("com_a_col", ca)
        put("com_b_row", rb)
        put("com_b_col", cb)
        put("com_shift", np.hypot(rb - ra, cb - ca))
    if region is not None:
        inside = region != 0
        put("region_share_a", a[inside].sum() / a.sum())
        put("region_share_b", b[inside].sum() / b.sum())


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    with open(sys.argv[1]) as f:
        lines = f.read().split("\n")
    cases = int(lines[0])
    out = sys.stdout
    for c in range(cases):
        base = 1 + 4 * c
        out.write("case %d\n" % c)
        one_case(lines[base].split(), lines[base + 1], lines[base + 2], lines[base + 3], out)


if __name__ == "__main__":
    main()
