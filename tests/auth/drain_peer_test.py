"""Migration on drain to a secured peer (--drain-peer-tls-ca,
--drain-peer-tls-cert/-key, --drain-peer-api-key-file): the real draining
tvq-server pushes its session over mutual TLS with an API key to a real
peer that demands both, and the peer holds the session; without the key the
peer refuses the push (UNAUTHENTICATED), the log says so and the session
goes to --session-dir, never silently lost; bad credential flags stop the
server at start with a message naming the flag (ctest label security)."""

import os
import subprocess
import tempfile
import unittest

import grpc

from client_test_support import SERVER, TvqServer, golden_model_dir
from http_test_support import MODEL
from tls_test_support import TestPki, write_keys_file
from tvq_client import TvqClient

PEER_KEY = "test-key-drain-peer-0123456789"


class DrainPeerCredentialsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.pki = TestPki()
        cls.client_cert, cls.client_key = cls.pki.client("drainer")
        cls.dir = tempfile.TemporaryDirectory(prefix="tvq-drain-peer-")
        cls.keys_file = os.path.join(cls.dir.name, "keys.txt")
        write_keys_file(cls.keys_file, [PEER_KEY])
        cls.key_file = os.path.join(cls.dir.name, "peer-key")
        with open(cls.key_file, "w") as file:
            file.write(PEER_KEY + "\n")
        ca = cls.pki.read(cls.pki.ca)
        client_cert = cls.pki.read(cls.client_cert)
        client_key = cls.pki.read(cls.client_key)
        cls.peer_credentials = grpc.ssl_channel_credentials(
            ca, client_key, client_cert)
        cls.peer = TvqServer(
            golden_model_dir(MODEL),
            extra_args=[f"--tls-cert={cls.pki.server_cert}",
                        f"--tls-key={cls.pki.server_key}",
                        f"--tls-client-ca={cls.pki.ca}",
                        f"--api-keys-file={cls.keys_file}"],
            health_credentials=cls.peer_credentials,
            health_metadata=[("authorization", f"Bearer {PEER_KEY}")])
        cls.peer.start()

    @classmethod
    def tearDownClass(cls):
        cls.peer.stop()
        assert PEER_KEY not in cls.peer.log_tail(None)

    def peer_client(self):
        return TvqClient(self.peer.address, timeout=60, tls_ca=self.pki.ca,
                         tls_cert=self.client_cert, tls_key=self.client_key,
                         api_key=PEER_KEY)

    def drain_one_session(self, session_id, extra_args):
        """Starts a replica pushing to the peer, creates `session_id` there,
        stops it with SIGTERM; its log."""
        replica = TvqServer(golden_model_dir(MODEL), extra_args=[
            f"--drain-peer={self.peer.address}", "--drain-peer-timeout=20s",
            *extra_args])
        replica.start()
        try:
            with TvqClient(replica.address, timeout=60) as client:
                client.create_session("Hello", session_id=session_id)
        finally:
            replica.stop()
        log = replica.log_tail(None)
        self.assertNotIn(PEER_KEY, log)
        return log

    def test_push_over_mutual_tls_with_a_key(self):
        log = self.drain_one_session("secured", [
            f"--drain-peer-tls-ca={self.pki.ca}",
            f"--drain-peer-tls-cert={self.client_cert}",
            f"--drain-peer-tls-key={self.client_key}",
            f"--drain-peer-api-key-file={self.key_file}"])
        self.assertIn("(1 to the peer", log)
        self.assertIn("0 peer failures; 0 lost", log)
        with self.peer_client() as client:
            session = client.get_session("secured")
            self.assertEqual(session.position, 6)  # eos + "Hello"
            client.close_session("secured")

    def test_without_the_key_the_push_is_refused_and_saved(self):
        session_dir = os.path.join(self.dir.name, "fallback")
        log = self.drain_one_session("keyless", [
            f"--drain-peer-tls-ca={self.pki.ca}",
            f"--drain-peer-tls-cert={self.client_cert}",
            f"--drain-peer-tls-key={self.client_key}",
            f"--session-dir={session_dir}"])
        self.assertIn("UNAUTHENTICATED", log)
        self.assertIn("missing API key", log)
        self.assertIn("(0 to the peer, 0 bytes; 1 to --session-dir", log)
        self.assertIn("; 0 lost", log)

    def test_bad_credential_flags_stop_the_start(self):
        model = golden_model_dir(MODEL)
        cases = [
            ([f"--drain-peer={self.peer.address}",
              f"--drain-peer-tls-cert={self.client_cert}",
              f"--drain-peer-tls-key={self.client_key}"],
             "need --drain-peer-tls-ca"),
            ([f"--drain-peer={self.peer.address}",
              f"--drain-peer-tls-ca={self.pki.ca}",
              f"--drain-peer-tls-cert={self.client_cert}"],
             "needs both --drain-peer-tls-cert and --drain-peer-tls-key"),
            ([f"--drain-peer={self.peer.address}",
              f"--drain-peer-tls-ca={self.keys_file}"],
             f"--drain-peer-tls-ca={self.keys_file} holds no PEM certificate"),
            ([f"--drain-peer={self.peer.address}",
              "--drain-peer-api-key-file=/nonexistent/key"],
             "--drain-peer-api-key-file=/nonexistent/key cannot be read"),
            ([f"--drain-peer-api-key-file={self.key_file}"],
             "they need it"),
        ]
        for flags, message in cases:
            result = subprocess.run(
                [SERVER, f"--model={model}", "--listen=127.0.0.1:0",
                 "--metrics-address=", *flags],
                capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 2, (flags, result.stderr))
            self.assertIn(message, result.stderr + result.stdout, flags)
            self.assertNotIn(PEER_KEY, result.stderr + result.stdout)


if __name__ == "__main__":
    unittest.main()
