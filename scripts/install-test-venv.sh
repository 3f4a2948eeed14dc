#!/usr/bin/env bash
# Creates the project-local virtual environment the HTTP front end's tests
# and the gateway manifest check run in (.venv/, git-ignored) and installs
# from PyPI into it: the official `openai` Python SDK, and `jsonschema`
# (tests/deploy/check_gateway_manifests.py validates the custom resources
# against the vendored CRD schemas). The environment sees Debian's site packages too
# (python3-grpcio, python3-protobuf, python3-numpy from install-deps.sh), so
# the tests can compare with the gRPC client. Idempotent: does nothing when
# the SDK is already there. Needs python3-venv and network access to PyPI.
# Called by `make test` and by ctest (fixture http_test_venv).
set -euo pipefail
cd "$(dirname "$0")/.."

# The versions the tests are written against.
OPENAI_VERSION="${TVQ_OPENAI_VERSION:-3.57.0}"
JSONSCHEMA_VERSION="${TVQ_JSONSCHEMA_VERSION:-4.23.0}"
venv=.venv
# Exits 0 when both packages are there in these versions.
installed="import importlib.metadata as m, sys; sys.exit(m.version('openai') != '$OPENAI_VERSION' or m.version('jsonschema') != '$JSONSCHEMA_VERSION')"
# Debian's interpreter (its site packages hold grpcio and numpy), not one a
# version manager put first on PATH.
python=/usr/bin/python3
[ -x "$python" ] || python=python3

if [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c "$installed" 2>/dev/null; then
  echo "install-test-venv: $venv has openai $OPENAI_VERSION, jsonschema $JSONSCHEMA_VERSION"
  exit 0
fi

# Several ctest jobs may call this at once: one installs, the others wait.
exec 9>"$venv.lock"
flock 9
if [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c "$installed" 2>/dev/null; then
  exit 0
fi
[ -x "$venv/bin/python" ] || "$python" -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "openai==$OPENAI_VERSION" "jsonschema==$JSONSCHEMA_VERSION"
echo "install-test-venv: installed openai $OPENAI_VERSION, jsonschema $JSONSCHEMA_VERSION into $venv"
