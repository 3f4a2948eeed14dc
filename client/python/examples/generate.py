#!/usr/bin/env python3
"""Example: stream a generation from tvq-server, then score the result.

    PYTHONPATH=build/release/client/python:client/python \\
        python3 client/python/examples/generate.py "Once upon a time"
"""

import argparse
import math
import sys

from tvq_client import TvqClient, TvqError, finish_reason_name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", help="prompt text")
    parser.add_argument("--addr", default="127.0.0.1:50051",
                        help="tvq-server address (default %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=None,
                        help="server default when not given")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="deadline of each call in seconds")
    args = parser.parse_args()

    try:
        with TvqClient(args.addr, timeout=args.timeout) as client:
            info = client.info()
            print(f"model: {info.model_path} ({info.num_parameters} "
                  f"parameters, n_vocab {info.model_config.n_vocab}) on "
                  f"{info.device}", file=sys.stderr)

            text = []
            last = None
            for chunk in client.generate_stream(
                    args.prompt, max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature, seed=args.seed):
                print(chunk.text, end="", flush=True)
                text.append(chunk.text)
                last = chunk
            print()
            print(f"finish: {finish_reason_name(last.finish_reason)}"
                  f", {last.usage.generated_tokens} tokens, seed {last.seed}",
                  file=sys.stderr)

            scored = client.score(args.prompt + "".join(text))
            count = len(scored.token_logprobs)
            line = (f"score: total_logprob {scored.total_logprob:.4f} over "
                    f"{count} tokens, perplexity "
                    f"{math.exp(-scored.total_logprob / count):.3f}")
            if scored.HasField("bits_per_byte"):
                line += f", bits_per_byte {scored.bits_per_byte:.4f}"
            print(line, file=sys.stderr)
    except TvqError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
