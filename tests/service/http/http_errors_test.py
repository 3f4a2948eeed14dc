"""Every error status of the HTTP front end, in OpenAI's shape
{"error": {"message", "type", "param", "code"}}, from the real tvq-server
through the real openai SDK and curl: 400 (each invalid field named), 404
(unknown model, unknown route, unknown stored response), 405, 413, 429
(queue full), 503 (draining). Ctest label http."""

import json
import os
import signal
import tempfile
import threading
import time
import unittest

import openai

from http_test_support import (MODEL, HttpServer, curl, curl_json, grpc_info,
                               raw_request)

# Long enough to outlast any test step on the tiny model; always cancelled.
ENDLESS = 5_000_000
LONG_FLAGS = [f"--max-new-tokens-limit={ENDLESS}"]


def wait_until(condition, what, timeout=60.0):
    """Polls `condition` until it holds (a bound, not a timing assertion)."""
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class BackgroundStream:
    """An endless streamed completion read by a thread until close()."""

    def __init__(self, server):
        self.sock = raw_request(
            server.http_address, "POST", "/v1/completions",
            {"model": MODEL, "prompt": "Hello", "max_tokens": ENDLESS,
             "ignore_eos": True, "stream": True})
        self.received = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                self.received += len(data)
        except OSError:
            return

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self._thread.join(timeout=30)


class InvalidRequestTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = HttpServer()
        cls.server.start()
        cls.openai = openai.OpenAI(base_url=cls.server.base_url + "/v1",
                                   api_key="unused", max_retries=0, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.openai.close()
        cls.server.stop()

    def post(self, body, path="/v1/completions"):
        return curl_json(self.server.base_url + path, body)

    def assert_error(self, body, status, param, message_part, code=None,
                     path="/v1/completions"):
        got_status, answer = self.post(body, path)
        self.assertEqual(got_status, status, answer)
        error = answer["error"]
        self.assertEqual(set(error), {"message", "type", "param", "code"})
        self.assertEqual(error["param"], param, error)
        self.assertIn(message_part, error["message"])
        if code is not None:
            self.assertEqual(error["code"], code)
        return error

    def test_each_invalid_field_is_named(self):
        base = {"model": MODEL, "prompt": "Hi"}
        cases = [
            ({"max_tokens": "x"}, "max_tokens", "must be an integer"),
            ({"max_tokens": 0}, "max_tokens", "must be in [1, "),
            ({"temperature": -1}, "temperature", "must be in [0, 100]"),
            ({"temperature": "hot"}, "temperature", "must be a number"),
            ({"top_p": 0}, "top_p", "must be in (0, 1]"),
            ({"top_k": -2}, "top_k", "must be in [-1, "),
            ({"min_p": 2}, "min_p", "must be in [0, 1]"),
            ({"repetition_penalty": 0}, "repetition_penalty", "(0, 10]"),
            ({"presence_penalty": 3}, "presence_penalty", "[-2, 2]"),
            ({"frequency_penalty": -3}, "frequency_penalty", "[-2, 2]"),
            ({"n": 0}, "n", "must be in [1, 64]"),
            ({"seed": -1}, "seed", "must be in [0, 2^64 - 1]"),
            ({"stop": 5}, "stop", "a string or an array of strings"),
            ({"stop": [""]}, "stop", "must have 1 to"),
            ({"stop": ["a"] * 17}, "stop", "at most 16 sequences"),
            ({"stop_token_ids": [999]}, "stop_token_ids", "[0, 259)"),
            ({"logprobs": 21}, "logprobs", "must be in [0, 20]"),
            ({"logprobs": True}, "logprobs", "must be an integer"),
            ({"echo": "yes"}, "echo", "must be a boolean"),
            ({"stream": 1}, "stream", "must be a boolean"),
            ({"stream_options": {"include_usage": True}}, "stream_options",
             "only allowed with stream: true"),
            ({"stream": True, "stream_options": {"x": 1}},
             "stream_options.x", "unknown field"),
            ({"user": 5}, "user", "must be a string"),
            ({"ignore_eos": "no"}, "ignore_eos", "must be a boolean"),
            ({"min_tokens": 3}, "min_tokens", "not supported"),
            ({"logit_bias": {"5": 1}}, "logit_bias", "not supported"),
            ({"suffix": "end"}, "suffix", "not supported"),
            ({"best_of": 3}, "best_of", "not supported"),
            ({"echo": True, "max_tokens": -1}, "max_tokens",
             "must be in [0, "),
            ({"prompt": 5}, "prompt", "a string or an array of token ids"),
            ({"prompt": []}, "prompt", "must not be an empty array"),
            ({"prompt": [1, 259]}, "prompt", "prompt[1] must be a token id"),
            ({"prompt": ["a", "b"]}, "prompt", "send one request per prompt"),
            ({"frobnicate": 1}, "frobnicate", "unknown field"),
        ]
        for change, param, message in cases:
            with self.subTest(change=change):
                self.assert_error({**base, **change}, 400, param, message,
                                  code="invalid_request")
        missing = dict(base)
        del missing["prompt"]
        self.assert_error(missing, 400, "prompt", "prompt is required")

    def test_sdk_raises_bad_request_with_the_param(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            self.openai.completions.create(model=MODEL, prompt="Hi",
                                           max_tokens=-5)
        self.assertEqual(caught.exception.status_code, 400)
        self.assertEqual(caught.exception.body["param"], "max_tokens")

    def test_bad_json_bodies(self):
        for body, message in [("{", "not valid JSON"),
                              ("[1, 2]", "must be a JSON object"),
                              ('{"prompt": "a", "prompt": "b"}',
                               "more than once"),
                              ('{"temperature": ' + "[" * 100000 +
                               "]" * 100000 + "}", "deeper than 64")]:
            with self.subTest(body=body[:40]), \
                    tempfile.NamedTemporaryFile("w") as file:
                file.write(body)
                file.flush()
                result = curl(["-w", "\n%{http_code}", "--data-binary",
                               "@" + file.name,
                               self.server.base_url + "/v1/completions"])
                text, _, code = result.stdout.rpartition("\n")
                self.assertEqual(code, "400")
                self.assertIn(message, json.loads(text)["error"]["message"])

    def test_unknown_model_is_404_model_not_found(self):
        with self.assertRaises(openai.NotFoundError) as caught:
            self.openai.completions.create(model="gpt-4", prompt="Hi",
                                           max_tokens=2)
        self.assertEqual(caught.exception.status_code, 404)
        self.assertEqual(caught.exception.body["code"], "model_not_found")
        self.assertEqual(caught.exception.body["param"], "model")
        self.assert_error({"model": "gpt-4", "messages": []}, 404, "model",
                          "does not exist", code="model_not_found",
                          path="/v1/chat/completions")

    def test_unknown_route_is_404(self):
        status, answer = curl_json(self.server.base_url + "/v1/embeddings",
                                   {"input": "x"})
        self.assertEqual(status, 404)
        self.assertEqual(answer["error"]["code"], "not_found")
        self.assertIn("no route POST /v1/embeddings",
                      answer["error"]["message"])

    def test_wrong_method_is_405_with_allow(self):
        result = curl(["-i", "-X", "GET",
                       self.server.base_url + "/v1/completions"])
        head, _, body = result.stdout.partition("\r\n\r\n")
        self.assertIn("405", head.splitlines()[0])
        self.assertIn("allow: post", head.lower())
        self.assertEqual(json.loads(body)["error"]["code"],
                         "method_not_allowed")
        status, _ = curl_json(self.server.base_url + "/v1/models", {},
                              method="POST")
        self.assertEqual(status, 405)

    def test_oversized_body_is_413(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
            json.dump({"prompt": "x" * (9 << 20)}, file)
            file.flush()
            result = curl(["-w", "\n%{http_code}", "-H",
                           "Content-Type: application/json",
                           "--data-binary", "@" + file.name,
                           self.server.base_url + "/v1/completions"])
        text, _, code = result.stdout.rpartition("\n")
        self.assertEqual(code, "413", result.stderr)
        self.assertEqual(json.loads(text)["error"]["code"],
                         "request_too_large")
        # The server goes on serving.
        status, _ = curl_json(self.server.base_url + "/health")
        self.assertEqual(status, 200)

    def test_responses_errors_name_the_field(self):
        url = self.server.base_url + "/v1/responses"
        status, answer = curl_json(url, {"model": MODEL})
        self.assertEqual(status, 400)
        self.assertEqual(answer["error"]["param"], "input")
        status, answer = curl_json(url, {"model": MODEL, "input": "Hi",
                                         "max_output_tokens": 0})
        self.assertEqual(status, 400)
        self.assertEqual(answer["error"]["param"], "max_output_tokens")
        status, answer = curl_json(url, {"model": MODEL, "input": [
            {"role": "robot", "content": "Hi"}]})
        self.assertEqual(status, 400)
        self.assertEqual(answer["error"]["param"], "input[0].role")
        status, answer = curl_json(url, {"model": MODEL, "input": "Hi",
                                         "previous_response_id": "resp_x"})
        self.assertEqual(status, 404)
        self.assertEqual(answer["error"]["param"], "previous_response_id")
        status, answer = curl_json(url + "/resp_nothing")
        self.assertEqual(status, 404)
        self.assertEqual(answer["error"]["code"], "not_found")
        status, answer = curl_json(url + "/resp_nothing", method="DELETE")
        self.assertEqual(status, 404)
        status, _ = curl_json(url + "/resp_nothing", {}, method="PUT")
        self.assertEqual(status, 405)


class QueueFullTest(unittest.TestCase):
    """One slot, a queue of one: a third request is 429."""

    def test_queue_full_is_429(self):
        with HttpServer(extra_args=["--num-slots=1", "--max-queue=1",
                                    *LONG_FLAGS]) as server:
            running = BackgroundStream(server)
            wait_until(lambda: grpc_info(server).busy_slots == 1,
                       "the first stream to run")
            queued = BackgroundStream(server)
            wait_until(lambda: grpc_info(server).queued_requests == 1,
                       "the second stream to queue")
            client = openai.OpenAI(base_url=server.base_url + "/v1",
                                   api_key="unused", max_retries=0,
                                   timeout=60)
            with self.assertRaises(openai.RateLimitError) as caught:
                client.completions.create(model=MODEL, prompt="Hi",
                                          max_tokens=2)
            self.assertEqual(caught.exception.status_code, 429)
            self.assertEqual(caught.exception.body["code"], "queue_full")
            self.assertEqual(caught.exception.body["type"],
                             "rate_limit_error")
            client.close()
            running.close()
            queued.close()
            wait_until(lambda: grpc_info(server).busy_slots == 0 and
                       grpc_info(server).queued_requests == 0,
                       "the slots to be free")


class DrainingTest(unittest.TestCase):
    """After SIGTERM: /health and new work 503, queries still answered,
    the stream already running goes on until its client leaves."""

    def test_draining_is_503(self):
        server = HttpServer(extra_args=["--drain-timeout=120s", *LONG_FLAGS])
        server.start()
        try:
            stream = BackgroundStream(server)
            wait_until(lambda: grpc_info(server).busy_slots == 1,
                       "the stream to run")
            os.kill(server.pid, signal.SIGTERM)
            wait_until(lambda: curl_json(server.base_url + "/health")[0] ==
                       503, "/health to say 503")
            status, answer = curl_json(server.base_url + "/health")
            self.assertEqual(answer["error"]["code"], "unavailable")
            self.assertEqual(answer["error"]["type"],
                             "service_unavailable_error")
            status, answer = curl_json(server.base_url + "/v1/completions",
                                       {"model": MODEL, "prompt": "Hi"})
            self.assertEqual(status, 503)
            self.assertIn("shutting down", answer["error"]["message"])
            status, _ = curl_json(server.base_url + "/v1/models")
            self.assertEqual(status, 200)
            before = stream.received
            wait_until(lambda: stream.received > before,
                       "the running stream to go on")
            self.assertTrue(server.running())
            # Its client leaves: the drain ends, the server exits 0.
            stream.close()
            server._process.wait(timeout=60)
            self.assertEqual(server._process.returncode, 0,
                             server.log_tail())
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
