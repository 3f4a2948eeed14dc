"""The request-level metric families count every request once, labelled
with the front end it came through (frontend="grpc" | "http"): the real
tvq-server with gRPC and the HTTP API on, driven by the gRPC client and the
openai SDK, scraped over its metrics port. Ctest label http."""

import re
import time
import unittest
import urllib.request

import openai

from http_test_support import MODEL, HttpServer, curl_json
from tvq_client import TvqClient

TOKENS = 5


def scrape(server):
    url = re.search(r"metrics on (\S+)", server.log_tail(None)).group(1)
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode()


def value(text, name, **labels):
    """The sum of the samples `name` whose labels include `labels`."""
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(?:{{([^}}]*)}})? (\S+)$",
                             text, re.MULTILINE):
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(have.get(key) == wanted for key, wanted in labels.items()):
            total += float(match.group(2))
    return total


class FrontendLabelTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = HttpServer(extra_args=["--metrics-address=127.0.0.1:0",
                                            "--prefix-reuse=false"])
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def wait_for(self, condition, what):
        give_up = time.monotonic() + 30
        while not condition():
            self.assertLess(time.monotonic(), give_up, what)
            time.sleep(0.05)

    def test_each_request_counts_once_under_its_frontend(self):
        before = scrape(self.server)
        client = openai.OpenAI(base_url=self.server.base_url + "/v1",
                               api_key="unused", max_retries=0, timeout=60)
        options = dict(model=MODEL, max_tokens=TOKENS, temperature=0,
                       extra_body={"ignore_eos": True})
        unary = client.completions.create(prompt="Metrics", **options)
        streamed = list(client.completions.create(
            prompt="Metrics!", stream=True,
            stream_options={"include_usage": True}, **options))
        http_prompt = (unary.usage.prompt_tokens +
                       streamed[-1].usage.prompt_tokens)
        status, _ = curl_json(self.server.base_url + "/v1/completions",
                              {"model": MODEL, "prompt": "x",
                               "temperature": 101})
        self.assertEqual(status, 400)
        status, _ = curl_json(self.server.base_url + "/v1/completions",
                              {"model": "another", "prompt": "x"})
        self.assertEqual(status, 404)
        client.close()
        with TvqClient(self.server.address, timeout=60) as grpc:
            answer = grpc.generate(text="Metrics over gRPC",
                                   max_new_tokens=TOKENS, temperature=0,
                                   ignore_eos=True)
        grpc_prompt = answer.usage.prompt_tokens

        # The HTTP responses are counted once their last byte is written.
        def http_counted():
            return value(scrape(self.server), "tvq_requests_total",
                         frontend="http") - value(
                before, "tvq_requests_total", frontend="http") >= 4
        self.wait_for(http_counted, "the HTTP responses to be counted")
        after = scrape(self.server)

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        route = "/v1/completions"
        self.assertEqual(delta("tvq_requests_total", frontend="http",
                               method=route, code="OK"), 2)
        self.assertEqual(delta("tvq_requests_total", frontend="http",
                               method=route, code="INVALID_ARGUMENT"), 1)
        self.assertEqual(delta("tvq_requests_total", frontend="http",
                               method=route, code="NOT_FOUND"), 1)
        self.assertEqual(delta("tvq_requests_total", frontend="grpc",
                               method="Generate", code="OK"), 1)
        # No HTTP request shows up under gRPC, nor the reverse.
        self.assertEqual(delta("tvq_requests_total", frontend="grpc",
                               method=route), 0)
        self.assertEqual(delta("tvq_requests_total", frontend="http",
                               method="Generate"), 0)

        # Scheduler-level families: two HTTP generations, one gRPC one.
        for frontend, generations, prompt in (("http", 2, http_prompt),
                                              ("grpc", 1, grpc_prompt)):
            labels = dict(frontend=frontend)
            self.assertEqual(delta("tvq_requests_finished_total",
                                   kind="generate", reason="length", **labels),
                             generations, frontend)
            self.assertEqual(delta("tvq_time_to_first_token_seconds_count",
                                   **labels), generations, frontend)
            self.assertEqual(delta("tvq_inter_token_latency_seconds_count",
                                   **labels), generations * (TOKENS - 1),
                             frontend)
            self.assertEqual(delta("tvq_request_duration_seconds_count",
                                   kind="generate", **labels), generations,
                             frontend)
            self.assertEqual(delta("tvq_request_generated_tokens_sum",
                                   **labels), generations * TOKENS, frontend)
            self.assertEqual(delta("tvq_generated_tokens_total", **labels),
                             generations * TOKENS, frontend)
            self.assertEqual(delta("tvq_request_prompt_tokens_sum",
                                   kind="generate", **labels), prompt,
                             frontend)
            self.assertEqual(delta("tvq_prompt_tokens_total", **labels),
                             prompt, frontend)
        # Together: each generation once.
        self.assertEqual(delta("tvq_time_to_first_token_seconds_count"), 3)
        self.assertEqual(delta("tvq_generated_tokens_total"), 3 * TOKENS)
        self.assertEqual(value(after, "tvq_http_active_streams"), 0)


if __name__ == "__main__":
    unittest.main()
