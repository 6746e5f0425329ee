#!/usr/bin/env bash
# Regenerates src/pyproglog/api/v1 (log.v1) and src/pyproglog/api/raft/v1
# (proglog.raft.v1) from proto/. Output depends only on the .proto files and
# the pinned grpcio-tools/mypy-protobuf versions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$PY" -m grpc_tools.protoc -Iproto \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  proto/log/v1/log.proto proto/proglog/raft/v1/raft.proto
# Generated code imports "log.v1.log_pb2" / "proglog.raft.v1.raft_pb2"; make
# them absolute imports of our package.
sed -i 's/^from log\.v1 import log_pb2/from pyproglog.api.v1 import log_pb2/' \
  "$out"/log/v1/log_pb2_grpc.py "$out"/log/v1/log_pb2_grpc.pyi
sed -i 's/^from proglog\.raft\.v1 import raft_pb2/from pyproglog.api.raft.v1 import raft_pb2/' \
  "$out"/proglog/raft/v1/raft_pb2_grpc.py "$out"/proglog/raft/v1/raft_pb2_grpc.pyi
copy() {  # copy SRC_DIR DEST_DIR NAME: NAME_pb2{,_grpc}.py{,i}
  mkdir -p "$2"
  for f in "$3"_pb2.py "$3"_pb2.pyi "$3"_pb2_grpc.py "$3"_pb2_grpc.pyi; do
    cp "$1/$f" "$2/$f"
  done
}
copy "$out/log/v1" src/pyproglog/api/v1 log
copy "$out/proglog/raft/v1" src/pyproglog/api/raft/v1 raft
