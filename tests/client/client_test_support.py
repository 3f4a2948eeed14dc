"""Shared parts of the client end-to-end tests.

- TvqServer: starts the real tvq-server binary on a free loopback port
  (--listen=127.0.0.1:0, as tests/integration/server_process.cc does) and
  waits until its gRPC health service says SERVING.
- run_client: runs the real tvq-client binary and returns its result.
- load_golden: reads tests/data/golden/NAME/golden.safetensors.

The paths come from the environment that tests/client/CMakeLists.txt sets:
TVQ_SERVER, TVQ_CLIENT, TVQ_TEST_DATA_DIR, TVQ_PYTHON_EXAMPLES.
"""

import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

SERVER = os.environ.get("TVQ_SERVER", "")
CLIENT = os.environ.get("TVQ_CLIENT", "")
DATA_DIR = os.environ.get("TVQ_TEST_DATA_DIR", "")
PYTHON_EXAMPLES = os.environ.get("TVQ_PYTHON_EXAMPLES", "")

# grpc.health.v1.HealthCheckResponse{status: SERVING}, serialized.
_HEALTH_SERVING = b"\x08\x01"


# Why SentencePiece models cannot be served by this build's tvq-server
# (None when they can): ASan/TSan refuse the dlopen(RTLD_DEEPBIND) its
# tokenizer module needs (tests/support/sanitizers.h). CMake sets
# TVQ_SANITIZER_BUILD.
NO_SENTENCEPIECE_REASON = (
    "SentencePiece models cannot be loaded in an ASan/TSan build: the "
    "tokenizer module needs dlopen(RTLD_DEEPBIND), which the sanitizer "
    "runtimes refuse (google/sanitizers#611)"
    if os.environ.get("TVQ_SANITIZER_BUILD") == "1" else None)


def golden_model_dir(name):
    return os.path.join(DATA_DIR, "golden", name, "model")


def _listening_address(log):
    """HOST:PORT from the server's "listening on HOST:PORT " line, or None."""
    match = re.search(r"listening on (\S+) ", log)
    return match.group(1) if match else None


def health_status(address, timeout=1.0, credentials=None, metadata=None):
    """The raw grpc.health.v1 Check answer ("" service), or None.
    credentials: grpc channel credentials for a TLS server; metadata: e.g.
    the API key."""
    channel = (grpc.insecure_channel(address) if credentials is None else
               grpc.secure_channel(address, credentials))
    with channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            return check(b"", timeout=timeout, metadata=metadata)
        except grpc.RpcError:
            return None


class TvqServer:
    """The real tvq-server on 127.0.0.1, one per test class.

    extra_args are added to the command line (e.g. slot or queue sizes).
    The server's output goes to a temporary log; log_tail() returns its end
    for failure messages. health_credentials / health_metadata: how the
    start-up health probe reaches a TLS server or one with API keys.
    """

    def __init__(self, model_dir, extra_args=(), start_timeout=120.0,
                 health_credentials=None, health_metadata=None):
        self.health_credentials = health_credentials
        self.health_metadata = health_metadata
        self.model_dir = model_dir
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.address = None
        self._process = None
        self._log = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def start(self):
        if not SERVER or not os.path.exists(SERVER):
            raise RuntimeError(f"TVQ_SERVER={SERVER!r} is not a built "
                               "tvq-server binary")
        # Port 0: the server picks a free port and logs
        # "listening on 127.0.0.1:PORT ..."; no metrics endpoint; one CPU
        # thread (tests run in parallel on small machines).
        self._log = tempfile.TemporaryFile()
        command = [SERVER, f"--model={self.model_dir}",
                   "--listen=127.0.0.1:0", "--metrics-address=", "--threads=1",
                   *self.extra_args]
        self._process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        give_up_at = time.monotonic() + self.start_timeout
        while time.monotonic() < give_up_at:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"tvq-server exited during start-up (code "
                    f"{self._process.returncode}):\n{self.log_tail()}")
            if self.address is None:
                self.address = _listening_address(self.log_tail(limit=None))
            elif health_status(self.address,
                               credentials=self.health_credentials,
                               metadata=self.health_metadata) == \
                    _HEALTH_SERVING:
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"tvq-server did not become SERVING within "
                           f"{self.start_timeout} s:\n{self.log_tail()}")

    def stop(self):
        if self._process is None:
            return
        if self._process.poll() is not None:
            if self._process.returncode != 0:
                # The server ended before the test stopped it: a crash (e.g.
                # a sanitizer report) that the test's own failure cannot show.
                sys.stderr.write(
                    f"tvq-server exited on its own (code "
                    f"{self._process.returncode}); its log ends:\n"
                    f"{self.log_tail(limit=20000)}\n")
        else:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def running(self):
        return self._process is not None and self._process.poll() is None

    def log_tail(self, limit=4000):
        """The server's output (its last `limit` characters; None = all)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace")
        return text if limit is None else text[-limit:]


def run_client(args, address=None, stdin=None, timeout=120.0):
    """Runs tvq-client with args (and --addr when address is given).

    Returns subprocess.CompletedProcess with stdout and stderr as str,
    decoded as UTF-8 without newline translation (generated text may hold
    any character, "\r" included).
    """
    if not CLIENT or not os.path.exists(CLIENT):
        raise RuntimeError(f"TVQ_CLIENT={CLIENT!r} is not a built tvq-client")
    command = [CLIENT]
    if address is not None:
        command.append(f"--addr={address}")
    command.extend(args)
    result = subprocess.run(
        command, input=None if stdin is None else stdin.encode("utf-8"),
        capture_output=True, timeout=timeout, check=False)
    result.stdout = result.stdout.decode("utf-8")
    result.stderr = result.stderr.decode("utf-8")
    return result


def describe(result):
    """A failure message with the command's exit code and output."""
    return (f"\n$ {' '.join(result.args)}\nexit {result.returncode}\n"
            f"--- stdout\n{result.stdout[-3000:]}\n"
            f"--- stderr\n{result.stderr[-3000:]}")


def run_json(test, args, address):
    """Runs tvq-client --json ARGS; asserts exit 0; returns the JSON."""
    result = run_client(["--json", *args], address)
    test.assertEqual(result.returncode, 0, describe(result))
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as error:
        test.fail(f"stdout is not JSON ({error}){describe(result)}")


class Golden:
    """tests/data/golden/NAME/golden.safetensors: tokens [T] (tokens[0] =
    eos) and logprobs [T, n_vocab], row t = log p(next | tokens[0..t])."""

    def __init__(self, name):
        path = os.path.join(DATA_DIR, "golden", name, "golden.safetensors")
        with open(path, "rb") as file:
            blob = file.read()
        (header_size,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + header_size])
        data = blob[8 + header_size:]

        def tensor(key, dtype):
            entry = header[key]
            begin, end = entry["data_offsets"]
            return np.frombuffer(data[begin:end], dtype=dtype).reshape(
                entry["shape"])

        self.tokens = tensor("tokens", "<i4").astype(np.int64)
        self.logprobs = tensor("logprobs", "<f4").astype(np.float64)
