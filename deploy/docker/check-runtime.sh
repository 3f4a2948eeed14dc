#!/bin/sh
# Runs last in the Dockerfile's runtime stages: fails the build when a staged
# binary misses a shared library (the NVIDIA driver's own libraries excepted:
# the container toolkit mounts them at run time) or the default model is
# incomplete.
set -eu

missing=$(ldd /usr/local/bin/tvq-server /usr/local/bin/tvq-client \
  /usr/local/lib/libtvq_*.so |
  grep 'not found' | grep -v -e 'libcuda\.so' -e 'libnvidia-' || true)
if [ -n "$missing" ]; then
  echo "check-runtime: missing shared libraries:" >&2
  echo "$missing" >&2
  exit 1
fi
for file in config.json model.safetensors; do
  if [ ! -r "/models/default/$file" ]; then
    echo "check-runtime: /models/default/$file is missing" >&2
    exit 1
  fi
done
tvq-client --help > /dev/null
echo "check-runtime: binaries load, default model present"
