"""tvq-client subcommands against the real tvq-server (ctest label client).

Each test class starts tvq-server on a golden model and runs the tvq-client
binary as a process, checking its exit code and output.
"""

import json
import math
import os
import tempfile
import unittest

import numpy as np

from client_test_support import (NO_SENTENCEPIECE_REASON, Golden, TvqServer,
                                 describe, golden_model_dir, run_client,
                                 run_json)

# Logprobs are float32 computations checked against float64 references
# (tests/data/golden/README.md): 2e-5 absolute per logprob.
LOGPROB_TOLERANCE = 2e-5

BYTE_OFFSET = 3  # byte b is token b + 3 (0 pad, 1 eos, 2 unk)
EOS = 1


def byte_ids(text):
    return [b + BYTE_OFFSET for b in text.encode("utf-8")]


def ids_arg(ids):
    return ",".join(str(int(i)) for i in ids)


class ByteModelCliTest(unittest.TestCase):
    """tiny-byte: byte tokenizer, n_vocab 259."""

    @classmethod
    def setUpClass(cls):
        cls.server = TvqServer(golden_model_dir("tiny-byte"))
        cls.server.start()
        cls.addr = cls.server.address
        cls.golden = Golden("tiny-byte")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def client(self, *args, stdin=None):
        return run_client(list(args), self.addr, stdin=stdin)

    def ok(self, *args, stdin=None):
        result = self.client(*args, stdin=stdin)
        self.assertEqual(result.returncode, 0, describe(result))
        return result

    def json(self, *args):
        return run_json(self, list(args), self.addr)

    # ---- health and info

    def test_health(self):
        self.assertEqual(self.ok("health").stdout, "SERVING\n")
        self.assertEqual(self.json("health"),
                         {"service": "", "status": "SERVING"})
        # --wait returns at once when the server is already SERVING.
        self.assertEqual(self.ok("health", "--wait=5").stdout, "SERVING\n")

    def test_health_of_unreachable_server_fails_after_wait(self):
        result = run_client(["health", "--wait=0.3", "--timeout=0.2"],
                            "127.0.0.1:1")
        self.assertEqual(result.returncode, 1, describe(result))
        self.assertRegex(result.stderr,
                         r"tvq-client health: (UNAVAILABLE|DEADLINE_EXCEEDED)")

    def test_info(self):
        info = self.json("info")
        config = info["model_config"]
        self.assertEqual(config["n_vocab"], 259)
        self.assertEqual(config["eos_id"], EOS)
        self.assertEqual(config["n_layer"], 2)
        self.assertEqual(info["tokenizer_kind"], "TOKENIZER_KIND_BYTE")
        self.assertEqual(info["num_slots"],
                         info["free_slots"] + info["busy_slots"])
        self.assertGreater(info["limits"]["max_prompt_tokens"], 0)
        self.assertTrue(info["model_path"])
        text = self.ok("info").stdout
        self.assertIn("tokenizer  byte, 259 ids", text)
        self.assertIn("n_vocab 259", text)
        self.assertIn("limits     max_prompt_tokens", text)

    # ---- tokenize and detokenize

    def test_tokenize(self):
        self.assertEqual(self.ok("tokenize", "Hi").stdout,
                         ids_arg([EOS, *byte_ids("Hi")]) + "\n")
        self.assertEqual(self.ok("tokenize", "--no-eos-prefix", "Hi").stdout,
                         ids_arg(byte_ids("Hi")) + "\n")
        self.assertEqual(self.json("tokenize", "héllo"),
                         {"token_ids": [EOS, *byte_ids("héllo")]})
        # From stdin, and from a file.
        self.assertEqual(self.ok("tokenize", stdin="ab").stdout,
                         ids_arg([EOS, *byte_ids("ab")]) + "\n")
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as file:
            file.write("xyz")
            file.flush()
            self.assertEqual(
                self.ok("tokenize", "--no-eos-prefix", "--file",
                        file.name).stdout,
                ids_arg(byte_ids("xyz")) + "\n")

    def test_detokenize(self):
        ids = [EOS, *byte_ids("héllo wörld")]
        self.assertEqual(self.ok("detokenize", ids_arg(ids)).stdout,
                         "héllo wörld\n")
        # Ids as separate arguments, with --token-ids, and on stdin.
        self.assertEqual(
            self.ok("detokenize", *[str(i) for i in ids]).stdout,
            "héllo wörld\n")
        self.assertEqual(self.json("detokenize", "--token-ids", ids_arg(ids)),
                         {"text": "héllo wörld"})
        self.assertEqual(self.ok("detokenize", stdin=ids_arg(ids)).stdout,
                         "héllo wörld\n")

    def test_tokenize_detokenize_round_trip(self):
        text = "Transformer-VQ: ½ linear time ✓"
        ids = self.json("tokenize", text)["token_ids"]
        self.assertEqual(self.json("detokenize", ids_arg(ids))["text"], text)

    # ---- score

    def test_score_json_matches_golden_logprobs(self):
        tokens, logprobs = self.golden.tokens, self.golden.logprobs
        scored = self.json("score", "--no-eos-prefix", "--token-ids",
                           ids_arg(tokens))
        self.assertEqual(set(scored), {"tokens", "total_logprob",
                                       "bits_per_byte"})
        entries = scored["tokens"]
        self.assertEqual(len(entries), len(tokens) - 1)
        expected = [logprobs[i, tokens[i + 1]] for i in range(len(entries))]
        for i, entry in enumerate(entries):
            self.assertEqual(entry["id"], tokens[i + 1], f"entry {i}")
            self.assertAlmostEqual(entry["logprob"], expected[i],
                                   delta=LOGPROB_TOLERANCE,
                                   msg=f"entry {i} (token {tokens[i + 1]})")
            self.assertEqual(entry["top"], [])
        self.assertAlmostEqual(scored["total_logprob"], sum(expected),
                               delta=LOGPROB_TOLERANCE * len(entries))
        # Byte model: bits per byte over the scored tokens that are bytes.
        scored_bytes = sum(1 for t in tokens[1:] if t >= BYTE_OFFSET)
        self.assertAlmostEqual(
            scored["bits_per_byte"],
            -scored["total_logprob"] / math.log(2) / scored_bytes,
            delta=1e-6)

    def test_score_top_logprobs_match_golden(self):
        tokens, logprobs = self.golden.tokens, self.golden.logprobs
        scored = self.json("score", "--no-eos-prefix", "--top-logprobs=5",
                           "--token-ids", ids_arg(tokens[:20]))
        for i, entry in enumerate(scored["tokens"]):
            row = logprobs[i]
            top = entry["top"]
            self.assertEqual(len(top), 5, f"entry {i}")
            # Golden top-1 and top-2 differ by >= 1e-3: the argmax is exact.
            self.assertEqual(top[0]["id"], int(np.argmax(row)), f"entry {i}")
            for alternative in top:
                self.assertAlmostEqual(alternative["logprob"],
                                       row[alternative["id"]],
                                       delta=LOGPROB_TOLERANCE)
            values = [alternative["logprob"] for alternative in top]
            self.assertEqual(values, sorted(values, reverse=True))
            # Nothing outside the list beats its last entry.
            self.assertLessEqual(np.sort(row)[-6], values[-1] + 1e-5)

    def test_score_text_prepends_eos(self):
        scored = self.json("score", "hello")
        self.assertEqual([entry["id"] for entry in scored["tokens"]],
                         byte_ids("hello"))
        same = self.json("score", "--token-ids",
                         ids_arg([EOS, *byte_ids("hello")]),
                         "--no-eos-prefix")
        for a, b in zip(scored["tokens"], same["tokens"]):
            self.assertAlmostEqual(a["logprob"], b["logprob"], delta=1e-6)
        # Text on stdin gives the same sequence.
        result = self.ok("--json", "score", stdin="hello")
        self.assertEqual(json.loads(result.stdout)["tokens"],
                         scored["tokens"])

    def test_score_text_output(self):
        text = self.ok("score", "hello").stdout
        lines = text.splitlines()
        self.assertTrue(lines[0].split()[:3] == ["pos", "token", "logprob"],
                        text)
        self.assertEqual(len(lines), 1 + 5 + 1, text)
        self.assertEqual(lines[1].split()[:2], ["1", str(byte_ids("h")[0])])
        self.assertRegex(lines[-1],
                         r"^total_logprob -\d+\.\d+ over 5 scored tokens, "
                         r"perplexity \d+\.\d+, bits_per_byte \d+\.\d+$")

    # ---- generate

    def test_generate_greedy_first_token_matches_golden(self):
        # Greedy decoding after a golden prefix picks the golden argmax (the
        # golden top-1 and top-2 differ by >= 1e-3).
        for length in (1, 9, 40):
            prompt = self.golden.tokens[:length]
            expected = int(np.argmax(self.golden.logprobs[length - 1]))
            result = self.json("generate", "--no-eos-prefix", "--token-ids",
                               ids_arg(prompt), "--temperature=0",
                               "--max-new-tokens=1", "--ignore-eos",
                               "--logprobs=3")
            self.assertEqual(result["token_ids"], [expected],
                             f"prompt length {length}")
            self.assertEqual(result["finish_reason"], "length")
            self.assertEqual(result["usage"]["prompt_tokens"], length)
            self.assertEqual(result["usage"]["generated_tokens"], 1)
            logprob = result["logprobs"][0]
            self.assertEqual(logprob["id"], expected)
            self.assertAlmostEqual(
                logprob["logprob"],
                self.golden.logprobs[length - 1, expected],
                delta=LOGPROB_TOLERANCE)
            self.assertEqual(len(logprob["top"]), 3)
            self.assertEqual(logprob["top"][0]["id"], expected)

    def test_generate_stream_and_unary_agree(self):
        args = ["generate", "Hello", "--seed=1234", "--max-new-tokens=24",
                "--ignore-eos", "--temperature=0.9", "--top-k=50",
                "--request-id=client-test-1"]
        streamed = self.json(*args)
        unary = self.json(*args, "--no-stream")
        for key in ("token_ids", "text", "finish_reason", "seed",
                    "request_id", "matched_stop_token_id"):
            self.assertEqual(streamed[key], unary[key], key)
        self.assertEqual(streamed["request_id"], "client-test-1")
        self.assertEqual(streamed["seed"], 1234)
        self.assertEqual(streamed["finish_reason"], "length")
        self.assertEqual(len(streamed["token_ids"]), 24)
        self.assertEqual(streamed["usage"]["generated_tokens"], 24)
        self.assertEqual(streamed["usage"]["prompt_tokens"], 1 + len("Hello"))
        self.assertNotIn("logprobs", streamed)
        usage = streamed["usage"]
        self.assertGreaterEqual(usage["total_time_seconds"],
                                usage["time_to_first_token_seconds"])
        self.assertGreater(usage["time_to_first_token_seconds"], 0)

    def test_generate_text_output(self):
        args = ["generate", "Hello", "--seed=7", "--max-new-tokens=16",
                "--ignore-eos"]
        expected = self.json(*args)
        for mode in ([], ["--no-stream"]):
            result = self.ok(*args, *mode)
            text = expected["text"]
            if text and not text.endswith("\n"):
                text += "\n"
            self.assertEqual(result.stdout, text, mode)
            self.assertRegex(
                result.stderr,
                r"\[length: 16 tokens generated, prompt 6 tokens, queue "
                r"[\d.]+ ms, first token [\d.]+ ms, total [\d.]+ ms, seed 7, "
                r"request \S+\]")

    def test_generate_prompt_from_stdin_and_file(self):
        args = ["generate", "--seed=3", "--max-new-tokens=8", "--ignore-eos"]
        expected = self.json(*args, "abc")
        from_stdin = self.ok("--json", *args, "-", stdin="abc")
        self.assertEqual(json.loads(from_stdin.stdout)["token_ids"],
                         expected["token_ids"])
        with tempfile.NamedTemporaryFile("w") as file:
            file.write("abc")
            file.flush()
            from_file = self.json(*args, "--file", file.name)
        self.assertEqual(from_file["token_ids"], expected["token_ids"])

    def test_generate_stop_token_ids(self):
        greedy = ["generate", "Hello", "--temperature=0", "--ignore-eos",
                  "--max-new-tokens=12"]
        tokens = self.json(*greedy)["token_ids"]
        stop_at = 4
        stop_id = tokens[stop_at]
        first = tokens.index(stop_id)
        stopped = self.json(*greedy, f"--stop-token-ids={stop_id}")
        self.assertEqual(stopped["finish_reason"], "stop_token")
        self.assertEqual(stopped["matched_stop_token_id"], stop_id)
        self.assertEqual(stopped["token_ids"], tokens[:first + 1])

    def test_generate_logprobs_text_output(self):
        result = self.ok("generate", "Hi", "--seed=5", "--max-new-tokens=3",
                         "--ignore-eos", "--logprobs=2")
        table = [line for line in result.stderr.splitlines()
                 if not line.startswith("[")]
        self.assertEqual(len(table), 3, result.stderr)
        for position, line in enumerate(table):
            fields = line.split()
            self.assertEqual(fields[0], str(position))
            self.assertEqual(len(fields), 5, line)  # pos id logprob 2 x top
            self.assertLessEqual(float(fields[2]), 0.0)

    # ---- errors

    def test_invalid_field_prints_code_and_message(self):
        result = self.client("generate", "Hi", "--top-p=1.5")
        self.assertEqual(result.returncode, 1, describe(result))
        self.assertIn("tvq-client generate: INVALID_ARGUMENT:", result.stderr)
        self.assertIn("top_p", result.stderr)
        self.assertIn("1.5", result.stderr)
        self.assertEqual(result.stdout, "")
        result = self.client("detokenize", "5,999999")
        self.assertEqual(result.returncode, 1, describe(result))
        self.assertIn("INVALID_ARGUMENT", result.stderr)
        result = self.client("--json", "score", "--top-logprobs=50", "abc")
        self.assertEqual(result.returncode, 1, describe(result))
        self.assertIn("top_logprobs", result.stderr)
        self.assertEqual(result.stdout, "")

    def test_deadline_exceeded(self):
        result = self.client("--timeout=0.000001", "generate", "Hi",
                             "--max-new-tokens=64")
        self.assertEqual(result.returncode, 1, describe(result))
        self.assertIn("DEADLINE_EXCEEDED", result.stderr)

    def test_unreachable_server(self):
        result = run_client(["--timeout=5", "info"], "127.0.0.1:1")
        self.assertEqual(result.returncode, 1, describe(result))
        self.assertIn("tvq-client info: UNAVAILABLE:", result.stderr)


class UsageTest(unittest.TestCase):
    """Command-line mistakes: no server needed."""

    def assert_usage_error(self, args, message, command="generate"):
        result = run_client(args, "127.0.0.1:1")
        self.assertEqual(result.returncode, 2, describe(result))
        self.assertIn(message, result.stderr)
        self.assertIn(f"usage: tvq-client {command}", result.stderr)
        self.assertEqual(result.stdout, "")

    def test_bad_flags_print_usage(self):
        self.assert_usage_error(["generate", "--bogus", "Hi"],
                                "unknown flag --bogus")
        self.assert_usage_error(["generate", "Hi", "--temperature", "warm"],
                                'invalid value for --temperature: "warm"')
        self.assert_usage_error(["generate", "Hi", "--max-new-tokens"],
                                "flag --max-new-tokens needs a value")
        self.assert_usage_error(["generate"], "missing PROMPT")
        self.assert_usage_error(["score", "--token-ids=1,x"],
                                '"x" is not a token id', command="score")
        self.assert_usage_error(["bench", "--cancel-fraction=2"],
                                "--cancel-fraction must be in [0, 1], got 2",
                                command="bench")
        self.assert_usage_error(["bench", "--concurrency=0"],
                                "--concurrency must be >= 1", command="bench")
        self.assert_usage_error(["info", "extra"],
                                'info takes no arguments', command="info")

    def test_missing_or_unknown_command(self):
        for args, message in (([], "missing COMMAND"),
                              (["frobnicate"], 'unknown command "frobnicate"'),
                              (["--bogus"], "unknown flag --bogus")):
            result = run_client(args)
            self.assertEqual(result.returncode, 2, describe(result))
            self.assertIn(message, result.stderr)
            self.assertIn("usage: tvq-client [global flags] COMMAND",
                          result.stderr)
            for command in ("generate", "score", "tokenize", "detokenize",
                            "info", "health", "bench"):
                self.assertIn(f"\n  {command} ", result.stderr)

    def test_help_documents_every_flag(self):
        expected_flags = {
            "generate": ["file", "token-ids", "no-eos-prefix", "no-stream",
                         "temperature", "top-k", "top-p", "min-p",
                         "repetition-penalty", "presence-penalty",
                         "frequency-penalty", "seed", "max-new-tokens",
                         "stop", "stop-token-ids", "ignore-eos", "logprobs",
                         "request-id"],
            "score": ["file", "token-ids", "no-eos-prefix", "top-logprobs",
                      "request-id"],
            "tokenize": ["file", "no-eos-prefix"],
            "detokenize": ["token-ids"],
            "info": [],
            "health": ["service", "wait"],
            "bench": ["concurrency", "requests", "duration", "prompt-tokens",
                      "max-new-tokens", "ignore-eos", "temperature",
                      "cancel-fraction", "rate", "seed", "channels"],
        }
        for command, flags in expected_flags.items():
            result = run_client([command, "--help"])
            self.assertEqual(result.returncode, 0, describe(result))
            self.assertTrue(
                result.stdout.startswith(f"usage: tvq-client {command}"))
            for flag in [*flags, "addr", "timeout", "json", "help"]:
                self.assertRegex(result.stdout, rf"\n  (-h, )?--{flag}\b",
                                 f"{command} --help lacks --{flag}")
        # Global flags before the command work too.
        result = run_client(["--addr=x:1", "--help"])
        self.assertEqual(result.returncode, 0, describe(result))
        self.assertIn("Commands:", result.stdout)


class SentencePieceCliTest(unittest.TestCase):
    """tiny-tied: SentencePiece tokenizer, n_vocab 300."""

    @classmethod
    def setUpClass(cls):
        if NO_SENTENCEPIECE_REASON:
            raise unittest.SkipTest(NO_SENTENCEPIECE_REASON)
        cls.server = TvqServer(golden_model_dir("tiny-tied"))
        cls.server.start()
        cls.addr = cls.server.address
        cls.golden = Golden("tiny-tied")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def json(self, *args):
        return run_json(self, list(args), self.addr)

    def test_info(self):
        info = self.json("info")
        self.assertEqual(info["tokenizer_kind"], "TOKENIZER_KIND_SENTENCEPIECE")
        self.assertEqual(info["model_config"]["n_vocab"], 300)
        self.assertTrue(info["model_config"]["e_tie"])

    def test_tokenize_detokenize_round_trip(self):
        text = "hello world, this is a test"
        ids = self.json("tokenize", text)["token_ids"]
        self.assertEqual(ids[0], EOS)
        self.assertTrue(all(0 <= i < 300 for i in ids))
        self.assertEqual(self.json("detokenize", ids_arg(ids))["text"], text)
        without_eos = self.json("tokenize", "--no-eos-prefix", text)
        self.assertEqual(without_eos["token_ids"], ids[1:])

    def test_score_json_matches_golden_logprobs(self):
        tokens, logprobs = self.golden.tokens, self.golden.logprobs
        scored = self.json("score", "--no-eos-prefix", "--token-ids",
                           ids_arg(tokens))
        self.assertEqual(len(scored["tokens"]), len(tokens) - 1)
        for i, entry in enumerate(scored["tokens"]):
            self.assertEqual(entry["id"], tokens[i + 1])
            self.assertAlmostEqual(entry["logprob"],
                                   logprobs[i, tokens[i + 1]],
                                   delta=LOGPROB_TOLERANCE, msg=f"entry {i}")
        # Not a byte vocabulary: no bits per byte.
        self.assertIsNone(scored["bits_per_byte"])

    def test_generate_text(self):
        result = self.json("generate", "hello", "--seed=11",
                           "--max-new-tokens=10", "--ignore-eos")
        self.assertEqual(len(result["token_ids"]), 10)
        # The streamed text is the text of the ids in the prompt's context.
        prompt = self.json("tokenize", "hello")["token_ids"]
        whole = self.json("detokenize", ids_arg(prompt + result["token_ids"]))
        self.assertEqual(whole["text"], "hello" + result["text"])


if __name__ == "__main__":
    unittest.main()
