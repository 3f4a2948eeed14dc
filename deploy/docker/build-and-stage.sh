#!/bin/sh
# Runs in the Dockerfile's build stages: configures and builds tvq-server and
# tvq-client (no tests, no benchmarks), then stages what the runtime stage
# needs under OUT:
#   OUT/root/usr/local/bin/{tvq-server,tvq-client}
#   OUT/root/usr/local/lib/libtvq_*.so   the plug-in modules tvq-server
#                                        loads (SentencePiece, CUDA backend)
#   OUT/root/usr/local/lib/<libraries no package owns>
#   OUT/runtime-packages.txt  the distribution packages that own the shared
#                             libraries the staged files load (ldd + dpkg -S)
#
# Usage: build-and-stage.sh OUT [extra cmake arguments...]
# Environment: BUILD_JOBS (default: all cores).
set -eu

out=$1
shift
jobs=${BUILD_JOBS:-}
[ -n "$jobs" ] || jobs=$(nproc)

cmake -S . -B /tmp/tvq-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DTVQ_BUILD_TESTS=OFF -DTVQ_BUILD_BENCHMARKS=OFF "$@"
cmake --build /tmp/tvq-build -j "$jobs" --target tvq-server tvq-client

mkdir -p "$out/root/usr/local/bin" "$out/root/usr/local/lib"
install -s -m 0755 /tmp/tvq-build/server/tvq-server "$out/root/usr/local/bin/"
install -s -m 0755 /tmp/tvq-build/client/tvq-client "$out/root/usr/local/bin/"
# The plug-in modules tvq-server dlopens (libtvq_sentencepiece.so, and
# libtvq_cuda_backend.so in CUDA builds); it finds them through ../lib/.
modules=$(find /tmp/tvq-build -name 'libtvq_*.so' -type f)
case "$modules" in
  *libtvq_sentencepiece.so*) ;;
  *)
    echo "build-and-stage: libtvq_sentencepiece.so was not built" >&2
    exit 1
    ;;
esac
for module in $modules; do
  install -s -m 0644 "$module" "$out/root/usr/local/lib/"
done

# The driver's libraries (libcuda, libnvidia-*) come from the host through
# the NVIDIA container toolkit; they are never part of the image.
is_driver_library() {
  case "$(basename "$1")" in
    libcuda.so* | libnvidia-*) return 0 ;;
  esac
  return 1
}

# Prints the package that owns a library, trying the path as ldd prints it,
# its resolved path, and both spellings of the merged /usr.
owner_of() {
  for candidate in "$1" "$(readlink -f "$1")"; do
    for path in "$candidate" "${candidate#/usr}" "/usr$candidate"; do
      owner=$(dpkg-query -S "$path" 2>/dev/null | grep -v '^diversion' |
        head -n 1 | sed 's/: .*//; s/,.*//; s/:.*//') || true
      if [ -n "$owner" ]; then
        echo "$owner"
        return 0
      fi
    done
  done
  return 1
}

: > "$out/runtime-packages.unsorted"
for file in "$out"/root/usr/local/bin/* "$out"/root/usr/local/lib/*.so; do
  ldd "$file" | while read -r name arrow path _; do
    if [ "$arrow" != "=>" ]; then continue; fi
    if [ "$path" = "not" ]; then
      if is_driver_library "$name"; then continue; fi
      echo "build-and-stage: $file needs $name, which is not found" >&2
      exit 1
    fi
    if owner=$(owner_of "$path"); then
      echo "$owner" >> "$out/runtime-packages.unsorted"
    elif ! is_driver_library "$path"; then
      echo "build-and-stage: no package owns $path; copying it" >&2
      cp -L "$path" "$out/root/usr/local/lib/"
    fi
  done
done
sort -u "$out/runtime-packages.unsorted" > "$out/runtime-packages.txt"
rm "$out/runtime-packages.unsorted"
echo "build-and-stage: runtime packages: $(tr '\n' ' ' < "$out/runtime-packages.txt")"
