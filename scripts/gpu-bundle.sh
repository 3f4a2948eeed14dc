#!/usr/bin/env bash
# Gathers into .gpu-bundle/ (git-ignored) the Debian 12 packages that a
# runtime build (kernels + runtime + their tests, TVQ_BUILD_SERVER=OFF) needs
# on a GPU machine that has nvcc, CMake and ninja but no -dev packages and no
# network, and writes .gpu-bundle/unpack.sh, which unpacks them there into a
# prefix (default /opt/tvq-deps) with `dpkg -x` and prints the CMake flags to
# use. See docs/building.md, "The GPU bundle".
#
#   scripts/gpu-bundle.sh [BUNDLE_DIR]      # default: <repo>/.gpu-bundle
#
# Runs here (Debian 12, with apt's package lists; run `apt-get update` first
# if `apt-get download` cannot find a package). Needs no root.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
bundle_dir=${1:-"$repo_root/.gpu-bundle"}

# What CMakeLists.txt finds with TVQ_BUILD_SERVER=OFF, and the shared
# libraries those need beyond glibc and libstdc++.
packages=(
  # Abseil (absl::status, statusor, strings, str_format, random, ...)
  libabsl-dev libabsl20220623
  # OpenBLAS, pthread flavour; the -dev metapackage carries no files but
  # names the flavour. libgfortran5 and libquadmath0 are its runtime needs.
  libopenblas-dev libopenblas0 libopenblas-pthread-dev libopenblas0-pthread
  libgfortran5 libquadmath0
  # SentencePiece tokenizers
  libsentencepiece-dev libsentencepiece0
  # JSON (header-only)
  nlohmann-json3-dev
  # Tests and benchmarks (GoogleTest ships static libraries)
  libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian
)

mkdir -p "$bundle_dir"
rm -f "$bundle_dir"/*.deb
download_options=()
if [ "$(id -u)" -eq 0 ]; then
  # apt's sandbox user cannot write into a root-owned folder.
  download_options+=(-o APT::Sandbox::User=root)
fi
(cd "$bundle_dir" && apt-get download "${download_options[@]}" "${packages[@]}")

cat >"$bundle_dir/unpack.sh" <<'UNPACK'
#!/usr/bin/env bash
# Unpacks every .deb beside this script into PREFIX (default /opt/tvq-deps;
# never /, which the packages could break) and prints the CMake flags and
# the library path a tvq-serve runtime build needs. Also writes
# PREFIX/tvq-deps.env, to `source` before configuring and running tests.
#
#   .gpu-bundle/unpack.sh [PREFIX]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
prefix=${1:-/opt/tvq-deps}
if [ "$prefix" = "/" ]; then
  echo "unpack.sh: refusing to unpack into /" >&2
  exit 1
fi
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)

shopt -s nullglob
debs=("$here"/*.deb)
if [ ${#debs[@]} -eq 0 ]; then
  echo "unpack.sh: no .deb files in $here" >&2
  exit 1
fi
for deb in "${debs[@]}"; do
  if command -v dpkg >/dev/null 2>&1; then
    dpkg -x "$deb" "$prefix"
  else
    # No dpkg: a .deb is an ar archive holding data.tar.*.
    work=$(mktemp -d)
    (cd "$work" && ar x "$deb" && tar -xf data.tar.* -C "$prefix")
    rm -rf "$work"
  fi
done

multiarch=$(cd "$prefix/usr/lib" && ls -d ./*-linux-gnu* | head -n 1)
multiarch=${multiarch#./}
lib="$prefix/usr/lib/$multiarch"
include="$prefix/usr/include"
library_path="$lib:$lib/openblas-pthread"

cmake_flags=(
  "-DCMAKE_PREFIX_PATH=$prefix/usr"
  "-DCMAKE_LIBRARY_PATH=$lib/openblas-pthread;$lib"
  "-DCMAKE_INCLUDE_PATH=$include/$multiarch/openblas-pthread;$include"
  "-Dabsl_DIR=$lib/cmake/absl"
  "-DGTest_DIR=$lib/cmake/GTest"
  "-Dbenchmark_DIR=$lib/cmake/benchmark"
  "-Dnlohmann_json_DIR=$prefix/usr/share/cmake/nlohmann_json"
  "-DTVQ_BUILD_SERVER=OFF"
)

cat >"$prefix/tvq-deps.env" <<ENV
# Written by unpack.sh: source it, then
#   cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \$TVQ_DEPS_CMAKE_FLAGS
export TVQ_DEPS_PREFIX="$prefix"
export TVQ_DEPS_CMAKE_FLAGS="${cmake_flags[*]}"
export LD_LIBRARY_PATH="$library_path\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV

echo "unpack.sh: ${#debs[@]} packages unpacked into $prefix"
echo
echo "CMake flags (also \$TVQ_DEPS_CMAKE_FLAGS in $prefix/tvq-deps.env):"
for flag in "${cmake_flags[@]}"; do echo "  $flag"; done
echo
echo "Before running the tests:"
echo "  export LD_LIBRARY_PATH=$library_path\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo
echo "In one go:"
echo "  source $prefix/tvq-deps.env"
echo "  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \$TVQ_DEPS_CMAKE_FLAGS"
UNPACK
chmod +x "$bundle_dir/unpack.sh"

echo "gpu-bundle: $(ls "$bundle_dir"/*.deb | wc -l) packages," \
  "$(du -sh "$bundle_dir" | cut -f1) in $bundle_dir"
echo "On the GPU machine: $bundle_dir/unpack.sh /opt/tvq-deps"
