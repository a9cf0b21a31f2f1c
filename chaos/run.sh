#!/usr/bin/env bash
# Fault-injection run: builds host and chaos (release), installs nftables/iproute2 if missing,
# puts each node in its own network namespace on a private bridge, runs `chaos`, and removes
# every process, namespace and link it made, on success, failure or Ctrl-C.
#
#   chaos/run.sh [--duration S] [--seed N] [--faults kill,split,...] [other chaos flags]
#
# Needs root. NODES (default 3) sets the cluster size; CHAOS_WORK keeps the run's files
# (history.jsonl, faults.log, report.json, node logs) in that directory instead of a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "chaos/run.sh needs root (network namespaces and nftables)" >&2
  exit 2
fi

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
fi

# CARGO_FEATURES: `make test` passes its own feature set, so this reuses the test build.
cargo build --release -q ${CARGO_FEATURES:-} -p host --bin host -p chaos --bin chaos

NODES=${NODES:-3}
TAG="rwc$(( $$ % 100000 ))"          # unique per run, short enough for interface names
NET="10.$(( 100 + $$ % 100 )).$(( $$ / 100 % 250 ))"
BR="${TAG}b"
WORK=${CHAOS_WORK:-$(mktemp -d /tmp/raftwasm-chaos.XXXXXX)}
mkdir -p "$WORK"
NSS=(); IPS=()

cleanup() {
  local rc=$?
  for ns in "${NSS[@]}"; do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] && kill -CONT $pids 2>/dev/null; [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  done
  for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
  if [ $rc -eq 0 ] && [ -z "${CHAOS_WORK:-}" ]; then rm -rf "$WORK"; else echo "chaos files kept in $WORK" >&2; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip link add "$BR" type bridge
ip addr add "$NET.254/24" dev "$BR"
ip link set "$BR" up
for i in $(seq 1 "$NODES"); do
  ns="${TAG}n$i"; veth="${TAG}v$i"
  ip netns add "$ns"; NSS+=("$ns")
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$BR" up
  ip -n "$ns" addr add "$NET.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  IPS+=("$NET.$i")
done

# The checker follows every node's change feed from the first revision and needs all of it: a
# node that falls behind resumes its watch at its last revision, which a node's default 16 MiB of
# history can have dropped by then (a 75 s run had: resume at 13,136, oldest kept 14,262), and
# the checker would count that as a broken feed; 256 MiB covers a run.
# Run copies, so a rebuild during a long run cannot swap the binary under restarted nodes.
mkdir -p "$WORK/bin"
cp ./target/release/host ./target/release/chaos "$WORK/bin/"
"$WORK/bin/chaos" --host "$WORK/bin/host" --work "$WORK" \
  --namespaces "$(IFS=,; echo "${NSS[*]}")" --ips "$(IFS=,; echo "${IPS[*]}")" \
  --node-args "--snapshot-every=400 --snapshot-keep-logs=50 --watch-history-bytes=268435456" "$@"
