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
# samples the nodes' CPU (as MODE=sessions does), and the table ends with each node's peak RSS.
#
# Installs etcd (etcd-server) and h2load (nghttp2-client) from Debian packages if missing (needs
# root). Stops everything it started, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-31000}
KEYSPACE=${KEYSPACE:-10000}
OUT=${OUT:-BENCHMARKS.md}
MODE=${MODE:-plain}
case "$MODE" in plain|tls|sessions|metrics|watch) ;; *) echo "MODE is plain, tls, sessions, metrics or watch, not $MODE" >&2; exit 2 ;; esac
if [ "$MODE" = metrics ] && [ ! -x "${BASELINE_HOST:-}" ]; then
  echo "MODE=metrics needs BASELINE_HOST, the host binary to compare with" >&2; exit 2
fi

if [ "$MODE" != sessions ] && [ "$MODE" != metrics ] && ! command -v etcd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
if [ "$MODE" = plain ] && ! command -v h2load >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; }
fi
make build >/dev/null

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

HOST=./target/release/host
KVBENCH=./target/release/kvbench
CERTS="$WORK/certs"
examples/tls/make-certs.sh "$CERTS" node client >/dev/null
# Client side of TLS runs: curl and kvbench trust the CA and present the client certificate.
TLS_CURL=(--cacert "$CERTS/ca.pem" --cert "$CERTS/client.pem" --key "$CERTS/client.key")
TLS_BENCH=(--ca "$CERTS/ca.pem" --cert "$CERTS/client.pem" --cert-key "$CERTS/client.key")
RAFTWASM_TLS=(--tls-cert "$CERTS/node.pem" --tls-key "$CERTS/node.key" --peer-ca "$CERTS/ca.pem"
  --tls-client-ca "$CERTS/ca.pem")

# start_raftwasm NAME OFFSET [extra host flags]: a 3-node cluster (over TLS when the flags say
# --tls-cert); sets LEADER to the leader's gRPC address. (Not run in a subshell, so PIDS reaches
# the cleanup.)
start_raftwasm() {
  local name=$1 off=$2; shift 2
  local web="http" curl=(curl -sf)
  if [[ " $* " == *" --tls-cert "* ]]; then web="https"; curl+=("${TLS_CURL[@]}"); fi
  local g1=$((BASE_PORT + off + 1)) g2=$((BASE_PORT + off + 2)) g3=$((BASE_PORT + off + 3))
  local h1=$((BASE_PORT + off + 11)) h2=$((BASE_PORT + off + 12)) h3=$((BASE_PORT + off + 13))
  $HOST --id n1 --address 127.0.0.1:$g1 --http 127.0.0.1:$h1 --data-dir "$WORK/$name/n1" --bs "$@" >/dev/null 2>"$WORK/$name-n1.log" & PIDS+=($!)
  $HOST --id n2 --address 127.0.0.1:$g2 --http 127.0.0.1:$h2 --data-dir "$WORK/$name/n2" "$@" >/dev/null 2>"$WORK/$name-n2.log" & PIDS+=($!)
  $HOST --id n3 --address 127.0.0.1:$g3 --http 127.0.0.1:$h3 --data-dir "$WORK/$name/n3" "$@" >/dev/null 2>"$WORK/$name-n3.log" & PIDS+=($!)
  for _ in $(seq 100); do "${curl[@]}" "$web://127.0.0.1:$h1/v1/status" | grep -q '"state":"Leader"' && break; sleep 0.1; done
  "${curl[@]}" "$web://127.0.0.1:$h1/AddVoter/127.0.0.1:$g2/n2" >/dev/null
  "${curl[@]}" "$web://127.0.0.1:$h1/AddVoter/127.0.0.1:$g3/n3" >/dev/null
  LEADER=$("${curl[@]}" "$web://127.0.0.1:$h1/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader_address"])')
  NODE_PIDS=("${PIDS[@]: -3}")
}

# start_etcd OFFSET [tls]: a 3-member cluster (client and peer TLS with client certificates
# when the second argument is "tls"); sets LEADER to the leader's client address.
start_etcd() {
  local off=$1 mode=${2:-plain} cluster="" i scheme=http tls=() ctl=()
  if [ "$mode" = tls ]; then
    scheme=https
    tls=(--cert-file "$CERTS/node.pem" --key-file "$CERTS/node.key" --client-cert-auth
      --trusted-ca-file "$CERTS/ca.pem" --peer-cert-file "$CERTS/node.pem"
      --peer-key-file "$CERTS/node.key" --peer-client-cert-auth --peer-trusted-ca-file "$CERTS/ca.pem")
    ctl=(--cacert "$CERTS/ca.pem" --cert "$CERTS/client.pem" --key "$CERTS/client.key")
  fi
  for i in 1 2 3; do cluster+="e$i=$scheme://127.0.0.1:$((BASE_PORT + off + 10 + i)),"; done
  for i in 1 2 3; do
    local c=$((BASE_PORT + off + i)) p=$((BASE_PORT + off + 10 + i))
    etcd --name "e$i" --data-dir "$WORK/etcd-$off/e$i" \
      --listen-client-urls "$scheme://127.0.0.1:$c" --advertise-client-urls "$scheme://127.0.0.1:$c" \
      --listen-peer-urls "$scheme://127.0.0.1:$p" --initial-advertise-peer-urls "$scheme://127.0.0.1:$p" \
      --initial-cluster "${cluster%,}" --initial-cluster-state new --initial-cluster-token bench \
      "${tls[@]}" --log-level error >/dev/null 2>"$WORK/etcd-$off-e$i.log" & PIDS+=($!)
  done
  NODE_PIDS=("${PIDS[@]: -3}")
  local eps="$scheme://127.0.0.1:$((BASE_PORT + off + 1)),$scheme://127.0.0.1:$((BASE_PORT + off + 2)),$scheme://127.0.0.1:$((BASE_PORT + off + 3))"
  for _ in $(seq 100); do ETCDCTL_API=3 etcdctl "${ctl[@]}" --endpoints="$eps" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
  LEADER=$(ETCDCTL_API=3 etcdctl "${ctl[@]}" --endpoints="$eps" endpoint status -w json | python3 -c '
import json, sys
rows = json.load(sys.stdin)
for r in rows:
    if r["Status"]["header"]["member_id"] == r["Status"]["leader"]:
        print(r["Endpoint"].split("://")[1])
')
}

RESULTS="$WORK/results.jsonl"
run() { # SYSTEM TARGET ENDPOINT OP CLIENTS [extra]
  local system=$1 target=$2 ep=$3 op=$4 clients=$5; shift 5
  echo "== $system $op x$clients" >&2
  $KVBENCH --target "$target" --endpoints "$ep" --op "$op" --clients "$clients" \
    --connections $(( clients < 8 ? clients : 8 )) --key-size 8 --value-size 256 \
    --keyspace "$KEYSPACE" --duration "$DURATION" --warmup "$WARMUP" --label "$system" "$@" \
    | tail -n 1 >>"$RESULTS"
}

# cpu_ticks PID...: user + system CPU time of those processes so far, in clock ticks.
cpu_ticks() {
  local t=0 pid
  for pid in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo $t
}

# run_cpu SYSTEM TARGET ENDPOINT OP CLIENTS [extra]: like run, and adds the CPU seconds NODE_PIDS
# spent over the measured window (sampled after WARMUP, again DURATION later) to the JSON line.
run_cpu() {
  local system=$1 target=$2 ep=$3 op=$4 clients=$5 out="$WORK/one.json"; shift 5
  echo "== $system $op x$clients" >&2
  $KVBENCH --target "$target" --endpoints "$ep" --op "$op" --clients "$clients" \
    --connections $(( clients < 8 ? clients : 8 )) --key-size 8 --value-size 256 \
    --keyspace "$KEYSPACE" --duration "$DURATION" --warmup "$WARMUP" --label "$system" "$@" \
    >"$out" & local bench=$!
  sleep "$WARMUP"; local c0; c0=$(cpu_ticks "${NODE_PIDS[@]}")
  sleep "$DURATION"; local c1; c1=$(cpu_ticks "${NODE_PIDS[@]}")
  wait $bench
  tail -n 1 "$out" | python3 -c 'import json, sys; r = json.load(sys.stdin); r["node_cpu_s"] = int(sys.argv[1]) / int(sys.argv[2]); print(json.dumps(r))' \
    "$((c1 - c0))" "$(getconf CLK_TCK)" >>"$RESULTS"
}

# The gRPC request body h2load sends to both systems' Put: the 5-byte gRPC prefix and a
# PutRequest with key (field 1, 8 bytes) and value (field 2, 256 bytes).
H2FRAME="$WORK/put.frame"
python3 - "$H2FRAME" <<'PY'
import struct, sys
key, value = b"h2load01", b"v" * 256
msg = b"\x0a" + bytes([len(key)]) + key + b"\x12\x80\x02" + value
open(sys.argv[1], "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
PY

# run_h2load SYSTEM GRPC_PATH ENDPOINT CONNECTIONS STREAMS: put through h2load for WARMUP +
# DURATION seconds, NODE_PIDS' CPU sampled over the measured window as in run_cpu; appends a
# JSON line shaped like kvbench's (latency percentiles from h2load's per-request log). h2load
# judges a reply by its HTTP status: a gRPC error (in the trailers) would count as done, so the
# line also carries how many replies were not HTTP 200 (`errors`) and the run is checked by a
# read of the key afterwards (kvbench's get on the same leader).
run_h2load() {
  local system=$1 path=$2 ep=$3 conns=$4 streams=$5 log="$WORK/h2.log" out="$WORK/h2.out"
  echo "== $system put x$((conns * streams)) (h2load)" >&2
  rm -f "$log"
  h2load -D "$DURATION" --warm-up-time "$WARMUP" -c "$conns" -m "$streams" -t 1 \
    -d "$H2FRAME" -H 'content-type: application/grpc' -H 'te: trailers' \
    --log-file "$log" "http://$ep$path" >"$out" 2>&1 & local bench=$!
  sleep "$WARMUP"; local c0; c0=$(cpu_ticks "${NODE_PIDS[@]}")
  sleep "$DURATION"; local c1; c1=$(cpu_ticks "${NODE_PIDS[@]}")
  wait $bench || { cat "$out" >&2; return 1; }
  python3 - "$log" "$out" "$system" $((conns * streams)) "$DURATION" "$((c1 - c0))" "$(getconf CLK_TCK)" <<'PY' >>"$RESULTS"
import json, re, sys
log, out, label, clients, duration, ticks, hz = sys.argv[1:]
text = open(out).read()
rate = re.search(r"finished in [^,]+, ([0-9.]+) req/s", text)
rows = [l.split("\t") for l in open(log) if l.strip()]
done = sorted(int(r[2]) for r in rows if r[1] == "200")
def pct(p):
    return done[min(len(done) - 1, int(p * len(done)))] / 1000 if done else float("nan")
print(json.dumps({"label": label, "op": "put", "clients": int(clients),
    "ops_per_sec": float(rate.group(1)) if rate else 0.0, "duration_s": int(duration),
    "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
    "errors": sum(1 for r in rows if r[1] != "200"), "keyspace": 1,
    "node_cpu_s": int(ticks) / int(hz)}))
PY
}

# peak_rss SYSTEM PID...: each node's peak resident set (VmHWM), one JSON line.
peak_rss() {
  local system=$1 pid kb=(); shift
  for pid in "$@"; do kb+=("$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")"); done
  echo "{\"system\": \"$system\", \"peak_rss_kb\": [$(IFS=,; echo "${kb[*]}")]}" >>"$WORK/rss.jsonl"
}

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

python3 - "$RESULTS" "$OUT" "$MODE" <<'PY'
import json, os, platform, subprocess, sys
mode = sys.argv[3]
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
# One row per workload: the median-throughput round, plus the range over rounds.
groups = {}
for r in runs:
    groups.setdefault((r["label"], r["op"], r["clients"]), []).append(r)
rows = []
for key, rs in groups.items():
    rs.sort(key=lambda r: r["ops_per_sec"])
    row = dict(rs[len(rs) // 2])
    row["range"] = "%d–%d" % (rs[0]["ops_per_sec"], rs[-1]["ops_per_sec"]) if len(rs) > 1 else "-"
    row["rounds"] = len(rs)
    rows.append(row)
def sh(cmd):
    try: return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return "?"
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
table = ["| system | op | clients | ops/s | range | p50 ms | p90 ms | p99 ms | p99.9 ms | errors |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    table.append("| %s | %s | %d | %d | %s | %.2f | %.2f | %.2f | %.2f | %d |" % (
        r["label"], r["op"], r["clients"], r["ops_per_sec"], r["range"], r["p50_ms"], r["p90_ms"],
        r["p99_ms"], r["p999_ms"], r["errors"]))
machine = ["- machine: %s, %s cores, %s" % (cpu, sh("nproc"), platform.platform()),
           "- raftwasm: %s (git %s), %s" % (sh("./target/release/host --version"), sh("git rev-parse --short HEAD"), sh("rustc --version")),
           "- etcd: %s" % sh("etcd --version | head -1")]
def splice(begin, end, section):
    """Writes `section` between the markers of the output file, the rest left as it is."""
    try:
        previous = open(sys.argv[2]).read()
    except FileNotFoundError:
        previous = ""
    if begin in previous and end in previous:
        head, rest = previous.split(begin, 1)
        text = head + "\n".join(section) + rest.split(end, 1)[1]
    else:
        text = previous.rstrip("\n") + "\n\n" + "\n".join(section) + "\n"
    open(sys.argv[2], "w").write(text)
    print("\n".join(section))
# Per round (the systems ran back to back within a round): metric by label, in round order.
def per_round(metric):
    per = {}
    for r in runs:
        per.setdefault((r["op"], r["clients"]), {}).setdefault(r["label"], []).append(metric(r))
    return per
def ratios(per, op, clients, a, b):
    xs = per.get((op, clients), {})
    return [x / y for x, y in zip(xs.get(a, []), xs.get(b, [])) if y]
def cpu_us(r):
    """Node CPU per operation (runs made by run_cpu)."""
    ops = r["ops_per_sec"] * r["duration_s"]
    return r["node_cpu_s"] * 1e6 / ops if ops else float("nan")
def span(v, fmt):
    return (fmt % min(v)) + ("–" + fmt % max(v) if len(v) > 1 else "") if v else "?"
if mode in ("sessions", "metrics"):
    new, old = {"sessions": ("raftwasm-sessions", "raftwasm"),
                "metrics": ("raftwasm", "raftwasm-before-metrics")}[mode]
    ops, cpu = per_round(lambda r: r["ops_per_sec"]), per_round(cpu_us)
    table = ["| system | op | clients | ops/s | range | node CPU µs/op | range | p50 ms | p99 ms | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cpus = cpu[(r["op"], r["clients"])][r["label"]]
        table.append("| %s | %s | %d | %d | %s | %.1f | %s | %.2f | %.2f | %d |" % (
            r["label"], r["op"], r["clients"], r["ops_per_sec"], r["range"], cpu_us(r),
            span(cpus, "%.1f"), r["p50_ms"], r["p99_ms"], r["errors"]))
    lines = ["- %s x%d: ops/s %s, node CPU per op %s" % (
        op, c, span(ratios(ops, op, c, new, old), "%.2f"),
        span(ratios(cpu, op, c, new, old), "%.2f")) for op, c in [("put", 1), ("put", 64)]]
    if mode == "metrics":
        section = ["<!-- metrics: written by MODE=metrics bench/compare.sh -->",
                   "### The cost of metrics", "",
                   "Written by `MODE=metrics BASELINE_HOST=... bench/compare.sh`: two 3-node raftwasm clusters,",
                   "this build and a host built from before metrics, events and dashboard (%s), kvbench" % os.environ.get("BASELINE_DESC", "BASELINE_HOST"),
                   "on each back to back, the order flipped every round; %d rounds of %d s. Node CPU as above." % (rows[0]["rounds"], rows[0]["duration_s"]), ""]
        section += machine[:2] + [""] + table + ["", "This build over the one before metrics, within each round (range over rounds):", ""] + lines
        section += ["<!-- /metrics -->"]
        splice(section[0], section[-1], section)
        sys.exit(0)
    section = ["<!-- sessions: written by MODE=sessions bench/compare.sh -->",
               "### With client sessions", "",
               "Written by `MODE=sessions bench/compare.sh`: one 3-node raftwasm cluster, kvbench without",
               "and with `--sessions` (each client opens a session; every put carries it and a sequence",
               "number, and the cluster keeps its result for a retry), back to back, the order flipped",
               "every round; %d rounds of %d s. Node CPU: user + system time of the three nodes over the" % (rows[0]["rounds"], rows[0]["duration_s"]),
               "measured window, divided by the operations in it.", ""]
    section += machine[:2] + [""] + table + ["", "Sessions over no sessions, within each round (range over rounds):", ""] + lines
    section += ["<!-- /sessions -->"]
    splice(section[0], section[-1], section)
    sys.exit(0)
if mode == "watch":
    ops, cpu = per_round(lambda r: r["ops_per_sec"]), per_round(cpu_us)
    events = per_round(lambda r: r.get("watch_events_per_sec") or 0)
    table = ["| system | watchers | put ops/s | range | node CPU µs/put | range | events/s delivered | range | per watcher (median round) | p99 ms | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        k = (r["op"], r["clients"])
        w = r.get("watchers", 0)
        per = "%d–%d" % (r["watch_events_per_sec_min"], r["watch_events_per_sec_max"]) if w else "-"
        table.append("| %s | %d | %d | %s | %.1f | %s | %s | %s | %s | %.2f | %d |" % (
            r["label"].split(" ")[0], w, r["ops_per_sec"], r["range"], cpu_us(r),
            span(cpu[k][r["label"]], "%.1f"), "%d" % (r.get("watch_events_per_sec") or 0) if w else "-",
            span(events[k][r["label"]], "%d") if w else "-", per, r["p99_ms"], r["errors"]))
    lines = []
    for system in ("raftwasm", "etcd"):
        for w in (1, 100):
            a, b = "%s w=%d" % (system, w), "%s w=0" % system
            lines.append("- %s, %d watcher%s over none: put ops/s %s, node CPU per put %s" % (
                system, w, "s" if w > 1 else "", span(ratios(ops, "put", 64, a, b), "%.2f"),
                span(ratios(cpu, "put", 64, a, b), "%.2f")))
    begin, end = "<!-- watch: written by MODE=watch bench/compare.sh -->", "<!-- /watch -->"
    section = [begin, "### Watchers", "",
               "Written by `MODE=watch bench/compare.sh`: a 3-node raftwasm cluster (wasm guest-kv) and a",
               "3-member etcd cluster, put x64 on the leader with 0, 1 and 100 watchers of every key open",
               "on the leader (`kvbench --watchers`, each on its own connection; raftwasm `WatchKeys`, etcd",
               "`Watch` with `prev_kv`: both carry each key's new and previous value). Events/s: changes",
               "the watchers received in the measured window, all watchers together. Node CPU as above;",
               "%d rounds of %d s, order flipped every round." % (rows[0]["rounds"], rows[0]["duration_s"]), ""]
    section += machine + [""] + table + ["", "Within each round (range over rounds):", ""] + lines + [end]
    splice(begin, end, section)
    sys.exit(0)
if mode == "tls":
    per = per_round(lambda r: r["ops_per_sec"])
    lines = ["- %s x%d: raftwasm-tls / raftwasm %s, raftwasm-tls / etcd-tls %s" % (
        op, c, span(ratios(per, op, c, "raftwasm-tls", "raftwasm"), "%.2f"),
        span(ratios(per, op, c, "raftwasm-tls", "etcd-tls"), "%.2f")) for op, c in [("put", 1), ("put", 64), ("get", 64)]]
    begin, end = "<!-- tls: written by MODE=tls bench/compare.sh -->", "<!-- /tls -->"
    section = [begin, "### With TLS (client and peer, client certificates required)", "",
               "Written by `MODE=tls bench/compare.sh`: raftwasm without TLS, raftwasm with TLS on both",
               "the client and the node-to-node traffic (`--tls-cert --peer-ca --tls-client-ca`), and etcd",
               "with the same (`--client-cert-auth`, `--peer-client-cert-auth`), kvbench presenting a client",
               "certificate; otherwise as above. %d rounds of %d s, systems alternating." % (rows[0]["rounds"], rows[0]["duration_s"]), ""]
    section += machine + [""] + table + ["", "Ratios of ops/s within each round (range over rounds):", ""] + lines + [end]
    splice(begin, end, section)
    sys.exit(0)
table = ["| system (client) | op | clients | ops/s | range | node CPU µs/op | p50 ms | p90 ms | p99 ms | p99.9 ms | errors |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    table.append("| %s | %s | %d | %d | %s | %.1f | %.2f | %.2f | %.2f | %.2f | %d |" % (
        r["label"], r["op"], r["clients"], r["ops_per_sec"], r["range"], cpu_us(r), r["p50_ms"],
        r["p90_ms"], r["p99_ms"], r["p999_ms"], r["errors"]))
ops_r, cpu_r = per_round(lambda r: r["ops_per_sec"]), per_round(cpu_us)
table += ["", "raftwasm over etcd within each round (range over rounds), ops/s and node CPU per op:", ""]
for op, c in [("put", 1), ("put", 64), ("get", 1), ("get", 64)]:
    for client, suffix in [("kvbench", ""), ("h2load", " (h2load)")]:
        a, b = "raftwasm" + suffix, "etcd" + suffix
        if a in ops_r.get((op, c), {}):
            table.append("- %s x%d, %s: ops/s %s, node CPU per op %s" % (
                op, c, client, span(ratios(ops_r, op, c, a, b), "%.2f"),
                span(ratios(cpu_r, op, c, a, b), "%.2f")))
rss = [json.loads(l) for l in open(os.path.join(os.path.dirname(sys.argv[1]), "rss.jsonl")) if l.strip()]
table += ["", "Peak RSS per node over the whole run (VmHWM): " + "; ".join(
    "%s %s MB" % (r["system"], " / ".join("%d" % (kb / 1024) for kb in r["peak_rss_kb"])) for r in rss) + "."]
out = ["# Benchmarks", "",
       "Written by `bench/compare.sh` (rerun it to refresh). Same machine, same run, loopback, fsync",
       "on, 3 nodes each, requests sent to the leader. Clients: `kvbench` (gRPC; ours) and, for puts,",
       "h2load (nghttp2's, not ours: one pre-encoded PutRequest frame, the same key every time, 1",
       "stream or 8 connections x 8 streams; its p50/p99 from its per-request log). Node CPU: user +",
       "system time of the three nodes over the measured window, per operation.",
       "8-byte keys, 256-byte values, keyspace %d, reads linearizable. Each workload ran %d times" % (rows[0]["keyspace"], rows[0]["rounds"]),
       "(%d s each, systems alternating); a row is the run with the median ops/s, and `range` spans" % rows[0]["duration_s"],
       "all its runs.", "",
       ] + machine + [""] + table
out.append("")
out.append("`raftwasm-native` runs guest-kv compiled into the host (`--native-fsm`): the gap to")
out.append("`raftwasm` is what the wasm sandbox costs inside the cluster.")
# Keep the hand-written notes below the marker from the previous file.
marker = "<!-- notes: kept by bench/compare.sh -->"
try:
    previous = open(sys.argv[2]).read()
    if marker in previous:
        out += ["", marker + previous.split(marker, 1)[1].rstrip("\n")]
except FileNotFoundError:
    pass
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
