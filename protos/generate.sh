#!/usr/bin/env bash
# Regenerate the Python wire code under splitinfer/v1/ from protos/splitinfer/v1/*.proto.
# Usage: protos/generate.sh [OUT_DIR]   (default: the repository root)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
python -m grpc_tools.protoc -I"$root/protos" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$root"/protos/splitinfer/v1/*.proto
