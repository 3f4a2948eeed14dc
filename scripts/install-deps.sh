#!/usr/bin/env bash
# Installs, through apt, the Debian 12 packages tvq-serve needs to build and
# test. Idempotent: only packages that are not installed yet are fetched.
# Runs as root or through sudo. The CUDA Toolkit is not installed here: the
# build uses /usr/local/cuda when it exists.
set -euo pipefail

packages=(
  # toolchain
  cmake ninja-build g++ make pkg-config
  # server dependencies
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev libsentencepiece-dev libopenblas-dev
  nlohmann-json3-dev zlib1g-dev
  # HTTP front end (server/service/http): Boost.Beast + Asio, header-only
  libboost-dev
  # TLS of the HTTP listener and the API key store (server/auth): OpenSSL
  libssl-dev
  # the sanitizer and fuzz builds (scripts/sanitizer-tests.sh): clang 14
  # with its sanitizer and libFuzzer runtimes
  clang libclang-rt-14-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-numpy python3-sentencepiece python3-grpcio python3-protobuf
  python3-msgpack prometheus curl ccache openssl
  # the HTTP tests' virtual environment with the openai SDK
  # (scripts/install-test-venv.sh)
  python3-venv
  # deploy tests (tests/deploy)
  python3-yaml
  # the multi-replica test (tests/cluster): a real nginx, run as the test
  # user with a temporary prefix (never as a system service)
  nginx
  # tools/train and its parity test (tests/tools)
  python3-torch
)
# kubectl for the offline manifest check; a kubectl from elsewhere (e.g. the
# Google Cloud SDK's package) owns /usr/bin/kubectl and must not be replaced.
if ! command -v kubectl >/dev/null 2>&1; then
  packages+=(kubernetes-client)
fi
# Extra packages can be appended by callers (e.g. the container smoke test).
packages+=("$@")

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null |
      grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-deps: missing packages (${missing[*]}) and neither root nor sudo" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
