"""API keys (--api-keys-file) of the real tvq-server on both front ends:
missing, wrong, right and hashed keys over gRPC (tvq-client, the Python
client, reflection) and HTTP (curl, the openai SDK); SIGHUP adds and
revokes keys without dropping a running stream, and a bad file keeps the
old keys; --auth-exempt-health; tvq_auth_failures_total; no key in the
server's log (ctest label security)."""

import json
import os
import re
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

import grpc
import openai

from client_test_support import SERVER, describe, golden_model_dir, run_client
from http_test_support import MODEL, HttpServer, curl
from tls_test_support import TestPki, sha256_line, write_keys_file
from tvq_client import TvqClient, TvqError

KEY = "test-key-plain-0123456789"
HASHED_KEY = "test-key-hashed-0123456789"
NEW_KEY = "test-key-added-by-sighup-0123"
WRONG_KEY = "test-key-wrong-0123456789"
ALL_KEYS = (KEY, HASHED_KEY, NEW_KEY, WRONG_KEY)


def bearer(key):
    return [("authorization", f"Bearer {key}")]


def metric(text, name, labels):
    """The value of NAME{LABELS} in a Prometheus text page (0 if absent)."""
    pattern = re.escape(name) + r"\{" + re.escape(labels) + r"\} (\S+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


class KeyedServer(HttpServer):
    """HttpServer with --api-keys-file (KEY plain, HASHED_KEY as sha256)
    and a metrics port."""

    def __init__(self, extra_args=(), exempt_health=False, **kwargs):
        self.keys_dir = tempfile.TemporaryDirectory()
        self.keys_file = os.path.join(self.keys_dir.name, "keys.txt")
        write_keys_file(self.keys_file, ["# test keys", KEY, "",
                                         sha256_line(HASHED_KEY)])
        flags = [f"--api-keys-file={self.keys_file}",
                 "--metrics-address=127.0.0.1:0", *extra_args]
        if exempt_health:
            flags.append("--auth-exempt-health")
        super().__init__(extra_args=flags,
                         health_metadata=None if exempt_health else bearer(KEY),
                         **kwargs)

    def metrics(self):
        url = re.search(r"metrics on (\S+)", self.log_tail(None)).group(1)
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.read().decode()

    def reload(self, lines):
        """Rewrites the key file, sends SIGHUP, waits for the log line."""
        write_keys_file(self.keys_file, lines)
        before = self.log_tail(None).count("SIGHUP:")
        os.kill(self.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while self.log_tail(None).count("SIGHUP:") == before:
            if time.monotonic() > deadline:
                raise AssertionError("no SIGHUP line:\n" + self.log_tail())
            time.sleep(0.02)
        return self.log_tail(None).splitlines()[-1]


class ApiKeysTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = KeyedServer()
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        log = cls.server.log_tail(None)
        for key in ALL_KEYS:
            assert key not in log, f"the server's log shows a key:\n{log}"

    def grpc_code(self, key=None, method="GetModelInfo"):
        with TvqClient(self.server.address, timeout=30,
                       api_key=key or "") as client:
            try:
                client.info() if method == "GetModelInfo" else \
                    client.tokenize("Hello")
                return grpc.StatusCode.OK
            except TvqError as error:
                return error.code

    def http(self, key=None, path="/v1/models"):
        args = ["-i", f"http://{self.server.http_address}{path}"]
        if key is not None:
            args += ["-H", f"Authorization: Bearer {key}"]
        result = curl(args)
        self.assertEqual(result.returncode, 0, result.stderr)
        status = int(result.stdout.split(" ", 2)[1])
        head, _, body = result.stdout.partition("\r\n\r\n")
        return status, head, body

    def test_grpc_missing_wrong_right_hashed(self):
        self.assertEqual(self.grpc_code(None), grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(self.grpc_code(WRONG_KEY),
                         grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(self.grpc_code(KEY), grpc.StatusCode.OK)
        self.assertEqual(self.grpc_code(HASHED_KEY), grpc.StatusCode.OK)
        # The hashed line itself is not a key.
        self.assertEqual(self.grpc_code(sha256_line(HASHED_KEY)),
                         grpc.StatusCode.UNAUTHENTICATED)
        with TvqClient(self.server.address, timeout=30) as client:
            with self.assertRaises(TvqError) as raised:
                client.info()
        self.assertIn("missing API key", raised.exception.details)

    def test_tvq_client_key_file_and_environment(self):
        key_file = os.path.join(self.server.keys_dir.name, "client-key")
        with open(key_file, "w") as file:
            file.write(HASHED_KEY + "\n")
        good = run_client([f"--api-key-file={key_file}", "--json",
                           "generate", "--max-new-tokens=4", "Hello"],
                          self.server.address)
        self.assertEqual(good.returncode, 0, describe(good))
        missing = run_client(["info"], self.server.address)
        self.assertNotEqual(missing.returncode, 0, describe(missing))
        self.assertIn("UNAUTHENTICATED", missing.stderr)
        os.environ["TVQ_API_KEY"] = KEY
        try:
            from_env = run_client(["info"], self.server.address)
        finally:
            del os.environ["TVQ_API_KEY"]
        self.assertEqual(from_env.returncode, 0, describe(from_env))

    def test_health_and_reflection_follow_the_keys(self):
        with grpc.insecure_channel(self.server.address) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check")
            with self.assertRaises(grpc.RpcError) as raised:
                check(b"", timeout=10)
            self.assertEqual(raised.exception.code(),
                             grpc.StatusCode.UNAUTHENTICATED)
            self.assertEqual(check(b"", timeout=10, metadata=bearer(KEY)),
                             b"\x08\x01")
            # ServerReflectionRequest{list_services: ""}.
            reflection = channel.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/"
                "ServerReflectionInfo")
            with self.assertRaises(grpc.RpcError) as raised:
                list(reflection(iter([b"\x3a\x00"]), timeout=10))
            self.assertEqual(raised.exception.code(),
                             grpc.StatusCode.UNAUTHENTICATED)
            answers = list(reflection(iter([b"\x3a\x00"]), timeout=10,
                                      metadata=bearer(KEY)))
            self.assertIn(b"tvq.v1.TextGeneration", answers[0])
        status, _, _ = self.http(None, "/health")
        self.assertEqual(status, 401)
        self.assertEqual(self.http(KEY, "/health")[0], 200)

    def test_http_missing_wrong_right_hashed(self):
        for key in (None, WRONG_KEY):
            status, head, body = self.http(key)
            self.assertEqual(status, 401, body)
            self.assertIn("WWW-Authenticate: Bearer", head)
            error = json.loads(body)["error"]
            self.assertEqual(error["type"], "invalid_request_error")
            self.assertEqual(error["code"], "invalid_api_key")
            self.assertIsNone(error["param"])
            self.assertIn("missing" if key is None else "invalid",
                          error["message"])
        self.assertEqual(self.http(KEY)[0], 200)
        self.assertEqual(self.http(HASHED_KEY)[0], 200)
        # Unknown paths are 401 too: nothing is told without a key.
        self.assertEqual(self.http(None, "/nowhere")[0], 401)
        self.assertEqual(self.http(KEY, "/nowhere")[0], 404)

    def test_openai_sdk(self):
        def client(key):
            return openai.OpenAI(
                base_url=f"http://{self.server.http_address}/v1",
                api_key=key, max_retries=0, timeout=60)
        with client(WRONG_KEY) as wrong:
            with self.assertRaises(openai.AuthenticationError) as raised:
                wrong.completions.create(model=MODEL, prompt="Hello",
                                         max_tokens=4)
            self.assertEqual(raised.exception.status_code, 401)
            self.assertEqual(raised.exception.code, "invalid_api_key")
        with client(HASHED_KEY) as right:
            # Greedy and past end of text: sampled (the API's default
            # temperature is 1), end of text may come before the 4th token.
            completion = right.completions.create(
                model=MODEL, prompt="Hello", max_tokens=4, temperature=0,
                extra_body={"ignore_eos": True})
            self.assertEqual(completion.usage.completion_tokens, 4)

    def test_failures_are_counted_once(self):
        before = self.server.metrics()
        self.grpc_code(None)
        self.grpc_code(WRONG_KEY)
        self.grpc_code(WRONG_KEY)
        self.http(None)
        self.http(WRONG_KEY)
        self.http(KEY)

        def grew(name, labels):
            return metric(after, name, labels) - metric(before, name, labels)
        # The HTTP response is counted once its last byte is written, which
        # may be just after curl has it.
        deadline = time.monotonic() + 10
        while True:
            after = self.server.metrics()
            if (grew("tvq_requests_total",
                     'code="UNAUTHENTICATED",frontend="http",method="other"')
                    >= 2 or time.monotonic() > deadline):
                break
            time.sleep(0.05)
        failures = "tvq_auth_failures_total"
        self.assertEqual(grew(failures, 'frontend="grpc",reason="missing"'), 1)
        self.assertEqual(grew(failures, 'frontend="grpc",reason="invalid"'), 2)
        self.assertEqual(grew(failures, 'frontend="http",reason="missing"'), 1)
        self.assertEqual(grew(failures, 'frontend="http",reason="invalid"'), 1)
        self.assertEqual(grew("tvq_requests_total",
                              'code="UNAUTHENTICATED",frontend="http",'
                              'method="other"'), 2)
        # A refused gRPC call never reaches the service: not in the request
        # counters.
        self.assertNotIn('code="UNAUTHENTICATED",frontend="grpc"', after)


class ReloadTest(unittest.TestCase):
    """SIGHUP re-reads the key file; a running stream is not dropped."""

    def test_add_and_revoke_keep_running_streams(self):
        with KeyedServer() as server:
            # Generous deadlines: 2 x 8192 tokens take seconds alone, but
            # minutes on a 2-core machine shared with the rest of the suite.
            with TvqClient(server.address, timeout=300, api_key=KEY) as old:
                stream = old.generate_stream("Hello", max_new_tokens=8192,
                                             ignore_eos=True)
                chunks = iter(stream)
                next(chunks)
                sse = subprocess.Popen(
                    ["curl", "-sS", "-N", "-H", f"Authorization: Bearer {KEY}",
                     "-H", "Content-Type: application/json", "--data",
                     json.dumps({"model": MODEL, "prompt": "Hi",
                                 "max_tokens": 8192, "stream": True,
                                 "ignore_eos": True}),
                     f"http://{server.http_address}/v1/completions"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                first = sse.stdout.readline()
                self.assertTrue(first.startswith(b"data: "), first)
                line = server.reload([NEW_KEY, sha256_line(HASHED_KEY)])
                self.assertIn("SIGHUP: 2 API keys", line)
                with TvqClient(server.address, timeout=30,
                               api_key=NEW_KEY) as new:
                    # Both streams still run.
                    self.assertEqual(new.info().busy_slots, 2)
                with TvqClient(server.address, timeout=30,
                               api_key=KEY) as revoked:
                    with self.assertRaises(TvqError) as raised:
                        revoked.info()
                self.assertEqual(raised.exception.code,
                                 grpc.StatusCode.UNAUTHENTICATED)
                self.assertEqual(
                    curl(["-s", "-o", "/dev/null", "-w", "%{http_code}",
                          "-H", f"Authorization: Bearer {KEY}",
                          f"http://{server.http_address}/v1/models"]).stdout,
                    "401")
                # A file that no longer parses keeps the keys in force.
                line = server.reload(["not a key"])
                self.assertIn("SIGHUP: kept the 2 API keys in force", line)
                self.assertIn("line 1", line)
                with TvqClient(server.address, timeout=30,
                               api_key=NEW_KEY) as new:
                    new.info()
                # The streams started with the revoked key ran to the end.
                generated = 1 + sum(len(c.token_ids) for c in chunks)
                self.assertEqual(generated, 8192)
                body, _ = sse.communicate(timeout=300)
                self.assertEqual(sse.returncode, 0)
                self.assertTrue(body.endswith(b"data: [DONE]\n\n"), body[-200:])
            log = server.log_tail(None)
        for key in ALL_KEYS:
            self.assertNotIn(key, log)


class ExemptHealthTest(unittest.TestCase):

    def test_health_needs_no_key_and_the_rest_does(self):
        with KeyedServer(exempt_health=True) as server:
            result = run_client(["health"], server.address)
            self.assertEqual(result.returncode, 0, describe(result))
            self.assertIn("SERVING", result.stdout)
            self.assertEqual(curl(["-s", "-o", "/dev/null", "-w",
                                   "%{http_code}",
                                   f"http://{server.http_address}/health"]
                                  ).stdout, "200")
            self.assertEqual(curl(["-s", "-o", "/dev/null", "-w",
                                   "%{http_code}",
                                   f"http://{server.http_address}/v1/models"]
                                  ).stdout, "401")
            info = run_client(["info"], server.address)
            self.assertIn("UNAUTHENTICATED", info.stderr)


class KeysOverTlsTest(unittest.TestCase):
    """Keys and TLS together, over gRPC and HTTPS."""

    def test_keys_over_tls(self):
        pki = TestPki()
        with KeyedServer(
                extra_args=[f"--tls-cert={pki.server_cert}",
                            f"--tls-key={pki.server_key}"],
                health_credentials=grpc.ssl_channel_credentials(
                    pki.read(pki.ca))) as server:
            with TvqClient(server.address, timeout=30, tls_ca=pki.ca,
                           api_key=KEY) as client:
                client.info()
            with TvqClient(server.address, timeout=30, tls_ca=pki.ca) as client:
                with self.assertRaises(TvqError) as raised:
                    client.info()
            self.assertEqual(raised.exception.code,
                             grpc.StatusCode.UNAUTHENTICATED)
            url = f"https://{server.http_address}/v1/models"
            for key, expected in ((KEY, "200"), (WRONG_KEY, "401")):
                result = curl(["--cacert", pki.ca, "-o", "/dev/null", "-w",
                               "%{http_code}", "-H",
                               f"Authorization: Bearer {key}", url])
                self.assertEqual(result.stdout, expected, result.stderr)


class SessionIsolationTest(unittest.TestCase):
    """With keys, sessions are each key's own: to another key a session is
    NOT_FOUND with the very message of an unknown id, on every RPC and on
    HTTP (stored responses, previous_response_id); automatic prefix reuse
    never resumes from another key's state. Each key keeps full use of its
    own sessions."""

    @classmethod
    def setUpClass(cls):
        cls.server = KeyedServer()
        cls.server.start()
        cls.server.reload(["# test keys", KEY, sha256_line(HASHED_KEY),
                           NEW_KEY])

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def client(self, key):
        return TvqClient(self.server.address, timeout=60, api_key=key)

    def assert_unknown(self, call, session_id, unknown_details):
        with self.assertRaises(TvqError) as raised:
            call()
        self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(raised.exception.details,
                         unknown_details.replace("UNKNOWN", session_id))

    def test_another_keys_session_is_not_found_on_every_rpc(self):
        with self.client(KEY) as mine, self.client(HASHED_KEY) as theirs:
            mine.create_session("Hello there", session_id="iso-mine")
            with self.assertRaises(TvqError) as raised:
                theirs.get_session("UNKNOWN")
            unknown = raised.exception.details
            self.assertIn('"UNKNOWN"', unknown)
            calls = {
                "get": lambda: theirs.get_session("iso-mine"),
                "append": lambda: theirs.append_to_session("iso-mine", " x"),
                "generate": lambda: theirs.generate(
                    " and", session_id="iso-mine", max_new_tokens=2),
                "score": lambda: theirs.score(" and", session_id="iso-mine"),
                "fork": lambda: theirs.fork_session("iso-mine", "iso-theirs"),
                "export": lambda: theirs.export_session("iso-mine"),
                "close": lambda: theirs.close_session("iso-mine"),
            }
            for name, call in calls.items():
                with self.subTest(rpc=name):
                    self.assert_unknown(call, "iso-mine", unknown)
            self.assertNotIn("iso-mine",
                             {s.session_id for s in theirs.list_sessions()})
            # The id is taken (ids are one namespace per server), and says
            # nothing more.
            with self.assertRaises(TvqError) as raised:
                theirs.create_session(session_id="iso-mine")
            self.assertEqual(raised.exception.code,
                             grpc.StatusCode.ALREADY_EXISTS)
            # Mine is untouched and fully mine.
            self.assertEqual(mine.get_session("iso-mine").position,
                             len("Hello there") + 1)
            mine.append_to_session("iso-mine", " again")
            mine.generate(" and", session_id="iso-mine", max_new_tokens=2)
            mine.fork_session("iso-mine", "iso-mine-fork")
            blob = mine.export_session("iso-mine")
            # An exported blob carries no owner: whoever imports it owns the
            # import.
            theirs.import_session(blob, "iso-theirs-import")
            self.assert_unknown(
                lambda: mine.get_session("iso-theirs-import"),
                "iso-theirs-import", unknown)
            self.assertEqual(
                {s.session_id for s in mine.list_sessions()},
                {"iso-mine", "iso-mine-fork"})
            for client in (mine, theirs):
                for session in client.list_sessions():
                    client.close_session(session.session_id)

    def test_stored_responses_are_each_keys_own(self):
        base = f"http://{self.server.http_address}/v1"
        options = dict(model=MODEL, max_output_tokens=2, temperature=0)
        with openai.OpenAI(base_url=base, api_key=KEY, max_retries=0,
                           timeout=60) as mine, \
                openai.OpenAI(base_url=base, api_key=NEW_KEY, max_retries=0,
                              timeout=60) as theirs:
            first = mine.responses.create(input="Kept", store=True, **options)
            with self.assertRaises(openai.NotFoundError):
                theirs.responses.retrieve(first.id)
            with self.assertRaises(openai.NotFoundError) as raised:
                theirs.responses.create(input=" more",
                                        previous_response_id=first.id,
                                        **options)
            self.assertIn("no stored response", str(raised.exception))
            with self.assertRaises(openai.NotFoundError):
                theirs.responses.delete(first.id)
            # Still mine, and still continuable.
            self.assertEqual(mine.responses.retrieve(first.id).id, first.id)
            mine.responses.create(input=" more", previous_response_id=first.id,
                                  **options)
            mine.responses.delete(first.id)

    def test_prefix_reuse_never_crosses_keys(self):
        prompt = "A prompt only the first key has sent, long enough to reuse"
        with self.client(KEY) as mine, self.client(HASHED_KEY) as theirs:
            ids = list(mine.tokenize(prompt, no_eos_prefix=True))
            first = mine.generate(token_ids=ids, max_new_tokens=1,
                                  temperature=0)
            # Begins with every token of the first request.
            extended = ids + list(first.token_ids) + ids[:8]
            self.assertEqual(
                theirs.generate(token_ids=extended, max_new_tokens=1,
                                temperature=0).usage.cached_tokens, 0)
            self.assertGreater(
                mine.generate(token_ids=extended, max_new_tokens=1,
                              temperature=0).usage.cached_tokens, 0)


class SessionsPerKeyTest(unittest.TestCase):
    """--max-sessions-per-key: each key holds at most that many sessions on
    the server (created, forked, imported, stored HTTP responses), the
    others' keys are not affected, closing one makes room, and every
    surface reports the limit."""

    LIMIT = 2

    @classmethod
    def setUpClass(cls):
        cls.server = KeyedServer(
            extra_args=[f"--max-sessions-per-key={cls.LIMIT}"])
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def client(self, key):
        return TvqClient(self.server.address, timeout=60, api_key=key)

    def assert_over_limit(self, call):
        with self.assertRaises(TvqError) as raised:
            call()
        self.assertEqual(raised.exception.code,
                         grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("this API key holds 2 sessions on this server, the most "
                      "--max-sessions-per-key=2 allows",
                      raised.exception.details)

    def test_each_key_holds_at_most_the_limit(self):
        with self.client(KEY) as mine, self.client(HASHED_KEY) as theirs:
            first = mine.create_session("Hello", session_id="mine-1")
            mine.fork_session(first.session_id, "mine-2")
            self.assert_over_limit(
                lambda: mine.create_session(session_id="mine-3"))
            self.assert_over_limit(
                lambda: mine.fork_session("mine-1", "mine-3"))
            blob = mine.export_session("mine-1")
            self.assert_over_limit(
                lambda: mine.import_session(blob, "mine-3"))
            # Another key is not affected (and sees only its own).
            theirs.create_session("Hi", session_id="theirs-1")
            theirs.import_session(blob, "theirs-2")
            self.assertEqual(
                {s.session_id for s in theirs.list_sessions()},
                {"theirs-1", "theirs-2"})
            # Closing one of mine makes room for one more.
            mine.close_session("mine-2")
            mine.create_session(session_id="mine-3")
            self.assert_over_limit(
                lambda: mine.create_session(session_id="mine-4"))
            # The other key cannot close mine to make room.
            with self.assertRaises(TvqError) as raised:
                theirs.close_session("mine-3")
            self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)
            self.assert_over_limit(
                lambda: mine.create_session(session_id="mine-4"))
            for client in (mine, theirs):
                for session in client.list_sessions():
                    client.close_session(session.session_id)

    def test_stored_http_responses_count_and_unstored_do_not(self):
        with openai.OpenAI(base_url=f"http://{self.server.http_address}/v1",
                           api_key=NEW_KEY, max_retries=0,
                           timeout=60) as sdk:
            self.server.reload(["# test keys", KEY, sha256_line(HASHED_KEY),
                                NEW_KEY])
            options = dict(model=MODEL, max_output_tokens=2, temperature=0)
            for _ in range(3):
                sdk.responses.create(input="Unstored", store=False, **options)
            first = sdk.responses.create(input="Kept", store=True, **options)
            sdk.responses.create(input=" more", previous_response_id=first.id,
                                 store=True, **options)
            with self.assertRaises(openai.RateLimitError) as raised:
                sdk.responses.create(input="One too many", store=True,
                                     **options)
            self.assertIn("--max-sessions-per-key=2", str(raised.exception))
            # Unstored responses still run.
            sdk.responses.create(input="Unstored", store=False, **options)

    def test_every_surface_reports_the_limit(self):
        with self.client(KEY) as client:
            self.assertEqual(client.info().limits.max_sessions_per_key,
                             self.LIMIT)
        os.environ["TVQ_API_KEY"] = KEY
        try:
            result = run_client(["info"], self.server.address)
        finally:
            del os.environ["TVQ_API_KEY"]
        self.assertEqual(result.returncode, 0, describe(result))
        self.assertIn("max_sessions_per_key 2\n", result.stdout)
        status, _, body = ApiKeysTest.http(self, KEY)
        self.assertEqual(status, 200)
        limits = json.loads(body)["data"][0]["limits"]
        self.assertEqual(limits["max_sessions_per_key"], self.LIMIT)

    def test_the_limit_needs_keys(self):
        result = subprocess.run(
            [SERVER, f"--model={golden_model_dir(MODEL)}",
             "--max-sessions-per-key=2"],
            capture_output=True, text=True, timeout=60)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("--max-sessions-per-key counts sessions per API key: it "
                      "needs --api-keys-file", result.stderr)


if __name__ == "__main__":
    unittest.main()
