#!/usr/bin/python3
"""Extracts the OpenAPI v3 schema of one version of a CustomResourceDefinition
into tests/data/gateway-api/<plural>.<version>.json, for
check_gateway_manifests.py. How the vendored files were made (and how to
refresh them) is in tests/data/gateway-api/README.md.

Usage: vendor_crd_schemas.py CRD_YAML VERSION OUT_JSON
"""

import json
import pathlib
import sys

import yaml


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    crd_path, version, out = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
    crd = yaml.safe_load(pathlib.Path(crd_path).read_text())
    if crd.get("kind") != "CustomResourceDefinition":
        print(f"{crd_path}: not a CustomResourceDefinition", file=sys.stderr)
        return 1
    spec = crd["spec"]
    chosen = [v for v in spec["versions"] if v["name"] == version]
    if not chosen:
        print(f"{crd_path}: no version {version} (has"
              f" {[v['name'] for v in spec['versions']]})", file=sys.stderr)
        return 1
    document = {
        "group": spec["group"],
        "kind": spec["names"]["kind"],
        "version": version,
        "served": chosen[0].get("served", False),
        "storage": chosen[0].get("storage", False),
        "bundleVersion": {k: v for k, v in crd["metadata"].get("annotations", {}).items()
                          if k.endswith("bundle-version") or k.endswith("/channel")},
        "openAPIV3Schema": chosen[0]["schema"]["openAPIV3Schema"],
    }
    out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"{out}: {document['kind']} {spec['group']}/{version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
