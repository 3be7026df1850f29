#!/usr/bin/python3
"""Reference drift numbers with scipy, for tests/analysis/drift_test.cc.

Independent of server/analysis/drift.cc and compare.cc:
  js              scipy.spatial.distance.jensenshannon(p, q) ** 2 (nats)
  l1              numpy
  emd             scipy.optimize.linprog on the full transportation problem
                  (compare_reference.emd_linprog), Euclidean ground distance
  com_shift       numpy centres of mass
  region_*        numpy shares
  *_w1            scipy.stats.wasserstein_distance(c, c, h_base, h_live), c the
                  bin centres (b + 0.5) / 100

Input: first line the number of cases, then per case:
    n h w
    the n values of the baseline mean map
    the n values of the live mean map
    the n values of the region, or "-"
    3 lines: the baseline's histograms (100 counts each), or 3 lines "-"
    3 lines: the live histograms
Output: per case "case I", then "name value" lines ("nan" = undefined).

Usage: drift_reference.py CASES_FILE
"""
import os
import sys

import numpy as np
from scipy import stats
from scipy.spatial import distance

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_reference as cr  # noqa: E402

NAMES = ("entropy", "peak", "region_share")


def main():
    lines = open(sys.argv[1]).read().split("\n")
    cases = int(lines[0])
    pos = 1
    out = sys.stdout
    centres = (np.arange(100) + 0.5) / 100
    for c in range(cases):
        n, h, w = (int(t) for t in lines[pos].split())
        a = np.array(lines[pos + 1].split(), dtype=np.float32).astype(np.float64)
        b = np.array(lines[pos + 2].split(), dtype=np.float32).astype(np.float64)
        region = None if lines[pos + 3].strip() == "-" else np.array(lines[pos + 3].split(), dtype=np.int64)
        hb = [lines[pos + 4 + k] for k in range(3)]
        hl = [lines[pos + 7 + k] for k in range(3)]
        pos += 10
        assert a.size == n and b.size == n
        p, q = a / a.sum(), b / b.sum()
        out.write("case %d\n" % c)
        out.write("js_divergence %.17g\n" % (distance.jensenshannon(p, q) ** 2))
        out.write("l1 %.17g\n" % np.abs(p - q).sum())
        if h > 0:
            out.write("emd %.17g\n" % cr.emd_linprog(p, q, h, w))
            ra, ca = cr.centre(p, h, w)
            rb, cb = cr.centre(q, h, w)
            out.write("com_shift %.17g\n" % np.hypot(rb - ra, cb - ca))
        if region is not None:
            inside = region != 0
            out.write("region_share_base %.17g\n" % p[inside].sum())
            out.write("region_share_live %.17g\n" % q[inside].sum())
            out.write("region_share_delta %.17g\n" % (q[inside].sum() - p[inside].sum()))
        for k, name in enumerate(NAMES):
            if hb[k].strip() == "-" or hl[k].strip() == "-":
                continue
            wb = np.array(hb[k].split(), dtype=np.float64)
            wl = np.array(hl[k].split(), dtype=np.float64)
            if wb.sum() == 0 or wl.sum() == 0:
                continue
            out.write("%s_w1 %.17g\n" % (name, stats.wasserstein_distance(centres, centres, wb, wl)))


if __name__ == "__main__":
    main()
