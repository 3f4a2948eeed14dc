#!/usr/bin/env bash
# The GPU check, as one prepared script for the lent GPU machine (it has
# nvcc, CMake and ninja, no -dev packages and no network): unpack the bundle,
# configure the runtime with CUDA (TVQ_BUILD_SERVER=OFF) against the bundle
# alone, build only the GPU checks' targets, run the CUDA parity tests (the
# backend conformance suite, the CUDA backend and kernel tests, the whole
# model on golden vectors), then `gpu_bench --quick` (TVQ_GPU_BENCH_FULL=1
# for the full run). Everything fits in TVQ_GPU_CHECK_BUDGET_S seconds
# (default 450, inside the 8 minutes of device time the issue allows): each
# step gets what is left, and a step that runs out is reported, not hung on.
# Logs go to $OUT (or ./gpu-check-out); $OUT/report.txt holds the summary,
# failures and figures.
#
#   scripts/gpu-check.sh                 # on the GPU machine
#   scripts/gpu-check.sh --prepare-only  # anywhere: "no GPU: prepare only"
#
# --prepare-only runs the part that needs no GPU, as CI does (ctest label
# gpu-prep): it makes the bundle when there is none (scripts/gpu-bundle.sh;
# TVQ_GPU_BUNDLE_DIR, default .gpu-bundle), unpacks it, configures and
# builds exactly as on the GPU machine, checks that every target exists,
# and writes the report without running anything on a GPU.
#
# Here, first:   scripts/gpu-bundle.sh
# With the device tool (carry .gpu-bundle):
#   run command="bash scripts/gpu-check.sh" carry=[".gpu-bundle"]
#
# Record every figure it prints in docs/perf/gpu.md with the date, the
# device and the commit (`git rev-parse HEAD` here; the device copy has no
# .git).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

prepare_only=0
case "${1:-}" in
  "") ;;
  --prepare-only) prepare_only=1 ;;
  *)
    echo "usage: $0 [--prepare-only]" >&2
    exit 2
    ;;
esac

budget=${TVQ_GPU_CHECK_BUDGET_S:-450}
out=${OUT:-$repo/gpu-check-out}
mkdir -p "$out"
bundle=${TVQ_GPU_BUNDLE_DIR:-$repo/.gpu-bundle}
prefix=${TVQ_DEPS_PREFIX:-/tmp/tvq-deps}
build=${TVQ_GPU_BUILD_DIR:-/tmp/tvq-gpu-build}
jobs=${TVQ_GPU_CHECK_JOBS:-$(nproc)}
summary=()
status=0
note() { summary+=("$1"); echo "gpu-check: $1"; }
# Seconds left of the budget (at least 1, so `timeout` always gets a limit).
left() {
  local remaining=$((budget - SECONDS))
  if [ "$remaining" -lt 1 ]; then remaining=1; fi
  echo "$remaining"
}
# The smaller of a step's own cap and what is left.
cap() {
  local remaining
  remaining=$(left)
  if [ "$1" -lt "$remaining" ]; then echo "$1"; else echo "$remaining"; fi
}

targets=(backend_conformance_test cuda_backend_test cuda_kernels_test
  cuda_engine_test golden_test gpu_bench)
tests=(backend_conformance_test cuda_backend_test cuda_kernels_test
  cuda_engine_test golden_test)

write_report() {
  {
    echo "== gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    if [ "$prepare_only" -eq 1 ]; then
      echo "mode: no GPU: prepare only (bundle, configure, build; nothing run)"
    fi
    echo "elapsed: ${SECONDS} s of a ${budget} s budget"
    head -15 "$out/device.txt"
    echo "== summary"
    printf '%s\n' "${summary[@]}"
    echo "== failures"
    grep -h "^\[  FAILED  \]" "$out"/*_test.log 2>/dev/null | sort -u || true
    echo "== gpu_bench"
    cat "$out/gpu_bench.txt" 2>/dev/null || true
  } >"$out/report.txt"
  tail -60 "$out/report.txt"
}
finish() {
  write_report
  exit "$1"
}

{
  nvidia-smi || echo "nvidia-smi: not available"
  nvcc --version || /usr/local/cuda/bin/nvcc --version || echo "nvcc: not found"
} >"$out/device.txt" 2>&1

if [ ! -x "$bundle/unpack.sh" ]; then
  if [ "$prepare_only" -eq 1 ]; then
    if ! bash scripts/gpu-bundle.sh "$bundle" >"$out/bundle.log" 2>&1; then
      tail -20 "$out/bundle.log"
      note "bundle: scripts/gpu-bundle.sh failed (see bundle.log)"
      finish 2
    fi
    note "bundle: made $(find "$bundle" -name '*.deb' | wc -l) packages in $bundle"
  else
    echo "gpu-check: $bundle/unpack.sh is missing: run scripts/gpu-bundle.sh here and carry .gpu-bundle" >&2
    note "bundle: missing"
    finish 2
  fi
fi
if ! "$bundle/unpack.sh" "$prefix" >"$out/unpack.log" 2>&1; then
  tail -20 "$out/unpack.log"
  note "unpack: failed (see unpack.log)"
  finish 2
fi
# shellcheck disable=SC1090
source "$prefix/tvq-deps.env"
note "unpacked the bundle into $prefix (${SECONDS} s)"

# /usr and / are ignored as prefixes: every dependency must come from the
# bundle, as on the GPU machine, which has none of them installed.
nvcc_path=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
# shellcheck disable=SC2086
if ! timeout "$(cap 120)" cmake -S . -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc_path" \
  -DTVQ_WITH_CUDA=ON -DTVQ_BUILD_BENCHMARKS=ON \
  "-DCMAKE_IGNORE_PREFIX_PATH=/usr;/" \
  $TVQ_DEPS_CMAKE_FLAGS >"$out/configure.log" 2>&1; then
  tail -30 "$out/configure.log"
  note "configure: failed (see configure.log)"
  finish 3
fi
note "configured $build (${SECONDS} s)"

# On the GPU machine the build gets 360 s; preparing (CI, 2 cores) gets the
# whole budget that is left.
build_cap=360
if [ "$prepare_only" -eq 1 ]; then build_cap=$(left); fi
if ! timeout "$(cap "$build_cap")" cmake --build "$build" -j "$jobs" \
  --target "${targets[@]}" >"$out/build.log" 2>&1; then
  grep -B2 -A20 "FAILED\|error" "$out/build.log" | head -60
  note "build: failed or out of time (see build.log)"
  finish 4
fi
note "built ${targets[*]} (${SECONDS} s)"
for target in "${targets[@]}"; do
  if [ -z "$(find "$build/tests" -name "$target" -type f -perm -u+x | head -n 1)" ]; then
    note "$target: not built"
    status=4
  fi
done

if [ "$prepare_only" -eq 1 ]; then
  note "no GPU: prepare only; every target is there, nothing was run"
  finish "$status"
fi

# Parity first: a GPU figure means nothing if the numbers are wrong. The
# benchmark keeps 150 s of the budget; each test gets at most 120 s.
for test in "${tests[@]}"; do
  binary=$(find "$build/tests" -name "$test" -type f -perm -u+x | head -n 1)
  [ -n "$binary" ] || continue
  limit=$(($(left) - 150))
  if [ "$limit" -lt 10 ]; then
    note "$test: not run, the budget is spent"
    status=5
    continue
  fi
  if [ "$limit" -gt 120 ]; then limit=120; fi
  (cd "$build" && timeout "$limit" "$binary" --gtest_brief=1 \
    --gtest_output="xml:$out/$test.xml") >"$out/$test.log" 2>&1
  rc=$?
  skipped=$(grep -c "SKIPPED" "$out/$test.log" || true)
  failed=$(grep -c "^\[  FAILED  \]" "$out/$test.log" || true)
  if [ "$rc" -ne 0 ]; then status=1; fi
  note "$test: exit $rc$([ "$rc" -eq 124 ] && echo ' (timed out)'), $failed failed lines, $skipped skipped lines"
done

bench=$(find "$build/tests" -name gpu_bench -type f -perm -u+x | head -n 1)
if [ -n "$bench" ]; then
  bench_flags=(--quick)
  if [ -n "${TVQ_GPU_BENCH_FULL:-}" ]; then bench_flags=(); fi
  timeout "$(left)" "$bench" "${bench_flags[@]}" >"$out/gpu_bench.txt" 2>&1
  rc=$?
  if [ "$rc" -ne 0 ]; then status=1; fi
  note "gpu_bench: exit $rc$([ "$rc" -eq 124 ] && echo ' (out of budget)') (figures in gpu_bench.txt)"
fi
finish "$status"
