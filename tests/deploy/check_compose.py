#!/usr/bin/python3
"""Checks deploy/compose.yaml without a Docker engine (`docker compose
config` is not available here): parses it, interpolates ${VAR:-default} the
way Compose does, and checks that the pieces fit together:

- services tvq-server, prometheus and grafana, each with an image;
- tvq-server builds from the repository's Dockerfile, at a stage that
  exists; its flags are tvq-server flags; it publishes the ports the image
  exposes; stop_grace_period exceeds --drain-timeout; the GPU reservation is
  there, commented out for CPU hosts;
- every bind-mounted path exists; named volumes are declared;
- Prometheus gets deploy/prometheus/ and scrapes tvq-server's metrics port;
- Grafana gets the provisioning and dashboards directories where the
  provisioning files point, and its datasource url names the Prometheus
  service.

Usage: check_compose.py REPO_ROOT
"""

import pathlib
import re
import sys

import yaml

from deploy_sources import (CheckFailures, dockerfile_stages, flag_name,
                            parse_duration_seconds, server_flags)

REQUIRED_SERVICES = ("tvq-server", "prometheus", "grafana")


def interpolate(value):
    """${VAR:-default} / ${VAR-default} -> default; ${VAR} -> ''."""
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def split_volume(spec):
    parts = spec.split(":")
    return parts[0], parts[1] if len(parts) > 1 else ""


def container_port(spec):
    return int(str(spec).split(":")[-1].split("/")[0])


def main():
    repo = pathlib.Path(sys.argv[1]).resolve()
    compose_path = repo / "deploy" / "compose.yaml"
    compose_dir = compose_path.parent
    failures = CheckFailures()
    raw = compose_path.read_text()
    compose = interpolate(yaml.safe_load(raw))
    services = compose.get("services", {})
    for name in REQUIRED_SERVICES:
        failures.check(name in services, f"compose.yaml: no service {name}")
    if failures.items:
        return failures.report("compose")
    for name, service in services.items():
        failures.check(service.get("image"), f"compose.yaml: {name}: no image")
        for spec in service.get("volumes", []):
            source, target = split_volume(spec)
            failures.check(target.startswith("/"), f"compose.yaml: {name}: volume {spec!r}"
                           " has no absolute container path")
            if source.startswith((".", "/")):
                failures.check((compose_dir / source).exists(),
                               f"compose.yaml: {name}: bind mount source {source} does not exist")
            else:
                failures.check(source in (compose.get("volumes") or {}),
                               f"compose.yaml: {name}: named volume {source} is not declared")
        for dependency in service.get("depends_on", []):
            failures.check(dependency in services,
                           f"compose.yaml: {name}: depends on unknown service {dependency}")

    # ---- tvq-server
    server = services["tvq-server"]
    build = server.get("build", {})
    context = (compose_dir / build.get("context", ".")).resolve()
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    failures.check(dockerfile.exists() and dockerfile.samefile(repo / "Dockerfile"),
                   f"compose.yaml: tvq-server builds from {dockerfile}, not the repository's"
                   " Dockerfile")
    stages = dockerfile_stages(repo)
    target = build.get("target", "")
    failures.check(target in stages, f"compose.yaml: tvq-server: build target {target!r} is not"
                   f" a Dockerfile stage ({sorted(stages)})")
    failures.check("gpu" in stages, "Dockerfile: no gpu stage")
    flags = server_flags(repo)
    command = server.get("command", [])
    for argument in command:
        failures.check(flag_name(argument) in flags,
                       f"compose.yaml: tvq-server: {argument} is not a tvq-server flag")
    drain = [a.split("=", 1)[1] for a in command if flag_name(a) == "drain-timeout"]
    drain_seconds = parse_duration_seconds(drain[-1] if drain else flags["drain-timeout"])
    grace = parse_duration_seconds(server.get("stop_grace_period", "10s"))
    failures.check(grace > drain_seconds, f"compose.yaml: tvq-server: stop_grace_period"
                   f" {grace:g} s must exceed --drain-timeout {drain_seconds:g} s")
    exposed = set(stages.get(target, {}).get("expose", []))
    published = {container_port(p) for p in server.get("ports", [])}
    failures.check(exposed and exposed <= published, f"compose.yaml: tvq-server publishes"
                   f" {sorted(published)}, the image exposes {sorted(exposed)}")
    failures.check(re.search(r"#\s*deploy:\s*\n(\s*#.*\n)*?\s*#\s*-?\s*driver:\s*nvidia", raw),
                   "compose.yaml: tvq-server: no commented GPU reservation (driver: nvidia)")
    entrypoint = stages.get(target, {}).get("entrypoint", [])
    metrics_address = [a.split("=", 1)[1] for a in entrypoint + command
                       if flag_name(a) == "metrics-address"]
    metrics_port = int(metrics_address[-1].rsplit(":", 1)[1]) if metrics_address else 9464

    # ---- prometheus
    prometheus = services["prometheus"]
    mounts = dict(split_volume(v) for v in prometheus.get("volumes", []))
    config_dir = [s for s, t in mounts.items() if t == "/etc/prometheus"]
    failures.check(config_dir and (compose_dir / config_dir[0]).resolve()
                   == (compose_dir / "prometheus").resolve(),
                   "compose.yaml: prometheus: deploy/prometheus is not mounted at /etc/prometheus")
    failures.check("--config.file=/etc/prometheus/prometheus.yml" in prometheus.get("command", []),
                   "compose.yaml: prometheus: --config.file is not /etc/prometheus/prometheus.yml")
    config = yaml.safe_load((compose_dir / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] if job["job_name"] == "tvq-server"
               for static in job.get("static_configs", []) for t in static["targets"]]
    failures.check(f"tvq-server:{metrics_port}" in targets, f"prometheus.yml: job tvq-server"
                   f" scrapes {targets}, not tvq-server:{metrics_port}")

    # ---- grafana
    grafana = services["grafana"]
    mounts = {t: s for s, t in (split_volume(v) for v in grafana.get("volumes", []))}
    failures.check(mounts.get("/etc/grafana/provisioning") == "./grafana/provisioning",
                   "compose.yaml: grafana: ./grafana/provisioning is not mounted at"
                   " /etc/grafana/provisioning")
    providers = yaml.safe_load(
        (compose_dir / "grafana/provisioning/dashboards/tvq-serve.yml").read_text())["providers"]
    for provider in providers:
        path = provider["options"]["path"]
        failures.check(mounts.get(path) == "./grafana/dashboards",
                       f"compose.yaml: grafana: the dashboards provider reads {path}, where"
                       " ./grafana/dashboards is not mounted")
    home = grafana.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        relative = pathlib.PurePosixPath(home).relative_to("/var/lib/grafana/dashboards")
        failures.check((compose_dir / "grafana/dashboards" / relative).exists(),
                       f"compose.yaml: grafana: home dashboard {home} does not exist")
    sources = yaml.safe_load(
        (compose_dir / "grafana/provisioning/datasources/prometheus.yml").read_text())
    prometheus_ports = {container_port(p) for p in prometheus.get("ports", [])} or {9090}
    for source in sources["datasources"]:
        failures.check(re.fullmatch(r"http://prometheus:(\d+)", source["url"]) and
                       int(source["url"].rsplit(":", 1)[1]) in prometheus_ports,
                       f"grafana datasource {source['name']}: url {source['url']} is not the"
                       " prometheus service")
    return failures.report(f"compose.yaml: {len(services)} services fit together")


if __name__ == "__main__":
    sys.exit(main())
