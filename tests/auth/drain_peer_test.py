"""Migration on drain to a secured peer (--drain-peer-tls-ca,
--drain-peer-tls-cert/-key, --drain-peer-api-key-file): the real draining
tvq-server pushes its session over mutual TLS with an API key to a real
peer that demands both, and the peer holds the session; without the key the
peer refuses the push (UNAUTHENTICATED), the log says so and the session
goes to --session-dir, never silently lost; bad credential flags stop the
server at start with a message naming the flag (ctest label security).

With keys on both sides, a migrated session stays its key's own: the push
names its owner, which the peer takes only from a replica presenting the
peer's own --drain-peer-api-key-file key; a peer that does not trust the
pusher refuses it (PERMISSION_DENIED) and the session goes to --session-dir
with its owner, where a successor serves it to that key alone."""

import os
import subprocess
import tempfile
import unittest

import grpc

from client_test_support import SERVER, TvqServer, golden_model_dir
from http_test_support import MODEL
from tls_test_support import TestPki, write_keys_file
from tvq.v1 import tvq_pb2
from tvq_client import TvqClient, TvqError

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

    def drain_one_session(self, session_id, extra_args, before_drain=None):
        """Starts a replica pushing to the peer, creates `session_id` there,
        calls `before_drain`, stops it with SIGTERM; its log."""
        replica = TvqServer(golden_model_dir(MODEL), extra_args=[
            f"--drain-peer={self.peer.address}", "--drain-peer-timeout=20s",
            *extra_args])
        replica.start()
        try:
            with TvqClient(replica.address, timeout=60) as client:
                client.create_session("Hello", session_id=session_id)
            if before_drain is not None:
                before_drain()
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

    def test_credential_files_are_read_again_at_the_drain(self):
        # Started with a key the peer does not hold, rotated to the right
        # one while it runs: the drain pushes with what the files hold then
        # (the TLS files are read at the same moment).
        rotated_key = os.path.join(self.dir.name, "rotated-key")
        with open(rotated_key, "w") as file:
            file.write("test-key-not-yet-rotated-0123\n")

        def rotate():
            with open(rotated_key, "w") as file:
                file.write(PEER_KEY + "\n")

        log = self.drain_one_session("rotated", [
            f"--drain-peer-tls-ca={self.pki.ca}",
            f"--drain-peer-tls-cert={self.client_cert}",
            f"--drain-peer-tls-key={self.client_key}",
            f"--drain-peer-api-key-file={rotated_key}"], before_drain=rotate)
        self.assertIn("(1 to the peer", log)
        self.assertIn("0 peer failures; 0 lost", log)
        with self.peer_client() as client:
            client.close_session("rotated")

    def test_unreadable_files_at_the_drain_send_the_sessions_to_disk(self):
        key_file = os.path.join(self.dir.name, "vanishing-key")
        with open(key_file, "w") as file:
            file.write(PEER_KEY + "\n")
        session_dir = os.path.join(self.dir.name, "fallback-unreadable")
        log = self.drain_one_session("vanished", [
            f"--drain-peer-tls-ca={self.pki.ca}",
            f"--drain-peer-tls-cert={self.client_cert}",
            f"--drain-peer-tls-key={self.client_key}",
            f"--drain-peer-api-key-file={key_file}",
            f"--session-dir={session_dir}"],
            before_drain=lambda: os.remove(key_file))
        self.assertIn("reading the --drain-peer credentials failed", log)
        self.assertIn(f"--drain-peer-api-key-file={key_file}", log)
        self.assertIn("1 to --session-dir", log)
        self.assertIn("; 0 lost", log)

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


USER_KEY = "test-key-user-of-the-pool-0123"
OTHER_KEY = "test-key-other-user-0123456789"
ROTATED_PEER_KEY = "test-key-drain-peer-rotated-01"


class OwnedSessionMigrationTest(unittest.TestCase):
    """Replicas with --api-keys-file: sessions keep their owner when they
    move, to the peer or through --session-dir."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory(prefix="tvq-owned-migration-")
        cls.keys_file = os.path.join(cls.dir.name, "keys.txt")
        write_keys_file(cls.keys_file,
                        [USER_KEY, OTHER_KEY, PEER_KEY, ROTATED_PEER_KEY])
        cls.peer_key_file = os.path.join(cls.dir.name, "peer-key")
        with open(cls.peer_key_file, "w") as file:
            file.write(PEER_KEY + "\n")

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def server(self, extra_args):
        return TvqServer(
            golden_model_dir(MODEL),
            extra_args=[f"--api-keys-file={self.keys_file}", *extra_args],
            health_metadata=[("authorization", f"Bearer {USER_KEY}")])

    def client(self, server, key):
        return TvqClient(server.address, timeout=60, api_key=key)

    def drain(self, peer_address, session_id, extra_args=(),
              peer_key_file=None):
        """A replica pushing to `peer_address` holds USER_KEY's session
        `session_id` and drains; its log."""
        replica = self.server([
            f"--drain-peer={peer_address}", "--drain-peer-timeout=20s",
            f"--drain-peer-api-key-file={peer_key_file or self.peer_key_file}",
            *extra_args])
        replica.start()
        try:
            with self.client(replica, USER_KEY) as client:
                client.create_session("Hello", session_id=session_id)
        finally:
            replica.stop()
        return replica.log_tail(None)

    def assert_not_found(self, call):
        with self.assertRaises(TvqError) as raised:
            call()
        self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_a_trusting_peer_keeps_the_owner(self):
        # The peer trusts PEER_KEY: it is its own --drain-peer-api-key-file
        # (a pool's replicas share one; its own peer is never reached here).
        with self.server(["--drain-peer=127.0.0.1:9",
                          f"--drain-peer-api-key-file={self.peer_key_file}"]
                         ) as peer:
            log = self.drain(peer.address, "owned")
            self.assertIn("(1 to the peer", log)
            with self.client(peer, USER_KEY) as mine:
                self.assertEqual(mine.get_session("owned").position, 6)
                with self.client(peer, OTHER_KEY) as theirs:
                    self.assert_not_found(lambda: theirs.get_session("owned"))
                with self.client(peer, PEER_KEY) as pusher:
                    self.assert_not_found(lambda: pusher.get_session("owned"))
                # A user cannot import on another key's behalf.
                blob = mine.export_session("owned")
                with self.assertRaises(grpc.RpcError) as raised:
                    mine._stub.ImportSession(iter([tvq_pb2.SessionChunk(
                        data=blob, session_id="forged",
                        owner="key-0123456789abcdef")]), timeout=60)
                self.assertEqual(raised.exception.code(),
                                 grpc.StatusCode.PERMISSION_DENIED)
                self.assertIn("--drain-peer-api-key-file",
                              raised.exception.details())
                mine.close_session("owned")

    def test_the_trusted_key_is_read_again_at_each_import(self):
        # The pool rotates its drain-peer key while the peer runs: the peer
        # trusts what its file holds now.
        trust_file = os.path.join(self.dir.name, "peer-trust-key")
        with open(trust_file, "w") as file:
            file.write(PEER_KEY + "\n")
        rotated_file = os.path.join(self.dir.name, "rotated-peer-key")
        with open(rotated_file, "w") as file:
            file.write(ROTATED_PEER_KEY + "\n")
        with self.server(["--drain-peer=127.0.0.1:9",
                          f"--drain-peer-api-key-file={trust_file}"]) as peer:
            with open(trust_file, "w") as file:
                file.write(ROTATED_PEER_KEY + "\n")
            log = self.drain(peer.address, "owned-rotated",
                             peer_key_file=rotated_file)
            self.assertIn("(1 to the peer", log)
            with self.client(peer, USER_KEY) as mine:
                self.assertEqual(mine.get_session("owned-rotated").position,
                                 6)
                mine.close_session("owned-rotated")
            # The old key is trusted no more.
            log = self.drain(peer.address, "owned-old-key")
            self.assertIn("PERMISSION_DENIED", log)

    def test_an_untrusting_peer_refuses_and_the_disk_keeps_the_owner(self):
        session_dir = os.path.join(self.dir.name, "sessions")
        with self.server([]) as peer:
            log = self.drain(peer.address, "owned-on-disk",
                             [f"--session-dir={session_dir}"])
            self.assertIn("PERMISSION_DENIED", log)
            self.assertIn("1 to --session-dir", log)
            self.assertIn("; 0 lost", log)
            with self.client(peer, USER_KEY) as mine:
                self.assert_not_found(
                    lambda: mine.get_session("owned-on-disk"))
        with self.server([f"--session-dir={session_dir}"]) as successor:
            with self.client(successor, OTHER_KEY) as theirs:
                self.assert_not_found(
                    lambda: theirs.get_session("owned-on-disk"))
                self.assertEqual(theirs.list_sessions(), [])
            with self.client(successor, USER_KEY) as mine:
                self.assertEqual(mine.get_session("owned-on-disk").position,
                                 6)
                mine.append_to_session("owned-on-disk", " again")
                mine.close_session("owned-on-disk")


if __name__ == "__main__":
    unittest.main()
