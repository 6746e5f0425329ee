#!/usr/bin/env bash
# Regenerates the protobuf code into a scratch copy and compares it with the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r proto scripts "$scratch"/
PY=${PYTHON:-.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
(cd "$scratch" && PYTHON="$PY" scripts/gen_proto.sh)
stale=0
for dir_name in api/v1:log api/raft/v1:raft; do
  dir=src/pyproglog/${dir_name%%:*}
  name=${dir_name##*:}
  for f in "$name"_pb2.py "$name"_pb2.pyi "$name"_pb2_grpc.py "$name"_pb2_grpc.pyi; do
    if ! cmp -s "$scratch/$dir/$f" "$dir/$f"; then
      echo "generated code is stale: $dir/$f differs from 'make proto' output" >&2
      stale=1
    fi
  done
done
[ "$stale" -eq 0 ] || exit 1
echo "generated protobuf code is fresh"
