"""TLS and mutual TLS of the real tvq-server (--tls-cert, --tls-key,
--tls-client-ca) on both front ends, with the real tvq-client, the Python
client, curl and the openai SDK (its httpx client trusting the test CA); certificates are
made with the openssl command line (tls_test_support.py). SIGHUP swaps the
certificate for new connections. Start-up refuses bad TLS and key flags
with an error naming them (ctest label security)."""

import os
import signal
import subprocess
import tempfile
import time
import unittest

import grpc
import ssl
import openai

from client_test_support import SERVER, describe, golden_model_dir, run_client
from http_test_support import MODEL, HttpServer, curl
from tls_test_support import TestPki
from tvq_client import TvqClient, TvqError

PROMPT = "Hello"


def generate_args():
    return ["--json", "generate", "--max-new-tokens=8", "--temperature=0",
            PROMPT]


class TlsTest(unittest.TestCase):
    """Server TLS: clients verify the server with the test CA."""

    @classmethod
    def setUpClass(cls):
        cls.pki = TestPki()
        cls.server = HttpServer(
            extra_args=[f"--tls-cert={cls.pki.server_cert}",
                        f"--tls-key={cls.pki.server_key}"],
            health_credentials=grpc.ssl_channel_credentials(
                cls.pki.read(cls.pki.ca)))
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_log_says_tls(self):
        log = self.server.log_tail(None)
        self.assertRegex(log, r"listening on \S+ \(version [^,]+, TLS\)")
        self.assertIn("HTTP API on https://", log)

    def test_tvq_client_over_tls_equals_python_client(self):
        result = run_client([f"--tls-ca={self.pki.ca}", *generate_args()],
                            self.server.address)
        self.assertEqual(result.returncode, 0, describe(result))
        with TvqClient(self.server.address, timeout=60,
                       tls_ca=self.pki.ca) as client:
            reply = client.generate(PROMPT, max_new_tokens=8, temperature=0)
        self.assertIn(f'"token_ids": [\n    {reply.token_ids[0]},',
                      result.stdout)

    def test_plaintext_client_is_refused(self):
        result = run_client(["health"], self.server.address)
        self.assertNotEqual(result.returncode, 0, describe(result))
        with TvqClient(self.server.address, timeout=10) as client:
            with self.assertRaises(TvqError) as raised:
                client.info()
        self.assertEqual(raised.exception.code, grpc.StatusCode.UNAVAILABLE)

    def test_server_name_is_checked(self):
        port = self.server.address.rsplit(":", 1)[1]
        good = run_client([f"--tls-ca={self.pki.ca}", "health"],
                          f"localhost:{port}")
        self.assertEqual(good.returncode, 0, describe(good))
        self.assertIn("SERVING", good.stdout)
        wrong = run_client([f"--tls-ca={self.pki.ca}",
                            "--tls-server-name=wrong.example", "health"],
                           self.server.address)
        self.assertNotEqual(wrong.returncode, 0, describe(wrong))
        self.assertIn("wrong.example", wrong.stderr)

    def test_a_server_signed_by_another_ca_is_refused(self):
        other = TestPki("other")
        result = run_client([f"--tls-ca={other.ca}", "health"],
                            self.server.address)
        self.assertNotEqual(result.returncode, 0, describe(result))

    def test_curl_https(self):
        body = ('{"model": "%s", "prompt": "%s", "max_tokens": 4}' %
                (MODEL, PROMPT))
        ok = curl(["--cacert", self.pki.ca, "-w", "\n%{http_code}",
                   "-H", "Content-Type: application/json", "--data", body,
                   f"https://{self.server.http_address}/v1/completions"])
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertTrue(ok.stdout.endswith("\n200"), ok.stdout)
        # Without the CA curl does not trust the server (exit 60).
        untrusted = curl([f"https://{self.server.http_address}/health"])
        self.assertEqual(untrusted.returncode, 60, untrusted.stderr)
        # Plain HTTP to the TLS port gets no HTTP answer.
        plain = curl(["-m", "10", f"http://{self.server.http_address}/health"])
        self.assertNotEqual(plain.returncode, 0, plain.stdout)

    def test_openai_sdk_with_the_test_ca(self):
        trust = ssl.create_default_context(cafile=self.pki.ca)
        with openai.DefaultHttpx2Client(verify=trust) as http:
            client = openai.OpenAI(
                base_url=f"https://{self.server.http_address}/v1",
                api_key="unused", max_retries=0, timeout=60, http_client=http)
            completion = client.completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0,
                extra_body={"ignore_eos": True})
            self.assertEqual(completion.usage.completion_tokens, 8)
            chunks = list(client.completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0,
                stream=True, extra_body={"ignore_eos": True}))
            self.assertEqual("".join(c.choices[0].text for c in chunks
                                     if c.choices),
                             completion.choices[0].text)


class MutualTlsTest(unittest.TestCase):
    """--tls-client-ca: a client needs a certificate the CA signed."""

    @classmethod
    def setUpClass(cls):
        cls.pki = TestPki()
        cls.cert, cls.key = cls.pki.client("alice")
        cls.other = TestPki("other")
        cls.other_cert, cls.other_key = cls.other.client("mallory")
        cls.server = HttpServer(
            extra_args=[f"--tls-cert={cls.pki.server_cert}",
                        f"--tls-key={cls.pki.server_key}",
                        f"--tls-client-ca={cls.pki.ca}"],
            health_credentials=grpc.ssl_channel_credentials(
                cls.pki.read(cls.pki.ca), cls.pki.read(cls.key),
                cls.pki.read(cls.cert)))
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_log_says_client_certificates_required(self):
        self.assertIn("TLS, client certificates required",
                      self.server.log_tail(None))

    def test_tvq_client(self):
        good = run_client([f"--tls-ca={self.pki.ca}",
                           f"--tls-cert={self.cert}", f"--tls-key={self.key}",
                           *generate_args()], self.server.address)
        self.assertEqual(good.returncode, 0, describe(good))
        no_cert = run_client([f"--tls-ca={self.pki.ca}", "health"],
                             self.server.address)
        self.assertNotEqual(no_cert.returncode, 0, describe(no_cert))
        other_ca = run_client([f"--tls-ca={self.pki.ca}",
                               f"--tls-cert={self.other_cert}",
                               f"--tls-key={self.other_key}", "health"],
                              self.server.address)
        self.assertNotEqual(other_ca.returncode, 0, describe(other_ca))
        half = run_client([f"--tls-ca={self.pki.ca}",
                           f"--tls-cert={self.cert}", "health"],
                          self.server.address)
        self.assertEqual(half.returncode, 2, describe(half))
        self.assertIn("--tls-cert and --tls-key go together", half.stderr)

    def test_python_client(self):
        with TvqClient(self.server.address, timeout=30, tls_ca=self.pki.ca,
                       tls_cert=self.cert, tls_key=self.key) as client:
            self.assertGreater(client.info().model_config.n_vocab, 0)
        for cert, key in ((None, None), (self.other_cert, self.other_key)):
            with TvqClient(self.server.address, timeout=10,
                           tls_ca=self.pki.ca, tls_cert=cert,
                           tls_key=key) as client:
                with self.assertRaises(TvqError) as raised:
                    client.info()
                self.assertEqual(raised.exception.code,
                                 grpc.StatusCode.UNAVAILABLE)

    def test_curl(self):
        url = f"https://{self.server.http_address}/v1/models"
        good = curl(["--cacert", self.pki.ca, "--cert", self.cert, "--key",
                     self.key, "-w", "\n%{http_code}", url])
        self.assertEqual(good.returncode, 0, good.stderr)
        self.assertTrue(good.stdout.endswith("\n200"), good.stdout)
        no_cert = curl(["--cacert", self.pki.ca, url])
        self.assertNotEqual(no_cert.returncode, 0, no_cert.stdout)
        other_ca = curl(["--cacert", self.pki.ca, "--cert", self.other_cert,
                         "--key", self.other_key, url])
        self.assertNotEqual(other_ca.returncode, 0, other_ca.stdout)

    def test_openai_sdk(self):
        trust = ssl.create_default_context(cafile=self.pki.ca)
        trust.load_cert_chain(self.cert, self.key)
        with openai.DefaultHttpx2Client(verify=trust) as http:
            client = openai.OpenAI(
                base_url=f"https://{self.server.http_address}/v1",
                api_key="unused", max_retries=0, timeout=60, http_client=http)
            self.assertEqual([m.id for m in client.models.list()], [MODEL])
        no_cert = ssl.create_default_context(cafile=self.pki.ca)
        with openai.DefaultHttpx2Client(verify=no_cert) as http:
            client = openai.OpenAI(
                base_url=f"https://{self.server.http_address}/v1",
                api_key="unused", max_retries=0, timeout=10, http_client=http)
            with self.assertRaises(openai.APIConnectionError):
                client.models.list()


class CertificateRotationTest(unittest.TestCase):
    """SIGHUP re-reads --tls-cert/--tls-key: new connections on both front
    ends get the new certificate, an open one keeps working, and files that
    fail the start-up checks leave the certificate in force."""

    def setUp(self):
        self.old = TestPki("old")
        self.new = TestPki("new")
        self.dir = tempfile.TemporaryDirectory()
        self.cert = os.path.join(self.dir.name, "tls.pem")
        self.key = os.path.join(self.dir.name, "tls.key")
        self.install(self.old.read(self.old.server_cert),
                     self.old.read(self.old.server_key))
        self.server = HttpServer(
            extra_args=[f"--tls-cert={self.cert}", f"--tls-key={self.key}"],
            health_credentials=grpc.ssl_channel_credentials(
                self.old.read(self.old.ca)))
        self.server.start()

    def tearDown(self):
        self.server.stop()
        self.dir.cleanup()

    def install(self, cert, key):
        # As a secret mount or cert-manager would: each file replaced whole.
        for path, data in ((self.cert, cert), (self.key, key)):
            with open(path + ".tmp", "wb") as file:
                file.write(data)
            os.replace(path + ".tmp", path)

    def sighup(self):
        """Sends SIGHUP; returns the server's TLS line about it."""
        before = self.server.log_tail(None).count("SIGHUP: ")
        os.kill(self.server.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while self.server.log_tail(None).count("SIGHUP: ") == before:
            self.assertLess(time.monotonic(), deadline,
                            "no SIGHUP line:\n" + self.server.log_tail())
            time.sleep(0.02)
        return self.server.log_tail(None).splitlines()[-1]

    def grpc_trusts(self, pki):
        result = run_client([f"--tls-ca={pki.ca}", "health"],
                            self.server.address)
        return result.returncode == 0 and "SERVING" in result.stdout

    def https_trusts(self, pki):
        result = curl(["--cacert", pki.ca, "-o", "/dev/null", "-w",
                       "%{http_code}",
                       f"https://{self.server.http_address}/health"])
        return result.returncode == 0 and result.stdout == "200"

    def test_sighup_swaps_the_certificate_for_new_connections(self):
        self.assertTrue(self.grpc_trusts(self.old))
        self.assertTrue(self.https_trusts(self.old))
        self.assertFalse(self.grpc_trusts(self.new))
        # A connection made before the reload.
        with TvqClient(self.server.address, timeout=60,
                       tls_ca=self.old.ca) as open_client:
            before = open_client.generate(PROMPT, max_new_tokens=4,
                                          temperature=0)
            self.install(self.new.read(self.new.server_cert),
                         self.new.read(self.new.server_key))
            line = self.sighup()
            self.assertIn(f"SIGHUP: TLS certificate {self.cert} and key "
                          f"{self.key} reloaded", line)
            # New connections present the new certificate, on both ports.
            self.assertTrue(self.grpc_trusts(self.new))
            self.assertTrue(self.https_trusts(self.new))
            self.assertFalse(self.grpc_trusts(self.old))
            self.assertFalse(self.https_trusts(self.old))
            # The open connection goes on.
            after = open_client.generate(PROMPT, max_new_tokens=4,
                                         temperature=0)
            self.assertEqual(after.token_ids, before.token_ids)

    def test_bad_files_keep_the_certificate_in_force(self):
        # A key of another certificate, then a truncated certificate.
        self.install(self.old.read(self.old.server_cert),
                     self.new.read(self.new.server_key))
        line = self.sighup()
        self.assertIn("SIGHUP: kept the TLS certificate in force", line)
        self.assertIn("does not belong to the certificate", line)
        self.install(b"-----BEGIN CERTIFICATE-----\n",
                     self.old.read(self.old.server_key))
        line = self.sighup()
        self.assertIn("SIGHUP: kept the TLS certificate in force", line)
        self.assertTrue(self.grpc_trusts(self.old))
        self.assertTrue(self.https_trusts(self.old))
        self.assertTrue(self.server.running())


class StartupErrorsTest(unittest.TestCase):
    """Bad TLS and key flags: exit 2 at start with an error naming them."""

    @classmethod
    def setUpClass(cls):
        cls.pki = TestPki()
        cls.other = TestPki("other")
        cls.dir = tempfile.TemporaryDirectory()
        cls.garbage = os.path.join(cls.dir.name, "garbage.pem")
        with open(cls.garbage, "w") as file:
            file.write("not a certificate\n")

    def start_fails(self, flags, expected):
        result = subprocess.run(
            [SERVER, f"--model={golden_model_dir(MODEL)}",
             "--listen=127.0.0.1:0", "--metrics-address=", *flags],
            capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn(expected, result.stderr)
        self.assertNotIn("listening on", result.stderr)

    def test_bad_combinations_and_files(self):
        cert, key = self.pki.server_cert, self.pki.server_key
        missing = os.path.join(self.dir.name, "missing.pem")
        cases = [
            ([f"--tls-key={key}"], "--tls-key without --tls-cert"),
            ([f"--tls-cert={cert}"], "--tls-cert without --tls-key"),
            ([f"--tls-client-ca={self.pki.ca}"], "--tls-client-ca alone"),
            ([f"--tls-cert={missing}", f"--tls-key={key}"],
             f"--tls-cert={missing} cannot be read"),
            ([f"--tls-cert={self.garbage}", f"--tls-key={key}"],
             "holds no PEM certificate"),
            ([f"--tls-cert={cert}", f"--tls-key={self.garbage}"],
             "holds no unencrypted PEM private key"),
            ([f"--tls-cert={cert}", f"--tls-key={self.other.server_key}"],
             "does not belong to the certificate"),
            ([f"--tls-cert={cert}", f"--tls-key={key}",
              f"--tls-client-ca={self.garbage}"],
             "--tls-client-ca=" + self.garbage + " holds no PEM certificate"),
            (["--auth-exempt-health"], "--auth-exempt-health needs "
             "--api-keys-file"),
            ([f"--api-keys-file={missing}"], "cannot be read"),
            ([f"--api-keys-file={self.garbage}"],
             "line 1: a key must be printable ASCII without spaces"),
        ]
        for flags, expected in cases:
            with self.subTest(flags=flags):
                self.start_fails(flags, expected)


if __name__ == "__main__":
    unittest.main()
