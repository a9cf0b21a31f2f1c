#!/usr/bin/env bash
# What share of a node's CPU goes to metrics, health and events, measured from the inside: a
# 3-node cluster of this build under kvbench put x64, `perf record` (software cpu-clock
# samples, call stacks from DWARF) on all three nodes, and the share of samples whose stack
# passes through that code. A with/without comparison of two clusters on this shared 2-core
# machine spreads wider than the few percent in question (see BENCHMARKS.md); sampling one
# cluster does not.
#
#   bench/metrics-profile.sh            # ROUNDS=3 SECONDS_SAMPLED=12 BASE_PORT=23000
#
# Needs `perf` (Debian package linux-perf) and root, or perf_event_paranoid <= 1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECONDS_SAMPLED=${SECONDS_SAMPLED:-12}
BASE_PORT=${BASE_PORT:-23000}
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
NEED_ETCD=0
NEED_H2LOAD=0
# shellcheck source=bench/lib.sh
. bench/lib.sh

start_raftwasm profile 0
NODES=$(IFS=,; echo "${NODE_PIDS[*]}")

for round in $(seq "$ROUNDS"); do
  $KVBENCH --target raftwasm --endpoints "$LEADER" --op put --clients 64 \
    --connections 8 --key-size 8 --value-size 256 --keyspace 10000 \
    --duration $((SECONDS_SAMPLED + 6)) --warmup 2 --label profile >"$WORK/bench.json" 2>/dev/null &
  bench=$!
  sleep 4
  perf record -q -F 499 --call-graph dwarf,16384 -o "$WORK/perf.data" -p "$NODES" -- sleep "$SECONDS_SAMPLED" >/dev/null 2>&1
  wait $bench
  perf script -i "$WORK/perf.data" -F ip,sym 2>/dev/null >"$WORK/stacks.txt"
  python3 - "$WORK/stacks.txt" "$round" "$(tail -n 1 "$WORK/bench.json")" <<'PY'
import json, re, sys
# Code that exists for metrics, health and events, by the frames it runs in.
GROUPS = {
    "prometheus crate": r"prometheus::",
    "host::metrics": r"host::metrics::",
    "events watcher": r"host::events::",
    "health (readiness, grpc.health.v1)": r"readiness|watch_health|tonic_health",
    "standing watcher": r"watch_standing|service::standing::",
}
stacks, cur = [], []
for line in open(sys.argv[1]):
    if line.strip():
        cur.append(line)
    elif cur:
        stacks.append("".join(cur)); cur = []
if cur:
    stacks.append("".join(cur))
n = len(stacks)
any_hit = 0
counts = {k: 0 for k in GROUPS}
for s in stacks:
    hit = False
    for k, pat in GROUPS.items():
        if re.search(pat, s):
            counts[k] += 1; hit = True
    any_hit += hit
ops = json.loads(sys.argv[3])["ops_per_sec"]
parts = ", ".join(f"{k} {100 * v / n:.2f}%" for k, v in counts.items())
print(f"round {sys.argv[2]}: {ops:.0f} ops/s, {n} samples; metrics, health and events "
      f"{100 * any_hit / n:.2f}% ({parts})")
PY
done
