#!/usr/bin/python3
"""Structure checks of deploy/k8s/ that an offline kubectl cannot make: the
objects refer to each other correctly and agree with the image and the
server.

- kustomization.yaml lists every manifest except the documented
  alternatives (podmonitor.yaml, prometheus-adapter/); gateway/ is an
  overlay of its own (check_gateway_manifests.py);
- Deployment: selector matches the pod labels; GPU requested (limits, equal
  to requests); cpu and memory requests and limits; native gRPC readiness,
  liveness and startup probes on the gRPC port (readiness on
  tvq.v1.TextGeneration); terminationGracePeriodSeconds longer than preStop
  + --drain-timeout; args are tvq-server flags; non-root with the image's
  uid; container ports are the ports the image exposes, plus the HTTP
  API's port when the args turn it on (--http-listen);
- Services: select the pods, target named container ports; one headless;
  one for metrics;
- HPA: scales the Deployment on Pods metrics that prometheus-adapter's rules
  serve and the server exposes;
- ServiceMonitor / PodMonitor: select the metrics Service / the pods, on a
  named port; their job label gives job="tvq-server", which the rules use;
- PrometheusRule: the same groups as deploy/prometheus/rules/.

Usage: check_k8s_manifests.py REPO_ROOT
"""

import pathlib
import re
import sys

import yaml

from deploy_sources import (CheckFailures, dockerfile_stages, flag_name, known_metric,
                            metric_names, parse_duration_seconds, server_flags)

ALTERNATIVES = {"podmonitor.yaml", "prometheus-adapter/config.yaml"}
# Applied on its own (kubectl apply -k deploy/k8s/gateway), checked by
# check_gateway_manifests.py.
SEPARATE_DIRS = ("gateway",)
GRPC_SERVICE = "tvq.v1.TextGeneration"
SHUTDOWN_SECONDS = 5  # server/main.cc: Shutdown deadline after the drain


def quantity(text):
    """'8' -> 8, '500m' -> 0.5, '16Gi' -> 16 * 2**30."""
    text = str(text)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", text)
    if not match or (match.group(2) and match.group(2) not in units):
        raise ValueError(f"not a quantity: {text!r}")
    return float(match.group(1)) * units.get(match.group(2), 1)


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def load(k8s, failures):
    objects = []
    for path in sorted(k8s.rglob("*.yaml")):
        relative = str(path.relative_to(k8s))
        if relative == "kustomization.yaml" or relative.split("/")[0] in SEPARATE_DIRS:
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if not document:
                continue
            where = f"k8s/{relative}: {document.get('kind')}/" \
                    f"{document.get('metadata', {}).get('name')}"
            if failures.check(document.get("apiVersion") and document.get("kind")
                              and document.get("metadata", {}).get("name"),
                              f"{where}: needs apiVersion, kind and metadata.name"):
                objects.append((relative, where, document))
    return objects


def check_deployment(deployment, where, repo, failures):
    spec = deployment["spec"]
    pod = spec["template"]
    labels = pod["metadata"].get("labels", {})
    failures.check(selects(spec["selector"].get("matchLabels"), labels),
                   f"{where}: selector does not match the pod template labels")
    containers = pod["spec"]["containers"]
    container = next((c for c in containers if c["name"] == "tvq-server"), None)
    if not failures.check(container, f"{where}: no container tvq-server"):
        return None
    stages = dockerfile_stages(repo)
    gpu = stages.get("gpu", {})

    # Arguments and ports.
    flags = server_flags(repo)
    args = container.get("args", [])
    for argument in args:
        failures.check(flag_name(argument) in flags,
                       f"{where}: {argument} is not a tvq-server flag")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    http_listen = [a.split("=", 1)[1] for a in args if flag_name(a) == "http-listen"]
    listened = set(gpu.get("expose", []))
    if http_listen and http_listen[-1]:
        listened.add(int(http_listen[-1].rsplit(":", 1)[1]))
        failures.check(ports.get("http") == int(http_listen[-1].rsplit(":", 1)[1]),
                       f"{where}: --http-listen={http_listen[-1]} needs a container port named"
                       " http on that port")
    failures.check(set(ports.values()) == listened,
                   f"{where}: container ports {sorted(ports.values())}, the server listens on"
                   f" {sorted(listened)} (the gpu image's EXPOSE and --http-listen)")
    grpc_port = ports.get("grpc")
    failures.check(grpc_port and ports.get("metrics"),
                   f"{where}: needs container ports named grpc and metrics")
    listen = [a for a in gpu.get("entrypoint", []) + args if flag_name(a) == "listen"]
    failures.check(listen and listen[-1].endswith(f":{grpc_port}"),
                   f"{where}: the grpc port {grpc_port} is not the --listen port ({listen})")

    # Probes: native gRPC health checks.
    for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(probe_name, {})
        failures.check(probe.get("grpc", {}).get("port") == grpc_port,
                       f"{where}: {probe_name} is not a grpc probe on port {grpc_port}")
    failures.check(container.get("readinessProbe", {}).get("grpc", {}).get("service")
                   == GRPC_SERVICE, f"{where}: readinessProbe should ask about {GRPC_SERVICE}")

    # Resources.
    resources = container.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    for resource in ("cpu", "memory"):
        if failures.check(resource in requests and resource in limits,
                          f"{where}: needs {resource} requests and limits"):
            failures.check(quantity(requests[resource]) <= quantity(limits[resource]),
                           f"{where}: {resource} request exceeds its limit")
    failures.check(int(limits.get("nvidia.com/gpu", 0)) >= 1,
                   f"{where}: no nvidia.com/gpu limit")
    failures.check(requests.get("nvidia.com/gpu", limits.get("nvidia.com/gpu"))
                   == limits.get("nvidia.com/gpu"),
                   f"{where}: nvidia.com/gpu requests must equal limits")

    # Graceful termination.
    drain = [a.split("=", 1)[1] for a in args if flag_name(a) == "drain-timeout"]
    drain_seconds = parse_duration_seconds(drain[-1] if drain else flags["drain-timeout"])
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    command = pre_stop.get("exec", {}).get("command", [])
    pre_stop_seconds = float(command[1]) if command[:1] == ["sleep"] else \
        float(pre_stop.get("sleep", {}).get("seconds", 0))
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    needed = pre_stop_seconds + drain_seconds + SHUTDOWN_SECONDS
    failures.check(grace > needed, f"{where}: terminationGracePeriodSeconds {grace} must exceed"
                   f" preStop {pre_stop_seconds:g} + drain {drain_seconds:g} + shutdown"
                   f" {SHUTDOWN_SECONDS} s")

    # Security: non-root, the image's uid.
    security = dict(pod["spec"].get("securityContext", {}))
    security.update(container.get("securityContext", {}))
    failures.check(security.get("runAsNonRoot") is True, f"{where}: runAsNonRoot is not set")
    image_uid = gpu.get("user", "").split(":")[0]
    failures.check(str(security.get("runAsUser")) == image_uid,
                   f"{where}: runAsUser {security.get('runAsUser')} is not the image's"
                   f" USER {image_uid}")
    return {"labels": labels, "ports": ports}


def main():
    repo = pathlib.Path(sys.argv[1]).resolve()
    k8s = repo / "deploy" / "k8s"
    failures = CheckFailures()
    objects = load(k8s, failures)
    by_kind = {}
    for relative, where, document in objects:
        by_kind.setdefault(document["kind"], []).append((relative, where, document))

    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    files = {relative for relative, _, _ in objects}
    failures.check(listed == files - ALTERNATIVES, f"k8s/kustomization.yaml: resources"
                   f" {sorted(listed)}, expected {sorted(files - ALTERNATIVES)}")

    deployments = by_kind.get("Deployment", [])
    if not failures.check(len(deployments) == 1, "k8s: expected one Deployment"):
        return failures.report("k8s")
    _, deployment_where, deployment = deployments[0]
    pod = check_deployment(deployment, deployment_where, repo, failures)
    if pod is None:
        return failures.report("k8s")

    # Services.
    services = {d["metadata"]["name"]: (where, d) for _, where, d in by_kind.get("Service", [])}
    for name, (where, service) in services.items():
        failures.check(selects(service["spec"].get("selector"), pod["labels"]),
                       f"{where}: selector does not select the tvq-server pods")
        for port in service["spec"]["ports"]:
            failures.check(port.get("targetPort") in pod["ports"],
                           f"{where}: targetPort {port.get('targetPort')!r} is not a named"
                           f" container port ({sorted(pod['ports'])})")
    headless = [n for n, (_, s) in services.items() if s["spec"].get("clusterIP") == "None"]
    failures.check(headless, "k8s: no headless Service (clusterIP: None) for client-side"
                   " load balancing")
    metrics_services = [(n, s) for n, (_, s) in services.items()
                        if any(p.get("targetPort") == "metrics" for p in s["spec"]["ports"])]
    failures.check(len(metrics_services) == 1, "k8s: expected one metrics Service")

    # ServiceMonitor / PodMonitor.
    rule_jobs = set()
    for path in (repo / "deploy/prometheus/rules").glob("*.yml"):
        rule_jobs.update(re.findall(r'job="([^"]+)"', path.read_text()))
    for _, where, monitor in by_kind.get("ServiceMonitor", []):
        selector = monitor["spec"]["selector"].get("matchLabels", {})
        chosen = [(n, s) for n, (_, s) in services.items()
                  if selects(selector, s["metadata"].get("labels", {}))]
        if failures.check([n for n, _ in chosen] == [n for n, _ in metrics_services],
                          f"{where}: selects Services {[n for n, _ in chosen]}, expected only"
                          " the metrics Service"):
            service = chosen[0][1]
            port_names = {p["name"] for p in service["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                failures.check(endpoint.get("port") in port_names,
                               f"{where}: endpoint port {endpoint.get('port')!r} is not a port"
                               f" of {chosen[0][0]}")
            job = service["metadata"].get("labels", {}).get(monitor["spec"].get("jobLabel"))
            failures.check(job and job in rule_jobs, f"{where}: job label would be {job!r};"
                           f" the rules select job {sorted(rule_jobs)}")
    for _, where, monitor in by_kind.get("PodMonitor", []):
        failures.check(selects(monitor["spec"]["selector"].get("matchLabels"), pod["labels"]),
                       f"{where}: does not select the tvq-server pods")
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            failures.check(endpoint.get("port") == "metrics",
                           f"{where}: endpoint port is not the metrics container port")
        job = pod["labels"].get(monitor["spec"].get("jobLabel"))
        failures.check(job in rule_jobs, f"{where}: job label would be {job!r}")
    failures.check(by_kind.get("ServiceMonitor") or by_kind.get("PodMonitor"),
                   "k8s: no ServiceMonitor or PodMonitor")

    # HPA and prometheus-adapter.
    known = metric_names(repo)
    failures.check(known, "no metric names found in docs/metrics.md or server/ sources")
    served = set()
    for _, _, config_map in by_kind.get("ConfigMap", []):
        if "config.yaml" in config_map.get("data", {}):
            for rule in yaml.safe_load(config_map["data"]["config.yaml"]).get("rules", []):
                served.add(rule.get("name", {}).get("as"))
                series = re.match(r"\w+", rule["seriesQuery"]).group(0)
                failures.check(known_metric(series, known),
                               f"prometheus-adapter: {series} is not a server metric")
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    failures.check(hpas, "k8s: no HorizontalPodAutoscaler")
    for _, where, hpa in hpas:
        spec = hpa["spec"]
        target = spec["scaleTargetRef"]
        failures.check(target.get("kind") == "Deployment"
                       and target.get("name") == deployment["metadata"]["name"],
                       f"{where}: does not scale Deployment {deployment['metadata']['name']}")
        failures.check(1 <= spec.get("minReplicas", 1) <= spec["maxReplicas"],
                       f"{where}: needs 1 <= minReplicas <= maxReplicas")
        for metric in spec.get("metrics", []):
            failures.check(metric["type"] == "Pods", f"{where}: use Pods (custom) metrics")
            if metric["type"] != "Pods":
                continue
            name = metric["pods"]["metric"]["name"]
            failures.check(name in served, f"{where}: {name} is not served by the"
                           f" prometheus-adapter rules ({sorted(served)})")
            failures.check(known_metric(name, known), f"{where}: {name} is not a server metric")

    # PrometheusRule = the rule files.
    groups = []
    for path in sorted((repo / "deploy/prometheus/rules").glob("*.rules.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    crd_groups = [g for _, _, r in by_kind.get("PrometheusRule", []) for g in r["spec"]["groups"]]
    failures.check(sorted(crd_groups, key=lambda g: g["name"])
                   == sorted(groups, key=lambda g: g["name"]),
                   "k8s/prometheusrule.yaml: its groups differ from deploy/prometheus/rules/"
                   " (copy them over)")
    return failures.report(f"{len(objects)} Kubernetes objects fit together")


if __name__ == "__main__":
    sys.exit(main())
