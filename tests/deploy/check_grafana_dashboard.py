#!/usr/bin/python3
"""Checks the Grafana dashboards and provisioning of deploy/grafana/.

- every dashboard is valid JSON with a uid, a title and unique panel ids;
  panels sit inside the 24-column grid without overlapping;
- every query is valid PromQL (promtool parses it, with Grafana's variables
  replaced) and reads only metrics the server exposes (docs/metrics.md or the
  names in server/ sources) or recording rules of deploy/prometheus/rules/;
- the dashboard shows what operators need: request rate, errors by code,
  requests by front end, TTFT and ITL percentiles, tokens/s, queue length and slot use;
- the variables panels use are defined, and the datasource provisioning
  defines the datasource uid the dashboard selects.

Usage: check_grafana_dashboard.py REPO_ROOT
"""

import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

from deploy_sources import CheckFailures, known_metric, metric_names, promql_metric_names

# What the operators' dashboard must show: a description and a test on the
# set of expressions.
REQUIRED = [
    ("request rate", lambda e: "rate(tvq_requests_total" in e),
    ("errors by code", lambda e: "tvq_requests_total" in e and re.search(r"by \([^)]*code", e)),
    ("requests by front end", lambda e: "tvq_requests_total" in e
     and re.search(r"by \([^)]*frontend", e)),
    ("TTFT percentiles", lambda e: "histogram_quantile" in e
     and "tvq_time_to_first_token_seconds_bucket" in e),
    ("ITL percentiles", lambda e: "histogram_quantile" in e
     and "tvq_inter_token_latency_seconds_bucket" in e),
    ("tokens/s", lambda e: "rate(tvq_generated_tokens_total" in e),
    ("queue length", lambda e: "tvq_queue_length" in e),
    ("slot use", lambda e: "tvq_slots" in e or "tvq_state_utilization_ratio" in e),
]
GRID_COLUMNS = 24
# Grafana's built-in variables, replaced by plausible values for promtool.
BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def recording_rule_names(repo):
    names = set()
    for path in (repo / "deploy" / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return names


def promtool_parse(expressions, failures):
    """Parses each (where, expr) with promtool through a temporary rules file."""
    promtool = shutil.which("promtool")
    if not failures.check(promtool, "promtool is not installed (Debian: prometheus)"):
        return
    for where, expr in expressions:
        concrete = expr
        for variable, value in BUILTINS.items():
            concrete = concrete.replace(variable, value)
        concrete = re.sub(r"\$\{?(\w+)\}?", ".*", concrete)
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": "dashboard:query", "expr": concrete}]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yml") as file:
            yaml.safe_dump(rules, file)
            file.flush()
            result = subprocess.run([promtool, "check", "rules", file.name],
                                    capture_output=True, text=True, check=False)
        failures.check(result.returncode == 0,
                       f"{where}: promtool rejects {expr!r}: "
                       f"{(result.stderr or result.stdout).strip()}")


def check_grid(name, panels, failures):
    occupied = {}
    for panel in panels:
        grid = panel.get("gridPos", {})
        where = f"{name}: panel {panel.get('id')} ({panel.get('title')!r})"
        if not failures.check(all(k in grid for k in "hwxy"), f"{where}: gridPos lacks h/w/x/y"):
            continue
        failures.check(grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_COLUMNS,
                       f"{where}: gridPos x={grid['x']} w={grid['w']} leaves the 24 columns")
        for row in range(grid["y"], grid["y"] + grid["h"]):
            for column in range(grid["x"], grid["x"] + grid["w"]):
                other = occupied.setdefault((row, column), panel.get("id"))
                if other != panel.get("id"):
                    failures.items.append(f"{where}: overlaps panel {other}")
                    return


def check_dashboard(path, repo, known, recorded, datasource_uids, failures):
    name = path.relative_to(repo)
    try:
        dashboard = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        failures.items.append(f"{name}: not valid JSON: {error}")
        return
    failures.check(dashboard.get("uid"), f"{name}: no uid")
    failures.check(dashboard.get("title"), f"{name}: no title")
    panels = dashboard.get("panels", [])
    failures.check(panels, f"{name}: no panels")
    ids = [p.get("id") for p in panels]
    failures.check(len(ids) == len(set(ids)) and None not in ids,
                   f"{name}: panel ids missing or repeated: {ids}")
    check_grid(name, panels, failures)

    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    datasource = variables.get("datasource")
    if failures.check(datasource and datasource.get("query") == "prometheus",
                      f"{name}: no Prometheus datasource variable"):
        current = datasource.get("current", {}).get("value")
        failures.check(current in datasource_uids,
                       f"{name}: datasource variable selects uid {current!r}, provisioned:"
                       f" {sorted(datasource_uids)}")

    expressions = []
    for panel in panels:
        if panel.get("type") == "row":
            continue
        where = f"{name}: panel {panel.get('id')} ({panel.get('title')!r})"
        targets = panel.get("targets", [])
        failures.check(targets, f"{where}: no queries")
        refs = [t.get("refId") for t in targets]
        failures.check(len(refs) == len(set(refs)), f"{where}: repeated refIds {refs}")
        for target in targets:
            expr = target.get("expr", "")
            if not failures.check(expr, f"{where}: query {target.get('refId')} has no expr"):
                continue
            expressions.append((where, expr))
            for used in re.findall(r"\$\{?(\w+)\}?", expr):
                failures.check(used.startswith("__") or used in variables,
                               f"{where}: uses ${used}, which the dashboard does not define")
            for metric in sorted(promql_metric_names(expr)):
                failures.check(known_metric(metric, known) or metric in recorded,
                               f"{where}: {metric} is not a metric the server exposes"
                               " (docs/metrics.md, server/ sources) nor a recording rule")
    promtool_parse(expressions, failures)
    for what, test in REQUIRED:
        failures.check(any(test(expr) for _, expr in expressions),
                       f"{name}: no panel shows {what}")
    print(f"{name}: {len(panels)} panels, {len(expressions)} queries")


def main():
    repo = pathlib.Path(sys.argv[1]).resolve()
    failures = CheckFailures()
    known = metric_names(repo)
    if not failures.check(known, "no metric names found in docs/metrics.md or server/ sources"):
        return failures.report("dashboards")
    recorded = recording_rule_names(repo)

    grafana = repo / "deploy" / "grafana"
    datasource_uids = set()
    for path in sorted((grafana / "provisioning" / "datasources").glob("*.yml")):
        for source in yaml.safe_load(path.read_text()).get("datasources", []):
            failures.check(source.get("type") == "prometheus" and source.get("url"),
                           f"{path.relative_to(repo)}: {source.get('name')}: not a Prometheus"
                           " datasource with a url")
            datasource_uids.add(source.get("uid"))
    providers = []
    for path in sorted((grafana / "provisioning" / "dashboards").glob("*.yml")):
        providers += yaml.safe_load(path.read_text()).get("providers", [])
    failures.check(any(p.get("type") == "file" and p.get("options", {}).get("path")
                       for p in providers), "deploy/grafana/provisioning/dashboards: no file"
                   " provider with options.path")

    dashboards = sorted((grafana / "dashboards").glob("*.json"))
    failures.check(dashboards, "deploy/grafana/dashboards: no dashboard")
    for path in dashboards:
        check_dashboard(path, repo, known, recorded, datasource_uids, failures)
    return failures.report(f"{len(dashboards)} dashboards")


if __name__ == "__main__":
    sys.exit(main())
