#!/usr/bin/python3
"""End-to-end test of attention flow: `attnroll explain --method flow`
against a real attnroll-server, compared with networkx max flows on the same
graph, built the way Abnar & Zuidema's reference code builds it (one
networkx maximum_flow_value per (input, output) pair).  The fused layers (the
edge capacities), the read-out and the input generators come from
numpy_reference.py.

Run: /usr/bin/python3 tests/e2e/flow_reference_test.py --bin-dir BUILD_DIR
Needs Debian's python3-numpy and python3-networkx.
"""

import json
import os
import sys

import numpy as np
import networkx as nx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402  (the server harness, same directory)
import numpy_reference as nr  # noqa: E402  (the numpy reference, same directory)


def networkx_flows(layers, sinks):
    """flow[r, j] = max flow from input j to output sinks[r] (reference style:
    nodes (layer, token), edge (l-1, j) -> (l, i) with capacity At_l[i, j])."""
    L, n = len(layers), layers[0].shape[0]
    g = nx.DiGraph()
    for l in range(1, L + 1):
        for i in range(n):
            for j in range(n):
                g.add_edge((l - 1, j), (l, i), capacity=float(layers[l - 1][i, j]))
    flows = np.zeros((len(sinks), n))
    for r, i in enumerate(sinks):
        for j in range(n):
            flows[r, j] = nx.maximum_flow_value(g, (0, j), (L, i))
    return flows


class FlowReferenceTest(e2e_harness.ServerTestCase):
    # test_cost_limit_refuses_with_the_estimate relies on --max-flow-cost 2e6.
    metrics_listen = "none"
    server_flags = ("--max-flow-cost", "2e6")
    tmp_prefix = "attnroll_flow_"
    cli_timeout_s = 120.0
    server_stop_timeout_s = 20.0

    def explain(self, name, att, *args):
        inp = self._write(name, att)
        out = os.path.join(self.tmp, name + "_out.npy")
        res = self.cli("explain", "--attention", inp, "--method", "flow", "--out", out,
                       "--json", *args)
        return res, (np.load(out) if res.returncode == 0 else None)

    def check(self, name, att, args, sinks, residual=0.5, fusion="mean", raw=False, prefix=0):
        res, got = self.explain(name, att, *args)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(json.loads(res.stdout)["path"], "flow")
        flows = networkx_flows(nr.fused_layers(att, residual, fusion), sinks)
        want = nr.flow_read_out(flows, raw=raw, prefix=prefix)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        return want

    def test_cls_row_structured(self):
        att = nr.structured_attention(np.random.default_rng(1), 4, 3, 9)
        flows = self.check("cls", att, [], sinks=[0])
        # Structured attention: some flow is strictly below its trivial bound.
        layers = nr.fused_layers(att)
        bound = np.minimum(layers[0].sum(0), 1.0)
        raw = networkx_flows(layers, [0])[0]
        self.assertTrue(np.any(raw < bound - 1e-3), "the test graph is trivial")
        self.assertEqual(flows.shape, (1, 9))

    def test_raw_rows_and_prefix(self):
        att = nr.structured_attention(np.random.default_rng(2), 3, 2, 8)
        self.check("raw", att, ["--rows", "0,5", "--raw", "--prefix", "1"], sinks=[0, 5],
                   raw=True, prefix=1)

    def test_all_rows_is_the_full_matrix(self):
        att = nr.structured_attention(np.random.default_rng(3), 3, 2, 7)
        res, got = self.explain("all", att, "--rows", "all", "--raw")
        self.assertEqual(res.returncode, 0, res.stderr)
        want = networkx_flows(nr.fused_layers(att), list(range(7)))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    def test_fusion_residual_and_layer_range(self):
        att = nr.structured_attention(np.random.default_rng(4), 5, 3, 8)
        self.check("max_res", att, ["--fusion", "max", "--residual", "0.3", "--rows", "2"],
                   sinks=[2], residual=0.3, fusion="max")
        res, got = self.explain("range", att, "--layers", "1:3", "--rows", "0", "--raw")
        self.assertEqual(res.returncode, 0, res.stderr)
        want = networkx_flows(nr.fused_layers(att[1:4]), [0])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    def test_iid_attention(self):
        att = nr.iid_attention(np.random.default_rng(5), (3, 2, 10, 10))
        self.check("iid", att, ["--rows", "0,9"], sinks=[0, 9])

    def test_cost_limit_refuses_with_the_estimate(self):
        # The server was started with --max-flow-cost 2e6: the full matrix of
        # a 6-layer, 40-token pass is estimated far above it.
        att = nr.structured_attention(np.random.default_rng(6), 6, 1, 40)
        res, _ = self.explain("big", att, "--rows", "all")
        self.assertEqual(res.returncode, 1)
        self.assertIn("RESOURCE_EXHAUSTED", res.stderr)
        self.assertRegex(res.stderr, r"estimated at [0-9.e+]+ work units")

    def test_bad_flow_options(self):
        att = nr.structured_attention(np.random.default_rng(7), 2, 2, 6)
        res, _ = self.explain("mean", att, "--rows", "mean")
        self.assertIn("INVALID_ARGUMENT", res.stderr)
        self.assertIn("flow.readout.mean_of_rows", res.stderr)
        res, _ = self.explain("none", att, "--fusion", "none")
        self.assertIn("flow.fusion", res.stderr)


if __name__ == "__main__":
    e2e_harness.main()
