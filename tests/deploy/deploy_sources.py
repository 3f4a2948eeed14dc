"""What the deploy checks compare the deploy files against, read from the
project's own sources: tvq-server's flags (server/main.cc), the metric names
the server exposes (server/ sources and docs/metrics.md), and the Dockerfile's
stages. Also a small PromQL reader that lists the metric names of an
expression.
"""

import pathlib
import re

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class CheckFailures:
    """Collects failures; each names the file and the problem."""

    def __init__(self):
        self.items = []

    def check(self, condition, message):
        if not condition:
            self.items.append(message)
        return condition

    def report(self, what):
        for item in self.items:
            print(f"FAIL {item}")
        if not self.items:
            print(f"ok: {what}")
        return 1 if self.items else 0


# ------------------------------------------------------------------ server
def server_flags(repo):
    """{flag name with dashes: default text} of tvq-server (ABSL_FLAG)."""
    text = (pathlib.Path(repo) / "server" / "main.cc").read_text()
    flags = {}
    pattern = re.compile(r"ABSL_FLAG\(\s*[\w:<>]+\s*,\s*(\w+)\s*,\s*([^,]+?)\s*,", re.S)
    for name, default in pattern.findall(text):
        flags[name.replace("_", "-")] = default.strip()
    return flags


def flag_name(argument):
    """'--num-slots=4' -> 'num-slots' (underscores read as dashes)."""
    return argument.lstrip("-").split("=", 1)[0].replace("_", "-")


def parse_duration_seconds(text):
    """'30s', '2m', '1m30s', 'absl::Seconds(30)' -> seconds."""
    match = re.fullmatch(r"absl::(Seconds|Minutes)\((\d+)\)", text.strip())
    if match:
        return int(match.group(2)) * (60 if match.group(1) == "Minutes" else 1)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def metric_names(repo):
    """Metric family names the server exposes: string literals "tvq_..." and
    "process_..." in server/ sources, and names in docs/metrics.md."""
    repo = pathlib.Path(repo)
    names = set()
    for path in sorted((repo / "server").rglob("*")):
        if path.suffix in (".cc", ".h"):
            names.update(re.findall(r'"((?:tvq|process)_[a-z0-9_]+)"', path.read_text()))
    docs = repo / "docs" / "metrics.md"
    if docs.exists():
        names.update(re.findall(r"\b((?:tvq|process)_[a-z0-9_]+)\b", docs.read_text()))
    return names


def known_metric(name, known):
    if name in known:
        return True
    return any(name.endswith(s) and name[: -len(s)] in known for s in HISTOGRAM_SUFFIXES)


# ---------------------------------------------------------------- PromQL
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "atmodifier", "inf", "nan",
}


def promql_metric_names(expr):
    """The metric names (and recording-rule names) an expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        after = text[match.end():].lstrip()
        if after.startswith("("):  # a function or aggregation
            continue
        if word.lower() in PROMQL_WORDS or word.startswith("__"):
            continue
        before = text[: match.start()].rstrip()
        if before and (before[-1].isdigit() or before[-1] == "."):  # 1e3, 0.5
            continue
        names.add(word)
    return names


# ------------------------------------------------------------- Dockerfile
def dockerfile_stages(repo):
    """{stage name: {"expose": [...], "user": str, "entrypoint": [...],
    "healthcheck": str, "from": str}} of the Dockerfile."""
    import json

    text = (pathlib.Path(repo) / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    stages = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.I)
            current = {"from": match.group(1), "expose": [], "user": "",
                       "entrypoint": [], "healthcheck": ""}
            stages[match.group(2) or f"stage{len(stages)}"] = current
        elif current is None:
            continue
        elif instruction == "EXPOSE":
            current["expose"] += [int(p.split("/")[0]) for p in rest.split()]
        elif instruction == "USER":
            current["user"] = rest.strip()
        elif instruction == "ENTRYPOINT":
            current["entrypoint"] = json.loads(rest)
        elif instruction == "HEALTHCHECK":
            current["healthcheck"] = rest.strip()
    return stages
