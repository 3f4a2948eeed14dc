#!/usr/bin/python3
"""Multi-turn chat benchmark: time to first token per turn when every turn
resends the whole history (automatic prefix reuse on vs off) and when the
conversation lives in a session (each turn sends only its new tokens).

Starts two tvq-server processes on loopback (one with --prefix-reuse=false)
and drives them with the Python client. TTFT is the server's own
usage.time_to_first_token_seconds (arrival to first token: queue + prefill +
first sample), which excludes network noise.

  PYTHONPATH=build/client/python:client/python \\
    python3 tests/bench/multiturn_ttft.py --server build/server/tvq-server \\
      --model models/demo --histories 1024,8192,65536 --turns 4

Prints one JSON object per (history, mode) and a Markdown table
(docs/perf/cpu.md records it).
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time

from tvq_client import TvqClient


def start_server(binary, model, extra):
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [binary, f"--model={model}", "--listen=127.0.0.1:0",
         "--metrics-address=", "--num-slots=2", *extra],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    give_up = time.monotonic() + 120
    while time.monotonic() < give_up:
        log.seek(0)
        match = re.search(rb"listening on (\S+) ", log.read())
        if match:
            client = TvqClient(match.group(1).decode(), timeout=3600)
            client.wait_until_ready(timeout=60)
            return process, client
        if process.poll() is not None:
            break
        time.sleep(0.05)
    log.seek(0)
    raise RuntimeError("tvq-server did not start:\n" + log.read().decode())


def run(client, history, turns, new_tokens, mode, rng):
    """TTFTs of `turns` turns on a history of `history` tokens."""
    tokens = [1] + [rng.randrange(3, 259) for _ in range(history - 1)]
    ttfts = []
    session = None
    if mode == "session":
        session = f"bench-{history}-{rng.randrange(1 << 30)}"
        client.create_session(token_ids=tokens, session_id=session,
                              no_eos_prefix=True)
    for _ in range(turns):
        user = [rng.randrange(3, 259) for _ in range(new_tokens)]
        if mode == "session":
            response = client.generate(session_id=session, token_ids=user,
                                       max_new_tokens=new_tokens,
                                       temperature=0, ignore_eos=True)
        else:
            response = client.generate(token_ids=tokens + user,
                                       no_eos_prefix=True,
                                       max_new_tokens=new_tokens,
                                       temperature=0, ignore_eos=True)
        ttfts.append(response.usage.time_to_first_token_seconds)
        tokens = tokens + user + list(response.token_ids)
    if session:
        client.close_session(session)
    return ttfts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--model", default="models/demo")
    parser.add_argument("--histories", default="1024,8192,65536")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32,
                        help="user tokens and generated tokens per turn")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    threads = [f"--threads={args.threads}"]
    servers = {
        "reuse": start_server(args.server, args.model, threads),
        "cold": start_server(args.server, args.model,
                             threads + ["--prefix-reuse=false"]),
    }
    results = []
    try:
        for history in [int(h) for h in args.histories.split(",")]:
            for mode, server in (("cold", "cold"), ("reuse", "reuse"),
                                 ("session", "reuse")):
                rng = random.Random(history)
                ttfts = run(servers[server][1], history, args.turns,
                            args.new_tokens, mode, rng)
                result = {"history": history, "mode": mode,
                          "ttft_seconds": ttfts}
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        for process, client in servers.values():
            client.close()
            process.terminate()
            process.wait()
    print("\n| history | mode | TTFT per turn (ms) |\n|---:|---|---|")
    for result in results:
        cells = ", ".join(f"{1000 * t:.1f}" for t in result["ttft_seconds"])
        print(f"| {result['history']} | {result['mode']} | {cells} |")


if __name__ == "__main__":
    sys.exit(main())
