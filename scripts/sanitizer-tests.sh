#!/usr/bin/env bash
# The sanitizer part of `make test` (docs/building.md, "Sanitizer and fuzz
# builds"): after the release suite, with clang,
#   1. an ASan+UBSan build (build/asan) of the unit and integration tests,
#      tvq-server and tvq-client, whose ctest runs without the container,
#      bench, soak and fuzz labels, then the libFuzzer targets (label fuzz)
#      built in the same folder;
#   2. a TSan build (build/tsan) of the scheduler, core, sessions and
#      service tests, run with TSan's reports turned into failures and with
#      tests/support/tsan_absl_sync.cc preloaded (Debian's Abseil is not
#      built with TSan).
# Every report of a sanitizer fails its test (-fno-sanitize-recover=all,
# halt_on_error). Tests that cannot run under a sanitizer skip with the
# reason (tests/support/sanitizers.h).
#
# usage: scripts/sanitizer-tests.sh [STAGE...]   (default: $SANITIZER_STAGES,
#        else "asan tsan")
#   asan  the ASan+UBSan build of everything, its ctest, then the fuzz label
#   fuzz  only the fuzz targets of that build and the fuzz label
#   tsan  the TSan build of the scheduler, core and service tests
# environment: JOBS (default nproc), SANITIZER_BUILD_ROOT (default build),
#              FUZZ_SECONDS (per fuzz target, default from tests/fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ]; then
  stages=("$@")
else
  read -r -a stages <<<"${SANITIZER_STAGES:-asan tsan}"
fi
jobs=${JOBS:-$(nproc)}
root=${SANITIZER_BUILD_ROOT:-build}
started=$SECONDS

for tool in clang clang++; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "sanitizer-tests: $tool not found (scripts/install-deps.sh installs clang)" >&2
    exit 1
  fi
done

# -O1 and line tables only: the build is the cost here (2 cores in CI), and
# line tables are all a sanitizer report needs for file:line.
# -ffp-contract=off: no FMA contraction, as in the gcc build (ISO C++ mode),
# so the kernels' bits match the golden files. -Wno-pass-failed: clang
# reports the `omp simd` loops it does not vectorize at -O1.
common_flags="-O1 -gline-tables-only -fno-omit-frame-pointer -ffp-contract=off -Wno-pass-failed"
configure() {  # configure DIR EXTRA_CXX_FLAGS [cmake args...]
  local dir=$1 flags=$2
  shift 2
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Sanitize \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_C_FLAGS_SANITIZE="$common_flags" \
    -DCMAKE_CXX_FLAGS_SANITIZE="$common_flags" \
    -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_C_FLAGS="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" \
    -DCMAKE_MODULE_LINKER_FLAGS="$flags" \
    -DTVQ_WITH_CUDA=OFF -DTVQ_BUILD_BENCHMARKS=OFF "$@" >/dev/null
}

# Reports fail the process; leaks are reports too. The only suppression is
# a leak inside Debian's c-ares (tests/support/sanitizer-suppressions/,
# each entry with its upstream report).
export LSAN_OPTIONS="suppressions=$PWD/tests/support/sanitizer-suppressions/lsan.supp:print_suppressions=0"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"

fuzz_targets=(safetensors_header_fuzzer model_config_fuzzer model_dir_fuzzer
              request_validation_fuzzer openai_request_fuzzer tokenizer_fuzzer
              stop_matcher_fuzzer session_blob_fuzzer)

configure_asan() {
  # fuzzer-no-link: the project code carries libFuzzer's coverage
  # instrumentation, so the fuzz targets link against the same libraries.
  configure "$root/asan" \
    "-fsanitize=address,undefined -fno-sanitize-recover=all -fsanitize=fuzzer-no-link" \
    -DTVQ_BUILD_FUZZERS=ON
}

run_fuzz() {
  local dir=$root/asan t0=$SECONDS
  cmake --build "$dir" -j "$jobs" --target "${fuzz_targets[@]}"
  echo "sanitizer-tests: fuzz target build took $((SECONDS - t0)) s"
  t0=$SECONDS
  (cd "$dir" && ctest --output-on-failure -j "$jobs" -L fuzz)
  echo "sanitizer-tests: fuzz targets took $((SECONDS - t0)) s"
}

run_asan() {
  local dir=$root/asan
  local t0=$SECONDS
  echo "sanitizer-tests: ASan+UBSan build in $dir"
  configure_asan
  cmake --build "$dir" -j "$jobs"
  echo "sanitizer-tests: ASan+UBSan build took $((SECONDS - t0)) s"
  t0=$SECONDS
  (cd "$dir" && ctest --output-on-failure -j "$jobs" -LE 'container|bench|soak|fuzz')
  echo "sanitizer-tests: ASan+UBSan tests took $((SECONDS - t0)) s"
  run_fuzz
}

run_tsan() {
  local dir=$root/tsan
  local t0=$SECONDS
  echo "sanitizer-tests: TSan build in $dir"
  configure "$dir" "-fsanitize=thread"
  local targets=(tsan_absl_sync_test batch_policy_test scheduler_test
                 slot_manager_test kept_state_test engine_test readiness_test
                 score_summary_test request_validation_test openai_request_test
                 session_store_test)
  cmake --build "$dir" -j "$jobs" --target tvq_tsan_absl_sync "${targets[@]}"
  echo "sanitizer-tests: TSan build took $((SECONDS - t0)) s"
  t0=$SECONDS
  local names
  names=$(IFS='|'; echo "${targets[*]}")
  # Debian's Abseil is not built with TSan: the preloaded annotations
  # (tests/support/tsan_absl_sync.cc) let TSan see its mutexes.
  (cd "$dir" && LD_PRELOAD="$PWD/tests/support/libtvq_tsan_absl_sync.so" \
     ctest --output-on-failure -j "$jobs" -R "^(${names})\$")
  echo "sanitizer-tests: TSan tests took $((SECONDS - t0)) s"
}

for stage in "${stages[@]}"; do
  case $stage in
    asan) run_asan ;;
    fuzz) echo "sanitizer-tests: fuzz targets in $root/asan"; configure_asan; run_fuzz ;;
    tsan) run_tsan ;;
    *) echo "usage: $0 [asan|fuzz|tsan]..." >&2; exit 2 ;;
  esac
done
echo "sanitizer-tests: all passed in $((SECONDS - started)) s"
