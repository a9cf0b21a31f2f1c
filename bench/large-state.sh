#!/usr/bin/env bash
# Large state, one node each: a raftwasm node (wasm guest-kv) and an etcd member preloaded with
# KEYS keys x 256 B (8-byte keys) through kvbench, then killed with SIGKILL and restarted. For
# each system and round it prints the resident set after the preload (now, its peak, and again
# SETTLE seconds later), the time from the restart's exec to the first read that returns the
# last key's value, the resident set at that read and SETTLE seconds later, and the data
# directory's size. The systems alternate, flipped every round. Writes nothing but the printout.
#
#   bench/large-state.sh                 # KEYS=1000000 ROUNDS=2 SETTLE=5 BASE_PORT=32000
#   SYSTEMS=raftwasm bench/large-state.sh  # one system only
#
# Installs etcd (etcd-server, etcd-client) from Debian packages if missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-1000000}
SYSTEMS=${SYSTEMS:-raftwasm etcd}
ROUNDS=${ROUNDS:-2}
SETTLE=${SETTLE:-5}
BASE_PORT=${BASE_PORT:-32000}
NEED_ETCD=1
NEED_H2LOAD=0
# shellcheck source=bench/lib.sh
. bench/lib.sh

LAST_KEY=$(printf '%08d' $((KEYS - 1)))
GRPC=127.0.0.1:$((BASE_PORT + 1))
HTTP=127.0.0.1:$((BASE_PORT + 11))
PEER=127.0.0.1:$((BASE_PORT + 21))
LINES="$WORK/large.jsonl"

# start SYSTEM DIR: one node on DIR, bootstrapped when DIR is new; sets NODE.
start() {
  local system=$1 dir=$2
  if [ "$system" = raftwasm ]; then
    local bs=(); [ -d "$dir" ] || bs=(--bs)
    $HOST --id n1 --address "$GRPC" --http "$HTTP" --data-dir "$dir" "${bs[@]}" \
      >/dev/null 2>>"$dir.log" & NODE=$!
  else
    etcd --name e1 --data-dir "$dir" --listen-client-urls "http://$GRPC" \
      --advertise-client-urls "http://$GRPC" --listen-peer-urls "http://$PEER" \
      --initial-advertise-peer-urls "http://$PEER" --initial-cluster "e1=http://$PEER" \
      --log-level error >/dev/null 2>>"$dir.log" & NODE=$!
  fi
  PIDS+=("$NODE")
}

# read_last SYSTEM: succeeds when the node serves the last preloaded key's value.
read_last() {
  if [ "$1" = raftwasm ]; then
    curl -sf --max-time 1 "http://$HTTP/Get/$LAST_KEY" 2>/dev/null | grep -q vvvv
  else
    ETCDCTL_API=3 etcdctl --endpoints="$GRPC" --command-timeout=1s get "$LAST_KEY" \
      --print-value-only 2>/dev/null | grep -q vvvv
  fi
}

# wait_ready SYSTEM: until the node answers a read (of anything), within 30 s.
wait_ready() {
  for _ in $(seq 300); do
    if [ "$1" = raftwasm ]; then
      curl -sf --max-time 1 "http://$HTTP/readyz" >/dev/null 2>&1 && return 0
    else
      ETCDCTL_API=3 etcdctl --endpoints="$GRPC" endpoint health >/dev/null 2>&1 && return 0
    fi
    sleep 0.1
  done
  echo "$1 did not start" >&2; return 1
}

status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

one() { # SYSTEM ROUND
  local system=$1 round=$2 dir="$WORK/$1-$2"
  echo "== round $round: $system, $KEYS keys" >&2
  start "$system" "$dir"; wait_ready "$system"
  local t0 t1; t0=$(date +%s.%N)
  $KVBENCH --target "$system" --endpoints "$GRPC" --op get --clients 64 --connections 8 \
    --key-size 8 --value-size 256 --keyspace "$KEYS" --preload --duration 1 --warmup 0 >/dev/null
  t1=$(date +%s.%N)
  local pre_rss pre_hwm settled_rss
  pre_rss=$(status_kb "$NODE" VmRSS); pre_hwm=$(status_kb "$NODE" VmHWM)
  sleep "$SETTLE"; settled_rss=$(status_kb "$NODE" VmRSS)
  read_last "$system" || { echo "$system lost the last key before the restart" >&2; return 1; }

  kill -9 "$NODE"; wait "$NODE" 2>/dev/null || true
  local r0 r1 first_rss after_rss after_hwm
  r0=$(date +%s.%N); start "$system" "$dir"
  local ok=0
  for _ in $(seq 3000); do
    if read_last "$system"; then ok=1; break; fi
    sleep 0.02
  done
  r1=$(date +%s.%N)
  [ $ok = 1 ] || { echo "$system served no read within 60 s of the restart" >&2; return 1; }
  first_rss=$(status_kb "$NODE" VmRSS)
  sleep "$SETTLE"; after_rss=$(status_kb "$NODE" VmRSS); after_hwm=$(status_kb "$NODE" VmHWM)
  local disk; disk=$(du -sk "$dir" | cut -f1)
  kill -9 "$NODE"; wait "$NODE" 2>/dev/null || true
  rm -rf "$dir"
  python3 -c '
import json, sys
a = sys.argv[1:]
print(json.dumps({"system": a[0], "round": int(a[1]), "preload_s": float(a[3]) - float(a[2]),
  "rss_after_preload_kb": int(a[4]), "peak_during_preload_kb": int(a[5]),
  "rss_settled_kb": int(a[6]), "restart_to_read_s": float(a[8]) - float(a[7]),
  "rss_at_first_read_kb": int(a[9]), "rss_after_restart_kb": int(a[10]),
  "peak_after_restart_kb": int(a[11]), "data_dir_kb": int(a[12])}))' \
    "$system" "$round" "$t0" "$t1" "$pre_rss" "$pre_hwm" "$settled_rss" "$r0" "$r1" \
    "$first_rss" "$after_rss" "$after_hwm" "$disk" >>"$LINES"
}

for round in $(seq "$ROUNDS"); do
  for system in $([ $((round % 2)) = 1 ] && echo "raftwasm etcd" || echo "etcd raftwasm"); do
    [[ " $SYSTEMS " == *" $system "* ]] && one "$system" "$round"
  done
done

python3 - "$LINES" "$KEYS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = int(sys.argv[2])
raw_mb = keys * (8 + 256) / 1e6
cols = [("preload_s", "preload s", 1), ("rss_after_preload_kb", "RSS after preload MB", 1e3),
        ("peak_during_preload_kb", "peak MB", 1e3), ("rss_settled_kb", "settled MB", 1e3),
        ("restart_to_read_s", "restart to read s", 1), ("rss_at_first_read_kb", "RSS at read MB", 1e3),
        ("rss_after_restart_kb", "RSS after restart MB", 1e3),
        ("peak_after_restart_kb", "peak after restart MB", 1e3), ("data_dir_kb", "data dir MB", 1e3)]
print(f"{keys} keys x (8 + 256) B = {raw_mb:.0f} MB raw; 2x raw = {2 * raw_mb:.0f} MB")
print("| system | " + " | ".join(c[1] for c in cols) + " |")
print("|---|" + "---:|" * len(cols))
for system in ("raftwasm", "etcd"):
    mine = [r for r in rows if r["system"] == system]
    if not mine:
        continue
    def cell(key, div):
        vals = sorted(r[key] / div for r in mine)
        fmt = "{:.2f}" if div == 1 else "{:.0f}"
        return fmt.format(vals[0]) if vals[0] == vals[-1] else fmt.format(vals[0]) + "-" + fmt.format(vals[-1])
    print(f"| {system} | " + " | ".join(cell(k, d) for k, _, d in cols) + " |")
PY
