"""tvq-client bench against the real tvq-server (ctest label client).

Checks what the load generator reports, not how fast anything is: timings
belong to benchmarks.
"""

import json
import unittest

from client_test_support import (TvqServer, describe, golden_model_dir,
                                 run_client)

# Room for 256 streams at once: slots plus queue must hold them all, or the
# server rightly answers RESOURCE_EXHAUSTED.
SERVER_ARGS = ["--max-queue=1024"]


class BenchTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = TvqServer(golden_model_dir("tiny-byte"), SERVER_ARGS)
        cls.server.start()
        cls.addr = cls.server.address

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def bench(self, *args, expect_exit=0):
        result = run_client(["--json", "bench", *args], self.addr,
                            timeout=600)
        self.assertEqual(result.returncode, expect_exit,
                         describe(result) + self.server_state())
        return json.loads(result.stdout)

    def server_state(self):
        """The server's log when it is no longer running (a crash)."""
        if self.server.running():
            return ""
        return f"\n--- tvq-server exited; its log ends:\n" \
               f"{self.server.log_tail(limit=20000)}"

    def check_latencies(self, report):
        for key in ("time_to_first_token_seconds",
                    "inter_token_latency_seconds", "request_latency_seconds"):
            summary = report[key]
            self.assertEqual(set(summary),
                             {"count", "mean", "p50", "p90", "p99", "max"})
            if summary["count"]:
                self.assertGreater(summary["p50"], 0, key)
                self.assertLessEqual(summary["p50"], summary["p90"], key)
                self.assertLessEqual(summary["p90"], summary["p99"], key)
                self.assertLessEqual(summary["p99"], summary["max"], key)

    def test_64_streams_with_10_percent_cancelled(self):
        report = self.bench("--concurrency=64", "--requests=200",
                            "--cancel-fraction=0.1", "--prompt-tokens=16",
                            "--max-new-tokens=24")
        streams = report["streams"]
        self.assertEqual(streams["started"], 200)
        self.assertEqual(streams["failed"], 0, report["status_counts"])
        # Only OK and CANCELLED. floor(200 * 0.1) = 20 streams are cancelled
        # after 1..23 tokens; one can still end OK when its last tokens were
        # already on the way as the cancel went out (more likely on a loaded
        # machine), so the CANCELLED count is bounded, not exact.
        self.assertLessEqual(set(report["status_counts"]), {"OK", "CANCELLED"})
        self.assertEqual(streams["cancel_requested"], 20)
        cancelled = report["status_counts"].get("CANCELLED", 0)
        self.assertEqual(cancelled, streams["cancelled_by_client"])
        self.assertGreaterEqual(cancelled, 10)
        self.assertLessEqual(cancelled, 20)
        self.assertEqual(streams["ok"] + cancelled, 200)
        self.assertEqual(streams["peak_in_flight"], 64)
        # Every OK stream yields its 24 tokens; cancelled ones fewer.
        self.assertGreaterEqual(report["generated_tokens"],
                                24 * streams["ok"] + cancelled)
        self.assertLess(report["generated_tokens"], 24 * 200)
        self.assertEqual(report["request_latency_seconds"]["count"],
                         streams["ok"])
        self.assertEqual(report["time_to_first_token_seconds"]["count"], 200)
        self.assertGreater(report["requests_per_second"], 0)
        self.assertGreater(report["generated_tokens_per_second"], 0)
        self.check_latencies(report)
        self.assertEqual(report["config"]["concurrency"], 64)
        self.assertEqual(report["config"]["cancel_fraction"], 0.1)

    def test_256_concurrent_streams_in_one_process(self):
        report = self.bench("--concurrency=256", "--requests=512",
                            "--prompt-tokens=8", "--max-new-tokens=32",
                            "--channels=2")
        self.assertEqual(report["streams"]["failed"], 0,
                         report["status_counts"])
        self.assertEqual(report["status_counts"], {"OK": 512})
        self.assertEqual(report["streams"]["peak_in_flight"], 256)
        self.assertEqual(report["generated_tokens"], 512 * 32)
        self.assertEqual(report["inter_token_latency_seconds"]["count"],
                         512 * 31)
        self.check_latencies(report)

    def test_open_loop_rate_with_duration(self):
        report = self.bench("--rate=100", "--duration=1",
                            "--concurrency=512", "--prompt-tokens=4",
                            "--max-new-tokens=4", "--seed=9")
        started = report["streams"]["started"]
        # Poisson arrivals at 100/s for 1 s: far from 0 and from 1000.
        self.assertGreater(started, 40)
        self.assertLess(started, 200)
        self.assertEqual(report["status_counts"], {"OK": started})
        self.assertEqual(report["config"]["rate"], 100)
        self.assertEqual(report["config"]["requests"], 0)
        self.check_latencies(report)

    def test_text_report(self):
        result = run_client(["bench", "--concurrency=4", "--requests=8",
                             "--max-new-tokens=4", "--prompt-tokens=4"],
                            self.addr)
        self.assertEqual(result.returncode, 0, describe(result))
        self.assertRegex(result.stdout,
                         r"streams: 8 in [\d.]+ s \(peak 4 open, 0 cancels "
                         r"sent\): 8 ok, 0 cancelled by the client, 0 failed")
        self.assertRegex(result.stdout,
                         r"throughput: [\d.]+ requests/s, [\d.]+ generated "
                         r"tokens/s \(32 tokens\)")
        for row in ("time to first token", "inter-token",
                    "request (ok streams)"):
            self.assertIn(f"  {row}", result.stdout)
        self.assertIn("status: OK 8", result.stdout)

    def test_failures_are_counted_and_fail_the_run(self):
        # An invalid temperature: the server rejects every stream.
        result = run_client(["--json", "bench", "--concurrency=4",
                             "--requests=8", "--temperature=500"], self.addr)
        self.assertEqual(result.returncode, 1, describe(result))
        report = json.loads(result.stdout)
        self.assertEqual(report["status_counts"], {"INVALID_ARGUMENT": 8})
        self.assertEqual(report["streams"]["failed"], 8)
        self.assertEqual(report["generated_tokens"], 0)
        self.assertIn("tvq-client bench: INVALID_ARGUMENT: 8 of 8 streams "
                      "failed (INVALID_ARGUMENT 8)", result.stderr)

    def test_slow_readers_and_short_deadlines(self):
        # A quarter of the streams read slowly (the server holds their
        # output meanwhile), a quarter run under a deadline shorter than
        # their generation takes; the latter's DEADLINE_EXCEEDED is expected.
        report = self.bench("--concurrency=32", "--requests=64",
                            "--prompt-tokens=8", "--max-new-tokens=64",
                            "--slow-reader-fraction=0.25",
                            "--slow-read-delay=0.02",
                            "--short-deadline-fraction=0.25",
                            "--short-deadline=0.001", "--timeout=120")
        streams = report["streams"]
        codes = report["status_counts"]
        self.assertLessEqual(set(codes), {"OK", "DEADLINE_EXCEEDED"}, codes)
        self.assertEqual(streams["failed"], 0, codes)
        # The draws are per stream from --seed: about a quarter each.
        self.assertGreater(streams["slow_readers"], 4)
        self.assertLess(streams["slow_readers"], 32)
        self.assertGreater(streams["short_deadlines"], 4)
        self.assertLess(streams["short_deadlines"], 32)
        # 1 ms cannot hold 64 tokens: every short deadline expires.
        self.assertEqual(streams["short_deadlines_expired"],
                         streams["short_deadlines"])
        self.assertEqual(codes.get("DEADLINE_EXCEEDED", 0),
                         streams["short_deadlines"])
        self.assertEqual(streams["ok"], 64 - streams["short_deadlines"])
        # Slow readers still get every token.
        self.assertGreaterEqual(report["generated_tokens"], 64 * streams["ok"])
        config = report["config"]
        self.assertEqual(config["slow_reader_fraction"], 0.25)
        self.assertEqual(config["short_deadline_seconds"], 0.001)

    def test_slow_reader_and_deadline_flags_are_checked(self):
        for flag, message in (
                ("--slow-reader-fraction=1.5",
                 "--slow-reader-fraction must be in [0, 1], got 1.5"),
                ("--slow-read-delay=0",
                 "--slow-read-delay must be in (0, 60] seconds, got 0"),
                ("--short-deadline-fraction=-1",
                 "--short-deadline-fraction must be in [0, 1], got -1"),
                ("--short-deadline=0",
                 "--short-deadline must be a finite number of seconds > 0, "
                 "got 0")):
            result = run_client(["bench", flag], self.addr)
            self.assertEqual(result.returncode, 2, describe(result))
            self.assertIn(message, result.stderr)

    def test_prompt_longer_than_the_server_allows(self):
        info = json.loads(run_client(["--json", "info"], self.addr).stdout)
        limit = info["limits"]["max_prompt_tokens"]
        result = run_client(["bench", f"--prompt-tokens={limit + 1}"],
                            self.addr)
        self.assertEqual(result.returncode, 2, describe(result))
        self.assertIn(f"is above the server's max_prompt_tokens {limit}",
                      result.stderr)


if __name__ == "__main__":
    unittest.main()
