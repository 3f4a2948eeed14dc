"""Three tvq-server replicas behind a real nginx: sessions survive a drain
and a crash (issue 17, label cluster).

Setup, all on 127.0.0.1: three replicas of the demo model (models/demo,
CPU, one thread each) sharing one --session-dir, with a small session
memory budget so that most idle sessions live in the shared directory; a
real nginx from Debian (run as this user with a temporary prefix and
configuration, never as a system service) in front of them, proxying gRPC
(grpc_pass) and HTTP (proxy_pass) to upstreams balanced by
`hash $http_x_session_id consistent`.

The client runs 50 multi-turn sessions (greedy) through nginx, addressing
each session by the session_id field of the request and sending the id as
the `x-session-id` header only for nginx's hash. First an undisturbed run
(the reference); then the same prompts again while replica 0 is drained
with SIGTERM (its sessions migrate to the shared directory; streams still
running at its short --drain-timeout are cut, keeping their state up to the
last delivered token, and the client continues them) and replica 1 is
killed with SIGKILL and restarted.

Afterwards: every session's transcript equals the reference, except
sessions whose state was only in the killed replica's memory, which fail
with NOT_FOUND naming the session (never a wrong continuation); every
request ended with a response or an error status (lost = 0). The counts are
printed.
"""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import grpc

from tvq.v1 import tvq_pb2
from tvq.v1 import tvq_pb2_grpc

SERVER = os.environ.get("TVQ_SERVER", "")
MODEL = os.environ.get("TVQ_DEMO_MODEL", "")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

SESSIONS = 50
TURNS = 4
NEW_TOKENS = 12
WORKERS = 5
# Every state of the demo model is ~4.6 MB; the budget holds 6 sessions per
# replica, so most idle sessions are spilled to the shared directory.
SESSION_MEMORY_BYTES = 6 * 4_700_000
TURN_DEADLINE_S = 180.0

FINISH_CANCELLED = tvq_pb2.FINISH_REASON_CANCELLED


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prompt(index, turn):
    return f"Session {index}, turn {turn}: tell me about cookies. "


class SessionFailed(Exception):
    """The session is gone, with the status that said so."""

    def __init__(self, code, details):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class Replica:
    def __init__(self, index, directory, session_dir):
        self.index = index
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.session_dir = session_dir
        self.log_path = os.path.join(directory, f"replica{index}.log")
        self.process = None
        self.starts = 0

    @property
    def address(self):
        return f"127.0.0.1:{self.grpc_port}"

    def start(self):
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"---- start {self.starts}\n")
        log.flush()
        self.process = subprocess.Popen(
            [SERVER, f"--model={MODEL}", f"--listen={self.address}",
             f"--http-listen=127.0.0.1:{self.http_port}",
             f"--metrics-address=127.0.0.1:{self.metrics_port}",
             "--device=cpu", "--threads=1", "--num-slots=4",
             f"--session-memory-bytes={SESSION_MEMORY_BYTES}",
             f"--session-dir={self.session_dir}", "--drain-timeout=0.3s",
             "--prefix-reuse=false"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def wait_serving(self, timeout=180.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"replica {self.index} exited:\n"
                                     + self.log_tail())
            with grpc.insecure_channel(self.address) as channel:
                check = channel.unary_unary("/grpc.health.v1.Health/Check")
                try:
                    if check(b"", timeout=1.0) == b"\x08\x01":
                        return
                except grpc.RpcError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"replica {self.index} not serving in time")

    def metric(self, name):
        with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics",
                timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.split()[-1])
        return total

    def log_text(self):
        with open(self.log_path, errors="replace") as log:
            return log.read()

    def log_tail(self, limit=3000):
        return self.log_text()[-limit:]

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Nginx:
    def __init__(self, directory, replicas):
        self.prefix = os.path.join(directory, "nginx")
        os.makedirs(os.path.join(self.prefix, "logs"))
        self.grpc_port = free_port()
        self.http_port = free_port()
        user = ""
        if os.geteuid() == 0:
            # The workers would switch to nobody, who cannot use the
            # private temporary directory.
            user = f"user {pwd.getpwuid(os.geteuid()).pw_name};"
        grpc_servers = "\n".join(
            f"    server {r.address} max_fails=1 fail_timeout=1s;"
            for r in replicas)
        http_servers = "\n".join(
            f"    server 127.0.0.1:{r.http_port} max_fails=1 fail_timeout=1s;"
            for r in replicas)
        temp = {name: os.path.join(self.prefix, name)
                for name in ("client_body", "proxy", "fastcgi", "uwsgi",
                             "scgi")}
        self.config = os.path.join(self.prefix, "nginx.conf")
        with open(self.config, "w") as config:
            config.write(f"""{user}
daemon off;
master_process on;
worker_processes 1;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/logs/error.log info;
events {{ worker_connections 1024; }}
http {{
  access_log {self.prefix}/logs/access.log;
  client_body_temp_path {temp['client_body']};
  proxy_temp_path {temp['proxy']};
  fastcgi_temp_path {temp['fastcgi']};
  uwsgi_temp_path {temp['uwsgi']};
  scgi_temp_path {temp['scgi']};
  upstream tvq_grpc {{
    hash $http_x_session_id consistent;
{grpc_servers}
  }}
  upstream tvq_http {{
    hash $http_x_session_id consistent;
{http_servers}
  }}
  server {{
    listen 127.0.0.1:{self.grpc_port} http2;
    location / {{
      grpc_pass grpc://tvq_grpc;
      grpc_connect_timeout 2s;
      grpc_next_upstream error timeout;
      grpc_read_timeout 120s;
      add_header x-upstream $upstream_addr always;
    }}
  }}
  server {{
    listen 127.0.0.1:{self.http_port};
    location / {{
      proxy_pass http://tvq_http;
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_next_upstream error timeout;
      add_header x-upstream $upstream_addr always;
    }}
  }}
}}
""")
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [NGINX, "-p", self.prefix, "-c", self.config, "-e",
             os.path.join(self.prefix, "logs", "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.grpc_port),
                                              timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise AssertionError("nginx exited:\n" + self.error_log())
                time.sleep(0.1)
        raise AssertionError("nginx did not listen in time")

    def error_log(self):
        try:
            with open(os.path.join(self.prefix, "logs", "error.log")) as log:
                return log.read()[-3000:]
        except OSError:
            return ""

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Client:
    """Runs sessions through nginx; every request ends with a response or
    an error status, and every outcome is counted."""

    RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                 grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED,
                 grpc.StatusCode.FAILED_PRECONDITION,
                 grpc.StatusCode.DEADLINE_EXCEEDED}

    def __init__(self, address):
        self.channel = grpc.insecure_channel(address)
        self.stub = tvq_pb2_grpc.TextGenerationStub(self.channel)
        self.lock = threading.Lock()
        self.turns_done = 0
        self.requests = 0
        self.errors_with_status = 0
        self.lost = 0
        self.cut_streams = 0
        self.continued_after_cut = 0
        # session id -> [(start, end)] of its generation requests.
        self.attempts = {}

    def count(self, field, amount=1):
        with self.lock:
            setattr(self, field, getattr(self, field) + amount)

    def call(self, method, request, session_id, timeout=30.0):
        self.count("requests")
        return method(request, metadata=[("x-session-id", session_id)],
                      timeout=timeout)

    def retry_until(self, deadline, operation):
        while True:
            try:
                return operation()
            except grpc.RpcError as error:
                self.count("errors_with_status")
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    raise SessionFailed(error.code(), error.details())
                if error.code() not in self.RETRYABLE or time.time() > deadline:
                    raise
                time.sleep(0.2)

    def create(self, session_id, deadline):
        def attempt():
            try:
                return self.call(self.stub.CreateSession,
                                 tvq_pb2.CreateSessionRequest(
                                     session_id=session_id), session_id)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                    return None  # an earlier try made it
                raise
        self.retry_until(deadline, attempt)

    def position(self, session_id, deadline):
        return self.retry_until(deadline, lambda: self.call(
            self.stub.GetSession,
            tvq_pb2.GetSessionRequest(session_id=session_id),
            session_id).position)

    def turn(self, session_id, text, start_position, deadline):
        """The turn's tokens and the replica that served its last part."""
        length = len(text.encode())  # the demo model's byte tokenizer
        got = []
        absorbed = False
        while True:
            if time.time() > deadline:
                raise AssertionError(f"{session_id}: turn did not end in time")
            request = tvq_pb2.GenerateRequest(
                session_id=session_id, no_eos_prefix=True, temperature=0.0,
                max_new_tokens=NEW_TOKENS - len(got))
            if not absorbed:
                request.text = text
            delivered = []
            finish = None
            attempt_start = time.time()
            try:
                stream = self.call(self.stub.GenerateStream, request,
                                   session_id, timeout=60.0)
                for response in stream:
                    delivered.extend(response.token_ids)
                    if response.finish_reason:
                        finish = response.finish_reason
                upstream = dict(stream.initial_metadata()).get("x-upstream")
            except grpc.RpcError as error:
                self.count("errors_with_status")
                self.attempts.setdefault(session_id, []).append(
                    (attempt_start, time.time()))
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    raise SessionFailed(error.code(), error.details())
                if error.code() not in self.RETRYABLE:
                    raise
                # Where does the session stand: unchanged by this try, or
                # advanced by all of it?
                time.sleep(0.2)
                position = self.position(session_id, deadline)
                before = start_position + (length + len(got) if absorbed else 0)
                after = start_position + length + len(got) + len(delivered)
                if position == before:
                    continue
                if position == after and delivered:
                    absorbed = True
                    got.extend(delivered)
                    if len(got) == NEW_TOKENS:
                        return got, None
                    continue
                raise AssertionError(
                    f"{session_id}: position {position} after a failed try, "
                    f"expected {before} (unchanged) or {after} (advanced)")
            if finish is None:
                self.count("lost")
                raise AssertionError(f"{session_id}: a stream ended OK "
                                     "without a finish reason")
            if finish == FINISH_CANCELLED:
                # Cut at a drain: the session holds what was delivered.
                self.count("cut_streams")
                if delivered:
                    absorbed = True
                    got.extend(delivered)
                    self.count("continued_after_cut")
                continue
            got.extend(delivered)
            return got, upstream

    def run_all(self, prefix, on_turn=lambda: None):
        """Runs SESSIONS sessions, turn by turn across WORKERS threads."""
        transcripts, served_by, failures = {}, {}, {}
        turn_lock = threading.Lock()
        # Each worker interleaves its sessions turn by turn, so all of them
        # are alive (most idle, on disk) while the run goes on.
        def worker(indices):
            ids = {i: f"{prefix}-{i:02d}" for i in indices}
            positions = {i: 0 for i in indices}
            partial = {i: [] for i in indices}
            alive = list(indices)
            for i in indices:
                try:
                    self.create(ids[i], time.time() + TURN_DEADLINE_S)
                except SessionFailed as failure:
                    failures[i] = (failure, time.time())
                    alive.remove(i)
            for turn in range(TURNS):
                for i in list(alive):
                    text = prompt(i, turn)
                    try:
                        tokens, upstream = self.turn(
                            ids[i], text, positions[i],
                            time.time() + TURN_DEADLINE_S)
                    except SessionFailed as failure:
                        failures[i] = (failure, time.time())
                        alive.remove(i)
                        continue
                    partial[i].append(tokens)
                    positions[i] += len(text.encode()) + len(tokens)
                    served_by.setdefault(i, []).append((upstream, time.time()))
                    self.count("turns_done")
                    with turn_lock:
                        on_turn()
            for i in alive:
                transcripts[i] = partial[i]
        threads = [threading.Thread(target=worker,
                                    args=(list(range(w, SESSIONS, WORKERS)),))
                   for w in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return transcripts, served_by, failures


@unittest.skipUnless(SERVER and MODEL, "TVQ_SERVER / TVQ_DEMO_MODEL not set")
@unittest.skipUnless(os.path.exists(NGINX), "nginx is not installed "
                     "(scripts/install-deps.sh installs it)")
class ClusterTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.directory = tempfile.mkdtemp(prefix="tvq-cluster-")
        cls.session_dir = os.path.join(cls.directory, "sessions")
        os.makedirs(cls.session_dir)
        cls.replicas = [Replica(i, cls.directory, cls.session_dir)
                        for i in range(3)]
        cls.nginx = Nginx(cls.directory, cls.replicas)
        for replica in cls.replicas:
            replica.start()
        for replica in cls.replicas:
            replica.wait_serving()
        cls.nginx.start()

    @classmethod
    def tearDownClass(cls):
        cls.nginx.stop()
        for replica in cls.replicas:
            replica.stop()
        if os.environ.get("TVQ_KEEP_CLUSTER_DIR") != "1":
            shutil.rmtree(cls.directory, ignore_errors=True)

    def describe(self):
        return "\n".join(f"--- replica {r.index}:\n{r.log_tail()}"
                         for r in self.replicas) + (
            "\n--- nginx:\n" + self.nginx.error_log())

    def test_sessions_survive_drain_and_crash(self):
        client = Client(f"127.0.0.1:{self.nginx.grpc_port}")

        # The HTTP API through nginx (proxy_pass, hashed on the header).
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.nginx.http_port}/v1/models",
            headers={"x-session-id": "http-check"})
        with urllib.request.urlopen(request, timeout=10) as response:
            self.assertEqual(response.status, 200)
            self.assertIn(b'"object"', response.read())
            self.assertIn(":", response.headers.get("x-upstream", ""))

        started = time.time()
        reference, _, reference_failures = client.run_all("ref")
        reference_seconds = time.time() - started
        self.assertEqual(reference_failures, {}, self.describe())
        self.assertEqual(len(reference), SESSIONS)

        drained, killed = self.replicas[0], self.replicas[1]
        total = SESSIONS * TURNS
        events = {}
        disturb_lock = threading.Lock()

        def disturb():
            # Called after every completed turn (under the turn lock).
            done = client.turns_done
            with disturb_lock:
                if "drain" not in events and done >= total * 0.30:
                    events["drain"] = time.time()
                    drained.process.send_signal(signal.SIGTERM)
                elif ("drain" in events and "kill" not in events
                      and done >= total * 0.55):
                    events["kill"] = time.time()
                    killed.process.send_signal(signal.SIGKILL)
                    killed.process.wait()
                    threading.Thread(target=restart, daemon=True).start()

        def restart():
            time.sleep(1.0)
            killed.start()
            events["restart"] = time.time()

        client.turns_done = 0
        started = time.time()
        transcripts, served_by, failures = client.run_all("run", disturb)
        run_seconds = time.time() - started
        self.assertIn("kill", events, "the run ended before the crash")
        self.assertEqual(drained.process.wait(timeout=60), 0,
                         "the drained replica did not exit 0\n"
                         + drained.log_tail())
        killed.wait_serving()

        # The drained replica's report.
        drain_log = drained.log_text()
        match = re.search(r"migration: (\d+) sessions migrated in ([0-9.]+)s",
                          drain_log)
        migrated = int(match.group(1)) if match else 0
        self.assertNotIn("lost when the server exits", drain_log)
        self.assertIsNotNone(match, drain_log[-3000:])

        # Every session that finished equals the undisturbed run.
        for index, transcript in transcripts.items():
            self.assertEqual(transcript, reference[index],
                             f"session run-{index:02d} continued wrongly")
        # The others failed with NOT_FOUND naming the session, after the
        # crash, and their state was only in the killed replica's memory:
        # the replica that served their last turn before the crash was the
        # one killed, or one of their requests was running when it died
        # (the session then was in that replica's slot).
        killed_address = killed.address
        for index, (failure, when) in failures.items():
            session_id = f"run-{index:02d}"
            self.assertEqual(failure.code, grpc.StatusCode.NOT_FOUND)
            self.assertIn(f'"{session_id}"', failure.details)
            self.assertGreater(when, events["kill"], failure.details)
            served = [upstream for upstream, at in served_by.get(index, [])
                      if at < events["kill"]]
            in_flight = any(
                start < events["kill"] < end
                for start, end in client.attempts.get(session_id, []))
            if served and not in_flight:
                self.assertEqual(served[-1], killed_address,
                                 f"{session_id} failed ({failure.details}) "
                                 f"but its last turn was on {served[-1]}")
        self.assertEqual(len(transcripts) + len(failures), SESSIONS)
        self.assertEqual(client.lost, 0)

        adopted = sum(r.metric("tvq_session_adoptions_total")
                      for r in self.replicas[1:])
        turns = sum(len(t) for t in transcripts.values())
        print(f"\ncluster: sessions={SESSIONS} turns={turns} "
              f"(reference {SESSIONS * TURNS} in {reference_seconds:.1f}s, "
              f"disturbed run {run_seconds:.1f}s) migrated={migrated} "
              f"adopted_from_shared_dir={int(adopted)} "
              f"streams_cut_at_drain={client.cut_streams} "
              f"continued_after_cut={client.continued_after_cut} "
              f"continued={len(transcripts)} "
              f"failed_with_status={len(failures)} "
              f"errors_with_status={client.errors_with_status} "
              f"requests={client.requests} lost={client.lost}",
              flush=True)
        for index, (failure, _) in sorted(failures.items()):
            print(f"  failed run-{index:02d}: {failure}", flush=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
