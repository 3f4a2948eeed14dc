"""Certificates and key files for the security tests, made at test time
with the real `openssl` command line into a temporary directory.

    pki = TestPki()                 # a CA and a server certificate for
                                    # 127.0.0.1 / localhost
    pki.client("alice")             # a client certificate the CA signed
    other = TestPki("other")        # another CA (its client certificates
                                    # must be refused under mutual TLS)
"""

import hashlib
import os
import subprocess
import tempfile


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


class TestPki:
    """A CA (ca.pem, ca.key) and a server certificate (server.pem,
    server.key) whose names are 127.0.0.1 and localhost."""

    def __init__(self, name="test"):
        self._holder = tempfile.TemporaryDirectory(prefix=f"tvq-pki-{name}-")
        self.dir = self._holder.name
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                 "-subj", f"/CN=tvq {name} CA", "-keyout", "ca.key",
                 "-out", "ca.pem", cwd=self.dir)
        self.ca = self.path("ca.pem")
        self.server_cert, self.server_key = self._issue(
            "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "extendedKeyUsage=serverAuth\n")

    def path(self, name):
        return os.path.join(self.dir, name)

    def _issue(self, name, extensions):
        with open(self.path(f"{name}.ext"), "w") as file:
            file.write(extensions)
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=self.dir)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem",
                 "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                 "-extfile", f"{name}.ext", "-out", f"{name}.pem",
                 cwd=self.dir)
        return self.path(f"{name}.pem"), self.path(f"{name}.key")

    def client(self, name):
        """(certificate, key) of a client certificate this CA signed."""
        return self._issue(name, "extendedKeyUsage=clientAuth\n")

    def read(self, path):
        with open(path, "rb") as file:
            return file.read()


def sha256_line(key):
    """The hashed form of `key` in a key file."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def write_keys_file(path, lines):
    with open(path + ".tmp", "w") as file:
        file.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
