"""Streams of the real tvq-server's HTTP front end: a client that goes away
(closes its stream, closes while waiting for a unary answer, stops reading)
frees its slot, and 256 concurrent Server-Sent Events streams all succeed
without a thread per stream. Figures (time, threads, RSS) are printed, not
asserted. Ctest label http."""

import asyncio
import json
import re
import time
import unittest
import urllib.request

import openai

from http_test_support import MODEL, HttpServer, grpc_info, raw_request

ENDLESS = 5_000_000
LONG_FLAGS = [f"--max-new-tokens-limit={ENDLESS}"]


def wait_until(condition, what, timeout=60.0):
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def proc_status(pid):
    """Threads, VmRSS and VmHWM (kB) of a process."""
    with open(f"/proc/{pid}/status") as file:
        fields = dict(line.split(":", 1) for line in file if ":" in line)
    return {"threads": int(fields["Threads"]),
            "rss_kb": int(fields["VmRSS"].split()[0]),
            "hwm_kb": int(fields["VmHWM"].split()[0])}


def scrape(server):
    url = re.search(r"metrics on (\S+)", server.log_tail(None)).group(1)
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode()


def sample(text, name, labels=""):
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text,
                      re.MULTILINE)
    return float(match.group(1)) if match else 0.0


ENDLESS_STREAM = {"model": MODEL, "prompt": "Hello", "max_tokens": ENDLESS,
                  "ignore_eos": True, "stream": True}


class ClientGoneTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = HttpServer(extra_args=[
            *LONG_FLAGS, "--metrics-address=127.0.0.1:0",
            "--max-pending-output-bytes=262144"])
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def busy(self):
        return grpc_info(self.server).busy_slots

    def test_closing_a_stream_cancels_its_generation(self):
        before = scrape(self.server)
        sock = raw_request(self.server.http_address, "POST",
                           "/v1/completions", ENDLESS_STREAM)
        received = b""
        while b"data: " not in received:
            received += sock.recv(65536)
        self.assertIn(b"200 OK", received.split(b"\r\n")[0])
        wait_until(lambda: self.busy() == 1, "the stream to run")
        sock.close()
        wait_until(lambda: self.busy() == 0, "the slot to be freed")
        after = scrape(self.server)
        # The 499 is counted as CANCELLED, once, in the shared family.
        route = '{code="CANCELLED",frontend="http",method="/v1/completions"}'
        wait_until(lambda: sample(scrape(self.server),
                                  "tvq_requests_total", route) >
                   sample(before, "tvq_requests_total", route),
                   "the 499 to be counted")
        cancelled = '{frontend="http",kind="generate",reason="cancelled"}'
        self.assertGreater(sample(after, "tvq_requests_finished_total",
                                  cancelled),
                           sample(before, "tvq_requests_finished_total",
                                  cancelled))
        self.assertEqual(sample(scrape(self.server),
                                "tvq_http_active_streams"), 0)

    def test_closing_while_waiting_for_a_unary_answer_cancels_it(self):
        sock = raw_request(self.server.http_address, "POST",
                           "/v1/completions",
                           {**ENDLESS_STREAM, "stream": False})
        wait_until(lambda: self.busy() == 1, "the request to run")
        sock.close()
        wait_until(lambda: self.busy() == 0, "the slot to be freed")

    def test_closing_an_sdk_stream_cancels_it(self):
        client = openai.OpenAI(base_url=self.server.base_url + "/v1",
                               api_key="unused", max_retries=0, timeout=60)
        stream = client.completions.create(
            model=MODEL, prompt="Hello", max_tokens=ENDLESS, stream=True,
            extra_body={"ignore_eos": True})
        for _, chunk in zip(range(3), stream):
            self.assertEqual(chunk.object, "text_completion")
        stream.close()
        client.close()
        wait_until(lambda: self.busy() == 0, "the slot to be freed")

    def test_a_reader_that_stops_reading_is_cut_off(self):
        # The client keeps its socket open but reads nothing: once the
        # kernel buffers and the server's bound (--max-pending-output-bytes,
        # 256 KiB here) are
        # full, the server gives up on it and frees the slot.
        sock = raw_request(self.server.http_address, "POST",
                           "/v1/completions", ENDLESS_STREAM)
        try:
            wait_until(lambda: self.busy() == 1, "the stream to run")
            wait_until(lambda: self.busy() == 0,
                       "the slow stream to be cancelled", timeout=120)
        finally:
            sock.close()


async def one_stream(address, body):
    """POSTs a streamed completion; returns the SSE payloads."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    data = json.dumps(body).encode()
    writer.write((f"POST /v1/completions HTTP/1.1\r\nHost: {address}\r\n"
                  f"Content-Type: application/json\r\n"
                  f"Content-Length: {len(data)}\r\nConnection: close\r\n"
                  f"\r\n").encode() + data)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body_bytes = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    # De-chunk.
    payload = b""
    while body_bytes:
        size_line, _, rest = body_bytes.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        payload += rest[:size]
        body_bytes = rest[size + 2:]
    events = payload.decode().split("\n\n")
    assert events[-1] == ""
    return [event[len("data: "):] for event in events[:-1]]


class ConcurrentStreamsTest(unittest.TestCase):

    def test_256_concurrent_streams(self):
        streams, tokens = 256, 64
        with HttpServer(extra_args=["--num-slots=256",
                                    "--max-queue=256"]) as server:
            client = openai.OpenAI(base_url=server.base_url + "/v1",
                                   api_key="unused", max_retries=0,
                                   timeout=120)
            body = {"model": MODEL, "prompt": "Hello", "max_tokens": tokens,
                    "temperature": 0, "ignore_eos": True}
            unary = client.completions.create(
                model=MODEL, prompt="Hello", max_tokens=tokens,
                temperature=0, extra_body={"ignore_eos": True})
            client.close()
            idle = proc_status(server.pid)
            peak = dict(idle)

            async def run_all():
                async def watch():
                    while True:
                        status = proc_status(server.pid)
                        peak["threads"] = max(peak["threads"],
                                              status["threads"])
                        await asyncio.sleep(0.005)
                watcher = asyncio.ensure_future(watch())
                results = await asyncio.gather(*[
                    one_stream(server.http_address,
                               {**body, "stream": True,
                                "stream_options": {"include_usage": True}})
                    for _ in range(streams)])
                watcher.cancel()
                return results

            start = time.monotonic()
            results = asyncio.run(run_all())
            elapsed = time.monotonic() - start
            after = proc_status(server.pid)

            self.assertEqual(len(results), streams)
            for payloads in results:
                self.assertEqual(payloads[-1], "[DONE]")
                usage = json.loads(payloads[-2])["usage"]
                self.assertEqual(usage["completion_tokens"], tokens)
                text = "".join(json.loads(p)["choices"][0]["text"]
                               for p in payloads[:-2])
                # Greedy, and a decode step's numbers never depend on its
                # batch peers: every stream says what the lone request said.
                self.assertEqual(text, unary.choices[0].text)
            # No thread per stream.
            self.assertLess(peak["threads"] - idle["threads"], 8,
                            (idle, peak))
            print(f"\n256 concurrent streams x {tokens} tokens: "
                  f"{elapsed:.2f} s; server threads {idle['threads']} idle, "
                  f"{peak['threads']} peak; RSS {idle['rss_kb'] // 1024} MiB "
                  f"idle, {after['hwm_kb'] // 1024} MiB peak", flush=True)


if __name__ == "__main__":
    unittest.main()
