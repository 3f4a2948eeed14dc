"""n > 1 prefills the prompt once and forks its state: through the real
openai SDK against the real tvq-server, n=4 gives the same texts as four
single requests with seeds seed..seed+3 (completions and chat), the usage is
that of a cold run, and no temporary session remains afterwards (gRPC
ListSessions); with a session budget that holds the prompt's session but
no fork, choices 2..n fall back to independent generations with the same
results; a
client that leaves mid-stream leaves no session either; a prompt that
extends a retained sequence starts from it (cached_tokens); (ctest label http)."""

import time
import unittest

import openai

from http_test_support import (MODEL, HttpServer, model_dir_with_chat_template,
                               raw_request)
from tvq_client import TvqClient

PROMPT = "Forking the prompt of several choices"
OPTIONS = dict(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=1.0,
               extra_body={"ignore_eos": True})


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class ForkedChoices:

    server_args = ()

    @classmethod
    def setUpClass(cls):
        cls.model_holder, model_dir = model_dir_with_chat_template()
        cls.server = HttpServer(model_dir, extra_args=cls.server_args)
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
        cls.model_holder.cleanup()

    def assert_no_session_left(self):
        self.assertTrue(wait_until(lambda: not self.grpc.list_sessions()),
                        self.grpc.list_sessions())

    def test_n4_equals_four_single_requests(self):
        several = self.openai.completions.create(n=4, seed=21, **OPTIONS)
        self.assertEqual([c.index for c in several.choices], [0, 1, 2, 3])
        for i, choice in enumerate(several.choices):
            alone = self.openai.completions.create(seed=21 + i, **OPTIONS)
            self.assertEqual(choice.text, alone.choices[0].text)
        self.assertEqual(several.usage.completion_tokens, 40)
        self.assertEqual(several.usage.prompt_tokens, len(PROMPT) + 1)
        details = several.usage.prompt_tokens_details
        self.assertEqual(details.cached_tokens if details else 0, 0)
        self.assert_no_session_left()

    def test_n4_stream_equals_unary(self):
        several = self.openai.completions.create(n=4, seed=5, **OPTIONS)
        chunks = list(self.openai.completions.create(
            n=4, seed=5, stream=True, **OPTIONS))
        for i, choice in enumerate(several.choices):
            mine = [c.choices[0] for c in chunks if c.choices[0].index == i]
            self.assertEqual("".join(c.text for c in mine), choice.text)
            self.assertEqual(mine[-1].finish_reason, "length")
        self.assert_no_session_left()

    def test_chat_n4_equals_four_single_requests(self):
        options = dict(model=MODEL, max_tokens=8, temperature=1.0,
                       messages=[{"role": "user", "content": PROMPT}],
                       extra_body={"ignore_eos": True})
        several = self.openai.chat.completions.create(n=4, seed=9, **options)
        for i, choice in enumerate(several.choices):
            alone = self.openai.chat.completions.create(seed=9 + i, **options)
            self.assertEqual(choice.message.content,
                             alone.choices[0].message.content)
        self.assert_no_session_left()

    def test_client_gone_mid_stream_leaves_no_session(self):
        sock = raw_request(self.server.http_address, "POST", "/v1/completions",
                           {"model": MODEL, "prompt": PROMPT, "n": 4,
                            "seed": 3, "max_tokens": 400, "stream": True,
                            "ignore_eos": True})
        received = b""
        while b"data: " not in received:
            chunk = sock.recv(4096)
            self.assertTrue(chunk, received)
            received += chunk
        self.assertNotIn(b'"error"', received)
        sock.close()
        self.assert_no_session_left()
        # The server goes on serving.
        self.openai.completions.create(n=2, seed=1, **OPTIONS)
        self.assert_no_session_left()



class ForkedChoicesTest(ForkedChoices, unittest.TestCase):

    def test_n3_reuses_a_retained_prefix_for_its_prompt(self):
        # A generation retains its end state (prompt + completion); an n = 3
        # request whose prompt extends that sequence starts its prompt
        # session from it: cached_tokens as for n = 1, and the same texts as
        # three single requests. Token ids, so that the sequence is exact.
        first = self.grpc.tokenize("Reuse for several choices")
        generated = list(self.grpc.generate(
            token_ids=first, no_eos_prefix=True, max_new_tokens=12,
            temperature=0, ignore_eos=True).token_ids)
        extended = first + generated + self.grpc.tokenize(
            " and", no_eos_prefix=True)
        options = dict(model=MODEL, prompt=extended, max_tokens=6,
                       temperature=1.0, extra_body={"ignore_eos": True})
        several = self.openai.completions.create(n=3, seed=40, **options)
        # The retained sequence less its pending (last) token.
        self.assertEqual(several.usage.prompt_tokens_details.cached_tokens,
                         len(first) + len(generated) - 1)
        self.assertEqual(several.usage.prompt_tokens, len(extended))
        self.assert_no_session_left()
        for i, choice in enumerate(several.choices):
            alone = self.openai.completions.create(seed=40 + i, **options)
            self.assertEqual(choice.text, alone.choices[0].text)


class FallbackTest(ForkedChoices, unittest.TestCase):
    # A budget that holds one saved state (tiny-byte: 82600 bytes): the
    # forks of the prompt's (pinned) session are refused (RESOURCE_EXHAUSTED)
    # and choices 2..n run independently.
    server_args = ("--session-memory-bytes=82600",)


if __name__ == "__main__":
    unittest.main()
