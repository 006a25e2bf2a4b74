"""Validate rendered manifests strictly and offline, custom resources included; nothing is skipped.

`kubernetes-validate` alone only warns "Couldn't find schema" for a ServiceMonitor or a Certificate and
goes on: those kinds validate here against the JSON schemas in schemas/, and a kind with neither schema
is an error. From the repository root:

    python -m tests.deploy.validate deploy/kubernetes/overlays/production [OVERLAY ...]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
# Custom resources and their shipped schemas (written from the CRDs' documented fields, unknown fields refused).
SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.monitoring.coreos.com_v1.json",
    ("cert-manager.io/v1", "Certificate"): "certificate.cert-manager.io_v1.json",
}


def validate_document(doc: dict) -> str:
    """Validate one object strictly; the schema that did it. Raises on an invalid object or one with no schema
    (kubernetes_validate.SchemaNotFoundError), never skips."""
    schema_file = SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema_file is None:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        return f"kubernetes {KUBERNETES_VERSION}"
    jsonschema.validate(doc, json.loads((SCHEMA_DIR / schema_file).read_text()))
    # The metadata of a custom resource is an ObjectMeta: check it as one.
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]},
                                 KUBERNETES_VERSION, strict=True)
    return schema_file


def main(argv: list[str]) -> int:
    kubectl = shutil.which("kubectl")
    if kubectl is None or not argv:
        print("usage: python -m tests.deploy.validate KUSTOMIZATION_DIR ... (kubectl on PATH)", file=sys.stderr)
        return 2
    failed = 0
    for path in argv:
        rendered = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True, timeout=60)
        if rendered.returncode != 0:
            print(f"{path}: {rendered.stderr.strip()}", file=sys.stderr)
            failed += 1
            continue
        for doc in (d for d in yaml.safe_load_all(rendered.stdout) if d):
            name = f"{path}: {doc['kind']} {doc['metadata'].get('name')}"
            try:
                print(f"{name}: valid ({validate_document(doc)})")
            except (jsonschema.ValidationError, kubernetes_validate.utils.SchemaNotFoundError,
                    kubernetes_validate.ValidationError) as exc:
                print(f"{name}: INVALID: {getattr(exc, 'message', exc)}", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
