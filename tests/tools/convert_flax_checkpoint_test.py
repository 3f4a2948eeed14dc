"""Tests of tools/convert_flax_checkpoint.py.

Each golden model's tensors (tests/data/golden/*/model) are written as an
official train-state checkpoint {step, params, opt_state} in the layouts
flax 0.6.11 produces (legacy msgpack file, and the Orbax directory with its
aggregated msgpack file), with the token embeddings in chunked form. The
converter's output must hold exactly the original tensors (bit for bit) and
the original config.json; every bad input exits with status 2 and names the
problem.

Run: /usr/bin/python3 tests/tools/convert_flax_checkpoint_test.py
(environment: TVQ_TEST_DATA_DIR, default tests/data).
"""

import filecmp
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, HERE)

import flax_msgpack_writer as fmw  # noqa: E402
import tvq_format  # noqa: E402

CONVERTER = os.path.join(ROOT, "tools", "convert_flax_checkpoint.py")
DATA_DIR = os.environ.get("TVQ_TEST_DATA_DIR", os.path.join(ROOT, "tests", "data"))
GOLDEN = os.path.join(DATA_DIR, "golden")


def golden_model(name):
    directory = os.path.join(GOLDEN, name, "model")
    arrays, dtypes, _ = tvq_format.read_safetensors(
        os.path.join(directory, "model.safetensors"))
    assert set(dtypes.values()) == {"F32"}
    with open(os.path.join(directory, "config.json")) as handle:
        config = json.load(handle)
    return directory, config, arrays


def config_flags(config, tokenizer_dir=None):
    """The official-style launch flags of a config."""
    flags = []
    for key in ("d_model", "d_k", "d_v", "n_head", "n_code", "n_layer",
                "n_vocab", "block_len", "mem_len", "pe_lam", "e_scale"):
        flags.append("--%s=%s" % (key, config[key]))
    for key in ("agg_cache", "pe_abs", "e_tie", "e_preln"):
        flags.append("--%s=%d" % (key, int(config[key])))
    if config["tokenizer"]["kind"] == "sentencepiece":
        flags.append("--tokenizer=sentencepiece:" +
                     os.path.join(tokenizer_dir, config["tokenizer"]["file"]))
    return flags


def adam_like_opt_state(arrays, list_form):
    """An optax multi_transform(adamw | sgd) state shaped like the official one."""
    main = {name: np.zeros_like(a) for name, a in arrays.items()
            if not name.split("/")[-1].startswith("c_")}
    adam = {"count": np.array(12, dtype=np.int32),
            "mu": fmw.nest(main), "nu": fmw.nest({n: a + 1 for n, a in main.items()})}
    schedule = {"count": np.array(12, dtype=np.int32)}
    if list_form:  # Orbax serialises tuples as lists
        inner = [{}, adam, schedule]
    else:          # flax.serialization: tuples as {"0": .., "1": ..}
        inner = {"0": {}, "1": adam, "2": schedule}
    return {"inner_states": {"main": {"inner_state": inner},
                             "codebook": {"inner_state": {}}}}


def train_state(arrays, chunk_embs=True, list_form=False, step_as_scalar=False,
                params=None):
    params = dict(arrays) if params is None else params
    if chunk_embs:
        params["token_embedder/embs"] = fmw.chunked(
            params["token_embedder/embs"], 3)
    step = np.int32(12) if step_as_scalar else np.array(12, dtype=np.int32)
    return {"step": step, "params": fmw.nest(params),
            "opt_state": adam_like_opt_state(arrays, list_form)}


def write_file(path, tree):
    with open(path, "wb") as handle:
        handle.write(fmw.packb(tree))


def run_converter(*args):
    result = subprocess.run([sys.executable, CONVERTER] + list(args),
                            capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def converted_model_dir(golden_name, work_dir):
    """Converts golden model `golden_name` from a Flax checkpoint; returns the dir.

    tests/tools/score_e2e_test.py serves the result with tvq-server and
    checks that Score reproduces the golden logprobs.
    """
    model_dir, config, arrays = golden_model(golden_name)
    checkpoint = os.path.join(work_dir, "checkpoint_12")
    write_file(checkpoint, train_state(arrays))
    out = os.path.join(work_dir, golden_name)
    code, output = run_converter(checkpoint, out, *config_flags(config, model_dir))
    if code != 0:
        raise AssertionError("conversion failed: " + output)
    return out


class EncoderTest(unittest.TestCase):
    """The test's own msgpack encoder agrees with python3-msgpack."""

    def test_round_trip_through_python_msgpack(self):
        import msgpack
        value = {"a": [1, -1, -33, 200, 70000, 2**40, -2**40, 1.5, None, True, False],
                 "s" * 40: "x" * 300, "b": b"\x00" * 70000, "m": {str(i): i for i in range(20)}}
        decoded = msgpack.unpackb(fmw.packb(value), raw=False, strict_map_key=False)
        self.assertEqual(decoded, value)

    def test_array_extension_matches_flax_layout(self):
        import msgpack
        array = np.arange(6, dtype=np.float32).reshape(2, 3)
        ext = msgpack.unpackb(fmw.packb(array))
        self.assertEqual(ext.code, 1)
        shape, dtype, raw = msgpack.unpackb(ext.data, raw=True)
        self.assertEqual((shape, dtype), ([2, 3], b"float32"))
        self.assertEqual(raw, array.tobytes())


class Bf16Test(unittest.TestCase):
    def test_round_to_nearest_even(self):
        words = np.array([0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001,
                          0x3F80FFFF, 0x7F7FFFFF, 0x80000000, 0x7FC00000],
                         dtype=np.uint32)
        expected = [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0x3F81, 0x7F80, 0x8000, 0x7FC0]
        bits = tvq_format.float32_to_bf16_bits(words.view(np.float32))
        self.assertEqual([int(b) for b in bits], expected)


class ConvertGoldenTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.work = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def assert_same_model(self, out, model_dir, config, arrays, dtype="F32"):
        with open(os.path.join(out, "config.json")) as handle:
            self.assertEqual(json.load(handle), config)
        converted, dtypes, metadata = tvq_format.read_safetensors(
            os.path.join(out, "model.safetensors"))
        self.assertEqual(sorted(converted), sorted(arrays))
        self.assertEqual(metadata.get("step"), "12")
        for name, original in arrays.items():
            self.assertEqual(dtypes[name], dtype, name)
            self.assertEqual(converted[name].shape, original.shape, name)
            if dtype == "F32":
                expected = original.view(np.uint32)
                actual = converted[name].view(np.uint32)
            else:
                expected = tvq_format.float32_to_bf16_bits(original)
                actual = converted[name]
            self.assertTrue(np.array_equal(actual, expected), name)
        if config["tokenizer"]["kind"] == "sentencepiece":
            self.assertTrue(filecmp.cmp(os.path.join(model_dir, "tokenizer.model"),
                                        os.path.join(out, "tokenizer.model"),
                                        shallow=False))
        else:
            self.assertFalse(os.path.exists(os.path.join(out, "tokenizer.model")))

    def test_legacy_msgpack_file_every_golden_model(self):
        for name in ("tiny-byte", "tiny-noagg", "tiny-tied"):
            with self.subTest(model=name):
                model_dir, config, arrays = golden_model(name)
                out = converted_model_dir(name, self.work)
                self.assert_same_model(out, model_dir, config, arrays)

    def test_orbax_directory_picks_highest_step(self):
        model_dir, config, arrays = golden_model("tiny-byte")
        run_dir = os.path.join(self.work, "run")
        for step, scale in ((3, 2.0), (12, 1.0)):
            step_dir = os.path.join(run_dir, "checkpoint_%d" % step)
            os.makedirs(step_dir)
            params = {n: a * np.float32(scale) for n, a in arrays.items()}
            write_file(os.path.join(step_dir, "checkpoint"),
                       train_state(params, list_form=True, step_as_scalar=True))
        out = os.path.join(self.work, "out")
        code, output = run_converter(run_dir, out, *config_flags(config))
        self.assertEqual(code, 0, output)
        self.assertIn("checkpoint_12", output)
        self.assert_same_model(out, model_dir, config, arrays)

    def test_config_file_and_bf16_output(self):
        model_dir, config, arrays = golden_model("tiny-tied")
        checkpoint = os.path.join(self.work, "checkpoint_12")
        write_file(checkpoint, train_state(arrays))
        out = os.path.join(self.work, "out")
        code, output = run_converter(checkpoint, out, "--config",
                                     os.path.join(model_dir, "config.json"),
                                     "--out-dtype", "bf16")
        self.assertEqual(code, 0, output)
        self.assert_same_model(out, model_dir, config, arrays, dtype="BF16")

    def test_pasted_official_dtype_is_not_the_output_dtype(self):
        # The official --dtype is the activation dtype: a pasted launch line
        # with --dtype=bfloat16 still writes the float32 parameters bit for
        # bit, and says why; --out-dtype chooses the output.
        model_dir, config, arrays = golden_model("tiny-byte")
        checkpoint = os.path.join(self.work, "checkpoint_12")
        write_file(checkpoint, train_state(arrays))
        for index, pasted in enumerate((["--dtype=bfloat16"], ["--dtype", "bfloat16"])):
            with self.subTest(pasted=pasted):
                out = os.path.join(self.work, "out%d" % index)
                code, output = run_converter(checkpoint, out, *config_flags(config),
                                             *pasted)
                self.assertEqual(code, 0, output)
                self.assertIn("ignoring --dtype=bfloat16: it is the official "
                              "activation dtype", output)
                self.assertIn("F32", output)
                self.assert_same_model(out, model_dir, config, arrays, dtype="F32")
        out = os.path.join(self.work, "out_bf16")
        code, output = run_converter(checkpoint, out, *config_flags(config),
                                     "--dtype=float32", "--out-dtype=bfloat16")
        self.assertEqual(code, 0, output)
        self.assert_same_model(out, model_dir, config, arrays, dtype="BF16")

    def test_bf16_checkpoint_widens_exactly(self):
        model_dir, config, arrays = golden_model("tiny-byte")
        bits = {n: tvq_format.float32_to_bf16_bits(a) for n, a in arrays.items()}
        params = {n: fmw.BF16(b) for n, b in bits.items()}
        checkpoint = os.path.join(self.work, "checkpoint_12")
        write_file(checkpoint, train_state(arrays, chunk_embs=False, params=params))
        out = os.path.join(self.work, "out")
        code, output = run_converter(checkpoint, out, *config_flags(config))
        self.assertEqual(code, 0, output)
        converted, _, _ = tvq_format.read_safetensors(
            os.path.join(out, "model.safetensors"))
        for name, b in bits.items():
            widened = tvq_format.bf16_bits_to_float32(b)
            self.assertTrue(np.array_equal(converted[name], widened), name)

    def test_preset_and_pasted_official_flags(self):
        # The enwik8 preset supplies the architecture; the checkpoint here is
        # tiny, so the flags given afterwards override it.
        model_dir, config, arrays = golden_model("tiny-byte")
        checkpoint = os.path.join(self.work, "checkpoint_12")
        write_file(checkpoint, train_state(arrays))
        out = os.path.join(self.work, "out")
        code, output = run_converter(
            checkpoint, out, "--preset", "enwik8", "--d_model=64", "--d_k=16",
            "--d_v=128", "--n_code=32", "--n_layer=2", "--block_len=8",
            "--mem_len=8", "--agg_cache=1", "--p_dropsin=0.2", "--optimizer",
            "adamw", "--c_gamma=0.99")
        self.assertEqual(code, 0, output)
        self.assertIn("ignoring training-only flags", output)
        self.assert_same_model(out, model_dir, config, arrays)


class ConvertErrorTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.work = self.tmp.name
        self.model_dir, self.config, self.arrays = golden_model("tiny-byte")
        self.out = os.path.join(self.work, "out")

    def tearDown(self):
        self.tmp.cleanup()

    def convert(self, tree=None, flags=None, raw=None):
        checkpoint = os.path.join(self.work, "checkpoint_12")
        if raw is not None:
            with open(checkpoint, "wb") as handle:
                handle.write(raw)
        else:
            write_file(checkpoint, tree if tree is not None else train_state(self.arrays))
        return run_converter(checkpoint, self.out,
                             *(flags if flags is not None else config_flags(self.config)))

    def assert_fails(self, needles, **kwargs):
        code, output = self.convert(**kwargs)
        self.assertEqual(code, 2, output)
        for needle in needles:
            self.assertIn(needle, output)
        self.assertNotIn("Traceback", output)
        self.assertFalse(os.path.exists(os.path.join(self.out, "model.safetensors")))

    def test_missing_parameter(self):
        params = dict(self.arrays)
        del params["transformer_layers_1/scanned_attn2/u"]
        self.assert_fails(["missing parameter transformer_layers_1/scanned_attn2/u"],
                          tree=train_state(self.arrays, params=params))

    def test_misshapen_parameter(self):
        params = dict(self.arrays)
        name = "transformer_layers_0/scanned_attn2/kvg_proj/kernel"
        params[name] = params[name][:, :100]
        self.assert_fails([name, "[64, 100]", "[64, 272]"],
                          tree=train_state(self.arrays, params=params))

    def test_unexpected_parameter(self):
        params = dict(self.arrays)
        params["transformer_layers_0/scanned_attn1/mlp/kernel"] = np.zeros(3, np.float32)
        self.assert_fails(["unexpected parameter transformer_layers_0/scanned_attn1/mlp/kernel"],
                          tree=train_state(self.arrays, params=params))

    def test_config_that_does_not_match(self):
        cases = (("d_model", "--d_model=128", "d_model=128"),
                 ("n_layer", "--n_layer=3", "n_layer=3 but the checkpoint has 2 layers"),
                 ("n_code", "--n_code=64", "n_code=64"),
                 ("d_v", "--d_v=64", "d_v=64"),
                 ("e_tie", "--e_tie=1", "e_tie=1 but the checkpoint has out_proj/kernel"),
                 ("pe_abs", "--pe_abs=1", "pe_abs=1 but the checkpoint has no "
                  "position_embedder/scale"))
        for key, flag, needle in cases:
            with self.subTest(key=key):
                flags = [f for f in config_flags(self.config)
                         if not f.startswith("--%s=" % key)] + [flag]
                self.assert_fails(["does not match the checkpoint", needle], flags=flags)

    def test_missing_flag(self):
        flags = [f for f in config_flags(self.config) if not f.startswith("--mem_len=")]
        self.assert_fails(["missing flag", "--mem_len"], flags=flags)

    def test_bad_flag_values(self):
        for flag, needle in (("--agg_cache=maybe", "--agg_cache must be 0/1"),
                             ("--d_k=sixteen", "--d_k must be an integer"),
                             ("--d_model=63", "d_model"),
                             ("--tokenizer=words", "--tokenizer must be")):
            with self.subTest(flag=flag):
                self.assert_fails([needle], flags=config_flags(self.config) + [flag])

    def test_not_a_checkpoint(self):
        self.assert_fails(["not a Flax msgpack checkpoint"], raw=b"\xc1garbage")
        self.assert_fails(["truncated"], raw=fmw.packb(train_state(self.arrays))[:5000])
        self.assert_fails(["is a msgpack list, not a map"], raw=fmw.packb([1, 2]))

    def test_no_params(self):
        self.assert_fails(["no 'params'", "opt_state"],
                          tree={"step": 3, "opt_state": {}})

    def test_nonempty_output_directory(self):
        os.makedirs(self.out)
        with open(os.path.join(self.out, "keep.txt"), "w") as handle:
            handle.write("x")
        code, output = self.convert()
        self.assertEqual(code, 2, output)
        self.assertIn("not empty (use --force)", output)

    def test_missing_checkpoint_path(self):
        code, output = run_converter(os.path.join(self.work, "nope"), self.out,
                                     *config_flags(self.config))
        self.assertEqual(code, 2, output)
        self.assertIn("does not exist", output)


if __name__ == "__main__":
    unittest.main(verbosity=2)
