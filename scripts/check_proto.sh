#!/usr/bin/env bash
# Regenerates the protobuf code into a scratch copy and compares it with the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r proto scripts "$scratch"/
mkdir -p "$scratch/src/pyproglog/api/v1"
PY=${PYTHON:-.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
(cd "$scratch" && PYTHON="$PY" scripts/gen_proto.sh)
for f in log_pb2.py log_pb2.pyi log_pb2_grpc.py log_pb2_grpc.pyi; do
  if ! cmp -s "$scratch/src/pyproglog/api/v1/$f" "src/pyproglog/api/v1/$f"; then
    echo "generated code is stale: src/pyproglog/api/v1/$f differs from 'make proto' output" >&2
    exit 1
  fi
done
echo "generated protobuf code is fresh"
