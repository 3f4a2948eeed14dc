"""Every limit a request meets is reported, the same on each surface: gRPC
GetModelInfo (the Python client), `tvq-client info` (text and --json) and
the HTTP API's /v1/models (its `limits` object), for a real tvq-server
started with non-default limits; and the HTTP front end enforces the ones
that concern it (body size 413, connections closed above the cap). Ctest
label http."""

import json
import socket
import time
import unittest
import urllib.request

from client_test_support import run_client
from http_test_support import MODEL, HttpServer, curl_json
from tvq_client import TvqClient

# tiny-byte saves 82,600 bytes per session: a budget of 3 sessions.
FLAGS = ["--max-request-bytes=4096", "--max-prompt-tokens=300",
         "--max-new-tokens-limit=40", "--max-pending-output-bytes=65536",
         "--max-connections=6", "--max-concurrent-streams=7",
         "--session-memory-bytes=247800"]
EXPECTED = {
    "max_request_bytes": 4096,
    "max_prompt_tokens": 300,
    "max_new_tokens_limit": 40,
    "max_pending_output_bytes": 65536,
    "max_connections": 6,
    "max_sessions": 3,
    "session_memory_bytes": 247800,
    "max_detokenize_tokens": 340,
}


class LimitsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = HttpServer(extra_args=FLAGS)
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_get_model_info_reports_every_limit(self):
        with TvqClient(self.server.address, timeout=30) as client:
            limits = client.info().limits
        for name, value in EXPECTED.items():
            self.assertEqual(getattr(limits, name), value, name)
        self.assertEqual(limits.max_concurrent_streams, 7)

    def test_tvq_client_info_shows_every_limit(self):
        result = run_client(["info"], self.server.address)
        self.assertEqual(result.returncode, 0, result.stderr)
        text = result.stdout
        self.assertIn("max_prompt_tokens 300, max_new_tokens 40", text)
        self.assertIn("transport  max_request_bytes 4096, "
                      "max_pending_output_bytes 65536, max_connections 6, "
                      "max_concurrent_streams 7 per connection, "
                      "max_detokenize_tokens 340", text)
        self.assertIn("sessions   max_sessions 3 (session_memory_bytes "
                      "247800)", text)
        result = run_client(["--json", "info"], self.server.address)
        limits = json.loads(result.stdout)["limits"]
        for name, value in EXPECTED.items():
            self.assertEqual(int(limits[name]), value, name)
        self.assertEqual(int(limits["max_concurrent_streams"]), 7)

    def test_v1_models_reports_the_http_limits(self):
        status, answer = curl_json(self.server.base_url + "/v1/models")
        self.assertEqual(status, 200)
        limits = answer["data"][0]["limits"]
        for name, value in EXPECTED.items():
            self.assertEqual(limits[name], value, name)
        # HTTP/1.1: one request at a time per connection.
        self.assertEqual(limits["max_concurrent_streams"], 1)
        self.assertEqual(answer["data"][0]["max_model_len"], 300)
        status, one = curl_json(self.server.base_url + f"/v1/models/{MODEL}")
        self.assertEqual(one["limits"], limits)

    def test_http_enforces_its_body_limit(self):
        status, answer = curl_json(self.server.base_url + "/v1/completions",
                                   {"model": MODEL, "prompt": "x" * 5000})
        self.assertEqual(status, 413)
        self.assertIn("4096 bytes", answer["error"]["message"])

    def test_http_closes_connections_above_the_cap(self):
        host, port = self.server.http_address.rsplit(":", 1)
        held = []
        try:
            for _ in range(6):
                sock = socket.create_connection((host, int(port)), timeout=10)
                held.append(sock)
            # Let the server accept them all.
            time.sleep(0.5)
            extra = socket.create_connection((host, int(port)), timeout=10)
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                received = extra.recv(4096)
            except ConnectionResetError:
                received = b""
            self.assertEqual(received, b"")  # closed, no answer
            extra.close()
        finally:
            for sock in held:
                sock.close()
        # Below the cap again: answered.
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(self.server.base_url + "/health",
                                            timeout=10) as answer:
                    self.assertEqual(answer.status, 200)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


if __name__ == "__main__":
    unittest.main()
