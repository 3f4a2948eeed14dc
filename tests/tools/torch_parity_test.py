"""Parity of the PyTorch trainer's model (tools/train/tvq_model.py) with the
golden vectors, and checks of its training pieces.

Tolerances:
- float64: the golden logprobs are float64 reference values rounded to
  float32, so a correct float64 forward differs from them only by that
  rounding: at most half a float32 ulp of the stored value (4.8e-7 for
  |logprob| in [8, 16)). The test requires exactly that (plus 1e-12 for the
  float64 arithmetic itself), and a max absolute difference below 1e-6;
  a wrong RMS eps (1e-5 instead of 1e-6) already moves logprobs by ~1e-5.
- float32: 2e-5 absolute per logprob (spec §5).
- VQ codes: identical in both precisions (the golden keys have a relative
  decision margin > 1e-3).

Run: /usr/bin/python3 tests/tools/torch_parity_test.py
(environment: TVQ_TEST_DATA_DIR, default tests/data).
"""

import os
import sys
import tempfile
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))

import model_io  # noqa: E402
import tvq_format  # noqa: E402
import tvq_model  # noqa: E402

DATA_DIR = os.environ.get("TVQ_TEST_DATA_DIR", os.path.join(ROOT, "tests", "data"))
GOLDEN = os.path.join(DATA_DIR, "golden")
NAMES = ("tiny-byte", "tiny-noagg", "tiny-tied")
FLOAT64_MAX_ABS = 1e-6
FLOAT32_MAX_ABS = 2e-5

torch.set_num_threads(1)


def load(name, dtype):
    model = model_io.load_model_dir(os.path.join(GOLDEN, name, "model"), dtype)
    golden, _, _ = tvq_format.read_safetensors(
        os.path.join(GOLDEN, name, "golden.safetensors"))
    tokens = torch.as_tensor(golden["tokens"].astype(np.int64))[None]
    return model, golden, tokens


class GoldenParityTest(unittest.TestCase):
    def check(self, name, dtype, block_len):
        model, golden, tokens = load(name, dtype)
        with torch.no_grad():
            logprobs, _, aux = model(tokens, block_len=block_len)
        ours = logprobs[0].double().numpy()
        expected = golden["logprobs"]
        diff = np.abs(ours - expected.astype(np.float64))
        if dtype == torch.float64:
            half_ulp = 0.5 * np.spacing(np.abs(expected)).astype(np.float64)
            worst = np.unravel_index(np.argmax(diff - half_ulp), diff.shape)
            self.assertTrue(np.all(diff <= half_ulp + 1e-12),
                            "%s L=%d: logprob %s off by %.3e > half ulp %.3e" % (
                                name, block_len, worst, diff[worst], half_ulp[worst]))
            self.assertLess(diff.max(), FLOAT64_MAX_ABS)
        else:
            self.assertLess(diff.max(), FLOAT32_MAX_ABS, "%s L=%d" % (name, block_len))
        codes = aux["codes"][:, 0].numpy()
        np.testing.assert_array_equal(codes, golden["codes"], "%s L=%d codes" %
                                      (name, block_len))
        return diff.max()

    def test_float64_every_block_length(self):
        for name in NAMES:
            config = tvq_format.read_config(os.path.join(GOLDEN, name, "model",
                                                         "config.json"))
            for block_len in (config["block_len"], 1, 17, 1000):
                with self.subTest(model=name, block_len=block_len):
                    worst = self.check(name, torch.float64, block_len)
                    print("%s float64 L=%d max |diff| %.3e" % (name, block_len, worst))

    def test_float32(self):
        for name in NAMES:
            with self.subTest(model=name):
                worst = self.check(name, torch.float32, 8)
                print("%s float32 L=8 max |diff| %.3e" % (name, worst))

    def test_state_carried_across_calls(self):
        # Two calls with the state handed over equal one pass: this is how
        # training carries the cache across updates of a long sequence.
        for name in NAMES:
            model, golden, tokens = load(name, torch.float64)
            with torch.no_grad():
                whole, _, _ = model(tokens, block_len=8)
                first, states, _ = model(tokens[:, :37], block_len=8)
                second, _, _ = model(tokens[:, 37:], states, block_len=8)
            torch.testing.assert_close(torch.cat([first, second], 1), whole,
                                       rtol=0, atol=1e-12)


class TrainingPiecesTest(unittest.TestCase):
    def test_codebook_ema_update(self):
        model, _, tokens = load("tiny-byte", torch.float64)
        layer = model.sublayers[0]
        c_sum, c_count = layer.c_sum.clone(), layer.c_count.clone()
        with torch.no_grad():
            _, _, aux = model(tokens, block_len=8)
        model.codebook_ema_update(aux["keys"], aux["codes"], gamma=0.9)
        keys, codes = aux["keys"][0][0, 0], aux["codes"][0, 0, 0]   # T dk, T
        for s in range(layer.n_code):
            chosen = codes == s
            expected_sum = 0.9 * c_sum[0, s] + 0.1 * keys[chosen].sum(0)
            expected_count = 0.9 * c_count[0, s] + 0.1 * chosen.sum()
            torch.testing.assert_close(layer.c_sum[0, s], expected_sum)
            torch.testing.assert_close(layer.c_count[0, s], expected_count)

    def test_straight_through_gradient_reaches_keys(self):
        model, _, tokens = load("tiny-byte", torch.float64)
        logprobs, _, aux = model(tokens, block_len=8)
        loss = -logprobs[0, :-1].gather(-1, tokens[0, 1:, None]).mean()
        loss.backward()
        grad = model.sublayers[0].kvg_proj.grad[:, :model.config["d_k"]]
        self.assertGreater(float(grad.abs().max()), 0.0)  # k gets gradient via k_hat
        self.assertIsNone(getattr(model.sublayers[0].c_sum, "grad", None))

    def test_export_round_trip_is_bitwise(self):
        model, _, _ = load("tiny-tied", torch.float32)
        with tempfile.TemporaryDirectory() as out:
            model_io.export_model_dir(model, out)
            original, _, _ = tvq_format.read_safetensors(
                os.path.join(GOLDEN, "tiny-tied", "model", "model.safetensors"))
            exported, dtypes, _ = tvq_format.read_safetensors(
                os.path.join(out, "model.safetensors"))
            self.assertEqual(set(dtypes.values()), {"F32"})
            self.assertEqual(sorted(original), sorted(exported))
            for name in original:
                np.testing.assert_array_equal(original[name].view(np.uint32),
                                              exported[name].view(np.uint32), name)
            self.assertEqual(tvq_format.read_config(os.path.join(out, "config.json")),
                             model.config)

    def test_a_few_training_steps_learn(self):
        sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
        import train
        torch.manual_seed(0)
        sys_argv = sys.argv
        sys.argv = ["train", "--out", "unused", "--d_model", "32", "--d_k", "8",
                    "--d_v", "32", "--n_code", "16", "--n_layer", "1",
                    "--block_len", "8", "--mem_len", "8", "--update_len", "16",
                    "--batch", "4", "--lr", "3e-3", "--warmup", "5"]
        try:
            args = train.parse_args()
        finally:
            sys.argv = sys_argv
        model = tvq_model.TransformerVQ(train.make_config(args))
        optimizer = train.make_optimizer(model, args)
        text = np.frombuffer(b"the cat sat on the mat. " * 4, np.uint8).astype(np.int64) + 3
        batch = np.stack([np.concatenate([[1], text[i:i + 16]]) for i in range(4)])
        losses = []
        for step in range(60):
            states = model.initial_state(4)
            _, metrics = train.train_step(model, optimizer, batch, states, step, args)
            losses.append(metrics["nll"])
        self.assertLess(np.mean(losses[-5:]), 0.5 * np.mean(losses[:5]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
