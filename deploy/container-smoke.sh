#!/usr/bin/env bash
# Container smoke test: builds the CPU image from the Dockerfile with buildah
# (our machines have no Docker engine), runs tvq-server from the image, and
# checks from the host: the gRPC health service, a generation, and a
# /metrics scrape. It prints each result. docs/deploy.md describes it.
#
# Usage: deploy/container-smoke.sh        (from anywhere; root or sudo)
#   make container-smoke                  (the same, at a lower priority)
#
# Steps:
#  1. Install buildah and debootstrap (scripts/install-deps.sh).
#  2. Make sure the Dockerfile's base image exists locally. Our machines
#     cannot pull from registries: when the image is missing and cannot be
#     pulled, `debootstrap --variant=minbase bookworm` builds a Debian 12
#     root and it is imported under the exact name the FROM line uses.
#  3. buildah bud --isolation chroot --pull=never --target cpu.
#  4. Run the image's ENTRYPOINT with `buildah from` + `buildah run
#     --isolation chroot` (`podman run` fails here on cgroups and rlimits).
#     chroot isolation shares the host network: the server listens on
#     loopback ports given as extra flags, which also proves that flags
#     appended to the entrypoint override its defaults.
#  5. From the host: health check and a generation over gRPC
#     (container-smoke-probe.py, Python stubs generated from proto/), a
#     /metrics scrape (curl); inside the image: the HEALTHCHECK command.
#  6. SIGTERM: the server drains and exits 0.
#
# Environment:
#   TVQ_SMOKE_IMAGE         image name (default localhost/tvq-serve:smoke)
#   TVQ_SMOKE_GRPC_PORT     loopback gRPC port (default: a free port)
#   TVQ_SMOKE_METRICS_PORT  loopback metrics port (default: a free port)
#   TVQ_SMOKE_KEEP_IMAGE    1 = keep the image afterwards (default 1; 0
#                           removes it)
#   BUILD_JOBS              compile jobs inside the build (default: cores)
#   DEBIAN_MIRROR           debootstrap mirror (default deb.debian.org)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=${TVQ_SMOKE_IMAGE:-localhost/tvq-serve:smoke}
grpc_port=${TVQ_SMOKE_GRPC_PORT:-}
metrics_port=${TVQ_SMOKE_METRICS_PORT:-}
keep_image=${TVQ_SMOKE_KEEP_IMAGE:-1}
jobs=${BUILD_JOBS:-$(nproc)}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
python=/usr/bin/python3 # Debian's, with python3-grpcio and python3-protobuf

started=$SECONDS
step() { printf '\n== [%4ds] %s\n' $((SECONDS - started)) "$*"; }
fail() {
  echo "container-smoke: FAIL: $*" >&2
  exit 1
}

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo > /dev/null 2>&1; then
    exec sudo --preserve-env=TVQ_SMOKE_IMAGE,TVQ_SMOKE_GRPC_PORT,TVQ_SMOKE_METRICS_PORT,TVQ_SMOKE_KEEP_IMAGE,BUILD_JOBS,DEBIAN_MIRROR \
      bash "${BASH_SOURCE[0]}" "$@"
  fi
  fail "buildah (chroot isolation) and debootstrap need root; run as root or install sudo"
fi

work=$(mktemp -d /tmp/tvq-container-smoke.XXXXXX)
container=""
probe_container=""
scratch=""
server_pid=""
cleanup() {
  local status=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2> /dev/null; then
    kill -TERM "$server_pid" 2> /dev/null || true
    sleep 2
    kill -KILL "$server_pid" 2> /dev/null || true
  fi
  for name in "$container" "$probe_container" "$scratch"; do
    if [ -n "$name" ]; then buildah rm "$name" > /dev/null 2>&1 || true; fi
  done
  if [ "$keep_image" = 0 ]; then
    buildah rmi "$image" > /dev/null 2>&1 || true
  fi
  if [ "$status" -ne 0 ] && [ -s "$work/server.log" ]; then
    echo "---- server log (last 40 lines)" >&2
    tail -n 40 "$work/server.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. tools
step "installing buildah, debootstrap and the host-side client's packages"
bash "$repo/scripts/install-deps.sh" buildah debootstrap
for tool in buildah debootstrap protoc grpc_python_plugin curl; do
  command -v "$tool" > /dev/null || fail "$tool is not installed"
done
"$python" -c 'import grpc, google.protobuf' ||
  fail "$python lacks grpcio/protobuf (python3-grpcio, python3-protobuf)"
buildah --version

# ----------------------------------------------------------- 2. base image
# The CPU stages build FROM ${DEBIAN_IMAGE}; read its default from the
# Dockerfile so that the name imported below is exactly the one it uses.
base=$(sed -n 's/^ARG DEBIAN_IMAGE=\(.*\)$/\1/p' "$repo/Dockerfile")
[ -n "$base" ] || fail "Dockerfile has no 'ARG DEBIAN_IMAGE=...' line"
step "base image $base"
if buildah inspect --type image "$base" > /dev/null 2>&1; then
  echo "present locally"
elif timeout 120 buildah pull --quiet "$base" > /dev/null 2>&1; then
  echo "pulled"
else
  echo "cannot be pulled: creating it with debootstrap --variant=minbase bookworm ($mirror)"
  rootfs=$work/rootfs
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log" >&2; fail "debootstrap failed"; }
  # Trim it the way the -slim images are trimmed.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  scratch=$(buildah from scratch)
  mountpoint=$(buildah mount "$scratch")
  tar -C "$rootfs" -cf - . | tar -C "$mountpoint" -xf -
  buildah umount "$scratch" > /dev/null
  buildah config --cmd /bin/bash \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "$scratch"
  buildah commit --quiet --rm "$scratch" "$base" > /dev/null
  scratch=""
  rm -rf "$rootfs"
  echo "imported as $base"
fi

# ---------------------------------------------------------------- 3. build
step "buildah bud --isolation chroot --target cpu -t $image (BUILD_JOBS=$jobs)"
build_started=$SECONDS
# --format docker keeps HEALTHCHECK (the OCI image format has no such field).
set +e +o pipefail
buildah bud --isolation chroot --pull=never --format docker --layers \
  --target cpu --build-arg "BUILD_JOBS=$jobs" \
  --iidfile "$work/image-id" -f "$repo/Dockerfile" -t "$image" "$repo" 2>&1 |
  tee "$work/build.log" |
  grep --line-buffered -E '^(\[[0-9]+/[0-9]+\] )?STEP |^build-and-stage:|^check-runtime:|^Successfully|Error' |
  while IFS= read -r line; do printf '  [%4ds] %s\n' $((SECONDS - started)) "$line"; done
build_status=${PIPESTATUS[0]}
set -e -o pipefail
if [ "$build_status" -ne 0 ]; then
  tail -n 40 "$work/build.log" >&2
  fail "image build failed (buildah bud exit status $build_status)"
fi
echo "image built in $((SECONDS - build_started)) s"
# Later steps use the image id: another run may retag $image meanwhile.
image_id=$(cat "$work/image-id")
buildah images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$image"
buildah inspect --type image "$image_id" > "$work/image.json"
image_config() { # prints a field of the image's Docker config
  "$python" -c 'import json, sys
config = json.load(open(sys.argv[1]))["Docker"]["config"]
value = config.get(sys.argv[2]) or ""
if sys.argv[2] == "Healthcheck":
    value = value and value["Test"][1:]  # ["CMD", argv...]
print("\n".join(value) if isinstance(value, list) else value)' "$work/image.json" "$1"
}
entrypoint=$(image_config Entrypoint)
healthcheck=$(image_config Healthcheck)
user=$(image_config User)
echo "user: $user; exposed: $(image_config ExposedPorts)"
echo "entrypoint: ${entrypoint//$'\n'/ }"
echo "healthcheck: ${healthcheck//$'\n'/ }"
[ -n "$entrypoint" ] || fail "the image has no ENTRYPOINT"
[ -n "$healthcheck" ] || fail "the image has no HEALTHCHECK"
case "$user" in "" | root | 0 | 0:*) fail "the image runs as root (USER=$user)" ;; esac

# ------------------------------------------------------------------ 4. run
step "starting the image's entrypoint with buildah run --isolation chroot"
free_port() {
  "$python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}
[ -n "$grpc_port" ] || grpc_port=$(free_port)
[ -n "$metrics_port" ] || metrics_port=$(free_port)
[ "$grpc_port" != "$metrics_port" ] || metrics_port=$(free_port)
for port in "$grpc_port" "$metrics_port"; do
  if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
    fail "port $port on 127.0.0.1 is in use (set TVQ_SMOKE_GRPC_PORT / TVQ_SMOKE_METRICS_PORT)"
  fi
done
container=$(buildah from --pull=never "$image_id")
mapfile -t command < <(echo "$entrypoint")
command+=("--listen=127.0.0.1:$grpc_port" "--metrics-address=127.0.0.1:$metrics_port")
echo "command: ${command[*]} (as user $user)"
buildah run --isolation chroot "$container" -- "${command[@]}" > "$work/server.log" 2>&1 &
server_pid=$!

# ------------------------------------------------------------- 5. checks
step "host: generating Python stubs from proto/ and the gRPC health protocol"
stubs=$work/stubs
mkdir -p "$stubs/proto/smoke_health" "$stubs/python"
cat > "$stubs/proto/smoke_health/health.proto" << 'EOF'
// The standard gRPC health checking protocol (grpc.health.v1), in a file
// whose Python module does not collide with the grpc package.
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
}
EOF
protoc -I "$repo/proto" -I "$stubs/proto" --python_out="$stubs/python" \
  --grpc_out="$stubs/python" --plugin=protoc-gen-grpc="$(command -v grpc_python_plugin)" \
  tvq/v1/tvq.proto smoke_health/health.proto

step "host: gRPC health check, generation (127.0.0.1:$grpc_port)"
PYTHONPATH=$stubs/python "$python" "$repo/deploy/container-smoke-probe.py" \
  --addr="127.0.0.1:$grpc_port" --wait=180 --server-pid="$server_pid" ||
  fail "gRPC checks failed"

step "inside the image: the HEALTHCHECK command"
mapfile -t health_command < <(echo "${healthcheck//127.0.0.1:50051/127.0.0.1:$grpc_port}")
echo "command: ${health_command[*]}"
probe_container=$(buildah from --pull=never "$image_id")
buildah run --isolation chroot "$probe_container" -- "${health_command[@]}" ||
  fail "the image's HEALTHCHECK command failed"

step "host: scrape http://127.0.0.1:$metrics_port/metrics"
curl -fsS --max-time 10 "http://127.0.0.1:$metrics_port/metrics" > "$work/metrics.txt" ||
  fail "cannot scrape http://127.0.0.1:$metrics_port/metrics"
echo "$(grep -c '^tvq_' "$work/metrics.txt") tvq_ samples, for example:"
grep -E '^tvq_(generated_tokens_total|requests_total\{[^}]*code="OK"|build_info|slots)' "$work/metrics.txt" ||
  fail "the scrape has no tvq_generated_tokens_total / tvq_requests_total samples"
# One series per front end (frontend="grpc"|"http"): the gRPC one counted
# the generation above.
generated=$(awk '/^tvq_generated_tokens_total\{[^}]*frontend="grpc"/ { print $2 }' "$work/metrics.txt")
awk -v n="$generated" 'BEGIN { exit !(n + 0 > 0) }' ||
  fail "tvq_generated_tokens_total{frontend=\"grpc\"} is '$generated' after a generation"
if command -v promtool > /dev/null; then
  promtool check metrics < "$work/metrics.txt" || fail "promtool check metrics rejects the scrape"
  echo "promtool check metrics: OK"
fi

# ------------------------------------------------------------------ 6. stop
step "SIGTERM: the server drains and exits"
# buildah run answers SIGTERM by killing its child; signal tvq-server itself
# (chroot isolation shares the host's PID namespace), found among the
# descendants of the buildah run process.
server=$(ps -eo pid=,ppid=,comm= | awk -v root="$server_pid" '
  { parent[$1] = $2; name[$1] = $3 }
  END {
    for (p in name) {
      if (name[p] != "tvq-server") continue
      q = p
      while ((q in parent) && q != root && q > 1) q = parent[q]
      if (q == root) print p
    }
  }')
[ -n "$server" ] || fail "no tvq-server process under buildah run (pid $server_pid)"
echo "kill -TERM $server (tvq-server)"
kill -TERM "$server"
for _ in $(seq 1 60); do
  kill -0 "$server_pid" 2> /dev/null || break
  sleep 1
done
if kill -0 "$server_pid" 2> /dev/null; then
  fail "the server is still running 60 s after SIGTERM"
fi
wait "$server_pid" && exit_status=0 || exit_status=$?
server_pid=""
echo "server exit status: $exit_status; its log:"
sed 's/^/  | /' "$work/server.log"
[ "$exit_status" -eq 0 ] || fail "the server exited with status $exit_status after SIGTERM"

step "PASS: container smoke test ($((SECONDS - started)) s in all)"
