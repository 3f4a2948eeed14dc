#!/usr/bin/python3
"""Checks what promtool cannot know about deploy/prometheus/rules/:

- every metric a rule reads is one the server exposes (docs/metrics.md or
  the names in server/ sources), a recording rule of these files, or `up`;
- recording rules follow level:metric:operations (two colons);
- every alert has a severity label and summary and description annotations;
- the Prometheus config loads these rule files and scrapes job tvq-server,
  the job the alerts select.

(promtool check rules / check config / test rules run as their own tests.)

Usage: check_prometheus_rules.py REPO_ROOT
"""

import pathlib
import sys

import yaml

from deploy_sources import CheckFailures, known_metric, metric_names, promql_metric_names

SEVERITIES = {"critical", "warning", "info"}


def main():
    repo = pathlib.Path(sys.argv[1]).resolve()
    failures = CheckFailures()
    known = metric_names(repo)
    if not failures.check(known, "no metric names found in docs/metrics.md or server/ sources"):
        return failures.report("rules")
    prometheus = repo / "deploy" / "prometheus"
    rule_files = sorted((prometheus / "rules").glob("*.rules.yml"))
    failures.check(rule_files, "deploy/prometheus/rules: no *.rules.yml")

    rules = []
    for path in rule_files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [(path.relative_to(repo), group["name"], rule) for rule in group["rules"]]
    recorded = {rule["record"] for _, _, rule in rules if "record" in rule}

    for path, group, rule in rules:
        name = rule.get("record") or rule.get("alert")
        where = f"{path}: {group}: {name}"
        for metric in sorted(promql_metric_names(rule["expr"])):
            failures.check(metric == "up" or metric in recorded or known_metric(metric, known),
                           f"{where}: reads {metric}, which the server does not expose")
        if "record" in rule:
            failures.check(rule["record"].count(":") == 2,
                           f"{where}: recording rule names are level:metric:operations")
        else:
            failures.check(rule.get("labels", {}).get("severity") in SEVERITIES,
                           f"{where}: severity label must be one of {sorted(SEVERITIES)}")
            annotations = rule.get("annotations", {})
            failures.check(annotations.get("summary") and annotations.get("description"),
                           f"{where}: needs summary and description annotations")

    config = yaml.safe_load((prometheus / "prometheus.yml").read_text())
    loaded = set()
    for pattern in config.get("rule_files", []):
        loaded.update(prometheus.glob(pattern))
    failures.check(set(rule_files) <= loaded,
                   "deploy/prometheus/prometheus.yml: rule_files does not load every"
                   " deploy/prometheus/rules/*.rules.yml")
    jobs = [job["job_name"] for job in config.get("scrape_configs", [])]
    failures.check("tvq-server" in jobs,
                   f"deploy/prometheus/prometheus.yml: no job tvq-server (jobs: {jobs})")
    print(f"{len(rules)} rules ({len(recorded)} recording) in {len(rule_files)} files")
    return failures.report("rules read known metrics, alerts are labelled")


if __name__ == "__main__":
    sys.exit(main())
