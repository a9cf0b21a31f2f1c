#!/usr/bin/env bash
# Runs the same workloads against a 3-node raftwasm cluster (wasm guest-kv), a 3-node raftwasm
# cluster running guest-kv natively (the guest's share), and a 3-member etcd cluster, all on
# loopback with fsync on, alternating between them, and writes the table to BENCHMARKS.md.
#
#   bench/compare.sh                 # DURATION=10 WARMUP=2 ROUNDS=3 BASE_PORT=31000 by default
#   MODE=tls bench/compare.sh        # the cost of TLS: raftwasm with and without it, etcd with it
#   MODE=sessions bench/compare.sh   # the cost of client sessions on writes (raftwasm only)
#   MODE=metrics BASELINE_HOST=path bench/compare.sh   # this build against an older host binary
#   MODE=watch bench/compare.sh      # watchers: events delivered and what they cost the writes
#
# MODE=tls runs raftwasm without TLS, raftwasm with TLS for clients and between nodes (client
# certificates required), and etcd with the same (client and peer TLS, client-cert-auth), all
# with throw-away certificates from examples/tls/make-certs.sh; it writes its table between
# the TLS markers of BENCHMARKS.md and leaves the rest of the file alone.
#
# MODE=sessions runs one raftwasm cluster, alternating kvbench without and with client sessions
# (`--sessions`: every write carries a session and sequence number and the cluster keeps its
# result) on put x1 and put x64, and samples the three nodes' CPU time (/proc/<pid>/stat) over
# each run's measured window; it writes its table between the sessions markers of
# BENCHMARKS.md. It does not need etcd.
#
# MODE=metrics runs two raftwasm clusters, this build's host and BASELINE_HOST (a host binary
# built from a commit before metrics, e.g. 457b0c5 in a git worktree), alternating put x1 and
# put x64 with the node CPU sampled as in MODE=sessions; it writes its table between the metrics
# markers of BENCHMARKS.md.
#
# MODE=watch runs a raftwasm cluster and an etcd cluster, put x64 on each with 0, 1 and 100
# watchers of every key open on the leader (kvbench --watchers: raftwasm WatchKeys, etcd Watch
# with prev_kv, each watcher on its own connection), the node CPU sampled as in MODE=sessions,
# the order of systems and watcher counts flipped every round; it writes its table between the
# watch markers of BENCHMARKS.md.
#
# The default mode also drives put on both systems with h2load (Debian's nghttp2-client), a
# client we did not write: the same pre-encoded gRPC frame (an 8-byte key, a 256-byte value:
# raftwasm's and etcd's PutRequest share field numbers) to raftwasm.v1.Client/Put and
# etcdserverpb.KV/Put, 1 stream, and 8 connections x 8 streams. Every default-mode run also
# samples the nodes' CPU (as MODE=sessions does) and their resident memory at the end of the
# measured window; the table ends with each node's resident memory when idle (once all three
# clusters are up, before any load), at the end of put x64 (h2load) and its peak over the run.
#
# Installs etcd (etcd-server) and h2load (nghttp2-client) from Debian packages if missing (needs
# root). Stops everything it started, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-BENCHMARKS.md}
MODE=${MODE:-plain}
case "$MODE" in plain|tls|sessions|metrics|watch) ;; *) echo "MODE is plain, tls, sessions, metrics or watch, not $MODE" >&2; exit 2 ;; esac
if [ "$MODE" = metrics ] && [ ! -x "${BASELINE_HOST:-}" ]; then
  echo "MODE=metrics needs BASELINE_HOST, the host binary to compare with" >&2; exit 2
fi

NEED_ETCD=$([ "$MODE" = sessions ] || [ "$MODE" = metrics ] && echo 0 || echo 1)
NEED_H2LOAD=$([ "$MODE" = plain ] && echo 1 || echo 0)
# shellcheck source=bench/lib.sh
. bench/lib.sh

if [ "$MODE" = sessions ]; then
  start_raftwasm plain 0
  echo "leader $LEADER" >&2
  # put x1 and put x64, without and with sessions back to back, the order flipped every round.
  for round in $(seq "$ROUNDS"); do
    echo "== round $round of $ROUNDS" >&2
    for clients in 1 64; do
      if [ $((round % 2)) = 1 ]; then
        run_cpu raftwasm raftwasm "$LEADER" put $clients
        run_cpu raftwasm-sessions raftwasm "$LEADER" put $clients --sessions
      else
        run_cpu raftwasm-sessions raftwasm "$LEADER" put $clients --sessions
        run_cpu raftwasm raftwasm "$LEADER" put $clients
      fi
    done
  done
elif [ "$MODE" = metrics ]; then
  start_raftwasm now 0; NOW_LEADER=$LEADER; NOW_PIDS=("${NODE_PIDS[@]}")
  CURRENT_HOST=$HOST; HOST=$BASELINE_HOST
  start_raftwasm before 100; BEFORE_LEADER=$LEADER; BEFORE_PIDS=("${NODE_PIDS[@]}")
  HOST=$CURRENT_HOST
  echo "leaders: raftwasm $NOW_LEADER, raftwasm-before-metrics $BEFORE_LEADER" >&2
  for round in $(seq "$ROUNDS"); do
    echo "== round $round of $ROUNDS" >&2
    for clients in 1 64; do
      for system in $([ $((round % 2)) = 1 ] && echo "now before" || echo "before now"); do
        if [ "$system" = now ]; then
          NODE_PIDS=("${NOW_PIDS[@]}"); run_cpu raftwasm raftwasm "$NOW_LEADER" put $clients
        else
          NODE_PIDS=("${BEFORE_PIDS[@]}"); run_cpu raftwasm-before-metrics raftwasm "$BEFORE_LEADER" put $clients
        fi
      done
    done
  done
elif [ "$MODE" = watch ]; then
  start_raftwasm watch 0; RW_LEADER=$LEADER; RW_PIDS=("${NODE_PIDS[@]}")
  start_etcd 200; ETCD_LEADER=$LEADER; ETCD_PIDS=("${NODE_PIDS[@]}")
  echo "leaders: raftwasm $RW_LEADER, etcd $ETCD_LEADER" >&2
  for round in $(seq "$ROUNDS"); do
    echo "== round $round of $ROUNDS" >&2
    counts="0 1 100"; [ $((round % 2)) = 0 ] && counts="100 1 0"
    for w in $counts; do
      for system in $([ $((round % 2)) = 1 ] && echo "raftwasm etcd" || echo "etcd raftwasm"); do
        if [ "$system" = raftwasm ]; then
          NODE_PIDS=("${RW_PIDS[@]}"); run_cpu "raftwasm w=$w" raftwasm "$RW_LEADER" put 64 --watchers "$w"
        else
          NODE_PIDS=("${ETCD_PIDS[@]}"); run_cpu "etcd w=$w" etcd "$ETCD_LEADER" put 64 --watchers "$w"
        fi
      done
    done
  done
elif [ "$MODE" = tls ]; then
  start_raftwasm plain 0; PLAIN_LEADER=$LEADER
  start_raftwasm tls 100 "${RAFTWASM_TLS[@]}"; TLS_LEADER=$LEADER
  start_etcd 200 tls; ETCD_LEADER=$LEADER
  echo "leaders: raftwasm $PLAIN_LEADER, raftwasm-tls $TLS_LEADER, etcd-tls $ETCD_LEADER" >&2
  # Each round alternates the three systems on put x1, put x64 and get x64.
  for round in $(seq "$ROUNDS"); do
    echo "== round $round of $ROUNDS" >&2
    for clients in 1 64; do
      run raftwasm raftwasm "$PLAIN_LEADER" put $clients
      run raftwasm-tls raftwasm "$TLS_LEADER" put $clients "${TLS_BENCH[@]}"
      run etcd-tls etcd "$ETCD_LEADER" put $clients "${TLS_BENCH[@]}"
    done
    preload=""
    [ "$round" = 1 ] && preload=--preload
    run raftwasm raftwasm "$PLAIN_LEADER" get 64 $preload
    run raftwasm-tls raftwasm "$TLS_LEADER" get 64 $preload "${TLS_BENCH[@]}"
    run etcd-tls etcd "$ETCD_LEADER" get 64 $preload "${TLS_BENCH[@]}"
  done
else
  start_raftwasm wasm 0; WASM_LEADER=$LEADER; WASM_PIDS=("${NODE_PIDS[@]}")
  start_raftwasm native 100 --native-fsm; NATIVE_LEADER=$LEADER; NATIVE_PIDS=("${NODE_PIDS[@]}")
  start_etcd 200; ETCD_LEADER=$LEADER; ETCD_PIDS=("${NODE_PIDS[@]}")
  echo "leaders: raftwasm $WASM_LEADER, raftwasm-native $NATIVE_LEADER, etcd $ETCD_LEADER" >&2
  idle_rss raftwasm "${WASM_PIDS[@]}"
  idle_rss raftwasm-native "${NATIVE_PIDS[@]}"
  idle_rss etcd "${ETCD_PIDS[@]}"
  # The same client for all: kvbench, with the nodes' CPU sampled.
  on() { case $1 in raftwasm) NODE_PIDS=("${WASM_PIDS[@]}");; raftwasm-native) NODE_PIDS=("${NATIVE_PIDS[@]}");; etcd) NODE_PIDS=("${ETCD_PIDS[@]}");; esac; }

  # Each workload runs ROUNDS times, the systems alternating within a round; the table shows the
  # round with the median throughput and the range over all rounds (this machine varies ±15%).
  for round in $(seq "$ROUNDS"); do
    echo "== round $round of $ROUNDS" >&2
    for clients in 1 64; do
      on raftwasm; run_cpu raftwasm raftwasm "$WASM_LEADER" put $clients
      on etcd; run_cpu etcd etcd "$ETCD_LEADER" put $clients
      on raftwasm-native; run_cpu raftwasm-native raftwasm "$NATIVE_LEADER" put $clients
    done
    # The independent client: h2load, the systems in flipped order every round.
    for shape in "1 1" "8 8"; do
      for system in $([ $((round % 2)) = 1 ] && echo "raftwasm etcd" || echo "etcd raftwasm"); do
        on $system
        if [ $system = raftwasm ]; then
          run_h2load "raftwasm (h2load)" /raftwasm.v1.Client/Put "$WASM_LEADER" $shape
        else
          run_h2load "etcd (h2load)" /etcdserverpb.KV/Put "$ETCD_LEADER" $shape
        fi
      done
    done
    preload=""
    [ "$round" = 1 ] && preload=--preload
    for clients in 1 64; do
      on raftwasm; run_cpu raftwasm raftwasm "$WASM_LEADER" get $clients $preload
      on etcd; run_cpu etcd etcd "$ETCD_LEADER" get $clients $preload
    done
  done
  peak_rss raftwasm "${WASM_PIDS[@]}"
  peak_rss raftwasm-native "${NATIVE_PIDS[@]}"
  peak_rss etcd "${ETCD_PIDS[@]}"
fi

python3 bench/report.py "$RESULTS" "$OUT" "$MODE"
