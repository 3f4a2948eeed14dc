"""POST /v1/responses backed by sessions, GET and DELETE /v1/responses/{id},
through the real openai SDK (client.responses.*) against the real
tvq-server: previous_response_id over three turns prefills only the new
input (input_tokens_details.cached_tokens grows) and the output equals a
one-shot greedy completion of the whole conversation; streaming events;
x-session-id; continuing a response that was continued already (ctest label
http)."""

import time
import unittest

import openai

from http_test_support import (CHAT_TEMPLATE, MODEL, HttpServer, curl_json,
                               grpc_info, model_dir_with_chat_template,
                               raw_request, render_chat)
from tvq_client import TvqClient

MAX = 8
OPTIONS = dict(model=MODEL, max_output_tokens=MAX, temperature=0,
               extra_body={"ignore_eos": True})
INPUTS = ["The first turn", " and a second", " then a third"]


class ResponsesTest(unittest.TestCase):

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

    def one_shot(self, ids):
        """(text, generated ids) of a greedy completion of token ids."""
        text = self.openai.completions.create(
            model=MODEL, prompt=ids, max_tokens=MAX, temperature=0,
            extra_body={"ignore_eos": True}).choices[0].text
        generated = list(self.grpc.generate(
            token_ids=ids, no_eos_prefix=True, max_new_tokens=MAX,
            temperature=0, ignore_eos=True).token_ids)
        return text, generated

    def test_three_turns_prefill_only_the_new_input(self):
        raw = self.openai.responses.with_raw_response.create(
            input=INPUTS[0], **OPTIONS)
        first = raw.parse()
        root = raw.headers.get("x-session-id")
        self.assertTrue(root)
        self.assertEqual(first.object, "response")
        self.assertTrue(first.id.startswith("resp_"))
        self.assertEqual(first.status, "incomplete")
        self.assertEqual(first.usage.input_tokens_details.cached_tokens, 0)
        self.assertEqual(first.usage.output_tokens, MAX)

        sequence = self.grpc.tokenize(INPUTS[0])  # eos first
        self.assertEqual(first.usage.input_tokens, len(sequence))
        text, generated = self.one_shot(sequence)
        self.assertEqual(first.output_text, text)
        sequence += generated

        previous = first
        cached = [0]
        for turn in INPUTS[1:]:
            raw = self.openai.responses.with_raw_response.create(
                input=turn, previous_response_id=previous.id, **OPTIONS)
            response = raw.parse()
            self.assertEqual(raw.headers.get("x-session-id"), root)
            self.assertEqual(response.previous_response_id, previous.id)
            # The session held everything but its last token.
            self.assertEqual(response.usage.input_tokens_details.cached_tokens,
                             len(sequence) - 1)
            cached.append(response.usage.input_tokens_details.cached_tokens)
            sequence += self.grpc.tokenize(turn, no_eos_prefix=True)
            self.assertEqual(response.usage.input_tokens, len(sequence))
            text, generated = self.one_shot(sequence)
            self.assertEqual(response.output_text, text)
            sequence += generated
            previous = response
        self.assertLess(cached[0], cached[1])
        self.assertLess(cached[1], cached[2])

        # Stored: GET returns it.
        again = self.openai.responses.retrieve(previous.id)
        self.assertEqual(again.output_text, previous.output_text)
        self.assertEqual(again.usage.input_tokens, previous.usage.input_tokens)

    def test_branching_from_an_earlier_response_and_streaming(self):
        first = self.openai.responses.create(input="A branch point", **OPTIONS)
        second = self.openai.responses.create(
            input=" left", previous_response_id=first.id, **OPTIONS)
        # The first response was continued already: it still continues from
        # its own state, and the stream says the same as a unary call.
        with self.openai.responses.with_streaming_response.create(
                input=" left", previous_response_id=first.id, stream=True,
                **OPTIONS) as raw:
            root = raw.headers.get("x-session-id")
            events = list(raw.parse())
        types = [event.type for event in events]
        self.assertEqual(types[0], "response.created")
        self.assertEqual(types[-1], "response.completed")
        self.assertTrue(all(t == "response.output_text.delta"
                            for t in types[1:-1]))
        self.assertGreater(len(types), 2)
        streamed = "".join(e.delta for e in events[1:-1])
        self.assertEqual(streamed, second.output_text)
        done = events[-1].response
        self.assertEqual(done.output_text, second.output_text)
        self.assertEqual(done.usage.input_tokens_details.cached_tokens,
                         second.usage.input_tokens_details.cached_tokens)
        self.assertEqual(events[0].response.status, "in_progress")
        self.assertTrue(root)

        # Message items and instructions: the same text as a string.
        items = self.openai.responses.create(
            input=[{"role": "user", "content": [
                {"type": "input_text", "text": " le"},
                {"type": "input_text", "text": "ft"}]}],
            previous_response_id=first.id, **OPTIONS)
        self.assertEqual(items.output_text, second.output_text)
        defaults = self.openai.responses.create(
            input=" left", previous_response_id=first.id, tool_choice="auto",
            truncation="disabled", text={"format": {"type": "text"}},
            include=[], tools=[], parallel_tool_calls=False,
            metadata={"k": "v"}, **OPTIONS)
        self.assertEqual(defaults.output_text, second.output_text)
        self.assertEqual(defaults.metadata, {"k": "v"})
        with self.assertRaises(openai.BadRequestError) as raised:
            self.openai.responses.create(input="x", truncation="auto",
                                         **OPTIONS)
        self.assertEqual(raised.exception.body["param"], "truncation")
        with_instructions = self.openai.responses.create(
            instructions="A branch", input=" point", **OPTIONS)
        self.assertEqual(with_instructions.output_text, first.output_text)
        self.assertEqual(with_instructions.instructions, "A branch")

        # DELETE forgets one response; those continued from it stay.
        self.openai.responses.delete(first.id)
        with self.assertRaises(openai.NotFoundError):
            self.openai.responses.retrieve(first.id)
        with self.assertRaises(openai.NotFoundError):
            self.openai.responses.create(
                input="x", previous_response_id=first.id, **OPTIONS)
        third = self.openai.responses.create(
            input=" on", previous_response_id=second.id, **OPTIONS)
        self.assertGreater(third.usage.input_tokens_details.cached_tokens,
                           second.usage.input_tokens_details.cached_tokens)

    def test_store_false_is_not_continuable(self):
        response = self.openai.responses.create(input="Not kept", store=False,
                                                **OPTIONS)
        self.assertFalse(response.store)
        with self.assertRaises(openai.NotFoundError):
            self.openai.responses.retrieve(response.id)
        with self.assertRaises(openai.NotFoundError):
            self.openai.responses.create(
                input="x", previous_response_id=response.id, **OPTIONS)


def wait_until(condition, what, timeout=60.0):
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class ResponsesCancelTest(unittest.TestCase):
    """Closing a response stream frees its slot and leaves no session."""

    def test_closing_a_stream_cancels_and_stores_nothing(self):
        endless = 5_000_000
        with HttpServer(extra_args=[f"--max-new-tokens-limit={endless}"]) \
                as server, TvqClient(server.address, timeout=60) as grpc:
            sessions_before = len(grpc.list_sessions())
            sock = raw_request(server.http_address, "POST", "/v1/responses",
                               {"model": MODEL, "input": "Go on",
                                "max_output_tokens": endless, "stream": True,
                                "ignore_eos": True})
            received = b""
            while b"response.output_text.delta" not in received:
                received += sock.recv(65536)
            head = received.split(b"\r\n\r\n")[0].lower()
            self.assertIn(b"200 ok", head.split(b"\r\n")[0])
            self.assertIn(b"x-session-id: ", head)
            wait_until(lambda: grpc_info(server).busy_slots == 1,
                       "the stream to run")
            sock.close()
            wait_until(lambda: grpc_info(server).busy_slots == 0,
                       "the slot to be freed")
            wait_until(lambda: len(grpc.list_sessions()) ==
                       sessions_before, "the turn's session to be closed")



class ResponsesChatTemplateTest(unittest.TestCase):
    """A model that declares a chat template: message items go through it
    (as /v1/chat/completions does, with its stop sequences), a follow-up
    starts with the assistant's suffix; a plain string input stays plain."""

    @classmethod
    def setUpClass(cls):
        cls.model_holder, model_dir = model_dir_with_chat_template()
        cls.server = HttpServer(model_dir)
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

    def one_shot(self, ids):
        """(text, generated ids) of a greedy completion of token ids with
        the template's stop sequences."""
        stop = CHAT_TEMPLATE["stop"]
        text = self.openai.completions.create(
            model=MODEL, prompt=ids, max_tokens=MAX, temperature=0,
            stop=stop, extra_body={"ignore_eos": True}).choices[0].text
        generated = list(self.grpc.generate(
            token_ids=ids, no_eos_prefix=True, max_new_tokens=MAX,
            temperature=0, ignore_eos=True, stop=stop).token_ids)
        return text, generated

    def test_message_items_go_through_the_chat_template(self):
        messages = [{"role": "user", "content": "Hi there"}]
        first = self.openai.responses.create(input=messages,
                                             instructions="Be brief",
                                             **OPTIONS)
        rendered = render_chat([{"role": "system", "content": "Be brief"},
                                *messages])
        sequence = self.grpc.tokenize(rendered)  # eos first
        self.assertEqual(first.usage.input_tokens, len(sequence))
        text, generated = self.one_shot(sequence)
        self.assertEqual(first.output_text, text)
        # The same prompt as the chat completions of those messages.
        chat = self.openai.chat.completions.create(
            model=MODEL, max_tokens=MAX, temperature=0,
            messages=[{"role": "system", "content": "Be brief"}, *messages],
            extra_body={"ignore_eos": True})
        self.assertEqual(first.output_text, chat.choices[0].message.content)
        sequence += generated

        # A follow-up: the assistant's suffix closes the output, then the
        # new messages (developer as system: the template has no developer
        # role) and the generation prefix.
        follow = [{"role": "developer", "content": "Go on"},
                  {"role": "user", "content": "More"}]
        second = self.openai.responses.create(
            input=follow, previous_response_id=first.id, **OPTIONS)
        roles = CHAT_TEMPLATE["roles"]
        turn = roles["assistant"]["suffix"] + render_chat(
            [{"role": "system", "content": "Go on"},
             {"role": "user", "content": "More"}])
        sequence += self.grpc.tokenize(turn, no_eos_prefix=True)
        self.assertEqual(second.usage.input_tokens, len(sequence))
        self.assertEqual(second.usage.input_tokens_details.cached_tokens,
                         first.usage.input_tokens +
                         first.usage.output_tokens - 1)
        text, _ = self.one_shot(sequence)
        self.assertEqual(second.output_text, text)

    def test_a_string_input_stays_plain_text(self):
        answer = self.openai.responses.create(input="Once", **OPTIONS)
        self.assertEqual(answer.usage.input_tokens, 1 + len(b"Once"))

    def test_a_role_the_template_lacks_is_400_naming_it(self):
        status, answer = curl_json(self.server.base_url + "/v1/responses", {
            "model": MODEL, "input": [{"role": "user", "content": "a"},
                                      {"role": "tool", "content": "b"}]})
        self.assertEqual(status, 400)
        self.assertEqual(answer["error"]["param"], "input[1].role")


if __name__ == "__main__":
    unittest.main()
