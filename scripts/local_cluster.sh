#!/usr/bin/env bash
# Three Proglog nodes on this machine, in the foreground; Ctrl-C stops all three.
# gRPC on 127.0.0.1:8400/8410/8420, HTTP on 8080/8081/8082, data in ./cluster-data/n1..n3.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/proglog}
DATA=${DATA:-cluster-data}
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
start() {  # name rpc-port gossip-port http-port extra...
  local name=$1 rpc=$2 gossip=$3 http=$4; shift 4
  "$BIN" serve --node-name "$name" --data-dir "$DATA/$name" --rpc-port "$rpc" \
    --bind-addr "127.0.0.1:$gossip" --http-addr "127.0.0.1:$http" "$@" &
  pids+=($!)
}
start n1 8400 8401 8080 --bootstrap
sleep 2  # the others join through n1's gossip port
start n2 8410 8411 8081 --start-join-addrs 127.0.0.1:8401
start n3 8420 8421 8082 --start-join-addrs 127.0.0.1:8401
wait
