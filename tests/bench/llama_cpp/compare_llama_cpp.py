#!/usr/bin/env python3
"""Transformer-VQ side by side with llama.cpp on this CPU (issue 16).

Builds llama.cpp's llama-bench from a checkout (CPU only, niced), writes
random-weight llama GGUFs whose widths match engine_bench's Transformer-VQ
model (write_llama_gguf.py, f32 and bf16), then for each depth runs, one
after the other, llama-bench at that depth (-d) for both files and our
quadratic_bench --no-quadratic at the same context, and prints one table:

  prefill: llama-bench pp512 at depth d (512 tokens after d of context)
           against Transformer-VQ prefill of a max(d, 512)-token prompt;
  decode:  llama-bench tg128 at depth d (128 tokens after d) against
           Transformer-VQ decode at batch 1 after max(d, 512) tokens;
  ratio = Transformer-VQ tokens/s / llama.cpp f32 tokens/s.

Not run in CI (it needs a llama.cpp checkout and minutes of CPU).

  compare_llama_cpp.py LLAMA_CPP_DIR --tvq-bench build/dev/tests/bench/quadratic_bench
      [--depths 0,1024,4096,8192,16384,32768] [--threads 2] [--reps 3]
      [--jobs 2] [--build-dir DIR] [--work DIR]
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def log(message):
    print(message, flush=True)


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def build_llama_bench(checkout, build_dir, jobs):
    build = build_dir
    binary = build / "bin" / "llama-bench"
    if binary.exists():
        return binary
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
             "-DLLAMA_BUILD_SERVER=OFF"]
    log(f"building llama-bench in {build} (nice -n 10, -j{jobs}) ...")
    subprocess.run(["nice", "-n", "10", "cmake", "-S", str(checkout), "-B", str(build),
                    "-G", "Ninja", *flags], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["nice", "-n", "10", "cmake", "--build", str(build), "-j", str(jobs),
                    "--target", "llama-bench"], check=True, stdout=subprocess.DEVNULL)
    return binary


def write_ggufs(checkout, work):
    env = dict(os.environ, PYTHONPATH=str(checkout / "gguf-py"))
    paths = {}
    for dtype in ("f32", "bf16"):
        path = work / f"tvq-matched-llama-{dtype}.gguf"
        subprocess.run([sys.executable, str(HERE / "write_llama_gguf.py"), "--out", str(path),
                        "--dtype", dtype], check=True, env=env)
        paths[dtype] = path
    return paths


def llama_bench(binary, model, depth, threads, reps):
    """{'pp': tokens/s, 'tg': tokens/s} of pp512 and tg128 at `depth`."""
    result = subprocess.run(
        [str(binary), "-m", str(model), "-p", "512", "-n", "128", "-d", str(depth),
         "-t", str(threads), "-r", str(reps), "-o", "json"],
        capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"llama-bench failed ({result.returncode}): {result.stderr[-2000:]}")
    rows = json.loads(result.stdout)
    figures = {}
    for row in rows:
        kind = "pp" if row["n_prompt"] > 0 else "tg"
        figures[kind] = row["avg_ts"]
        figures[kind + "_stddev"] = row["stddev_ts"]
        figures["build_commit"] = row.get("build_commit", "?")
        figures["cpu"] = row.get("cpu_info", "?")
    return figures


RESULT = re.compile(r"^result engine=(\w+) context=(\d+) (.*)$")


def tvq_bench(binary, context, threads):
    env = dict(os.environ, TVQ_BENCH_THREADS=str(threads))
    result = subprocess.run([str(binary), f"--contexts={context}", "--batches=1",
                             "--no-quadratic"], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"quadratic_bench failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    figures = {}
    for line in result.stdout.splitlines():
        match = RESULT.match(line)
        if not match or match.group(1) != "tvq":
            continue
        fields = dict(item.split("=") for item in match.group(3).split())
        if "us_per_token" in fields and float(fields["us_per_token"]) > 0:
            figures["tg"] = 1e6 / float(fields["us_per_token"])
        if "prefill_tokens_per_s" in fields:
            figures["pp"] = float(fields["prefill_tokens_per_s"])
    bandwidth = re.search(r"read bandwidth .*: ([\d.]+) GB/s", result.stdout)
    figures["bandwidth"] = float(bandwidth.group(1)) if bandwidth else 0
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=pathlib.Path, help="a llama.cpp source tree")
    parser.add_argument("--tvq-bench", type=pathlib.Path, required=True,
                        help="the quadratic_bench binary of this repository")
    parser.add_argument("--depths", default="0,1024,4096,8192,16384,32768")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="build jobs for llama.cpp")
    parser.add_argument("--build-dir", type=pathlib.Path,
                        help="llama.cpp build folder (default CHECKOUT/build-tvq; built if it has no bin/llama-bench)")
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/tvq-llama-compare"))
    args = parser.parse_args()

    checkout = args.checkout.resolve()
    if not (checkout / "tools" / "llama-bench").is_dir() or not (checkout / "gguf-py").is_dir():
        sys.exit(f"compare_llama_cpp: {checkout} is not a llama.cpp checkout "
                 "(no tools/llama-bench or gguf-py)")
    if not args.tvq_bench.exists():
        sys.exit(f"compare_llama_cpp: {args.tvq_bench} does not exist: build quadratic_bench "
                 "(TVQ_BUILD_BENCHMARKS=ON)")
    depths = [int(d) for d in args.depths.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    binary = build_llama_bench(checkout, (args.build_dir or checkout / "build-tvq").resolve(), args.jobs)
    models = write_ggufs(checkout, args.work)

    log(f"start {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; load: {uptime()}")
    rows = []
    for depth in depths:
        row = {"depth": depth, "context": max(depth, 512)}
        for dtype, model in models.items():
            row[dtype] = llama_bench(binary, model, depth, args.threads, args.reps)
        row["tvq"] = tvq_bench(args.tvq_bench, row["context"], args.threads)
        row["load"] = uptime()
        log(f"depth {depth}: llama f32 pp {row['f32']['pp']:.0f} tg {row['f32']['tg']:.0f}, "
            f"bf16 pp {row['bf16']['pp']:.0f} tg {row['bf16']['tg']:.0f}; tvq pp "
            f"{row['tvq'].get('pp', 0):.0f} tg {row['tvq'].get('tg', 0):.0f}; load: {row['load']}")
        rows.append(row)

    first = rows[0]["f32"]
    log(f"\nllama.cpp build_commit (llama-bench): {first.get('build_commit')}; "
        f"cpu: {first.get('cpu')}; threads {args.threads}; reps {args.reps}")
    log("tokens/s; ratio = tvq / llama.cpp f32 (> 1: Transformer-VQ faster)\n")
    header = ("| depth | llama f32 pp512 | llama bf16 pp512 | tvq prefill | ratio | "
              "llama f32 tg128 | llama bf16 tg128 | tvq decode B=1 | ratio |")
    log(header)
    log("|" + "---|" * 9)
    for row in rows:
        f32, bf16, tvq = row["f32"], row["bf16"], row["tvq"]
        log(f"| {row['depth']:,} | {f32['pp']:,.0f} | {bf16['pp']:,.0f} | {tvq.get('pp', 0):,.0f} | "
            f"{tvq.get('pp', 0) / f32['pp']:.2f}x | {f32['tg']:,.0f} | {bf16['tg']:,.0f} | "
            f"{tvq.get('tg', 0):,.0f} | {tvq.get('tg', 0) / f32['tg']:.2f}x |")
    for kind, name in (("tg", "decode"), ("pp", "prefill")):
        crossover = next((r["depth"] for r in rows
                          if r["tvq"].get(kind, 0) > r["f32"][kind]), None)
        log(f"{name}: Transformer-VQ first ahead of llama.cpp f32 at depth "
            f"{crossover if crossover is not None else 'none measured'}")
    log(f"end; load: {uptime()}")


if __name__ == "__main__":
    main()
