#!/usr/bin/env python3
"""Offline checks of deploy/k8s/gateway/ (docs/deploy.md, "Behind an
inference gateway"):

- every custom resource (InferencePool, HTTPRoute, Gateway) validates
  against the OpenAPI v3 schema of its CRD, vendored under
  tests/data/gateway-api/ (jsonschema; unknown fields are errors, as with
  the API server's strict field validation). The CRDs' CEL rules that matter
  here are evaluated by hand (unique target ports; a port for a Service
  endpoint picker);
- the objects fit together and fit tvq-server: the pools select the pods of
  deploy/k8s/deployment.yaml on its container ports (HTTP/1.1 on the
  --http-listen port, h2c on the gRPC port); each pool's picker Service
  selects a picker Deployment bound to that pool (--pool-name) whose config
  file is in the mounted ConfigMap; the pods carry llm-d.ai/engine-type and
  the picker config has an engineConfigs entry of that name whose metric
  names the server exposes; the picker scrapes the metrics port; the
  session-affinity sources are the session headers tvq-server reads
  (server/service/routing/session_key.h), in its order, and bindings outlive
  an idle session (--session-ttl); every plugin type is one the picker
  registers (tests/data/gateway-api/epp-plugins.tsv), Alpha ones only with
  --allow-experimental-plugins, every pluginRef resolves; the route's
  parent is the Gateway and its backends the pools, tvq.v1's path going to
  the gRPC pool; the pickers' grace period covers the server pods';
- a self-test: a few broken copies of the manifests (an unknown field, a
  bad enum value, a duplicate target port, a plugin type that does not
  exist, a metric the server does not have) must each be caught, so the
  checks above are known to bite.

Usage: check_gateway_manifests.py REPO_ROOT   (needs jsonschema: .venv)
"""

import copy
import json
import pathlib
import re
import sys

import jsonschema
import yaml

from deploy_sources import (CheckFailures, flag_name, metric_names, parse_duration_seconds,
                            server_flags)

SCHEMAS = {  # (apiVersion, kind) -> vendored schema file
    ("inference.networking.k8s.io/v1", "InferencePool"): "inferencepools.v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproutes.v1.json",
    ("gateway.networking.k8s.io/v1", "Gateway"): "gateways.v1.json",
}
ENGINE_LABEL = "llm-d.ai/engine-type"
EPP_CONFIG_KIND = ("llm-d.ai/v1alpha1", "EndpointPickerConfig")
EPP_CONFIG_KEYS = {"apiVersion", "kind", "featureGates", "plugins", "schedulingProfiles",
                   "dataLayer", "flowControl", "requestHandler", "saturationDetector"}
# core-metrics-extractor engineConfigs fields (llm-d-router
# pkg/epp/framework/plugins/datalayer/extractor/metrics/factories.go).
ENGINE_CONFIG_KEYS = {"name", "queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec",
                      "loraSpec", "cacheInfoSpec", "cacheBlockSizeLabelName",
                      "cacheNumBlocksLabelName", "cacheBlockSizeSpec", "cacheNumBlocksSpec",
                      "customMetrics"}
SPEC_KEYS = ("queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec", "cacheInfoSpec")


# ----------------------------------------------------------------- loading
def load_documents(directory):
    objects = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                objects.append((path.name, document))
    return objects


def strict(schema):
    """The schema with additionalProperties: false on every object that
    lists its properties and keeps no unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def load_schemas(data_dir):
    validators = {}
    for key, name in SCHEMAS.items():
        vendored = json.loads((data_dir / name).read_text())
        schema = strict(vendored["openAPIV3Schema"])
        validators[key] = jsonschema.Draft7Validator(schema)
    return validators


def load_plugin_types(data_dir):
    types = {}
    for line in (data_dir / "epp-plugins.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            fields = line.split("\t")
            types[fields[0]] = {"stability": fields[1],
                                "deprecated": len(fields) > 2 and fields[2] == "deprecated"}
    return types


def session_key_headers(repo):
    """kSessionKeyHeaders of server/service/routing/session_key.h, in order."""
    text = (repo / "server/service/routing/session_key.h").read_text()
    block = re.search(r"kSessionKeyHeaders\s*=\s*\{(.*?)\};", text, re.S)
    return re.findall(r'"([^"]+)"', block.group(1)) if block else []


def base_deployment(repo):
    for document in yaml.safe_load_all((repo / "deploy/k8s/deployment.yaml").read_text()):
        if document and document.get("kind") == "Deployment":
            return document
    return None


def args_of(container):
    """{flag name: last value} of a container's args (--name=value)."""
    values = {}
    for argument in container.get("args", []):
        if "=" in argument:
            values[flag_name(argument)] = argument.split("=", 1)[1]
    return values


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------ checks
def check_schemas(objects, validators, failures):
    for name, document in objects:
        key = (document.get("apiVersion"), document.get("kind"))
        where = f"gateway/{name}: {key[1]}/{document.get('metadata', {}).get('name')}"
        if key[1] in {"InferencePool", "HTTPRoute", "GRPCRoute", "Gateway"} \
                and key not in validators:
            failures.check(False, f"{where}: apiVersion {key[0]} has no vendored schema"
                           f" (known: {sorted(validators)})")
            continue
        if key not in validators:
            continue
        for error in sorted(validators[key].iter_errors(document), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in error.absolute_path) or "(root)"
            failures.check(False, f"{where}: {path}: {error.message}")


def check_pools(pools, pod, services, deployments, config_maps, failures, context):
    for name, pool in pools.items():
        where = f"InferencePool/{name}"
        spec = pool.get("spec", {})
        failures.check(selects(spec.get("selector", {}).get("matchLabels"), pod["labels"]),
                       f"{where}: selector does not select the tvq-server pods")
        numbers = [p.get("number") for p in spec.get("targetPorts", [])]
        failures.check(len(numbers) == len(set(numbers)),
                       f"{where}: targetPorts {numbers}: port number must be unique")
        protocol = spec.get("appProtocol", "http")
        wanted = pod["ports"].get("grpc") if protocol == "kubernetes.io/h2c" \
            else pod["ports"].get("http")
        failures.check(numbers == [wanted], f"{where}: appProtocol {protocol} needs targetPorts"
                       f" [{wanted}] (the tvq-server container port of that protocol), got"
                       f" {numbers}")
        context.setdefault("pool_protocol", {})[name] = protocol
        picker = spec.get("endpointPickerRef", {})
        if picker.get("kind", "Service") == "Service":
            failures.check("port" in picker,
                           f"{where}: endpointPickerRef: port is required for a Service")
        service = services.get(picker.get("name"))
        if not failures.check(service, f"{where}: endpointPickerRef names no Service"
                              f" {picker.get('name')!r} of deploy/k8s/gateway"):
            continue
        port = next((p for p in service["spec"]["ports"]
                     if p.get("port") == picker.get("port", {}).get("number")), None)
        if not failures.check(port, f"{where}: Service {picker.get('name')} has no port"
                              f" {picker.get('port', {}).get('number')}"):
            continue
        failures.check(port.get("appProtocol") == "kubernetes.io/h2c",
                       f"{where}: the picker's Service port speaks gRPC (ext_proc): set"
                       " appProtocol: kubernetes.io/h2c")
        chosen = [(n, d) for n, d in deployments.items()
                  if selects(service["spec"].get("selector"),
                             d["spec"]["template"]["metadata"].get("labels", {}))]
        if not failures.check(len(chosen) == 1, f"{where}: Service {picker.get('name')}"
                              f" selects {len(chosen)} Deployments, expected one picker"):
            continue
        check_picker(name, pool, chosen[0][0], chosen[0][1], port, pod, config_maps, failures,
                     context)


def check_picker(pool_name, pool, name, deployment, service_port, pod, config_maps, failures,
                 context):
    where = f"Deployment/{name}"
    pod_spec = deployment["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    args = args_of(container)
    failures.check(args.get("pool-name") == pool_name,
                   f"{where}: --pool-name is {args.get('pool-name')!r}, the pool is {pool_name}")
    failures.check(args.get("pool-group") == "inference.networking.k8s.io",
                   f"{where}: --pool-group should be inference.networking.k8s.io (the v1 API)")
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
    target = service_port.get("targetPort")
    target_number = ports.get(target, target)
    failures.check(str(target_number) == args.get("grpc-port", "9002"),
                   f"{where}: the Service sends ext_proc to {target_number}, the picker listens"
                   f" on --grpc-port {args.get('grpc-port', '9002')}")
    failures.check(pod_spec.get("terminationGracePeriodSeconds", 30) >= pod["grace"],
                   f"{where}: terminationGracePeriodSeconds should be at least the tvq-server"
                   f" pods' ({pod['grace']} s): the picker keeps routing their drain")
    # The config file, from the mounted ConfigMap.
    config_file = args.get("config-file", "")
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    text = None
    for volume_name, mount_path in mounts.items():
        config_map = volumes.get(volume_name, {}).get("configMap", {}).get("name")
        if config_map and config_file.startswith(mount_path.rstrip("/") + "/"):
            key = config_file[len(mount_path.rstrip("/")) + 1:]
            text = config_maps.get(config_map, {}).get("data", {}).get(key)
    if not failures.check(text, f"{where}: --config-file {config_file!r} is not a key of a"
                          " mounted ConfigMap of deploy/k8s/gateway"):
        return
    check_picker_config(f"{where} {config_file}", yaml.safe_load(text), args, pool, pod,
                        failures, context)


def check_picker_config(where, config, args, pool, pod, failures, context):
    failures.check((config.get("apiVersion"), config.get("kind")) == EPP_CONFIG_KIND,
                   f"{where}: expected {EPP_CONFIG_KIND[0]} {EPP_CONFIG_KIND[1]}")
    unknown = set(config) - EPP_CONFIG_KEYS
    failures.check(not unknown, f"{where}: unknown fields {sorted(unknown)}")
    types = context["plugin_types"]
    plugins = {}
    for plugin in config.get("plugins", []):
        kind = plugin.get("type")
        plugin_name = plugin.get("name", kind)
        failures.check(plugin_name not in plugins, f"{where}: plugin name {plugin_name} twice")
        plugins[plugin_name] = plugin
        known = types.get(kind)
        if not failures.check(known, f"{where}: plugin type {kind!r} is not one the picker"
                              " registers (tests/data/gateway-api/epp-plugins.tsv)"):
            continue
        failures.check(not known["deprecated"], f"{where}: plugin type {kind} is deprecated")
        if known["stability"] == "Alpha":
            failures.check(args.get("allow-experimental-plugins") == "true",
                           f"{where}: {kind} is an Alpha plugin: the picker needs"
                           " --allow-experimental-plugins=true")
    refs = [p.get("pluginRef") for profile in config.get("schedulingProfiles", [])
            for p in profile.get("plugins", [])]
    refs += [p.get("pluginRef") for p in config.get("requestHandler", {}).get("parsers", [])]
    for source in (config.get("dataLayer") or {}).get("sources", []):
        refs.append(source.get("pluginRef"))
        refs += [e.get("pluginRef") for e in source.get("extractors", [])]
    for ref in refs:
        failures.check(ref in plugins, f"{where}: pluginRef {ref!r} names no plugin")
    failures.check(config.get("schedulingProfiles"), f"{where}: no schedulingProfiles")
    by_type = {}
    for plugin in plugins.values():
        by_type.setdefault(plugin.get("type"), []).append(plugin.get("parameters") or {})

    # Metrics: the tvq entry, the pods' label, names the server has, the port.
    engine = pod["labels"].get(ENGINE_LABEL)
    extractors = by_type.get("core-metrics-extractor", [])
    if failures.check(extractors, f"{where}: no core-metrics-extractor"):
        entries = [e for e in extractors[0].get("engineConfigs", []) if e.get("name") == engine]
        if failures.check(entries, f"{where}: no engineConfigs entry named {engine!r} (the"
                          f" pods' {ENGINE_LABEL} label)"):
            entry = entries[0]
            unknown = set(entry) - ENGINE_CONFIG_KEYS
            failures.check(not unknown, f"{where}: engineConfigs {engine}: unknown fields"
                           f" {sorted(unknown)}")
            specs = [(key, entry.get(key, "")) for key in SPEC_KEYS]
            specs += [(f"customMetrics {m.get('attributeKey')}", m.get("metricSpec", ""))
                      for m in entry.get("customMetrics", [])]
            for key, spec in specs:
                metric = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", spec)
                failures.check(metric and metric.group(0) in context["metrics"],
                               f"{where}: engineConfigs {engine}: {key} {spec!r} is not a"
                               " metric tvq-server exposes")
            for key, label in (("cacheBlockSizeLabelName", "block_size"),
                               ("cacheNumBlocksLabelName", "num_gpu_blocks")):
                failures.check(entry.get(key, label) in context["cache_info_labels"],
                               f"{where}: {key} {entry.get(key)!r} is not a label of"
                               f" tvq_cache_config_info ({sorted(context['cache_info_labels'])})")
    sources = by_type.get("metrics-data-source", [{}])
    failures.check(sources[0].get("port") == pod["ports"].get("metrics"),
                   f"{where}: metrics-data-source must scrape port {pod['ports'].get('metrics')}"
                   f" (tvq-server's /metrics listener), not {sources[0].get('port')}")
    protocol = pool["spec"].get("appProtocol", "http")
    if "models-data-source" in by_type:
        failures.check(protocol == "http", f"{where}: models-data-source polls /v1/models on"
                       " the pool's port: only on the HTTP pool")

    # Session affinity: tvq-server's headers, bindings that outlive a session.
    filters = by_type.get("session-affinity-filter", [])
    if failures.check(filters, f"{where}: no session-affinity-filter"):
        parameters = filters[0]
        failures.check(parameters.get("strategy") == "session_id",
                       f"{where}: session-affinity-filter: strategy should be session_id")
        session = parameters.get("sessionIdConfig", {})
        headers = [s.get("header") for s in session.get("sources", [])]
        failures.check(headers == context["session_headers"],
                       f"{where}: session sources {headers}, tvq-server reads"
                       f" {context['session_headers']} (server/service/routing/session_key.h)")
        ttl = session.get("evictionTtlSeconds", 300)
        failures.check(ttl >= pod["session_ttl"],
                       f"{where}: evictionTtlSeconds {ttl} is shorter than the server's"
                       f" --session-ttl ({pod['session_ttl']:g} s): an idle session would lose"
                       " its replica before it expires")


def check_routes(routes, gateways, pools, failures, context):
    failures.check(routes, "gateway: no HTTPRoute")
    for name, route in routes.items():
        where = f"HTTPRoute/{name}"
        for parent in route["spec"].get("parentRefs", []):
            failures.check(parent.get("kind", "Gateway") == "Gateway"
                           and parent.get("name") in gateways,
                           f"{where}: parentRef {parent.get('name')!r} is not a Gateway of"
                           " deploy/k8s/gateway")
        for rule in route["spec"].get("rules", []):
            prefixes = [m.get("path", {}).get("value") for m in rule.get("matches", [])]
            for backend in rule.get("backendRefs", []):
                if not failures.check(backend.get("kind") == "InferencePool"
                                      and backend.get("group") == "inference.networking.k8s.io"
                                      and backend.get("name") in pools,
                                      f"{where}: backend {backend.get('name')!r} is not an"
                                      " InferencePool of deploy/k8s/gateway"):
                    continue
                protocol = context["pool_protocol"].get(backend["name"])
                grpc_rule = f"/{context['grpc_service']}/" in prefixes
                failures.check(grpc_rule == (protocol == "kubernetes.io/h2c"),
                               f"{where}: paths {prefixes} go to {backend['name']}"
                               f" ({protocol}); /{context['grpc_service']}/ must go to the h2c"
                               " pool and only there")


def tvq_pod(repo, failures):
    deployment = base_deployment(repo)
    if not failures.check(deployment, "deploy/k8s/deployment.yaml: no Deployment"):
        return None
    pod = deployment["spec"]["template"]
    labels = pod["metadata"].get("labels", {})
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "tvq-server")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    args = args_of(container)
    flags = server_flags(repo)
    failures.check(labels.get(ENGINE_LABEL), f"deploy/k8s/deployment.yaml: pods need the label"
                   f" {ENGINE_LABEL} (the picker's engineConfigs entry)")
    failures.check("http-listen" in args and args["http-listen"].endswith(
        f":{ports.get('http')}"), "deploy/k8s/deployment.yaml: --http-listen must listen on the"
        f" container port named http ({ports.get('http')})")
    for document in yaml.safe_load_all((repo / "deploy/k8s/services.yaml").read_text()):
        for port in (document or {}).get("spec", {}).get("ports", []):
            if port.get("targetPort") == "grpc":
                failures.check(port.get("appProtocol") == "kubernetes.io/h2c",
                               f"deploy/k8s/services.yaml: Service"
                               f" {document['metadata']['name']}: the gRPC port needs"
                               " appProtocol: kubernetes.io/h2c")
    ttl = args.get("session-ttl", "1h")
    if ttl == "1h" and "session-ttl" in flags:
        match = re.fullmatch(r"absl::(Hours|Minutes|Seconds)\((\d+)\)", flags["session-ttl"])
        if match:
            ttl = f"{match.group(2)}{match.group(1)[0].lower()}"
    return {"labels": labels, "ports": ports,
            "grace": pod["spec"].get("terminationGracePeriodSeconds", 30),
            "session_ttl": parse_duration_seconds(ttl)}


def run_checks(repo, objects, validators, plugin_types):
    failures = CheckFailures()
    context = {
        "plugin_types": plugin_types,
        "metrics": metric_names(repo),
        "session_headers": session_key_headers(repo),
        "cache_info_labels": set(re.findall(
            r'\{"(\w+)",', (repo / "server/metrics/session_collector.cc").read_text()
            .split("tvq_cache_config_info", 1)[-1])),
        "grpc_service": "tvq.v1.TextGeneration",
    }
    failures.check(context["session_headers"], "server/service/routing/session_key.h: no"
                   " kSessionKeyHeaders")
    check_schemas(objects, validators, failures)
    pod = tvq_pod(repo, failures)
    if pod is None:
        return failures
    by_kind = {}
    for _, document in objects:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    pools = by_kind.get("InferencePool", {})
    protocols = sorted(p["spec"].get("appProtocol", "http") for p in pools.values())
    failures.check(protocols == ["http", "kubernetes.io/h2c"],
                   f"gateway: expected one HTTP and one h2c InferencePool, got {protocols}")
    check_pools(pools, pod, by_kind.get("Service", {}), by_kind.get("Deployment", {}),
                by_kind.get("ConfigMap", {}), failures, context)
    check_routes(by_kind.get("HTTPRoute", {}), by_kind.get("Gateway", {}), pools, failures,
                 context)
    return failures


# --------------------------------------------------------------- self-test
def broken_copies(objects):
    """(what, objects) pairs, each with one mistake the checks must catch."""
    def first(kind):
        for index, (_, document) in enumerate(objects):
            if document["kind"] == kind:
                return index
        raise KeyError(kind)

    def mutate(kind, change):
        copied = copy.deepcopy(objects)
        change(copied[first(kind)][1])
        return copied

    def config_text(change):
        def apply(config_map):
            key = sorted(config_map["data"])[0]
            config = yaml.safe_load(config_map["data"][key])
            change(config)
            config_map["data"][key] = yaml.safe_dump(config)
        return apply

    return [
        ("an unknown field in an InferencePool",
         mutate("InferencePool", lambda d: d["spec"].update(targetPort=8000))),
        ("an appProtocol the InferencePool enum lacks",
         mutate("InferencePool", lambda d: d["spec"].update(appProtocol="grpc"))),
        ("a duplicate target port",
         mutate("InferencePool", lambda d: d["spec"]["targetPorts"].append(
             dict(d["spec"]["targetPorts"][0])))),
        ("an HTTPRoute path type the schema lacks",
         mutate("HTTPRoute", lambda d: d["spec"]["rules"][0]["matches"][0]["path"].update(
             type="Glob"))),
        ("a plugin type the picker does not register",
         mutate("ConfigMap", config_text(lambda c: c["plugins"].append(
             {"type": "queue-scorer-typo"})))),
        ("a metric tvq-server does not expose",
         mutate("ConfigMap", config_text(lambda c: next(
             p for p in c["plugins"] if p["type"] == "core-metrics-extractor")[
                 "parameters"]["engineConfigs"][0].update(kvUsageSpec="vllm:kv_cache_usage_perc")))),
    ]


def main():
    repo = pathlib.Path(sys.argv[1]).resolve()
    directory = repo / "deploy/k8s/gateway"
    data_dir = repo / "tests/data/gateway-api"
    objects = load_documents(directory)
    validators = load_schemas(data_dir)
    plugin_types = load_plugin_types(data_dir)

    failures = run_checks(repo, objects, validators, plugin_types)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    files = sorted({name for name, _ in objects})
    failures.check(sorted(kustomization.get("resources", [])) == files,
                   f"gateway/kustomization.yaml: resources {kustomization.get('resources')},"
                   f" expected {files}")
    for what, broken in broken_copies(objects):
        caught = run_checks(repo, broken, validators, plugin_types).items
        failures.check(caught, f"self-test: {what} was not caught")
        if caught:
            print(f"self-test: {what}: caught ({caught[0]})")
    return failures.report(f"{len(objects)} gateway objects validate against the vendored"
                           " schemas and fit tvq-server")


if __name__ == "__main__":
    sys.exit(main())
