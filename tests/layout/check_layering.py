#!/usr/bin/env python3
"""Checks the include rules of docs/architecture.md on the source tree.

- Every `#include "server/<folder>/..."` or `"kernels/..."` goes down the
  stack (an include within the same folder is always allowed).
- No gRPC header outside server/service/ and server/main.cc.
- No absl::GetFlag outside server/main.cc (client/ has its own flags).
- kernels/ includes neither Abseil nor gRPC nor anything of server/.
- No include cycle between folders.

Exits 1 and names each offending file:line.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()

# Folder -> folders it may include (transitively closed below).
ALLOWED = {
    "service/grpc": {"service/routing", "core", "sessions", "metrics", "auth", "scheduler", "engine", "model", "text", "backend", "base"},
    "service/http": {"service/routing", "core", "sessions", "metrics", "auth", "scheduler", "engine", "model", "text", "backend", "base"},
    "service/routing": {"sessions", "scheduler", "engine", "model", "text", "backend", "base"},
    "core": {"sessions", "metrics", "scheduler", "engine", "model", "text", "backend", "base"},
    "sessions": {"scheduler", "engine", "model", "text", "backend", "base"},
    "metrics": {"scheduler", "base"},
    "scheduler": {"engine", "model", "text", "backend", "base"},
    "engine": {"model", "text", "backend", "base"},
    "model": {"text", "backend", "base"},
    "text": {"base"},
    # backend/cpu and backend/cuda count as backend: the factory names them.
    "backend": {"base", "kernels"},
    "process": {"base"},
    # Credentials of the front ends: API keys, TLS files (OpenSSL, no gRPC).
    "auth": {"base"},
    "base": set(),
}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]')


def folder_of(relative: str) -> str:
    """server/backend/cpu/x.cc -> backend/cpu; server/core/x.h -> core."""
    parts = relative.split("/")[1:-1]
    if parts[:2] in (["service", "grpc"], ["service", "http"], ["service", "routing"]):
        return "/".join(parts[:2])
    return parts[0] if parts else ""


def target_folder(include: str) -> str | None:
    if include.startswith("kernels/"):
        return "kernels"
    if include.startswith("server/"):
        return folder_of(include)
    return None


def main() -> int:
    problems = []
    edges = {}
    for path in sorted((ROOT / "server").rglob("*")):
        if path.suffix not in (".h", ".cc"):
            continue
        relative = path.relative_to(ROOT).as_posix()
        source = folder_of(relative) if relative != "server/main.cc" else "main"
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            if "absl::GetFlag" in line and relative != "server/main.cc":
                problems.append(f"{relative}:{number}: absl::GetFlag outside server/main.cc")
            match = INCLUDE.match(line)
            if not match:
                continue
            include = match.group(1)
            if include.startswith("grpc") and not (source.startswith("service/") or source == "main"):
                problems.append(f"{relative}:{number}: gRPC header {include} outside server/service/")
            target = target_folder(include)
            if target is None or source == "main" or target == source:
                continue
            edges.setdefault(source, set()).add(target)
            if source not in ALLOWED:
                problems.append(f"{relative}:{number}: folder server/{source} is not in the layering table")
            elif target not in ALLOWED[source]:
                problems.append(f"{relative}:{number}: server/{source} must not include {include}")
    for path in sorted((ROOT / "kernels").rglob("*")):
        if path.suffix not in (".h", ".cc", ".cu", ".cuh"):
            continue
        relative = path.relative_to(ROOT).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = INCLUDE.match(line)
            if match and re.match(r"(absl|grpc|server)/", match.group(1)):
                problems.append(f"{relative}:{number}: kernels/ must not include {match.group(1)}")

    # Cycles between folders (the table forbids them; this catches a table edit).
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                problems.append("include cycle: " + " -> ".join(stack + [node, nxt]))
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])

    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"layering: {sum(len(v) for v in edges.values())} folder edges, all downward, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
