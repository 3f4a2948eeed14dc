#!/usr/bin/python3
"""Checks the Dockerfile and .dockerignore without building (the container
smoke test, deploy/container-smoke.sh, builds and runs the image):

- runtime stages `gpu` (NVIDIA CUDA, Ubuntu 24.04) and `cpu` (Debian
  bookworm-slim), `cpu` last so that it is the default;
- each runtime stage: a numeric non-root USER, EXPOSE 50051 9464, a
  HEALTHCHECK through `tvq-client health`, an ENTRYPOINT that runs tvq-server
  with flags tvq-server has, listening on every interface, with the model
  under /models;
- .dockerignore keeps what the build copies (sources, deploy/docker/, the
  default model) and drops build trees, .git and the tests.

Usage: check_dockerfile.py REPO_ROOT
"""

import pathlib
import re
import sys

from deploy_sources import CheckFailures, dockerfile_stages, flag_name, server_flags

KEPT = ["CMakeLists.txt", "server/main.cc", "proto/tvq/v1/tvq.proto", "client/CMakeLists.txt",
        "kernels/CMakeLists.txt", "deploy/docker/build-and-stage.sh",
        "deploy/docker/install-runtime.sh", "deploy/docker/check-runtime.sh",
        "deploy/docker/build-packages.txt", "models/demo/config.json",
        "models/demo/model.safetensors"]
DROPPED = ["build/release/server/tvq-server", ".git/HEAD", "tests/CMakeLists.txt",
           "deploy/k8s/deployment.yaml", "docs/deploy.md", "client/__pycache__/x.pyc",
           "Makefile", "scripts/install-deps.sh"]


def ignored(path, patterns):
    """Docker's rule: the last pattern that matches the path or one of its
    parent directories decides; '!' re-includes."""
    result = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            result = not negate
    return result


def main():
    repo = pathlib.Path(sys.argv[1]).resolve()
    failures = CheckFailures()
    stages = dockerfile_stages(repo)
    names = list(stages)
    failures.check(names and names[-1] == "cpu",
                   f"Dockerfile: the last (default) stage must be cpu, stages: {names}")
    text = (repo / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S*)$", text, re.M))
    flags = server_flags(repo)
    for stage, base in (("gpu", r"nvidia/cuda:.*ubuntu24\.04"),
                        ("cpu", r"(docker\.io/library/)?debian:bookworm-slim")):
        info = stages.get(stage)
        if not failures.check(info, f"Dockerfile: no stage {stage}"):
            continue
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), info["from"])
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), image)
        failures.check(re.fullmatch(r"(docker\.io/)?" + base, image),
                       f"Dockerfile: stage {stage} builds FROM {image}")
        user = info["user"].split(":")[0]
        failures.check(user.isdigit() and int(user) > 0,
                       f"Dockerfile: stage {stage}: USER {info['user']!r} is not a numeric"
                       " non-root uid")
        failures.check(sorted(info["expose"]) == [9464, 50051],
                       f"Dockerfile: stage {stage}: EXPOSE {info['expose']}, expected 50051 9464")
        failures.check(re.search(r'CMD \["tvq-client",.*"health"\]', info["healthcheck"]),
                       f"Dockerfile: stage {stage}: HEALTHCHECK is not tvq-client health")
        entrypoint = info["entrypoint"]
        if not failures.check(entrypoint[:1] == ["tvq-server"],
                              f"Dockerfile: stage {stage}: ENTRYPOINT is not tvq-server"):
            continue
        for argument in entrypoint[1:]:
            failures.check(flag_name(argument) in flags,
                           f"Dockerfile: stage {stage}: {argument} is not a tvq-server flag")
        values = {flag_name(a): a.split("=", 1)[-1] for a in entrypoint[1:]}
        failures.check(values.get("model", "").startswith("/models/"),
                       f"Dockerfile: stage {stage}: --model is not under /models")
        for flag, port in (("listen", 50051), ("metrics-address", 9464)):
            failures.check(values.get(flag) == f"0.0.0.0:{port}",
                           f"Dockerfile: stage {stage}: --{flag} should be 0.0.0.0:{port}")
    failures.check("COPY models/demo/ /models/default/" in text,
                   "Dockerfile: the default model is not copied to /models/default")

    patterns = [line.strip() for line in (repo / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in KEPT:
        failures.check(not ignored(path, patterns), f".dockerignore: excludes {path},"
                       " which the image build needs")
    for path in DROPPED:
        failures.check(ignored(path, patterns), f".dockerignore: does not exclude {path}")
    return failures.report(f"Dockerfile stages {names}, .dockerignore")


if __name__ == "__main__":
    sys.exit(main())
