#!/usr/bin/python3
"""kubectl apply --dry-run=client on deploy/k8s, offline.

kubectl's client-side dry run still asks an API server two things: discovery
(which kinds exist, under which resource names) and whether each object
exists already. This test answers both from a stub on loopback: discovery for
exactly the API groups and versions a current cluster with the Prometheus
Operator serves, and 404 for every object. kubectl then parses and decodes
every manifest, maps each kind to its resource, and prints
"<kind>/<name> created (dry run)"; `apply -k` does the same through
kustomization.yaml. The stub fails the test on any request
that would change something (a dry run never sends one).

An apiVersion the stub does not serve (a removed one such as
autoscaling/v2beta2, a typo) fails with kubectl's own "no matches for kind"
error.

Usage: kubectl_dry_run.py K8S_DIR   (exit 77 = kubectl not installed: skipped)
"""

import http.server
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading

import yaml

# group -> version -> [(resource, kind, namespaced)]
API = {
    "": {"v1": [("services", "Service", True), ("configmaps", "ConfigMap", True),
                ("namespaces", "Namespace", False), ("serviceaccounts", "ServiceAccount", True),
                ("persistentvolumeclaims", "PersistentVolumeClaim", True)]},
    "apps": {"v1": [("deployments", "Deployment", True)]},
    "policy": {"v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)]},
    "autoscaling": {"v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
                    "v1": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)]},
    "monitoring.coreos.com": {"v1": [("servicemonitors", "ServiceMonitor", True),
                                     ("podmonitors", "PodMonitor", True),
                                     ("prometheusrules", "PrometheusRule", True)]},
    "rbac.authorization.k8s.io": {"v1": [("roles", "Role", True),
                                         ("rolebindings", "RoleBinding", True)]},
    # The CRDs deploy/k8s/gateway/ needs (docs/deploy.md, "Behind an
    # inference gateway"), at the versions tests/data/gateway-api/ holds.
    "gateway.networking.k8s.io": {"v1": [("gateways", "Gateway", True),
                                         ("httproutes", "HTTPRoute", True)]},
    "inference.networking.k8s.io": {"v1": [("inferencepools", "InferencePool", True)]},
}
SKIP = 77


def resource_list(group, version):
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
        "resources": [{"name": name, "singularName": kind.lower(), "namespaced": namespaced,
                       "kind": kind, "verbs": ["create", "delete", "get", "list", "patch",
                                               "update", "watch"]}
                      for name, kind, namespaced in API[group][version]],
    }


def group_list():
    groups = []
    for group, versions in API.items():
        if not group:
            continue
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


class StubApiServer(http.server.BaseHTTPRequestHandler):
    writes = []

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self):
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404,
                         "message": f"{self.path} not found"})

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        parts = path.strip("/").split("/")
        if path == "/api":
            self.reply(200, {"kind": "APIVersions", "versions": ["v1"],
                             "serverAddressByClientCIDRs": []})
        elif path == "/apis":
            self.reply(200, group_list())
        elif path == "/version":
            self.reply(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-stub"})
        elif len(parts) == 2 and parts[0] == "api" and parts[1] in API[""]:
            self.reply(200, resource_list("", parts[1]))
        elif (len(parts) == 3 and parts[0] == "apis" and parts[1] in API
              and parts[2] in API[parts[1]]):
            self.reply(200, resource_list(parts[1], parts[2]))
        else:
            # Every object: "not there yet", so apply would create it.
            self.not_found()

    def refuse_write(self):
        StubApiServer.writes.append(f"{self.command} {self.path}")
        self.reply(405, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "code": 405, "message": "the stub API server accepts no writes"})

    do_POST = do_PUT = do_PATCH = do_DELETE = refuse_write


def manifest_objects(directory):
    objects = []
    for path in sorted(directory.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                objects.append((path, document["kind"], document["metadata"]["name"]))
    return objects


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    directory = pathlib.Path(sys.argv[1])
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("kubectl is not installed (Debian: kubernetes-client): skipped")
        return SKIP

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StubApiServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    failures = []
    with tempfile.TemporaryDirectory() as home:
        kubeconfig = pathlib.Path(home) / "config"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "stub",
            "clusters": [{"name": "stub", "cluster": {
                "server": f"http://127.0.0.1:{server.server_address[1]}"}}],
            "users": [{"name": "stub", "user": {"token": "offline"}}],
            "contexts": [{"name": "stub", "context": {
                "cluster": "stub", "user": "stub", "namespace": "tvq-serve"}}],
        }))
        environment = dict(os.environ, KUBECONFIG=str(kubeconfig), HOME=home)
        version = subprocess.run([kubectl, "version", "--client"], env=environment,
                                 capture_output=True, text=True, check=False)
        print(f"kubectl: {version.stdout.strip().splitlines()[0] if version.stdout else '?'}")
        for path, kind, name in manifest_objects(directory):
            result = subprocess.run(
                [kubectl, "apply", "--dry-run=client", "--validate=false", "-o", "name",
                 "-f", str(path)],
                env=environment, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                timeout=60, check=False)
            output = result.stdout.split()
            wanted = [line for line in output if line.split("/")[-1] == name
                      and line.split("/")[0].split(".")[0] == kind.lower()]
            relative = path.relative_to(directory)
            if result.returncode != 0 or not wanted:
                failures.append(f"{relative}: {kind}/{name}: kubectl exit {result.returncode}:"
                                f" {result.stderr.strip() or result.stdout.strip()}")
            else:
                print(f"ok  {relative}: {wanted[0]}")
        # Each kustomization (deploy/k8s, deploy/k8s/gateway), as
        # `kubectl apply -k` reads it.
        for kustomization in sorted(directory.rglob("kustomization.yaml")):
            base = kustomization.parent
            listed = yaml.safe_load(kustomization.read_text())["resources"]
            expected = sum(1 for path, _, _ in manifest_objects(base)
                           if str(path.relative_to(base)) in listed)
            result = subprocess.run(
                [kubectl, "apply", "--dry-run=client", "--validate=false", "-o", "name",
                 "-k", str(base)],
                env=environment, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                timeout=60, check=False)
            relative = kustomization.relative_to(directory)
            if result.returncode != 0 or len(result.stdout.split()) != expected:
                failures.append(f"{relative}: kubectl apply -k exit {result.returncode},"
                                f" {len(result.stdout.split())} objects of {expected}:"
                                f" {result.stderr.strip()}")
            else:
                print(f"ok  {relative}: {expected} objects")
    server.shutdown()
    if StubApiServer.writes:
        failures.append("kubectl sent writes during a dry run: " + ", ".join(StubApiServer.writes))
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
