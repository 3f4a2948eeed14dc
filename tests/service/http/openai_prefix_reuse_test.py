"""Automatic prefix reuse over HTTP: /v1/completions and /v1/chat/completions
submit through the same path as gRPC Generate, so a request whose prompt
extends an earlier request's prompt and completion resumes from its state
(usage.prompt_tokens_details.cached_tokens = the gRPC Generate's
usage.cached_tokens for the same sequence) and returns the same text as a
server with --prefix-reuse=false (ctest label http)."""

import unittest

import openai

from http_test_support import MODEL, HttpServer
from tvq_client import TvqClient

MAX_TOKENS = 8


def sdk(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused",
                         max_retries=0, timeout=60)


class PrefixReuseTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        # on: reuse on, driven over HTTP. reference: reuse on, driven over
        # gRPC (the cached_tokens gRPC reports). off: --prefix-reuse=false.
        cls.on = HttpServer()
        cls.reference = HttpServer()
        cls.off = HttpServer(extra_args=["--prefix-reuse=false"])
        for server in (cls.on, cls.reference, cls.off):
            server.start()
        cls.http_on = sdk(cls.on)
        cls.http_off = sdk(cls.off)
        cls.grpc_reference = TvqClient(cls.reference.address, timeout=60)
        cls.grpc_off = TvqClient(cls.off.address, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.http_on.close()
        cls.http_off.close()
        cls.grpc_reference.close()
        cls.grpc_off.close()
        for server in (cls.on, cls.reference, cls.off):
            server.stop()

    def complete(self, client, prompt, **options):
        return client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0,
            extra_body={"ignore_eos": True}, **options)

    def generated_ids(self, prompt):
        """The greedy tokens after `prompt` (the cold server's gRPC)."""
        return list(self.grpc_off.generate(
            token_ids=prompt, no_eos_prefix=True, max_new_tokens=MAX_TOKENS,
            temperature=0, ignore_eos=True).token_ids)

    def test_extending_prompts_report_cached_tokens_as_grpc_does(self):
        first = self.grpc_off.tokenize("Prefix reuse over HTTP")
        g1 = self.generated_ids(first)
        second = first + g1 + self.grpc_off.tokenize(" and more",
                                                     no_eos_prefix=True)
        g2 = self.generated_ids(second)
        third = second + g2 + self.grpc_off.tokenize(" again",
                                                     no_eos_prefix=True)

        # Over HTTP on the reusing server.
        r1 = self.complete(self.http_on, first)
        r2 = self.complete(self.http_on, second)
        chunks = list(self.complete(self.http_on, third, stream=True,
                                    stream_options={"include_usage": True}))
        self.assertEqual(r1.usage.prompt_tokens_details.cached_tokens, 0)
        self.assertEqual(r2.usage.prompt_tokens_details.cached_tokens,
                         len(first) + len(g1) - 1)
        usage = chunks[-1].usage
        self.assertEqual(usage.prompt_tokens, len(third))
        self.assertEqual(usage.prompt_tokens_details.cached_tokens,
                         len(second) + len(g2) - 1)
        streamed = "".join(c.choices[0].text for c in chunks[:-1])

        # The gRPC path reports the same for the same sequence (the ids
        # carry their eos prefix already).
        grpc = [self.grpc_reference.generate(
            token_ids=prompt, no_eos_prefix=True, max_new_tokens=MAX_TOKENS,
            temperature=0, ignore_eos=True)
            for prompt in (first, second, third)]
        self.assertEqual(
            [g.usage.cached_tokens for g in grpc],
            [r1.usage.prompt_tokens_details.cached_tokens,
             r2.usage.prompt_tokens_details.cached_tokens,
             usage.prompt_tokens_details.cached_tokens])

        # The same text as without reuse.
        cold = [self.complete(self.http_off, prompt)
                for prompt in (first, second, third)]
        for c in cold:
            self.assertEqual(c.usage.prompt_tokens_details.cached_tokens, 0)
        self.assertEqual(r1.choices[0].text, cold[0].choices[0].text)
        self.assertEqual(r2.choices[0].text, cold[1].choices[0].text)
        self.assertEqual(streamed, cold[2].choices[0].text)
        self.assertEqual([g.text for g in grpc],
                         [c.choices[0].text for c in cold])


if __name__ == "__main__":
    unittest.main()
