"""The shipped demo model (models/demo): format, size, and its recorded scores.

models/demo/heldout_scores.jsonl holds the held-out fortune cookies with the
sum of their byte logprobs (nats) as the trainer's float64 forward computed
them at export time; MODEL_CARD.md states the validation bits per byte they
add up to. This test checks the model directory against spec §4, the size
budget (25 MB), that the card's number is the one the file adds up to, and
that the float64 forward reproduces the first documents' scores (1e-6 nats).

tests/tools/score_e2e_test.py checks that tvq-server's Score RPC reproduces
the same scores (total to 1e-4 bits per byte, each cookie within 2e-2 nats).

Run: /usr/bin/python3 tests/tools/demo_model_test.py
"""

import json
import math
import os
import re
import sys
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))

import evaluate  # noqa: E402
import model_io  # noqa: E402
import tvq_format  # noqa: E402

DEMO = os.path.join(ROOT, "models", "demo")
MAX_BYTES = 25 * 1000 * 1000
CHECKED_DOCUMENTS = 40

torch.set_num_threads(1)


def heldout():
    with open(os.path.join(DEMO, "heldout_scores.jsonl")) as handle:
        return [json.loads(line) for line in handle]


class DemoModelTest(unittest.TestCase):
    def test_model_directory(self):
        config = tvq_format.read_config(os.path.join(DEMO, "config.json"))
        self.assertEqual(config["tokenizer"], {"kind": "byte"})
        arrays, dtypes, _ = tvq_format.read_safetensors(
            os.path.join(DEMO, "model.safetensors"))
        tvq_format.check_tensors(config, arrays)
        self.assertEqual(set(dtypes.values()), {"F32"})
        total = sum(os.path.getsize(os.path.join(DEMO, name))
                    for name in os.listdir(DEMO))
        self.assertLessEqual(total, MAX_BYTES)

    def test_model_card_states_the_heldout_bits_per_byte(self):
        lines = heldout()
        bpb = -sum(l["logprob_nats"] for l in lines) / math.log(2) / sum(
            l["bytes"] for l in lines)
        with open(os.path.join(DEMO, "MODEL_CARD.md")) as handle:
            card = handle.read()
        match = re.search(r"validation bits per byte\s*\|\s*\*{0,2}([0-9.]+)", card)
        self.assertIsNotNone(match, "MODEL_CARD.md has no 'validation bits per byte' row")
        self.assertAlmostEqual(float(match.group(1)), bpb, places=3)

    def test_forward_reproduces_recorded_scores(self):
        model = model_io.load_model_dir(DEMO, torch.float64)
        lines = heldout()[:CHECKED_DOCUMENTS]
        scores = evaluate.document_scores(model, [l["text"] for l in lines])
        for line, score in zip(lines, scores):
            self.assertAlmostEqual(score, line["logprob_nats"], delta=1e-6)
            self.assertEqual(line["bytes"], len(line["text"].encode("utf-8")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
