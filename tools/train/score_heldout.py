"""Held-out bits per byte of a model directory, measured through the Score
RPC of the real tvq-server.

    PYTHONPATH=build/dev/client/python:client/python /usr/bin/python3 \
        tools/train/score_heldout.py --server build/dev/server/tvq-server \
        --scores models/demo-kjv/heldout_scores.jsonl

starts `--server --model=DIR --listen=127.0.0.1:0` (DIR: the directory of
the scores file unless --model says otherwise), sends every document of the
scores file (one JSON line per document: text, bytes, logprob_nats, as
`evaluate.py --write_scores` writes them) to Score as a prompt (eos first,
every byte predicted), and prints one JSON line per `source` group and for
all: bits per byte served, bits per byte recorded (the trainer's float64
sums) and the largest per-document difference in nats.
"""

import argparse
import collections
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

from tvq_client import TvqClient, TvqError


def start_server(server, model_dir, extra_args, timeout=120.0):
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [server, "--model=" + model_dir, "--listen=127.0.0.1:0",
         "--metrics-address=", *extra_args],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    give_up_at = time.monotonic() + timeout
    while time.monotonic() < give_up_at:
        if process.poll() is not None:
            log.seek(0)
            sys.exit("tvq-server exited during start-up:\n" +
                     log.read().decode(errors="replace")[-4000:])
        log.seek(0)
        match = re.search(r"listening on (\S+) ", log.read().decode(errors="replace"))
        if match:
            return process, match.group(1)
        time.sleep(0.05)
    process.kill()
    sys.exit("tvq-server did not say where it listens within %.0f s" % timeout)


def wait_until_loaded(client, timeout=300.0):
    """Score answers UNAVAILABLE while the model loads: retry until it doesn't."""
    give_up_at = time.monotonic() + timeout
    while True:
        try:
            client.score("x")
            return
        except TvqError as error:
            if "loading" not in str(error) or time.monotonic() > give_up_at:
                raise
            time.sleep(0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="tvq-server binary")
    parser.add_argument("--scores", required=True, help="heldout_scores.jsonl")
    parser.add_argument("--model", help="model directory (default: the "
                        "directory of --scores)")
    parser.add_argument("--server_arg", action="append", default=[],
                        help="extra tvq-server flag, e.g. --weights-dtype=bf16")
    args = parser.parse_args()
    model_dir = args.model or os.path.dirname(os.path.abspath(args.scores))
    with open(args.scores, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    process, address = start_server(args.server, model_dir,
                                    ["--threads=1", *args.server_arg])
    groups = collections.defaultdict(lambda: [0.0, 0.0, 0, 0.0, 0])
    try:
        with TvqClient(address, timeout=300) as client:
            client.wait_until_ready(timeout=60)
            wait_until_loaded(client)
            for line in lines:
                response = client.score(line["text"])
                if len(response.token_logprobs) != line["bytes"]:
                    sys.exit("Score returned %d logprobs for a document of %d "
                             "bytes" % (len(response.token_logprobs), line["bytes"]))
                for name in (line.get("source", "all"), "all"):
                    group = groups[name]
                    group[0] += response.total_logprob
                    group[1] += line["logprob_nats"]
                    group[2] += line["bytes"]
                    group[3] = max(group[3], abs(response.total_logprob -
                                                 line["logprob_nats"]))
                    group[4] += 1
                    if name == "all":
                        break
    finally:
        process.terminate()
        process.wait(timeout=30)
    for name, (served, recorded, n_bytes, worst, count) in sorted(groups.items()):
        print(json.dumps({
            "documents": name, "count": count, "bytes": n_bytes,
            "served_bits_per_byte": round(-served / math.log(2) / n_bytes, 6),
            "recorded_bits_per_byte": round(-recorded / math.log(2) / n_bytes, 6),
            "max_document_difference_nats": round(worst, 6)}))


if __name__ == "__main__":
    main()
