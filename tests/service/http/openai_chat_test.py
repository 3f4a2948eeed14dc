"""POST /v1/chat/completions of the real tvq-server through the real openai
SDK: a model directory with a chat template (a temporary copy of a golden
model plus chat_template.json) and one without (400). Ctest label http."""

import json
import os
import subprocess
import unittest

import openai

from client_test_support import SERVER
from http_test_support import (MODEL, HttpServer, curl,
                               model_dir_with_chat_template, read_sse,
                               render_chat)

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
]


def client_for(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused",
                         max_retries=0, timeout=60)


class ChatWithTemplateTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.model_holder, model_dir = model_dir_with_chat_template()
        cls.server = HttpServer(model_dir)
        cls.server.start()
        cls.openai = client_for(cls.server)

    @classmethod
    def tearDownClass(cls):
        cls.openai.close()
        cls.server.stop()
        cls.model_holder.cleanup()

    def chat(self, **options):
        return self.openai.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0,
            extra_body={"ignore_eos": True}, **options)

    def test_chat_equals_completion_of_the_rendered_prompt(self):
        chat = self.chat()
        completion = self.openai.completions.create(
            model=MODEL, prompt=render_chat(MESSAGES), max_tokens=12,
            temperature=0, stop=["\nU:"], extra_body={"ignore_eos": True})
        self.assertEqual(chat.object, "chat.completion")
        self.assertTrue(chat.id.startswith("chatcmpl-"))
        self.assertEqual(chat.model, MODEL)
        message = chat.choices[0].message
        self.assertEqual(message.role, "assistant")
        self.assertEqual(message.content, completion.choices[0].text)
        self.assertEqual(chat.choices[0].finish_reason,
                         completion.choices[0].finish_reason)
        self.assertEqual(chat.usage.prompt_tokens,
                         completion.usage.prompt_tokens)
        self.assertEqual(chat.usage.prompt_tokens_details.cached_tokens, 0)

    def test_stream_chunks_join_to_the_unary_message(self):
        unary = self.chat()
        chunks = list(self.chat(stream=True,
                                stream_options={"include_usage": True}))
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens,
                         unary.usage.completion_tokens)
        deltas = chunks[:-1]
        for chunk in deltas:
            self.assertEqual(chunk.object, "chat.completion.chunk")
        self.assertEqual(deltas[0].choices[0].delta.role, "assistant")
        self.assertEqual("".join(c.choices[0].delta.content or ""
                                 for c in deltas),
                         unary.choices[0].message.content)
        self.assertEqual(deltas[-1].choices[0].finish_reason,
                         unary.choices[0].finish_reason)

    def test_max_completion_tokens_and_logprobs(self):
        chat = self.openai.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_completion_tokens=6,
            temperature=0, logprobs=True, top_logprobs=2,
            extra_body={"ignore_eos": True})
        content = chat.choices[0].logprobs.content
        self.assertEqual(chat.usage.completion_tokens, len(content))
        self.assertLessEqual(len(content), 6)
        for entry in content:
            self.assertEqual(len(entry.top_logprobs), 2)
            self.assertGreaterEqual(entry.top_logprobs[0].logprob,
                                    entry.logprob)
            self.assertIsInstance(entry.bytes, list)

    def test_content_parts_and_unknown_role(self):
        parts = [{"role": "user",
                  "content": [{"type": "text", "text": "Hel"},
                              {"type": "text", "text": "lo"}]}]
        as_parts = self.openai.chat.completions.create(
            model=MODEL, messages=parts, max_tokens=6, temperature=0)
        as_text = self.openai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello"}],
            max_tokens=6, temperature=0)
        self.assertEqual(as_parts.choices[0].message.content,
                         as_text.choices[0].message.content)
        with self.assertRaises(openai.BadRequestError) as caught:
            self.openai.chat.completions.create(
                model=MODEL, messages=[{"role": "tool", "content": "x"}],
                max_tokens=4)
        self.assertEqual(caught.exception.body["param"], "messages[0].role")
        self.assertIn("not a role", caught.exception.body["message"])

    def test_tools_are_refused(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            self.openai.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=4,
                tools=[{"type": "function",
                        "function": {"name": "f", "parameters": {}}}])
        self.assertEqual(caught.exception.body["param"], "tools")

    def test_stream_wire_format(self):
        body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4,
                "stream": True}
        result = curl(["-N", "--data-binary", json.dumps(body),
                       self.server.base_url + "/v1/chat/completions"])
        payloads = read_sse(result.stdout)
        self.assertEqual(payloads[-1], "[DONE]")
        first = json.loads(payloads[0])
        self.assertEqual(first["choices"][0]["delta"]["role"], "assistant")
        self.assertIsNotNone(
            json.loads(payloads[-2])["choices"][0]["finish_reason"])


class ChatWithoutTemplateTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = HttpServer()
        cls.server.start()
        cls.openai = client_for(cls.server)

    @classmethod
    def tearDownClass(cls):
        cls.openai.close()
        cls.server.stop()

    def test_chat_is_400_naming_the_missing_template(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            self.openai.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=4)
        error = caught.exception
        self.assertEqual(error.status_code, 400)
        self.assertIn("chat template", error.body["message"])
        self.assertIn("chat_template.json", error.body["message"])
        self.assertEqual(error.body["param"], "messages")
        # Completions still work.
        completion = self.openai.completions.create(
            model=MODEL, prompt="Hello", max_tokens=3)
        self.assertEqual(completion.object, "text_completion")

class BadStartTest(unittest.TestCase):
    """A malformed chat template or HTTP address stops the server at start,
    naming the problem."""

    def run_server(self, model_dir, http_listen="127.0.0.1:0"):
        return subprocess.run(
            [SERVER, f"--model={model_dir}", "--listen=127.0.0.1:0",
             "--metrics-address=", "--threads=1",
             f"--http-listen={http_listen}"],
            capture_output=True, text=True, timeout=60, check=False)

    def test_malformed_chat_template(self):
        holder, model_dir = model_dir_with_chat_template()
        with holder:
            path = os.path.join(model_dir, "chat_template.json")
            for content, message in [
                    ("{", "not valid JSON"),
                    ('{"roles": {}}', "\"roles\" must be a non-empty object"),
                    ('{"roles": {"user": {"prefix": 1}}}',
                     "roles.user.prefix must be a string"),
                    ('{"roles": {"user": {}}, "extra": 1}',
                     "unknown key \"extra\"")]:
                with self.subTest(content=content):
                    with open(path, "w") as file:
                        file.write(content)
                    result = self.run_server(model_dir)
                    self.assertEqual(result.returncode, 1, result.stderr)
                    self.assertIn("chat_template.json", result.stderr)
                    self.assertIn(message, result.stderr)

    def test_bad_http_address(self):
        holder, model_dir = model_dir_with_chat_template()
        with holder:
            result = self.run_server(model_dir, http_listen="no-port")
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertIn("--http-listen", result.stderr)
            self.assertIn("HOST:PORT", result.stderr)


if __name__ == "__main__":
    unittest.main()
