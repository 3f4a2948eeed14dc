"""Bits per byte of a model on documents, and text samples.

    /usr/bin/python3 tools/train/evaluate.py --model models/demo \
        --fortunes /usr/share/games/fortunes --split validation --sample "The "

Each document is scored on its own, from a fresh state, as the server's
Score RPC scores a prompt: input [eos] + bytes, and every byte is predicted
(the trailing eos is not). bits per byte = sum of -log2 p(byte) / bytes.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import byte_data  # noqa: E402
import model_io  # noqa: E402


@torch.no_grad()
def bits_per_byte(model, texts, batch_size=32, block_len=None):
    """Returns (bits per byte, number of bytes) over `texts`."""
    model.eval()
    total_nats, total_bytes = 0.0, 0.0
    for inputs, targets, mask in byte_data.document_batches(texts, batch_size):
        logprobs, _, _ = model(torch.as_tensor(inputs), block_len=block_len)
        picked = torch.gather(logprobs, -1, torch.as_tensor(targets)[..., None])[..., 0]
        total_nats -= float((picked.double() * torch.as_tensor(mask)).sum())
        total_bytes += float(mask.sum())
    if total_bytes == 0:
        raise ValueError("no bytes to score")
    return total_nats / math.log(2.0) / total_bytes, int(total_bytes)


@torch.no_grad()
def code_statistics(model, texts, batch_size=32):
    """Per sublayer, how the held-out keys use the codebook.

    Returns [{"layer": l, "sublayer": a, "used": codes chosen at least once,
    "n_code": S, "perplexity": exp(entropy of the code frequencies)}],
    counting every real (non-padding) position of `texts`, each document
    from a fresh state. A perplexity of S means uniform use of all codes.
    """
    model.eval()
    n_sub, n_code = len(model.sublayers), model.config["n_code"]
    counts = torch.zeros(n_sub, n_code, dtype=torch.float64)
    for inputs, _, mask in byte_data.document_batches(texts, batch_size):
        _, _, aux = model(torch.as_tensor(inputs))
        codes = aux["codes"]                                   # n_sub B H T
        weights = torch.as_tensor(mask)[None, :, None, :].expand(codes.shape)
        for index in range(n_sub):
            counts[index].index_add_(0, codes[index].reshape(-1),
                                     weights[index].reshape(-1))
    result = []
    for index in range(n_sub):
        freq = counts[index] / counts[index].sum()
        entropy = -float((freq[freq > 0] * torch.log(freq[freq > 0])).sum())
        result.append({"layer": index // 2, "sublayer": index % 2 + 1,
                       "used": int((counts[index] > 0).sum()), "n_code": n_code,
                       "perplexity": round(math.exp(entropy), 1)})
    return result


@torch.no_grad()
def document_scores(model, texts):
    """Per document: sum over its bytes of log p(byte | eos, earlier bytes), nats."""
    model.eval()
    scores = []
    for text in texts:
        ids = torch.as_tensor(np.concatenate([[byte_data.EOS_ID], byte_data.encode(text)]))
        logprobs, _, _ = model(ids[None])
        scores.append(float(logprobs[0, :-1].double().gather(-1, ids[1:, None]).sum()))
    return scores


@torch.no_grad()
def sample(model, prompt, max_bytes, top_p=0.9, temperature=1.0, seed=0,
           stop_at_eos=True):
    """Nucleus sampling, token by token with the constant-size state."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    tokens = [byte_data.EOS_ID] + byte_data.encode(prompt).tolist()
    states = model.initial_state(1)
    logprobs, states, _ = model(torch.tensor([tokens]), states)
    last = logprobs[0, -1]
    generated = []
    for _ in range(max_bytes):
        probs = torch.softmax(last.double() / temperature, dim=-1)
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, 0) - sorted_probs < top_p
        keep[0] = True
        sorted_probs = sorted_probs * keep
        choice = order[torch.multinomial(sorted_probs / sorted_probs.sum(), 1,
                                         generator=generator)]
        token = int(choice)
        if token == byte_data.EOS_ID and stop_at_eos:
            break
        generated.append(token)
        logprobs, states, _ = model(torch.tensor([[token]]), states, block_len=1)
        last = logprobs[0, -1]
    return prompt + byte_data.decode(generated)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--fortunes", default="/usr/share/games/fortunes")
    parser.add_argument("--kjv", help="also score the King James Version "
                        "chapters of the split (a dump of the bible program, "
                        "see byte_data.load_kjv_documents)")
    parser.add_argument("--split", choices=("train", "validation"),
                        default="validation")
    parser.add_argument("--codes", action="store_true",
                        help="also print per-sublayer code usage and codebook "
                        "perplexity on the documents")
    parser.add_argument("--text_file", help="score this file as one document")
    parser.add_argument("--sample", action="append", default=[],
                        help="prompt to continue (repeatable)")
    parser.add_argument("--max_bytes", type=int, default=300)
    parser.add_argument("--top_p", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--float64", action="store_true",
                        help="run the model in float64 (as the recorded "
                        "heldout_scores.jsonl of the model cards are)")
    parser.add_argument("--no_eval", action="store_true", help="only sample")
    parser.add_argument("--write_scores",
                        help="write one JSON line per document: text, bytes and "
                        "the sum of its byte logprobs (nats)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = model_io.load_model_dir(
        args.model, dtype=torch.float64 if args.float64 else torch.float32)
    groups = {}   # source -> texts
    if args.no_eval:
        pass
    elif args.text_file:
        with open(args.text_file, encoding="utf-8") as handle:
            groups["file"] = [handle.read()]
    else:
        sets = [("fortunes", byte_data.load_fortune_documents(args.fortunes))]
        if args.kjv:
            sets.append(("kjv", byte_data.load_kjv_documents(args.kjv)))
        for source, documents in sets:
            train, validation = byte_data.split_documents(documents)
            groups[source] = [text for _, text in
                              (train if args.split == "train" else validation)]
    for source, texts in groups.items():
        bpb, n_bytes = bits_per_byte(model, texts)
        result = {"documents": source, "bits_per_byte": round(bpb, 4),
                  "bytes": n_bytes, "count": len(texts)} if len(groups) > 1 else \
            {"bits_per_byte": round(bpb, 4), "bytes": n_bytes, "documents": len(texts)}
        print(json.dumps(result))
        if args.codes:
            for entry in code_statistics(model, texts):
                print(json.dumps(dict(entry, documents=source)))
    if args.write_scores:
        with open(args.write_scores, "w") as handle:
            for source, texts in groups.items():
                for text, score in zip(texts, document_scores(model, texts)):
                    line = {"text": text, "bytes": len(text.encode("utf-8")),
                            "logprob_nats": round(score, 6)}
                    if len(groups) > 1:
                        line["source"] = source
                    handle.write(json.dumps(line) + "\n")
    for index, prompt in enumerate(args.sample):
        print("--- sample %d (top_p %.2f, seed %d)" % (index, args.top_p,
                                                    args.seed + index))
        print(sample(model, prompt, args.max_bytes, top_p=args.top_p,
                     seed=args.seed + index))


if __name__ == "__main__":
    main()
