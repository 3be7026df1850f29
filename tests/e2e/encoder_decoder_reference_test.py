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


if __name__ == "__main__":
    e2e_harness.main()
