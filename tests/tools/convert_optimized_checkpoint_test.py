"""tools/convert_flax_checkpoint.py on optimized-branch checkpoints (format_version 2).

tests/data/golden/optimized-{shga,mqa,mha}/checkpoint is an official work
directory written by the official launcher's own checkpointing (Orbax
CheckpointManager, step_prefix "state", steps 100 and 200; see
tools/make_optimized_golden.py); launch.txt is the official launch command
line of that run. Converting WORKDIR with that line pasted as is must give
exactly the committed model directory (the one the C++ golden tests and
score_e2e_test.py serve): the latest step, only `params`, config.json
from the pasted flags. Bad lines fail with status 2 and a message naming
the problem. Also: OCDBT checkpoints written by current Flax are named and
refused with how to convert them.

Run: /usr/bin/python3 tests/tools/convert_optimized_checkpoint_test.py
(environment: TVQ_TEST_DATA_DIR, default tests/data).
"""

import json
import os
import shlex
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import tvq_format  # noqa: E402

CONVERTER = os.path.join(ROOT, "tools", "convert_flax_checkpoint.py")
DATA_DIR = os.environ.get("TVQ_TEST_DATA_DIR", os.path.join(ROOT, "tests", "data"))
HEAD_TYPES = ("shga", "mqa", "mha")


def golden_dir(head_type):
    return os.path.join(DATA_DIR, "golden", "optimized-" + head_type)


def launch_flags(head_type):
    """The official launch line of the golden run, as pasted (after launch.py)."""
    with open(os.path.join(golden_dir(head_type), "launch.txt")) as handle:
        words = shlex.split(handle.read())
    return words


def run_converter(*args):
    result = subprocess.run([sys.executable, CONVERTER] + list(args),
                            capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def converted_optimized_model_dir(head_type, work_dir):
    """Converts the official work directory of golden optimized-HEAD_TYPE."""
    out = os.path.join(work_dir, "optimized-" + head_type)
    code, output = run_converter(os.path.join(golden_dir(head_type), "checkpoint"),
                                 out, *launch_flags(head_type))
    if code != 0:
        raise AssertionError("conversion failed: " + output)
    return out


class ConvertOptimizedTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.work = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_pasted_launch_line_gives_the_committed_model(self):
        for head_type in HEAD_TYPES:
            with self.subTest(head_type=head_type):
                out = os.path.join(self.work, head_type)
                code, output = run_converter(
                    os.path.join(golden_dir(head_type), "checkpoint"), out,
                    *launch_flags(head_type))
                self.assertEqual(code, 0, output)
                self.assertIn("using state_200 (latest step 200", output)
                self.assertIn("ignoring training-only flags", output)
                self.assertIn("ignoring --config.dtype", output)
                expected_dir = os.path.join(golden_dir(head_type), "model")
                with open(os.path.join(out, "config.json")) as handle:
                    config = json.load(handle)
                with open(os.path.join(expected_dir, "config.json")) as handle:
                    self.assertEqual(config, json.load(handle))
                self.assertEqual(config["format_version"], 2)
                self.assertEqual(config["head_type"], head_type)
                converted, dtypes, metadata = tvq_format.read_safetensors(
                    os.path.join(out, "model.safetensors"))
                expected, _, _ = tvq_format.read_safetensors(
                    os.path.join(expected_dir, "model.safetensors"))
                self.assertEqual(metadata.get("step"), "200")
                self.assertEqual(sorted(converted), sorted(expected))
                for name, array in expected.items():
                    self.assertEqual(dtypes[name], "F32")
                    self.assertTrue(np.array_equal(converted[name].view(np.uint32),
                                                   array.view(np.uint32)), name)
                self.assertFalse(any(name.startswith("opt_state") for name in converted))

    def test_step_directory_and_bf16_output(self):
        state = os.path.join(golden_dir("mqa"), "checkpoint", "checkpoints",
                             "transformer_vq_enwik8_vq_mqa", "state_100")
        out = os.path.join(self.work, "out")
        code, output = run_converter(state, out, *launch_flags("mqa"),
                                     "--out-dtype=bfloat16")
        self.assertEqual(code, 0, output)
        converted, dtypes, metadata = tvq_format.read_safetensors(
            os.path.join(out, "model.safetensors"))
        self.assertEqual(metadata.get("step"), "100")
        self.assertEqual(set(dtypes.values()), {"BF16"})
        expected, _, _ = tvq_format.read_safetensors(
            os.path.join(golden_dir("mqa"), "model", "model.safetensors"))
        # state_100 holds the params of state_200 times 0.5 (exact in binary).
        name = "token_embed/embedding"
        self.assertTrue(np.array_equal(
            converted[name], tvq_format.float32_to_bf16_bits(expected[name] * 0.5)))

    def assert_fails(self, args, needles):
        out = os.path.join(self.work, "out")
        code, output = run_converter(*args[:1], out, *args[1:])
        self.assertEqual(code, 2, output)
        for needle in needles:
            self.assertIn(needle, output)
        self.assertNotIn("Traceback", output)
        self.assertFalse(os.path.exists(os.path.join(out, "model.safetensors")))

    def test_unset_model_fields_are_named(self):
        workdir = os.path.join(golden_dir("mha"), "checkpoint")
        self.assert_fails([workdir, "--config.head_type=mha", "--config.d_model=32",
                           "--config.block_len=4", "--model_name=transformer_vq_enwik8_vq_mha"],
                          ["leaves model fields unset", "config.d_k", "config.n_code",
                           "config.n_layer", "config.pe_abs", "config.e_scale"])

    def test_wrong_head_type_names_the_tensors(self):
        flags = [f for f in launch_flags("mha") if not f.startswith("--config.head_type")]
        workdir = os.path.join(golden_dir("mha"), "checkpoint")
        self.assert_fails([workdir] + flags + ["--config.head_type=mqa",
                                               "--model_name=transformer_vq_enwik8_vq_mha"],
                          ["does not match the config (head_type mqa)",
                           "stack/VQAttention_0/qkvg_producer/k_proj/kernel has shape "
                           "[2, 1, 32, 32], the config needs [2, 1, 32, 8]"])

    def test_unknown_config_file_and_bad_values(self):
        workdir = os.path.join(golden_dir("shga"), "checkpoint")
        self.assert_fails([workdir, "--config=scripts/config_mine.py"],
                          ["--config=scripts/config_mine.py: no such file here"])
        self.assert_fails([workdir] + launch_flags("shga") + ["--config.pe_abs=maybe"],
                          ["--config.pe_abs must be True or False"])
        self.assert_fails([workdir] + launch_flags("shga") + ["--config.head_type=gqa"],
                          ["--config.head_type must be shga, mqa or mha"])

    def test_single_run_is_taken_whatever_its_name(self):
        workdir = os.path.join(golden_dir("shga"), "checkpoint")
        flags = [f for f in launch_flags("shga")] + ["--model_name=other"]
        # One run in checkpoints/: taken whatever its name.
        out = os.path.join(self.work, "one")
        code, output = run_converter(workdir, out, *flags)
        self.assertEqual(code, 0, output)


class OcdbtTest(unittest.TestCase):
    """A checkpoint written by current Flax (tests/data/ocdbt, see its script)."""

    def test_ocdbt_checkpoint_is_named_with_how_to_convert(self):
        with tempfile.TemporaryDirectory() as work:
            for path in (os.path.join(DATA_DIR, "ocdbt", "checkpoint_3"),
                         os.path.join(DATA_DIR, "ocdbt")):
                with self.subTest(path=path):
                    out = os.path.join(work, "out")
                    code, output = run_converter(
                        path, out, "--d_model=2", "--d_k=1", "--d_v=1", "--n_head=1",
                        "--n_code=1", "--n_layer=1", "--n_vocab=259", "--block_len=1",
                        "--mem_len=1", "--agg_cache=1", "--pe_abs=0", "--e_tie=1",
                        "--e_preln=0", "--e_scale=1")
                    self.assertEqual(code, 2, output)
                    self.assertIn("is an Orbax OCDBT checkpoint", output)
                    self.assertIn("flax.serialization.to_bytes", output)
                    self.assertNotIn("Traceback", output)


if __name__ == "__main__":
    unittest.main(verbosity=2)
