#!/usr/bin/env bash
# Regenerates src/pyproglog/api/v1 from proto/. Output depends only on the
# .proto files and the pinned grpcio-tools/mypy-protobuf versions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$PY" -m grpc_tools.protoc -Iproto \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  proto/log/v1/log.proto
dest=src/pyproglog/api/v1
mkdir -p "$dest"
# Generated code imports "log.v1.log_pb2"; make it relative to our package.
sed -i 's/^from log\.v1 import log_pb2/from pyproglog.api.v1 import log_pb2/' "$out"/log/v1/log_pb2_grpc.py "$out"/log/v1/log_pb2_grpc.pyi 2>/dev/null || true
for f in log_pb2.py log_pb2.pyi log_pb2_grpc.py log_pb2_grpc.pyi; do
  cp "$out/log/v1/$f" "$dest/$f"
done
