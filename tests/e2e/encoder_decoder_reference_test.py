#!/usr/bin/python3
"""End-to-end test of encoder-decoder relevance:
`attnroll explain --encoder E --decoder D --cross X` against a real server,
compared with the independent numpy reference of both compositions in
numpy_reference.py:

  rules (encoder_decoder_rules; Chefer et al. ICCV 2021, rules 6-10):
    Ab = mean_h(max(0, G*A)); R_ee = I, R_ee += Ab R_ee; R_dd = I, R_de = 0;
    decoder self: R_dd += Ab R_dd, R_de += Ab R_de; cross: R_de += Rbar_dd^T
    Ab_x Rbar_ee with Rbar = (R - I) / rowsum(R - I) + I, 0/0 := 0.
  rollout (encoder_decoder_rollout): R_de = R_dd^T (Abar_cross_last R_ee),
    R_ee and R_dd ordinary rollouts.

Run: /usr/bin/python3 tests/e2e/encoder_decoder_reference_test.py --bin-dir BUILD_DIR
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402  (the server harness, same directory)
import numpy_reference as nr  # noqa: E402  (the numpy reference, same directory)


class EncoderDecoderReferenceTest(e2e_harness.ServerTestCase):
    tmp_prefix = "attnroll_encdec_"

    def make(self, seed, B=None, Le=2, Ld=3, H=2, ne=7, nd=5):
        rng = np.random.default_rng(seed)
        lead = () if B is None else (B,)
        enc = nr.iid_attention(rng, lead + (Le, H, ne, ne), scale=2.0)
        dec = nr.iid_attention(rng, lead + (Ld, H, nd, nd), scale=2.0)
        cross = nr.iid_attention(rng, lead + (Ld, H, nd, ne), scale=2.0)
        grads = [nr.make_gradient(rng, x.shape) for x in (enc, dec, cross)]
        return enc, dec, cross, grads

    def run_cli(self, name, enc, dec, cross, grads=None, *args):
        files = [self._write(name + "_" + k, v) for k, v in (("e", enc), ("d", dec), ("x", cross))]
        cmd = ["explain", "--encoder", files[0], "--decoder", files[1], "--cross", files[2],
               "--out", os.path.join(self.tmp, name + "_out.npy"), "--json"]
        if np.ndim(enc) == 5:
            cmd += ["--layout", "blhnn"]  # a 5-D array is never guessed
        if grads is not None:
            for flag, g, k in zip(("--encoder-gradient", "--decoder-gradient", "--cross-gradient"),
                                  grads, "edx"):
                cmd += [flag, self._write(name + "_g" + k, g)]
        return self.cli(*cmd, *args)

    def test_rules_composition(self):
        enc, dec, cross, grads = self.make(1)
        res = self.run_cli("rules", enc, dec, cross, grads, "--encoder-out",
                           os.path.join(self.tmp, "ree.npy"), "--decoder-out",
                           os.path.join(self.tmp, "rdd.npy"))
        self.assertEqual(res.returncode, 0, res.stderr)
        rde, ree, rdd = nr.encoder_decoder_rules(*(x.astype(np.float64)
                                                   for x in (enc, dec, cross, *grads)))
        np.testing.assert_allclose(np.load(os.path.join(self.tmp, "rules_out.npy")), rde, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.load(os.path.join(self.tmp, "ree.npy")), ree, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.load(os.path.join(self.tmp, "rdd.npy")), rdd, rtol=1e-4, atol=1e-6)
        self.assertEqual(json.loads(res.stdout)["path"], "encoder_decoder_rules")

    def test_rollout_composition_batched_rows_and_prefix(self):
        enc, dec, cross, _ = self.make(2, B=2)
        res = self.run_cli("roll", enc, dec, cross, None, "--composition", "rollout",
                           "--rows", "4,1", "--prefix", "1")
        self.assertEqual(res.returncode, 0, res.stderr)
        got = np.load(os.path.join(self.tmp, "roll_out.npy"))
        self.assertEqual(got.shape, (2, 2, 6))
        for b in range(2):
            rde, _, _ = nr.encoder_decoder_rollout(*(x[b].astype(np.float64)
                                                     for x in (enc, dec, cross)))
            np.testing.assert_allclose(got[b], rde[[4, 1], 1:], rtol=1e-4, atol=1e-6)

    def test_rules_with_fp16_wire(self):
        enc, dec, cross, grads = self.make(3)
        res = self.run_cli("fp16", enc, dec, cross, grads, "--wire", "fp16", "--rows", "last")
        self.assertEqual(res.returncode, 0, res.stderr)
        rde, _, _ = nr.encoder_decoder_rules(*(nr.round_fp16(x).astype(np.float64)
                                               for x in (enc, dec, cross, *grads)))
        np.testing.assert_allclose(np.load(os.path.join(self.tmp, "fp16_out.npy")), rde[[-1]],
                                   rtol=1e-3, atol=1e-5)

    def test_padding_each_side_is_cropped(self):
        # Sequence 1 is sequence 0's attention padded (with junk) from
        # (ne, nd) = (5, 4) to (7, 5); both must give the maps of the cropped
        # arrays, and the padded sequence's maps are zero-filled by the CLI.
        rng = np.random.default_rng(8)
        Le, Ld, H, ne, nd, me, md = 2, 2, 2, 7, 5, 5, 4
        enc = nr.iid_attention(rng, (2, Le, H, ne, ne), scale=2.0)
        dec = nr.iid_attention(rng, (2, Ld, H, nd, nd), scale=2.0)
        cross = nr.iid_attention(rng, (2, Ld, H, nd, ne), scale=2.0)
        small = [nr.iid_attention(rng, s, scale=2.0)
                 for s in ((Le, H, me, me), (Ld, H, md, md), (Ld, H, md, me))]
        for full, part in zip((enc, dec, cross), small):
            r, c = part.shape[-2:]
            full[1, :, :, :r, :c] = part
        grads = [nr.make_gradient(rng, x.shape) for x in (enc, dec, cross)]
        for comp in ("rules", "rollout"):
            res = self.run_cli("pad_" + comp, enc, dec, cross, grads if comp == "rules" else None,
                               "--composition", comp, "--encoder-valid-lengths", "%d,%d" % (ne, me),
                               "--decoder-valid-lengths", "%d,%d" % (nd, md), "--prefix", "1")
            self.assertEqual(res.returncode, 0, res.stderr)
            got = np.load(os.path.join(self.tmp, "pad_%s_out.npy" % comp))
            self.assertEqual(got.shape, (2, nd, ne - 1))
            for b, (e, d, x, g) in enumerate(
                    [(enc[0], dec[0], cross[0], [gg[0] for gg in grads]),
                     (small[0], small[1], small[2],
                      [grads[0][1, :, :, :me, :me], grads[1][1, :, :, :md, :md],
                       grads[2][1, :, :, :md, :me]])]):
                args = [a.astype(np.float64) for a in (e, d, x)]
                if comp == "rules":
                    rde = nr.encoder_decoder_rules(*args, *(gg.astype(np.float64) for gg in g))[0]
                else:
                    rde = nr.encoder_decoder_rollout(*args)[0]
                want = np.zeros((nd, ne - 1))
                want[:rde.shape[0], :rde.shape[1] - 1] = rde[:, 1:]
                np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-6,
                                           err_msg="%s sequence %d" % (comp, b))

    def test_residual_weights_and_value_norms(self):
        enc, dec, cross, grads = self.make(9, B=2)
        rng = np.random.default_rng(19)
        B, Le, H, ne = enc.shape[:3] + enc.shape[-1:]
        Ld, nd = dec.shape[1], dec.shape[-1]
        rw_e = rng.uniform(0, 1, (B, Le, ne)).astype(np.float32)  # per token
        rw_d = rng.uniform(0, 1, (B, Ld)).astype(np.float32)      # per layer
        vn = [rng.uniform(0.1, 3, (B, L, H, n)).astype(np.float32)
              for L, n in ((Le, ne), (Ld, nd), (Ld, ne))]
        files = dict(("--" + k, self._write("side_" + k, v)) for k, v in
                     (("encoder-residual-weights", rw_e), ("decoder-residual-weights", rw_d),
                      ("encoder-value-norms", vn[0]), ("decoder-value-norms", vn[1]),
                      ("cross-value-norms", vn[2])))
        args = [x for kv in files.items() for x in kv]
        res = self.run_cli("side_roll", enc, dec, cross, None, "--composition", "rollout", *args)
        self.assertEqual(res.returncode, 0, res.stderr)
        got = np.load(os.path.join(self.tmp, "side_roll_out.npy"))
        for b in range(B):
            want = nr.encoder_decoder_rollout(
                *(x[b].astype(np.float64) for x in (enc, dec, cross)),
                residual_weights=(rw_e[b], rw_d[b]), value_norms=tuple(v[b] for v in vn))[0]
            plain = nr.encoder_decoder_rollout(*(x[b].astype(np.float64) for x in (enc, dec, cross)))[0]
            self.assertGreater(np.abs(want - plain).max(), 1e-3)  # the side inputs matter
            np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-6)
        # Rules: value norms apply, residual weights are ignored (no residual).
        vn_args = [x for k, v in files.items() if "value-norms" in k for x in (k, v)]
        res = self.run_cli("side_rules", enc, dec, cross, grads, *vn_args,
                           "--encoder-residual-weights", files["--encoder-residual-weights"])
        self.assertEqual(res.returncode, 0, res.stderr)
        got = np.load(os.path.join(self.tmp, "side_rules_out.npy"))
        for b in range(B):
            want = nr.encoder_decoder_rules(*(x[b].astype(np.float64) for x in (enc, dec, cross)),
                                            *(g[b].astype(np.float64) for g in grads),
                                            value_norms=tuple(v[b] for v in vn))[0]
            np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-6)
        # Bad side inputs name the stack and the field.
        bad = vn[2].copy()
        bad[0, 0, 0, 0] = -1.0
        res = self.run_cli("side_bad", enc, dec, cross, None, "--composition", "rollout",
                           "--cross-value-norms", self._write("side_bad_vn", bad))
        self.assertEqual(res.returncode, 1)
        self.assertIn("STACK_DECODER_CROSS layer[0].value_norms: expected finite norms >= 0, got -1",
                      res.stderr)
        res = self.run_cli("side_rwbad", enc, dec, cross, None, "--composition", "rollout",
                           "--decoder-residual-weights", self._write("side_rwbad", rw_d + 1.0))
        self.assertEqual(res.returncode, 1)
        self.assertIn("STACK_DECODER_SELF layer[0].residual_weights: expected weights in [0, 1]",
                      res.stderr)

    def test_causal_decoder_is_made_lower_triangular(self):
        # A causal decoder's tolerated mass above the diagonal (here 2e-4 per
        # row, within fp32's 1e-3) is dropped before the identity is added.
        enc, dec, cross, grads = self.make(10)
        dec = np.tril(dec)
        dec = dec / dec.sum(-1, keepdims=True)
        leak = dec.copy()
        for i in range(dec.shape[-1] - 1):
            leak[:, :, i, i + 1] += 2e-4
        res = self.run_cli("causal", enc, leak, cross, grads, "--causal", "--decoder-out",
                           os.path.join(self.tmp, "causal_rdd.npy"))
        self.assertEqual(res.returncode, 0, res.stderr)
        rde, _, rdd = nr.encoder_decoder_rules(*(x.astype(np.float64)
                                                 for x in (enc, leak, cross, *grads)), causal=True)
        got_rdd = np.load(os.path.join(self.tmp, "causal_rdd.npy"))
        self.assertTrue(np.all(np.triu(got_rdd, 1) == 0.0))
        np.testing.assert_allclose(got_rdd, rdd, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.load(os.path.join(self.tmp, "causal_out.npy")), rde,
                                   rtol=1e-4, atol=1e-6)

    def test_stacks_in_every_form_and_a_lbhnn_layout(self):
        # The stacks of a batched pass as torch.stack gives them ([L, B, ...],
        # --layout lbhnn) and as per-layer .npz archives: the same maps as
        # [B, L, ...]; stacks whose heads or batch disagree are refused.
        enc, dec, cross, _ = self.make(11, B=3)
        want = self.run_cli("forms_b", enc, dec, cross, None, "--composition", "rollout")
        self.assertEqual(want.returncode, 0, want.stderr)
        want = np.load(os.path.join(self.tmp, "forms_b_out.npy"))
        lb = [np.ascontiguousarray(x.transpose(1, 0, 2, 3, 4)) for x in (enc, dec, cross)]
        files = [self._write("forms_lb_" + k, v) for k, v in zip("edx", lb)]
        out = os.path.join(self.tmp, "forms_lb_out.npy")
        res = self.cli("explain", "--encoder", files[0], "--decoder", files[1], "--cross", files[2],
                       "--layout", "lbhnn", "--composition", "rollout", "--out", out)
        self.assertEqual(res.returncode, 0, res.stderr)
        np.testing.assert_allclose(np.load(out), want, rtol=1e-6, atol=1e-7)
        archives = []
        for k, x in zip("edx", (enc, dec, cross)):
            path = os.path.join(self.tmp, "forms_%s.npz" % k)
            np.savez(path, *[x[:, l] for l in range(x.shape[1])])
            archives.append(path)
        out = os.path.join(self.tmp, "forms_npz_out.npy")
        res = self.cli("explain", "--encoder", archives[0], "--decoder", archives[1], "--cross",
                       archives[2], "--composition", "rollout", "--out", out)
        self.assertEqual(res.returncode, 0, res.stderr)
        np.testing.assert_allclose(np.load(out), want, rtol=1e-6, atol=1e-7)
        res = self.run_cli("forms_heads", enc, dec[:, :, :1], cross, None, "--composition", "rollout")
        self.assertEqual(res.returncode, 1)
        self.assertIn("expected one batch and head count", res.stderr)

    def test_bad_inputs(self):
        enc, dec, cross, grads = self.make(4)
        res = self.run_cli("nograd", enc, dec, cross, None)  # rules without gradients
        self.assertEqual(res.returncode, 2)
        res = self.run_cli("shape", enc, dec, cross[:, :, :, :-1], None, "--composition", "rollout")
        self.assertEqual(res.returncode, 1)
        self.assertIn("INVALID_ARGUMENT", res.stderr)
        bad = cross.copy()
        bad[0, 0, 0, 0] = -0.5
        res = self.run_cli("negative", enc, dec, bad, None, "--composition", "rollout")
        self.assertEqual(res.returncode, 1)
        self.assertIn("STACK_DECODER_CROSS", res.stderr)
        self.assertIn("expected probabilities >= 0", res.stderr)
        # Layout.valid_lengths is for single-stack passes; each side has its own.
        res = self.run_cli("padwrong", enc, dec, cross, None, "--composition", "rollout",
                           "--encoder-valid-lengths", "8")
        self.assertEqual(res.returncode, 1)
        self.assertIn("layout.encoder_decoder.encoder_valid_lengths[0]: expected 1 <= length <= 7, got 8",
                      res.stderr)


if __name__ == "__main__":
    e2e_harness.main()
