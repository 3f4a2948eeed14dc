#!/usr/bin/env bash
# The GPU check, as one prepared script for the lent GPU machine (it has
# nvcc, CMake, ninja, no -dev packages and no network): unpack the bundle,
# build the runtime with CUDA (TVQ_BUILD_SERVER=OFF), run the CUDA parity
# tests (the backend conformance suite, the CUDA backend and kernel tests,
# the whole model on golden vectors), then gpu_bench --quick (set
# TVQ_GPU_BENCH_FULL=1 for the full run). Logs go to $OUT (or
# ./gpu-check-out); $OUT/report.txt holds the summary, failures and figures.
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

out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
prefix=${TVQ_DEPS_PREFIX:-/tmp/tvq-deps}
build=${TVQ_GPU_BUILD_DIR:-/tmp/tvq-gpu-build}
summary=()
note() { summary+=("$1"); echo "gpu-check: $1"; }

{
  nvidia-smi || true
  nvcc --version || true
} >"$out/device.txt" 2>&1

if [ ! -x .gpu-bundle/unpack.sh ]; then
  echo "gpu-check: .gpu-bundle/unpack.sh is missing: run scripts/gpu-bundle.sh here and carry .gpu-bundle" >&2
  exit 2
fi
.gpu-bundle/unpack.sh "$prefix" >"$out/unpack.log" 2>&1 || {
  tail -20 "$out/unpack.log"
  exit 2
}
# shellcheck disable=SC1091
source "$prefix/tvq-deps.env"

# shellcheck disable=SC2086
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DTVQ_WITH_CUDA=ON \
  $TVQ_DEPS_CMAKE_FLAGS >"$out/configure.log" 2>&1 || {
  tail -30 "$out/configure.log"
  exit 3
}
targets=(backend_conformance_test cuda_backend_test cuda_kernels_test
  cuda_engine_test golden_test gpu_bench)
if ! cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" \
  >"$out/build.log" 2>&1; then
  grep -B2 -A20 "FAILED\|error" "$out/build.log" | head -60
  exit 4
fi
note "built ${targets[*]}"

# Parity first: a GPU figure means nothing if the numbers are wrong.
for test in backend_conformance_test cuda_backend_test cuda_kernels_test \
  cuda_engine_test golden_test; do
  binary=$(find "$build/tests" -name "$test" -type f -perm -u+x | head -n 1)
  if [ -z "$binary" ]; then
    note "$test: not built"
    continue
  fi
  (cd "$build" && timeout 300 "$binary" --gtest_brief=1 \
    --gtest_output="xml:$out/$test.xml") >"$out/$test.log" 2>&1
  rc=$?
  skipped=$(grep -c "SKIPPED" "$out/$test.log" || true)
  failed=$(grep -c "^\[  FAILED  \]" "$out/$test.log" || true)
  note "$test: exit $rc, $failed failed lines, $skipped skipped lines"
done

bench=$(find "$build/tests" -name gpu_bench -type f -perm -u+x | head -n 1)
if [ -n "$bench" ]; then
  bench_flags=(--quick)
  if [ -n "${TVQ_GPU_BENCH_FULL:-}" ]; then bench_flags=(); fi
  timeout 300 "$bench" "${bench_flags[@]}" >"$out/gpu_bench.txt" 2>&1
  note "gpu_bench: exit $? (figures in gpu_bench.txt)"
fi

# One report file with everything that matters, and its tail on stdout.
{
  echo "== gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  head -15 "$out/device.txt"
  echo "== summary"
  printf '%s\n' "${summary[@]}"
  echo "== failures"
  grep -h "^\[  FAILED  \]" "$out"/*_test.log 2>/dev/null | sort -u || true
  echo "== gpu_bench"
  cat "$out/gpu_bench.txt" 2>/dev/null || true
} >"$out/report.txt"
tail -60 "$out/report.txt"
