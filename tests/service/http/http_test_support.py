"""Shared parts of the HTTP front end's end-to-end tests.

- HttpServer: the real tvq-server (tests/client/client_test_support.py's
  TvqServer) with --http-listen=127.0.0.1:0; http_address is read from the
  server's "HTTP API on http://HOST:PORT" line.
- curl(): runs the real curl binary.
- read_sse(): the events of a Server-Sent Events body.
- raw_request(): one request over a plain socket, for what the SDK and curl
  hide (closing a stream mid-way, exact SSE bytes).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile

from client_test_support import TvqServer, golden_model_dir

MODEL = "tiny-byte"

# A chat template for the tests (the golden model directories have none).
CHAT_TEMPLATE = {
    "roles": {
        "system": {"prefix": "S: ", "suffix": "\n"},
        "user": {"prefix": "U: ", "suffix": "\n"},
        "assistant": {"prefix": "A: ", "suffix": "\n"},
    },
    "generation_prefix": "A:",
    "stop": ["\nU:"],
}


def render_chat(messages):
    """The prompt CHAT_TEMPLATE makes of `messages` (chat_template.h)."""
    roles = CHAT_TEMPLATE["roles"]
    text = "".join(roles[m["role"]]["prefix"] + m["content"] +
                   roles[m["role"]]["suffix"] for m in messages)
    return text + CHAT_TEMPLATE["generation_prefix"]


def model_dir_with_chat_template(name=MODEL):
    """A temporary copy of a golden model directory plus chat_template.json.
    Returns (TemporaryDirectory, path); keep the first alive."""
    holder = tempfile.TemporaryDirectory()
    path = os.path.join(holder.name, name)
    shutil.copytree(golden_model_dir(name), path)
    with open(os.path.join(path, "chat_template.json"), "w") as file:
        json.dump(CHAT_TEMPLATE, file)
    return holder, path


class HttpServer(TvqServer):
    """TvqServer with the HTTP API on a free loopback port."""

    def __init__(self, model_dir=None, extra_args=(), **kwargs):
        super().__init__(model_dir or golden_model_dir(MODEL),
                         ["--http-listen=127.0.0.1:0",
                          f"--served-model-name={MODEL}", *extra_args],
                         **kwargs)
        self.http_address = None

    def start(self):
        super().start()
        match = re.search(r"HTTP API on https?://(\S+) ", self.log_tail(None))
        if match is None:
            raise RuntimeError("no HTTP address in the server's log:\n" +
                               self.log_tail())
        self.http_address = match.group(1)

    @property
    def base_url(self):
        return f"http://{self.http_address}"

    @property
    def pid(self):
        return self._process.pid


def curl(args, timeout=120):
    """Runs curl -sS ARGS; returns CompletedProcess (stdout/stderr as str)."""
    result = subprocess.run(["curl", "-sS", *args], capture_output=True,
                            timeout=timeout, check=False)
    result.stdout = result.stdout.decode("utf-8")
    result.stderr = result.stderr.decode("utf-8")
    return result


def curl_json(url, body=None, method=None, timeout=120):
    """(HTTP status, parsed JSON body) of one curl request."""
    args = ["-w", "\n%{http_code}", url]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary",
                 json.dumps(body)]
    if method is not None:
        args += ["-X", method]
    result = curl(args, timeout)
    if result.returncode != 0:
        raise RuntimeError(f"curl failed: {result.stderr}")
    text, _, code = result.stdout.rpartition("\n")
    return int(code), json.loads(text) if text else None


def read_sse(text):
    """The `data:` payloads of an SSE body, checking the framing: every
    event is exactly "data: <payload>\\n\\n"."""
    assert text.endswith("\n\n"), repr(text[-50:])
    events = text[:-2].split("\n\n")
    payloads = []
    for event in events:
        assert event.startswith("data: "), repr(event[:80])
        assert "\n" not in event, repr(event[:80])
        payloads.append(event[len("data: "):])
    return payloads


def raw_request(address, method, path, body=None, headers=()):
    """Sends one HTTP/1.1 request over a new socket; returns the socket
    (the caller reads the answer and closes it)."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    data = b"" if body is None else json.dumps(body).encode()
    head = [f"{method} {path} HTTP/1.1", f"Host: {address}",
            "Content-Type: application/json", f"Content-Length: {len(data)}",
            *headers]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    return sock


def grpc_info(server):
    """GetModelInfo over gRPC (the busy and free slot counts)."""
    from tvq_client import TvqClient
    with TvqClient(server.address, timeout=30) as client:
        return client.info()
