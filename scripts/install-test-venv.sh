#!/usr/bin/env bash
# Creates the project-local virtual environment the HTTP front end's tests
# run in (.venv/, git-ignored) and installs the official `openai` Python SDK
# from PyPI into it. The environment sees Debian's site packages too
# (python3-grpcio, python3-protobuf, python3-numpy from install-deps.sh), so
# the tests can compare with the gRPC client. Idempotent: does nothing when
# the SDK is already there. Needs python3-venv and network access to PyPI.
# Called by `make test` and by ctest (fixture http_test_venv).
set -euo pipefail
cd "$(dirname "$0")/.."

# The SDK version the tests are written against.
OPENAI_VERSION="${TVQ_OPENAI_VERSION:-3.57.0}"
venv=.venv
# Debian's interpreter (its site packages hold grpcio and numpy), not one a
# version manager put first on PATH.
python=/usr/bin/python3
[ -x "$python" ] || python=python3

if [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  echo "install-test-venv: $venv has openai $OPENAI_VERSION"
  exit 0
fi

# Several ctest jobs may call this at once: one installs, the others wait.
exec 9>"$venv.lock"
flock 9
if [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  exit 0
fi
rm -rf "$venv"
"$python" -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "openai==$OPENAI_VERSION"
echo "install-test-venv: installed openai $OPENAI_VERSION into $venv"
