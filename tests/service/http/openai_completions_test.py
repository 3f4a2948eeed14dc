"""POST /v1/completions, GET /v1/models, /tokenize, /detokenize and /health
of the real tvq-server, through the real openai SDK and curl, compared with
the gRPC Generate of the same server (ctest label http)."""

import json
import unittest

import openai

from http_test_support import (MODEL, HttpServer, curl, curl_json, read_sse)
from tvq_client import TvqClient

PROMPT = "Hello"


class CompletionsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = HttpServer()
        cls.server.start()
        cls.grpc = TvqClient(cls.server.address, timeout=60)
        cls.openai = openai.OpenAI(base_url=cls.server.base_url + "/v1",
                                   api_key="unused", max_retries=0,
                                   timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.openai.close()
        cls.grpc.close()
        cls.server.stop()

    def greedy(self, **options):
        return self.openai.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0,
            extra_body={"ignore_eos": True}, **options)

    def test_greedy_text_equals_grpc_generate(self):
        http = self.greedy()
        grpc = self.grpc.generate(PROMPT, max_new_tokens=16, temperature=0,
                                  ignore_eos=True)
        self.assertEqual(http.object, "text_completion")
        self.assertEqual(http.model, MODEL)
        self.assertTrue(http.id.startswith("cmpl-"))
        self.assertEqual(len(http.choices), 1)
        choice = http.choices[0]
        self.assertEqual(choice.index, 0)
        self.assertEqual(choice.text, grpc.text)
        self.assertEqual(choice.finish_reason, "length")
        self.assertIsNone(choice.logprobs)
        self.assertEqual(http.usage.prompt_tokens, len(PROMPT) + 1)
        self.assertEqual(http.usage.completion_tokens, 16)
        self.assertEqual(http.usage.total_tokens, len(PROMPT) + 17)
        self.assertEqual(http.usage.prompt_tokens_details.cached_tokens, 0)

    def test_token_id_prompt_is_used_as_given(self):
        ids = self.grpc.tokenize(PROMPT)  # eos prefix included
        by_ids = self.openai.completions.create(
            model=MODEL, prompt=ids, max_tokens=8, temperature=0,
            extra_body={"ignore_eos": True})
        by_text = self.openai.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0,
            extra_body={"ignore_eos": True})
        self.assertEqual(by_ids.choices[0].text, by_text.choices[0].text)
        self.assertEqual(by_ids.usage.prompt_tokens, len(ids))

    def test_stream_chunks_join_to_the_unary_text(self):
        unary = self.greedy()
        stream = self.greedy(stream=True,
                             stream_options={"include_usage": True})
        chunks = list(stream)
        usage_chunk = chunks[-1]
        self.assertEqual(usage_chunk.choices, [])
        self.assertEqual(usage_chunk.usage.completion_tokens, 16)
        self.assertEqual(usage_chunk.usage.prompt_tokens, len(PROMPT) + 1)
        text_chunks = chunks[:-1]
        self.assertGreater(len(text_chunks), 1)
        for chunk in text_chunks:
            self.assertEqual(chunk.object, "text_completion")
            self.assertIsNone(chunk.usage)
            self.assertEqual(chunk.id, usage_chunk.id)
        self.assertEqual("".join(c.choices[0].text for c in text_chunks),
                         unary.choices[0].text)
        self.assertEqual(text_chunks[-1].choices[0].finish_reason, "length")
        for chunk in text_chunks[:-1]:
            self.assertIsNone(chunk.choices[0].finish_reason)

    def test_stream_wire_format_with_curl(self):
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 5,
                "temperature": 0, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        result = curl(["-N", "-D", "-", "-H", "Content-Type: application/json",
                       "--data-binary", json.dumps(body),
                       self.server.base_url + "/v1/completions"])
        self.assertEqual(result.returncode, 0, result.stderr)
        head, _, body_text = result.stdout.partition("\r\n\r\n")
        self.assertIn("200 OK", head.splitlines()[0])
        self.assertIn("content-type: text/event-stream", head.lower())
        self.assertIn("transfer-encoding: chunked", head.lower())
        payloads = read_sse(body_text)
        self.assertEqual(payloads[-1], "[DONE]")
        usage = json.loads(payloads[-2])
        self.assertEqual(usage["choices"], [])
        self.assertEqual(usage["usage"]["completion_tokens"], 5)
        chunks = [json.loads(p) for p in payloads[:-2]]
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")
        self.assertTrue(all(c["usage"] is None for c in chunks))
        unary = self.openai.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0,
            extra_body={"ignore_eos": True})
        self.assertEqual("".join(c["choices"][0]["text"] for c in chunks),
                         unary.choices[0].text)

    def test_stream_without_usage_ends_with_done(self):
        result = curl(["-N", "--data-binary", json.dumps(
            {"prompt": PROMPT, "max_tokens": 3, "stream": True}),
            self.server.base_url + "/v1/completions"])
        payloads = read_sse(result.stdout)
        self.assertEqual(payloads[-1], "[DONE]")
        last = json.loads(payloads[-2])
        self.assertNotIn("usage", last)
        self.assertIsNotNone(last["choices"][0]["finish_reason"])

    def test_logprobs(self):
        http = self.greedy(logprobs=3)
        grpc = self.grpc.generate(PROMPT, max_new_tokens=16, temperature=0,
                                  ignore_eos=True, logprobs=True,
                                  top_logprobs=3)
        logprobs = http.choices[0].logprobs
        self.assertEqual(len(logprobs.tokens), 16)
        self.assertEqual(len(logprobs.token_logprobs), 16)
        self.assertEqual(len(logprobs.top_logprobs), 16)
        self.assertEqual(len(logprobs.text_offset), 16)
        self.assertEqual(logprobs.text_offset[0], 0)
        self.assertEqual(logprobs.text_offset,
                         sorted(logprobs.text_offset))
        for ours, theirs in zip(logprobs.token_logprobs, grpc.logprobs):
            self.assertAlmostEqual(ours, theirs.logprob, places=5)
        for top, theirs in zip(logprobs.top_logprobs, grpc.logprobs):
            self.assertGreaterEqual(len(top), 1)
            self.assertLessEqual(len(top), 3)
            self.assertAlmostEqual(max(top.values()),
                                   theirs.top_logprobs[0].logprob, places=5)
        # logprobs stream too, with offsets that continue across chunks.
        chunks = list(self.greedy(logprobs=3, stream=True))
        streamed = [lp for c in chunks if c.choices[0].logprobs
                    for lp in c.choices[0].logprobs.token_logprobs]
        offsets = [o for c in chunks if c.choices[0].logprobs
                   for o in c.choices[0].logprobs.text_offset]
        self.assertEqual(len(streamed), 16)
        self.assertEqual(offsets, logprobs.text_offset)

    def test_stop_sequence_and_stop_token(self):
        full = self.greedy().choices[0].text
        # The first printable ASCII character that first appears after the
        # start: stopping at it leaves the text before it.
        position = next(i for i, c in enumerate(full)
                        if i > 0 and " " <= c <= "~" and c not in full[:i])
        stop = full[position]
        stopped = self.greedy(stop=[stop, "never matches"])
        self.assertEqual(stopped.choices[0].text, full[:position])
        self.assertEqual(stopped.choices[0].finish_reason, "stop")
        self.assertEqual(stopped.choices[0].model_extra["stop_reason"], stop)
        single = self.greedy(stop=stop)
        self.assertEqual(single.choices[0].text, full[:position])

        grpc = self.grpc.generate(PROMPT, max_new_tokens=16, temperature=0,
                                  ignore_eos=True)
        stop_id = grpc.token_ids[3]
        first = list(grpc.token_ids).index(stop_id)
        by_token = self.openai.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0,
            extra_body={"ignore_eos": True, "stop_token_ids": [stop_id]})
        self.assertEqual(by_token.choices[0].finish_reason, "stop")
        self.assertEqual(by_token.choices[0].model_extra["stop_reason"],
                         stop_id)
        self.assertEqual(by_token.usage.completion_tokens, first + 1)

    def test_n_choices_use_consecutive_seeds(self):
        options = dict(model=MODEL, prompt=PROMPT, max_tokens=12,
                       temperature=1.0, extra_body={"ignore_eos": True})
        several = self.openai.completions.create(n=3, seed=7, **options)
        self.assertEqual([c.index for c in several.choices], [0, 1, 2])
        for i, choice in enumerate(several.choices):
            alone = self.openai.completions.create(seed=7 + i, **options)
            self.assertEqual(choice.text, alone.choices[0].text)
            grpc = self.grpc.generate(PROMPT, max_new_tokens=12, seed=7 + i,
                                      temperature=1.0, ignore_eos=True)
            self.assertEqual(choice.text, grpc.text)
        self.assertEqual(several.usage.completion_tokens, 36)
        self.assertEqual(several.usage.prompt_tokens, len(PROMPT) + 1)
        # Streamed, every choice has its chunks and its own final one.
        chunks = list(self.openai.completions.create(
            n=3, seed=7, stream=True, **options))
        for i, choice in enumerate(several.choices):
            mine = [c.choices[0] for c in chunks if c.choices[0].index == i]
            self.assertEqual("".join(c.text for c in mine), choice.text)
            self.assertEqual(mine[-1].finish_reason, "length")

    def test_sampling_extras_reach_the_engine(self):
        options = dict(max_new_tokens=10, seed=3, temperature=0.9, top_k=5,
                       top_p=0.9, min_p=0.05, repetition_penalty=1.2,
                       presence_penalty=0.5, frequency_penalty=0.3,
                       ignore_eos=True)
        grpc = self.grpc.generate(PROMPT, **options)
        http = self.openai.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=10, seed=3,
            temperature=0.9, top_p=0.9, presence_penalty=0.5,
            frequency_penalty=0.3, user="test-user",
            extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.2,
                        "ignore_eos": True})
        self.assertEqual(http.choices[0].text, grpc.text)

    def test_echo(self):
        echoed = self.greedy(echo=True)
        plain = self.greedy()
        self.assertEqual(echoed.choices[0].text,
                         PROMPT + plain.choices[0].text)

    def test_echo_with_logprobs_scores_the_prompt(self):
        # max_tokens 0 + echo + logprobs: the Score of the prompt.
        scored = self.grpc.score(PROMPT, top_logprobs=2)
        http = self.openai.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=0, echo=True, logprobs=2)
        choice = http.choices[0]
        self.assertEqual(choice.text, PROMPT)
        self.assertEqual(choice.finish_reason, "length")
        self.assertEqual(http.usage.completion_tokens, 0)
        logprobs = choice.logprobs
        # The eos prefix first, with no logprob, then every prompt byte.
        self.assertEqual(logprobs.tokens, [""] + list(PROMPT))
        self.assertIsNone(logprobs.token_logprobs[0])
        self.assertIsNone(logprobs.top_logprobs[0])
        self.assertEqual(logprobs.text_offset, [0, 0, 1, 2, 3, 4])
        for ours, theirs in zip(logprobs.token_logprobs[1:],
                                scored.token_logprobs):
            self.assertAlmostEqual(ours, theirs.logprob, places=5)
        # With generated tokens after it, whole and streamed.
        both = self.greedy(echo=True, logprobs=1)
        plain = self.greedy(logprobs=1)
        self.assertEqual(both.choices[0].text,
                         PROMPT + plain.choices[0].text)
        self.assertEqual(both.choices[0].logprobs.token_logprobs[6:],
                         plain.choices[0].logprobs.token_logprobs)
        chunks = list(self.greedy(echo=True, logprobs=1, stream=True))
        self.assertEqual("".join(c.choices[0].text for c in chunks),
                         both.choices[0].text)
        self.assertEqual([lp for c in chunks if c.choices[0].logprobs
                          for lp in c.choices[0].logprobs.token_logprobs],
                         both.choices[0].logprobs.token_logprobs)

    def test_models(self):
        models = self.openai.models.list()
        self.assertEqual([m.id for m in models.data], [MODEL])
        self.assertEqual(models.data[0].object, "model")
        self.assertEqual(models.data[0].owned_by, "tvq-serve")
        self.assertEqual(self.openai.models.retrieve(MODEL).id, MODEL)
        with self.assertRaises(openai.NotFoundError):
            self.openai.models.retrieve("other-model")

    def test_tokenize_and_detokenize(self):
        base = self.server.base_url
        status, tokens = curl_json(base + "/tokenize", {"prompt": "abc"})
        self.assertEqual(status, 200)
        self.assertEqual(tokens["tokens"], self.grpc.tokenize("abc"))
        self.assertEqual(tokens["count"], 4)
        status, bare = curl_json(base + "/tokenize",
                                 {"content": "abc", "add_special": False})
        self.assertEqual(bare["tokens"], tokens["tokens"][1:])
        status, text = curl_json(base + "/detokenize",
                                 {"tokens": tokens["tokens"]})
        self.assertEqual(status, 200)
        self.assertEqual(text["prompt"], "abc")
        self.assertEqual(text["content"], "abc")
        status, error = curl_json(base + "/detokenize", {"tokens": [1, 999]})
        self.assertEqual(status, 400)
        self.assertEqual(error["error"]["param"], "tokens")

    def test_health(self):
        status, body = curl_json(self.server.base_url + "/health")
        self.assertEqual(status, 200)
        self.assertEqual(body, {"status": "ok"})


if __name__ == "__main__":
    unittest.main()
