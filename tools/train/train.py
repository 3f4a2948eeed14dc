"""Train a small byte-level Transformer-VQ on CPU and export it for tvq-serve.

    nice -n 19 /usr/bin/python3 tools/train/train.py --out runs/demo \
        --fortunes /usr/share/games/fortunes --minutes 90

The recipe follows the official trainer at small scale:
- each batch holds `batch` sequences of `seq_len` tokens; a sequence is cut
  into updates of `update_len` tokens (a whole number of blocks of
  `block_len`); one optimizer step per update, the attention state (window +
  aggregated cache) carried from update to update within the sequence and
  detached (truncated gradients);
- loss = mean next-token NLL + c_beta * commitment loss;
- AdamW (b1 0.9, b2 0.98, eps 1e-9) with weight decay on matrices only,
  gradient clipping by global norm, linear warm-up then cosine decay to
  lr/10;
- the codebooks follow exponential moving averages (rate c_gamma) of the
  per-update sums of the keys assigned to each code.

Every `eval_minutes` it scores held-out documents (bits per byte, each
document from a fresh state as the server scores a prompt), writes a
resumable checkpoint (`checkpoint.pt`) and exports the best model so far to
`<out>/best/` (config.json + model.safetensors, fp32). `log.jsonl` records
every evaluation.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import byte_data  # noqa: E402
import evaluate  # noqa: E402
import model_io  # noqa: E402
import tvq_format  # noqa: E402
from tvq_model import TransformerVQ, parameter_count  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--fortunes", default="/usr/share/games/fortunes")
    parser.add_argument("--kjv", help="also train on the King James Version: "
                        "a dump of the bible program (see byte_data.load_kjv_documents)")
    parser.add_argument("--fortunes_repeat", type=int, default=1,
                        help="copies of each training cookie in the stream "
                        "(balances fortunes against a larger --kjv)")
    parser.add_argument("--init_from", help="model directory to start from: its "
                        "layers are copied, layers beyond its n_layer start as "
                        "the identity (res_proj = 0) so the start is that model")
    parser.add_argument("--vq_grad", choices=("ste", "rotation"), default="ste",
                        help="gradient through the quantizer: straight-through "
                        "or the rotation trick")
    # model
    parser.add_argument("--d_model", type=int, default=256)
    parser.add_argument("--d_k", type=int, default=64)
    parser.add_argument("--d_v", type=int, default=512)
    parser.add_argument("--n_head", type=int, default=1)
    parser.add_argument("--n_code", type=int, default=256)
    parser.add_argument("--n_layer", type=int, default=2)
    parser.add_argument("--block_len", type=int, default=128)
    parser.add_argument("--mem_len", type=int, default=128)
    parser.add_argument("--agg_cache", type=int, default=1)
    parser.add_argument("--pe_lam", type=float, default=100000)
    # training
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=512)
    parser.add_argument("--update_len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000000,
                        help="optimizer steps the cosine schedule spans")
    parser.add_argument("--minutes", type=float, default=90.0,
                        help="stop after this much wall-clock time")
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--grad_clip", type=float, default=1.0)
    parser.add_argument("--c_beta", type=float, default=1e-4)
    parser.add_argument("--c_gamma", type=float, default=0.99)
    parser.add_argument("--dropout_res", type=float, default=0.0)
    parser.add_argument("--eval_minutes", type=float, default=10.0)
    parser.add_argument("--eval_docs", type=int, default=400,
                        help="held-out documents scored at each evaluation "
                        "(all of them at the end)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def make_config(args):
    return tvq_format.make_config(
        d_model=args.d_model, d_k=args.d_k, d_v=args.d_v, n_head=args.n_head,
        n_code=args.n_code, n_layer=args.n_layer, n_vocab=259,
        block_len=args.block_len, mem_len=args.mem_len,
        agg_cache=bool(args.agg_cache), pe_abs=False,
        pe_lam=int(args.pe_lam) if float(args.pe_lam).is_integer() else args.pe_lam,
        e_tie=False, e_preln=False, e_scale=1.0)


def learning_rate(step, args, time_fraction=0.0):
    """Linear warm-up, then cosine decay to lr/10 over whichever budget
    (optimizer steps or wall-clock minutes) runs out first."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, max(time_fraction,
                            (step - args.warmup) / max(1, args.steps - args.warmup)))
    return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_optimizer(model, args):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98), eps=1e-9)


def train_step(model, optimizer, tokens, states, step, args, time_fraction=0.0):
    """One update on tokens [B, update_len + 1]; returns (states, metrics)."""
    model.train()
    inputs = torch.as_tensor(tokens[:, :-1])
    targets = torch.as_tensor(tokens[:, 1:])
    logprobs, states, aux = model(inputs, states, dropout_res=args.dropout_res)
    nll = -torch.gather(logprobs, -1, targets[..., None]).mean()
    loss = nll + args.c_beta * aux["commit"]
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, args, time_fraction)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    optimizer.step()
    model.codebook_ema_update(aux["keys"], aux["codes"], args.c_gamma)
    states = [state.detached() for state in states]
    return states, {"nll": float(nll), "commit": float(aux["commit"]),
                    "grad_norm": float(grad_norm)}


def grow_from(model, directory):
    """Copies a model directory's tensors into `model` (same widths, at most
    as many layers); the layers it lacks keep their fresh initialisation
    except res_proj = 0, so that they start as the identity."""
    source = model_io.load_model_dir(directory)
    for key in ("d_model", "d_k", "d_v", "n_head", "n_code", "n_vocab",
                "block_len", "mem_len", "agg_cache", "pe_abs", "e_tie", "e_preln"):
        if source.config[key] != model.config[key]:
            sys.exit("--init_from %s: %s is %r there, %r here" % (
                directory, key, source.config[key], model.config[key]))
    if source.config["n_layer"] > model.config["n_layer"]:
        sys.exit("--init_from %s has %d layers, more than --n_layer %d" % (
            directory, source.config["n_layer"], model.config["n_layer"]))
    own = model.named_tensors()
    with torch.no_grad():
        for name, tensor in source.named_tensors().items():
            own[name].copy_(tensor)
        for layer in model.sublayers[len(source.sublayers):]:
            layer.res_proj.zero_()


def save_checkpoint(path, model, optimizer, step, best_bpb, elapsed, args):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "step": step, "best_bpb": best_bpb, "elapsed": elapsed,
                "config": model.config, "args": vars(args)}, path + ".tmp")
    os.replace(path + ".tmp", path)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.seq_len % args.update_len or args.update_len % args.block_len:
        sys.exit("seq_len must be a multiple of update_len, and update_len of block_len")
    os.makedirs(args.out, exist_ok=True)

    documents = byte_data.load_fortune_documents(args.fortunes)
    train_docs, valid_docs = byte_data.split_documents(documents)
    train_texts = [text for _, text in train_docs] * args.fortunes_repeat
    valid_texts = [text for _, text in valid_docs]
    kjv_valid = []
    if args.kjv:
        kjv_train, kjv_valid_docs = byte_data.split_documents(
            byte_data.load_kjv_documents(args.kjv))
        train_texts += [text for _, text in kjv_train]
        kjv_valid = [text for _, text in kjv_valid_docs]
    stream = byte_data.DocumentStream(train_texts, seed=args.seed)
    eval_rng = np.random.default_rng(12345)
    eval_subset = [valid_texts[i] for i in sorted(eval_rng.choice(
        len(valid_texts), size=min(args.eval_docs, len(valid_texts)), replace=False))]

    config = make_config(args)
    model = TransformerVQ(config)
    model.set_vq_grad(args.vq_grad)
    if args.init_from:
        grow_from(model, args.init_from)
    optimizer = make_optimizer(model, args)
    step, best_bpb, elapsed_before = 0, float("inf"), 0.0
    checkpoint_path = os.path.join(args.out, "checkpoint.pt")
    if os.path.exists(checkpoint_path):
        saved = torch.load(checkpoint_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        step, best_bpb, elapsed_before = saved["step"], saved["best_bpb"], saved["elapsed"]
        print("resumed at step %d (%.1f min)" % (step, elapsed_before / 60), flush=True)

    log = open(os.path.join(args.out, "log.jsonl"), "a")
    info = {"event": "start", "params": parameter_count(model),
            "train_docs": len(train_texts), "valid_docs": len(valid_texts),
            "kjv_valid_docs": len(kjv_valid),
            "train_tokens": len(stream), "config": config, "args": vars(args)}
    print(json.dumps(info), flush=True)
    log.write(json.dumps(info) + "\n")

    start = time.time()
    last_eval = start
    tokens_seen, window_metrics = 0, []
    done = False
    while not done:
        batch = stream.batch(args.batch, args.seq_len)
        states = model.initial_state(args.batch)
        for begin in range(0, args.seq_len, args.update_len):
            chunk = batch[:, begin:begin + args.update_len + 1]
            time_fraction = (elapsed_before + time.time() - start) / (args.minutes * 60)
            states, metrics = train_step(model, optimizer, chunk, states, step, args,
                                         time_fraction)
            step += 1
            tokens_seen += args.batch * args.update_len
            window_metrics.append(metrics)
            if step % 50 == 0:
                elapsed = elapsed_before + time.time() - start
                mean = {k: float(np.mean([m[k] for m in window_metrics]))
                        for k in window_metrics[0]}
                window_metrics = []
                print("step %d  %.1f min  train %.3f bpb  commit %.3f  |g| %.2f  "
                      "lr %.2e  %.0f tok/s" % (
                          step, elapsed / 60, mean["nll"] / math.log(2),
                          mean["commit"], mean["grad_norm"],
                          learning_rate(step, args, elapsed / (args.minutes * 60)),
                          tokens_seen / (time.time() - start)), flush=True)
            elapsed = elapsed_before + time.time() - start
            out_of_time = elapsed > args.minutes * 60 or step >= args.steps
            if out_of_time or time.time() - last_eval > args.eval_minutes * 60:
                texts = valid_texts if out_of_time else eval_subset
                bpb, n_bytes = evaluate.bits_per_byte(model, texts)
                record = {"event": "eval", "step": step, "minutes": round(elapsed / 60, 2),
                          "valid_bpb": round(bpb, 4), "valid_bytes": n_bytes,
                          "full_validation": out_of_time}
                if kjv_valid:
                    kjv_texts = kjv_valid if out_of_time else kjv_valid[:12]
                    kjv_bpb, _ = evaluate.bits_per_byte(model, kjv_texts)
                    record["kjv_valid_bpb"] = round(kjv_bpb, 4)
                record["codes"] = [
                    [entry["used"], entry["perplexity"]]
                    for entry in evaluate.code_statistics(model, texts[:100])]
                if out_of_time or bpb < best_bpb:
                    # The full validation set is scored only at the end; the
                    # subset decides which checkpoint is "best" along the way.
                    best_bpb = min(best_bpb, bpb) if not out_of_time else bpb
                    model_io.export_model_dir(
                        model, os.path.join(args.out, "best"),
                        metadata={"generator": "tools/train/train.py", "step": step,
                                  "valid_bpb": round(bpb, 4)})
                    record["exported"] = True
                save_checkpoint(checkpoint_path, model, optimizer, step, best_bpb,
                                elapsed, args)
                print(json.dumps(record), flush=True)
                log.write(json.dumps(record) + "\n")
                log.flush()
                last_eval = time.time()
                if out_of_time:
                    done = True
                    break
    log.close()


if __name__ == "__main__":
    main()
