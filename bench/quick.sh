#!/usr/bin/env bash
# The regression guard for the write path, under 2 minutes: a 3-node raftwasm cluster (wasm
# guest-kv) and a 3-member etcd cluster, put through h2load (1 stream, and 8 connections x 8
# streams, the same pre-encoded frame for both: see bench/lib.sh), the systems alternating and
# flipped every round. Prints raftwasm over etcd per round (ops/s, p50, p99, node CPU per put)
# and each node's resident memory idle and under put x64. Writes nothing.
#
#   make bench-quick                 # DURATION=4 WARMUP=1 ROUNDS=3 BASE_PORT=30000 by default
#
# Installs etcd (etcd-server) and h2load (nghttp2-client) from Debian packages if missing (needs
# root). Stops everything it started, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-30000}
NEED_ETCD=1
NEED_H2LOAD=1
# shellcheck source=bench/lib.sh
. bench/lib.sh

start_raftwasm wasm 0; RW_LEADER=$LEADER; RW_PIDS=("${NODE_PIDS[@]}")
start_etcd 200; ETCD_LEADER=$LEADER; ETCD_PIDS=("${NODE_PIDS[@]}")
echo "leaders: raftwasm $RW_LEADER, etcd $ETCD_LEADER" >&2
idle_rss raftwasm "${RW_PIDS[@]}"
idle_rss etcd "${ETCD_PIDS[@]}"
for round in $(seq "$ROUNDS"); do
  echo "== round $round of $ROUNDS" >&2
  for shape in "1 1" "8 8"; do
    for system in $([ $((round % 2)) = 1 ] && echo "raftwasm etcd" || echo "etcd raftwasm"); do
      if [ $system = raftwasm ]; then
        NODE_PIDS=("${RW_PIDS[@]}"); run_h2load "raftwasm (h2load)" /raftwasm.v1.Client/Put "$RW_LEADER" $shape
      else
        NODE_PIDS=("${ETCD_PIDS[@]}"); run_h2load "etcd (h2load)" /etcdserverpb.KV/Put "$ETCD_LEADER" $shape
      fi
    done
  done
done
peak_rss raftwasm "${RW_PIDS[@]}"
peak_rss etcd "${ETCD_PIDS[@]}"
python3 bench/report.py "$RESULTS" - quick
