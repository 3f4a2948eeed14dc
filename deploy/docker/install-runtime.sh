#!/bin/sh
# Runs in the Dockerfile's runtime stages: installs the packages the build
# stage listed (the owners of the shared libraries tvq-server, tvq-client and
# the SentencePiece module load) and creates the unprivileged user the server
# runs as.
#
# Usage: install-runtime.sh PACKAGE_LIST UID
set -eu

packages=$1
uid=$2

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2046 # one package name per line
apt-get install -y -qq --no-install-recommends $(cat "$packages")
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

# A system user without a login shell or home; the numeric id is what
# Kubernetes' runAsNonRoot checks.
groupadd --system --gid "$uid" tvq
useradd --system --uid "$uid" --gid "$uid" --no-create-home \
  --home-dir /nonexistent --shell /usr/sbin/nologin tvq
