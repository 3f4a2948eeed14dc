"""The Python client (client/python) against the real tvq-server (ctest
label client): the TvqClient class and the example script."""

import os
import subprocess
import sys
import unittest

import grpc

from client_test_support import (PYTHON_EXAMPLES, Golden, TvqServer,
                                 golden_model_dir)
from tvq_client import TvqClient, TvqError, finish_reason_name

LOGPROB_TOLERANCE = 2e-5


class TvqClientTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = TvqServer(golden_model_dir("tiny-byte"))
        cls.server.start()
        cls.client = TvqClient(cls.server.address, timeout=60)
        cls.client.wait_until_ready()

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()

    def test_sessions(self):
        c = self.client
        prompt = [1, 70, 71, 72, 73]
        session = c.create_session(token_ids=prompt, session_id="py",
                                   no_eos_prefix=True)
        self.assertEqual(session.position, len(prompt))
        turn = c.generate(session_id="py", max_new_tokens=5, temperature=0,
                          ignore_eos=True)
        self.assertEqual(turn.usage.cached_tokens, len(prompt) - 1)
        whole = c.generate(token_ids=prompt, no_eos_prefix=True,
                           max_new_tokens=5, temperature=0, ignore_eos=True)
        self.assertEqual(list(turn.token_ids), list(whole.token_ids))
        c.append_to_session("py", token_ids=[80, 81])
        fork = c.fork_session("py", "py-fork")
        self.assertEqual(fork.position, len(prompt) + 5 + 2)
        blob = c.export_session("py")
        imported = c.import_session(blob, "py-copy")
        self.assertEqual(imported.position, fork.position)
        scored = c.score(token_ids=[82, 83], session_id="py-copy",
                         no_eos_prefix=True)
        self.assertEqual(len(scored.token_logprobs), 2)
        ids = [s.session_id for s in c.list_sessions()]
        self.assertEqual(ids, ["py", "py-copy", "py-fork"])
        with self.assertRaises(TvqError) as caught:
            c.import_session(blob[:-3])
        self.assertEqual(caught.exception.code, grpc.StatusCode.DATA_LOSS)
        for session_id in ids:
            c.close_session(session_id)
        with self.assertRaises(TvqError) as caught:
            c.get_session("py")
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_info(self):
        info = self.client.info()
        self.assertEqual(info.model_config.n_vocab, 259)
        self.assertEqual(info.num_slots, info.free_slots + info.busy_slots)

    def test_stream_and_unary_agree(self):
        options = dict(max_new_tokens=20, seed=99, ignore_eos=True,
                       temperature=0.8, logprobs=True)
        chunks = list(self.client.generate_stream("Hello", **options))
        unary = self.client.generate("Hello", **options)
        self.assertEqual([t for c in chunks for t in c.token_ids],
                         list(unary.token_ids))
        self.assertEqual("".join(c.text for c in chunks), unary.text)
        self.assertEqual(len(unary.token_ids), 20)
        self.assertEqual(len(unary.logprobs), 20)
        last = chunks[-1]
        self.assertEqual(finish_reason_name(last.finish_reason), "length")
        self.assertEqual(finish_reason_name(unary.finish_reason), "length")
        self.assertEqual(last.usage.generated_tokens, 20)
        self.assertEqual(unary.seed, 99)
        for chunk in chunks[:-1]:
            self.assertEqual(chunk.finish_reason, 0)

    def test_token_id_prompt_and_tokenizer(self):
        ids = self.client.tokenize("abc")
        self.assertEqual(ids, [1, 100, 101, 102])
        self.assertEqual(self.client.detokenize(ids), "abc")
        by_text = self.client.generate("abc", max_new_tokens=5, seed=1,
                                       ignore_eos=True)
        by_ids = self.client.generate(token_ids=ids, no_eos_prefix=True,
                                      max_new_tokens=5, seed=1,
                                      ignore_eos=True)
        self.assertEqual(list(by_text.token_ids), list(by_ids.token_ids))

    def test_score_matches_golden(self):
        golden = Golden("tiny-byte")
        scored = self.client.score(token_ids=golden.tokens.tolist(),
                                   no_eos_prefix=True, top_logprobs=2)
        self.assertEqual(len(scored.token_logprobs), len(golden.tokens) - 1)
        for i, entry in enumerate(scored.token_logprobs):
            expected = golden.logprobs[i, golden.tokens[i + 1]]
            self.assertAlmostEqual(entry.logprob, expected,
                                   delta=LOGPROB_TOLERANCE)
            self.assertEqual(len(entry.top_logprobs), 2)
        self.assertTrue(scored.HasField("bits_per_byte"))

    def test_cancel_stream(self):
        stream = self.client.generate_stream(
            "Hello", max_new_tokens=8000, ignore_eos=True)
        received = 0
        with self.assertRaises(TvqError) as raised:
            for chunk in stream:
                received += len(chunk.token_ids)
                if received >= 3:
                    stream.cancel()
        self.assertEqual(raised.exception.code, grpc.StatusCode.CANCELLED)
        self.assertLess(received, 8000)

    def test_errors(self):
        with self.assertRaises(TvqError) as raised:
            self.client.generate("Hi", top_p=1.5)
        self.assertEqual(raised.exception.code,
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("top_p", str(raised.exception))
        self.assertTrue(str(raised.exception).startswith("INVALID_ARGUMENT: "))
        with self.assertRaises(TvqError) as raised:
            list(self.client.generate_stream("Hi", temperature=-1))
        self.assertEqual(raised.exception.code,
                         grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(TypeError):
            self.client.generate("Hi", tempreature=1)
        with self.assertRaises(ValueError):
            self.client.generate()
        with self.assertRaises(ValueError):
            self.client.score("a", token_ids=[1, 2])

    def test_example_script(self):
        script = os.path.join(PYTHON_EXAMPLES, "generate.py")
        result = subprocess.run(
            [sys.executable, script, "--addr", self.server.address,
             "--max-new-tokens", "12", "--seed", "4", "Once upon a time"],
            capture_output=True, timeout=120, check=False)
        # Bytes: no newline translation of the generated text.
        stdout = result.stdout.decode("utf-8")
        stderr = result.stderr.decode("utf-8")
        self.assertEqual(result.returncode, 0, stderr)
        expected = self.client.generate("Once upon a time", max_new_tokens=12,
                                        seed=4)
        self.assertEqual(stdout, expected.text + "\n")
        self.assertIn("model: ", stderr)
        self.assertRegex(stderr,
                         rf"finish: {finish_reason_name(expected.finish_reason)}"
                         rf", {len(expected.token_ids)} tokens, seed 4")
        self.assertRegex(stderr,
                         r"score: total_logprob -[\d.]+ over \d+ tokens, "
                         r"perplexity [\d.]+, bits_per_byte [\d.]+")

    def test_example_script_reports_errors(self):
        script = os.path.join(PYTHON_EXAMPLES, "generate.py")
        result = subprocess.run(
            [sys.executable, script, "--addr", self.server.address,
             "--temperature", "-3", "Hi"],
            capture_output=True, text=True, timeout=120, check=False)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("error: INVALID_ARGUMENT: ", result.stderr)


if __name__ == "__main__":
    unittest.main()
