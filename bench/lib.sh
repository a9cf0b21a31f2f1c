# Shared by bench/compare.sh and bench/quick.sh: settings, installing the tools, starting and
# stopping 3-node raftwasm and etcd clusters, and the runs (kvbench or h2load) with the nodes'
# CPU time and resident memory sampled from /proc. Sourced from the repository root; the caller
# sets NEED_ETCD and NEED_H2LOAD (1 or 0) first. Every run appends one JSON line to $RESULTS.

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-31000}
KEYSPACE=${KEYSPACE:-10000}

if [ "${NEED_ETCD:-0}" = 1 ] && ! command -v etcd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
if [ "${NEED_H2LOAD:-0}" = 1 ] && ! command -v h2load >/dev/null; then
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

# rss_kb PID...: each process's resident set now (VmRSS), in KiB, comma-separated.
rss_kb() {
  local pid kb=()
  for pid in "$@"; do kb+=("$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")"); done
  (IFS=,; echo "${kb[*]}")
}

# run_cpu SYSTEM TARGET ENDPOINT OP CLIENTS [extra]: like run, and adds the CPU seconds NODE_PIDS
# spent over the measured window (sampled after WARMUP, again DURATION later) and each node's
# resident set at the end of that window (`node_rss_kb`) to the JSON line.
run_cpu() {
  local system=$1 target=$2 ep=$3 op=$4 clients=$5 out="$WORK/one.json"; shift 5
  echo "== $system $op x$clients" >&2
  $KVBENCH --target "$target" --endpoints "$ep" --op "$op" --clients "$clients" \
    --connections $(( clients < 8 ? clients : 8 )) --key-size 8 --value-size 256 \
    --keyspace "$KEYSPACE" --duration "$DURATION" --warmup "$WARMUP" --label "$system" "$@" \
    >"$out" & local bench=$!
  sleep "$WARMUP"; local c0; c0=$(cpu_ticks "${NODE_PIDS[@]}")
  sleep "$DURATION"; local c1 rss; c1=$(cpu_ticks "${NODE_PIDS[@]}"); rss=$(rss_kb "${NODE_PIDS[@]}")
  wait $bench
  tail -n 1 "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
r["node_cpu_s"] = int(sys.argv[1]) / int(sys.argv[2])
r["node_rss_kb"] = [int(x) for x in sys.argv[3].split(",")]
print(json.dumps(r))' "$((c1 - c0))" "$(getconf CLK_TCK)" "$rss" >>"$RESULTS"
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
  sleep "$DURATION"; local c1 rss; c1=$(cpu_ticks "${NODE_PIDS[@]}"); rss=$(rss_kb "${NODE_PIDS[@]}")
  wait $bench || { cat "$out" >&2; return 1; }
  python3 - "$log" "$out" "$system" $((conns * streams)) "$DURATION" "$((c1 - c0))" "$(getconf CLK_TCK)" "$rss" <<'PY' >>"$RESULTS"
import json, re, sys
log, out, label, clients, duration, ticks, hz, rss = sys.argv[1:]
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
    "node_cpu_s": int(ticks) / int(hz), "node_rss_kb": [int(x) for x in rss.split(",")]}))
PY
}

# peak_rss SYSTEM PID...: each node's peak resident set (VmHWM), one JSON line in rss.jsonl.
peak_rss() {
  local system=$1 pid kb=(); shift
  for pid in "$@"; do kb+=("$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")"); done
  echo "{\"system\": \"$system\", \"peak_rss_kb\": [$(IFS=,; echo "${kb[*]}")]}" >>"$WORK/rss.jsonl"
}

# idle_rss SYSTEM PID...: each node's resident set now (VmRSS), taken with no load running, one
# JSON line in rss.jsonl.
idle_rss() {
  local system=$1; shift
  echo "{\"system\": \"$system\", \"idle_rss_kb\": [$(rss_kb "$@")]}" >>"$WORK/rss.jsonl"
}
