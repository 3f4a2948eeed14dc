"""The routing contract (docs/deploy.md, "The routing contract") against the
real tvq-server over both front ends: a session key in gRPC metadata or
HTTP headers (x-session-id, or an alias: x-dynamo-session-id, agent
headers) addresses the session; a header and a session id in the request
itself must agree (INVALID_ARGUMENT / 400 naming both); every response of a
session-bound call carries x-session-id (gRPC initial and trailing metadata,
the HTTP response header); calls without a session carry none (ctest label
http)."""

import unittest
import urllib.error
import urllib.request

import grpc
import openai

from http_test_support import MODEL, HttpServer
from tvq.v1 import tvq_pb2, tvq_pb2_grpc

TIMEOUT = 60


def http_call(address, method, path, headers):
    """(status, headers, body text) of one request without a body."""
    request = urllib.request.Request(f"http://{address}{path}", method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def metadata_value(metadata, key="x-session-id"):
    """The values of `key` in gRPC metadata (a sequence of (key, value))."""
    return [value for name, value in (metadata or ()) if name == key]


class GrpcSessionKeyTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = HttpServer()
        cls.server.start()
        cls.channel = grpc.insecure_channel(cls.server.address)
        cls.stub = tvq_pb2_grpc.TextGenerationStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()

    def call(self, method, request, session_headers=()):
        """(response, call) of a unary call with these metadata pairs."""
        return getattr(self.stub, method).with_call(
            request, metadata=list(session_headers), timeout=TIMEOUT)

    def create(self, session_id="", headers=(), prompt=(65, 66, 67)):
        request = tvq_pb2.CreateSessionRequest(session_id=session_id, no_eos_prefix=True)
        request.token_ids.ids.extend(prompt)
        return self.call("CreateSession", request, headers)

    def generate_request(self, session_id="", prompt=(68, 69)):
        request = tvq_pb2.GenerateRequest(session_id=session_id, no_eos_prefix=True,
                                          max_new_tokens=6, temperature=0, ignore_eos=True)
        request.token_ids.ids.extend(prompt)
        return request

    def assert_announced(self, call, session_id):
        self.assertEqual(metadata_value(call.initial_metadata()), [session_id])
        self.assertEqual(metadata_value(call.trailing_metadata()), [session_id])

    def test_header_only_is_the_session_key_and_continues_exactly(self):
        # Twin sessions: one addressed by the header, one by the body field.
        session, call = self.create(headers=[("x-session-id", "route-header")])
        self.assertEqual(session.session_id, "route-header")
        self.assert_announced(call, "route-header")
        self.create(session_id="route-body")

        by_header, call = self.call("Generate", self.generate_request(),
                                    [("x-session-id", "route-header")])
        self.assert_announced(call, "route-header")
        by_body, call = self.call("Generate", self.generate_request("route-body"))
        self.assert_announced(call, "route-body")
        self.assertEqual(list(by_header.token_ids), list(by_body.token_ids))
        self.assertEqual(len(by_header.token_ids), 6)

        # Both sessions advanced the same way: 3 + 2 + 6 tokens.
        for session_id in ("route-header", "route-body"):
            info, call = self.call("GetSession", tvq_pb2.GetSessionRequest(),
                                   [("x-session-id", session_id)])
            self.assertEqual(info.position, 11)
            self.assert_announced(call, session_id)

        # Score continues it too.
        score_request = tvq_pb2.ScoreRequest(no_eos_prefix=True)
        score_request.token_ids.ids.extend([70, 71])
        _, call = self.call("Score", score_request, [("x-session-id", "route-header")])
        self.assert_announced(call, "route-header")

    def test_header_and_body_agreeing_is_fine_disagreeing_names_both(self):
        self.create(session_id="route-agree")
        _, call = self.call("Generate", self.generate_request("route-agree"),
                            [("x-session-id", "route-agree")])
        self.assert_announced(call, "route-agree")

        with self.assertRaises(grpc.RpcError) as caught:
            self.call("Generate", self.generate_request("route-agree"),
                      [("x-session-id", "route-other")])
        error = caught.exception
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        for part in ("x-session-id", "route-other", "session_id", "route-agree"):
            self.assertIn(part, error.details())
        self.assertEqual(metadata_value(error.trailing_metadata()), [])

    def test_aliases_in_priority_order(self):
        session, call = self.create(headers=[("x-dynamo-session-id", "route-dynamo")])
        self.assertEqual(session.session_id, "route-dynamo")
        self.assert_announced(call, "route-dynamo")
        _, call = self.call("Generate", self.generate_request(),
                            [("x-claude-code-session-id", "route-dynamo")])
        self.assert_announced(call, "route-dynamo")
        # x-session-id wins over an alias naming another session.
        _, call = self.call("GetSession", tvq_pb2.GetSessionRequest(),
                            [("session_id", "route-unknown"),
                             ("x-session-id", "route-dynamo")])
        self.assert_announced(call, "route-dynamo")

    def test_invalid_header_value_names_the_header(self):
        with self.assertRaises(grpc.RpcError) as caught:
            self.call("Generate", self.generate_request(), [("x-session-id", "x" * 200)])
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("the x-session-id header", caught.exception.details())

    def test_unknown_session_fails_with_its_name_and_still_announces_it(self):
        with self.assertRaises(grpc.RpcError) as caught:
            self.call("Generate", self.generate_request(), [("x-session-id", "route-none")])
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("route-none", caught.exception.details())
        self.assertEqual(metadata_value(caught.exception.trailing_metadata()), ["route-none"])

    def test_stream_fork_export_import_close(self):
        self.create(session_id="route-stream")
        stream = self.stub.GenerateStream(self.generate_request(), timeout=TIMEOUT,
                                          metadata=[("x-session-id", "route-stream")])
        # Initial metadata arrives before the first token.
        self.assertEqual(metadata_value(stream.initial_metadata()), ["route-stream"])
        tokens = [t for message in stream for t in message.token_ids]
        self.assertEqual(len(tokens), 6)
        self.assertEqual(metadata_value(stream.trailing_metadata()), ["route-stream"])

        # Fork: the header names the source, the response the new session.
        fork, call = self.call("ForkSession",
                               tvq_pb2.ForkSessionRequest(new_session_id="route-fork"),
                               [("x-session-id", "route-stream")])
        self.assertEqual(fork.session_id, "route-fork")
        self.assert_announced(call, "route-fork")

        # Export by header, import under the header's id.
        export = self.stub.ExportSession(tvq_pb2.ExportSessionRequest(), timeout=TIMEOUT,
                                         metadata=[("x-session-id", "route-fork")])
        self.assertEqual(metadata_value(export.initial_metadata()), ["route-fork"])
        blob = b"".join(chunk.data for chunk in export)
        self.assertEqual(metadata_value(export.trailing_metadata()), ["route-fork"])
        imported, call = self.stub.ImportSession.with_call(
            iter([tvq_pb2.SessionChunk(data=blob)]), timeout=TIMEOUT,
            metadata=[("x-session-id", "route-imported")])
        self.assertEqual(imported.session_id, "route-imported")
        self.assertEqual(imported.position, fork.position)
        self.assert_announced(call, "route-imported")
        # A first chunk naming another id than the header: refused.
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.ImportSession.with_call(
                iter([tvq_pb2.SessionChunk(data=blob, session_id="route-x")]),
                timeout=TIMEOUT, metadata=[("x-session-id", "route-y")])
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("route-x", caught.exception.details())
        self.assertIn("route-y", caught.exception.details())

        for session_id in ("route-stream", "route-fork", "route-imported"):
            _, call = self.call("CloseSession", tvq_pb2.CloseSessionRequest(),
                                [("x-session-id", session_id)])
            self.assert_announced(call, session_id)

    def test_calls_without_a_session_carry_no_header(self):
        request = self.generate_request()
        request.no_eos_prefix = False
        _, call = self.call("Generate", request)
        self.assertEqual(metadata_value(call.initial_metadata()), [])
        self.assertEqual(metadata_value(call.trailing_metadata()), [])


class HttpSessionKeyTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = HttpServer()
        cls.server.start()
        cls.openai = openai.OpenAI(base_url=cls.server.base_url + "/v1", api_key="unused",
                                   max_retries=0, timeout=TIMEOUT)

    @classmethod
    def tearDownClass(cls):
        cls.openai.close()
        cls.server.stop()

    def respond(self, headers, **fields):
        return self.openai.responses.with_raw_response.create(
            model=MODEL, max_output_tokens=4, temperature=0, extra_headers=headers,
            **fields)

    def test_a_new_conversation_takes_the_header_as_its_key(self):
        raw = self.respond({"x-session-id": "conv-a"}, input="Hello")
        first = raw.parse()
        self.assertEqual(raw.headers.get("x-session-id"), "conv-a")
        # The follow-up keeps the key, with or without the header.
        raw = self.respond({"x-session-id": "conv-a"}, input=" again",
                           previous_response_id=first.id)
        second = raw.parse()
        self.assertEqual(raw.headers.get("x-session-id"), "conv-a")
        self.assertEqual(second.previous_response_id, first.id)
        raw = self.respond({}, input=" more", previous_response_id=second.id)
        self.assertEqual(raw.headers.get("x-session-id"), "conv-a")
        # GET with the same key, or none.
        status, headers, _ = http_call(self.server.http_address, "GET",
                                       f"/v1/responses/{first.id}",
                                       {"x-session-id": "conv-a"})
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("x-session-id"), "conv-a")

    def test_another_conversations_key_is_400_naming_both(self):
        first = self.respond({"x-session-id": "conv-b"}, input="Hello").parse()
        with self.assertRaises(openai.BadRequestError) as caught:
            self.respond({"x-session-id": "conv-c"}, input=" again",
                         previous_response_id=first.id)
        message = caught.exception.body["message"]
        for part in ("x-session-id", "conv-c", "conv-b"):
            self.assertIn(part, message)
        self.assertEqual(caught.exception.body["param"], "previous_response_id")
        status, _, body = http_call(self.server.http_address, "DELETE",
                                    f"/v1/responses/{first.id}",
                                    {"x-session-id": "conv-c"})
        self.assertEqual(status, 400)
        self.assertIn("conv-b", body)
        # Not deleted: still there for its own conversation.
        status, _, _ = http_call(self.server.http_address, "GET",
                                 f"/v1/responses/{first.id}",
                                 {"x-session-id": "conv-b"})
        self.assertEqual(status, 200)

    def test_agent_alias_and_invalid_value(self):
        raw = self.respond({"session_id": "codex-1"}, input="Hi", store=False)
        self.assertEqual(raw.headers.get("x-session-id"), "codex-1")
        # The same key again starts another conversation under it (Codex
        # sends the whole input each turn with store: false).
        raw = self.respond({"session_id": "codex-1"}, input="Hi there", store=False)
        self.assertEqual(raw.headers.get("x-session-id"), "codex-1")
        with self.assertRaises(openai.BadRequestError) as caught:
            self.respond({"x-session-id": "has space"}, input="Hi")
        self.assertIn("the x-session-id header", caught.exception.body["message"])


if __name__ == "__main__":
    unittest.main()
