"""tvq-client session ACTION against the real tvq-server (ctest label client).

create / generate / append / fork / get / list / close, and export to a
file -> restart the server -> import from the file -> the next turn equals
an uninterrupted run. Errors exit 1 with the gRPC code; a wrong command line
exits 2.
"""

import os
import tempfile
import unittest

from client_test_support import (TvqServer, describe, golden_model_dir,
                                 run_client, run_json)


def ids_arg(ids):
    return ",".join(str(int(i)) for i in ids)


class SessionCliTest(unittest.TestCase):

    def setUp(self):
        self.server = TvqServer(golden_model_dir("tiny-byte"), ["--num-slots=2"])
        self.server.start()

    def tearDown(self):
        self.server.stop()

    def json(self, *args):
        return run_json(self, list(args), self.server.address)

    def generate(self, session, ids, n):
        response = self.json("session", "generate", "--id", session,
                             "--token-ids", ids_arg(ids), "--temperature", "0",
                             "--max-new-tokens", str(n))
        return [int(i) for i in response["token_ids"]]

    def test_a_conversation_moves_between_servers(self):
        prompt = [1, 60, 61, 62, 63, 64, 65]
        created = self.json("session", "create", "--id", "cli",
                            "--no-eos-prefix", "--token-ids", ids_arg(prompt))
        self.assertEqual(created["session_id"], "cli")
        self.assertEqual(int(created["position"]), len(prompt))
        first = self.json("session", "generate", "--id", "cli",
                          "--temperature", "0", "--max-new-tokens", "4")
        g1 = [int(i) for i in first["token_ids"]]
        self.assertEqual(len(g1), 4)
        appended = self.json("session", "append", "--id", "cli",
                             "--token-ids", "70,71")
        self.assertEqual(int(appended["position"]), len(prompt) + 4 + 2)
        fork = self.json("session", "fork", "--id", "cli", "--new-id", "cli2")
        self.assertEqual(fork["session_id"], "cli2")
        listed = self.json("session", "list")
        self.assertEqual([s["session_id"] for s in listed["sessions"]],
                         ["cli", "cli2"])

        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "cli.tvqsession")
            result = run_client(["session", "export", "--id", "cli", path],
                                self.server.address)
            self.assertEqual(result.returncode, 0, describe(result))
            uninterrupted = self.generate("cli", [72], 6)
            self.server.stop()
            self.server = TvqServer(golden_model_dir("tiny-byte"),
                                    ["--num-slots=2"])
            self.server.start()
            imported = self.json("session", "import", "--id", "moved", path)
            self.assertEqual(imported["session_id"], "moved")
            self.assertEqual(int(imported["position"]), len(prompt) + 6)
            self.assertEqual(self.generate("moved", [72], 6), uninterrupted)

            # A corrupted file: refused with DATA_LOSS, exit 1.
            with open(path, "rb") as blob_file:
                blob = bytearray(blob_file.read())
            blob[len(blob) // 2] ^= 0x40
            bad = os.path.join(directory, "bad.tvqsession")
            with open(bad, "wb") as blob_file:
                blob_file.write(blob)
            result = run_client(["session", "import", bad], self.server.address)
            self.assertEqual(result.returncode, 1, describe(result))
            self.assertIn("DATA_LOSS", result.stderr)

        closed = run_client(["session", "close", "--id", "moved"],
                            self.server.address)
        self.assertEqual(closed.returncode, 0, describe(closed))
        result = run_client(["session", "get", "--id", "moved"],
                            self.server.address)
        self.assertEqual(result.returncode, 1, describe(result))
        self.assertIn("NOT_FOUND", result.stderr)
        self.assertIn("closed", result.stderr)

    def test_wrong_command_lines_exit_2(self):
        for args in (["session"], ["session", "explode"],
                     ["session", "append", "--id", "x"],
                     ["session", "export", "--id", "x"]):
            result = run_client(args, self.server.address)
            self.assertEqual(result.returncode, 2, describe(result))


if __name__ == "__main__":
    unittest.main()
