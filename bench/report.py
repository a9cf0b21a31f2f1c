"""Writes bench/compare.sh's results (one JSON line per run) as tables into BENCHMARKS.md.

bench/report.py RESULTS OUT MODE
"""
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
def memory(system, label):
    """A system's nodes' resident memory in KiB: idle, at the end of its put x64 runs under
    `label` (the highest round, per node) and at its peak, from rss.jsonl and the runs."""
    rss = [json.loads(l) for l in open(os.path.join(os.path.dirname(sys.argv[1]), "rss.jsonl")) if l.strip()]
    idle = next((r["idle_rss_kb"] for r in rss if r["system"] == system and "idle_rss_kb" in r), [])
    peak = next((r["peak_rss_kb"] for r in rss if r["system"] == system and "peak_rss_kb" in r), [])
    loaded = [r["node_rss_kb"] for r in runs if r["label"] == label and r["op"] == "put"
              and r["clients"] == 64 and "node_rss_kb" in r]
    return idle, [max(col) for col in zip(*loaded)], peak
def mbs(kbs, sep=" / "):
    return sep.join("%d" % (kb / 1024) for kb in kbs) or "?"
def span(v, fmt):
    return (fmt % min(v)) + ("–" + fmt % max(v) if len(v) > 1 else "") if v else "?"
if mode == "quick":
    # bench/quick.sh: printed, not written. Every figure is raftwasm over etcd within a round.
    ops, cpu = per_round(lambda r: r["ops_per_sec"]), per_round(cpu_us)
    p50, p99 = per_round(lambda r: r["p50_ms"]), per_round(lambda r: r["p99_ms"])
    a, b = "raftwasm (h2load)", "etcd (h2load)"
    print("raftwasm (git %s) over etcd, h2load, %d rounds of %d s (range over rounds):" % (
        sh("git rev-parse --short HEAD"), rows[0]["rounds"], rows[0]["duration_s"]))
    for c in (1, 64):
        print("  put x%-2d ops/s %s   p50 %s   p99 %s   node CPU per put %s" % (
            c, span(ratios(ops, "put", c, a, b), "%.2f"), span(ratios(p50, "put", c, a, b), "%.2f"),
            span(ratios(p99, "put", c, a, b), "%.2f"), span(ratios(cpu, "put", c, a, b), "%.2f")))
    print("absolute (range over rounds):")
    for label in (a, b):
        for c in (1, 64):
            k = ("put", c)
            print("  %-8s put x%-2d ops/s %s   p50 ms %s   p99 ms %s   node CPU µs/put %s" % (
                label.split(" ")[0], c, span(ops[k][label], "%d"), span(p50[k][label], "%.2f"),
                span(p99[k][label], "%.2f"), span(cpu[k][label], "%.1f")))
    print("resident memory per node, MB (idle / end of put x64, highest round / peak):")
    for system, label in (("raftwasm", a), ("etcd", b)):
        print("  %-8s %s" % (system, " / ".join(mbs(kbs, " ") for kbs in memory(system, label))))
    sys.exit(0)
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
ops_r, cpu_r = per_round(lambda r: r["ops_per_sec"]), per_round(cpu_us)
table = ["| system (client) | op | clients | ops/s | range | node CPU µs/op | range | p50 ms | p90 ms | p99 ms | p99.9 ms | errors |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    table.append("| %s | %s | %d | %d | %s | %.1f | %s | %.2f | %.2f | %.2f | %.2f | %d |" % (
        r["label"], r["op"], r["clients"], r["ops_per_sec"], r["range"], cpu_us(r),
        span(cpu_r[(r["op"], r["clients"])][r["label"]], "%.1f"), r["p50_ms"],
        r["p90_ms"], r["p99_ms"], r["p999_ms"], r["errors"]))
table += ["", "raftwasm over etcd within each round (range over rounds), ops/s and node CPU per op:", ""]
for op, c in [("put", 1), ("put", 64), ("get", 1), ("get", 64)]:
    for client, suffix in [("kvbench", ""), ("h2load", " (h2load)")]:
        a, b = "raftwasm" + suffix, "etcd" + suffix
        if a in ops_r.get((op, c), {}):
            table.append("- %s x%d, %s: ops/s %s, node CPU per op %s" % (
                op, c, client, span(ratios(ops_r, op, c, a, b), "%.2f"),
                span(ratios(cpu_r, op, c, a, b), "%.2f")))
table += ["", "Resident memory per node, MB (the three nodes of each system):", "",
          "| system | idle (VmRSS) | end of put x64 (VmRSS, highest round) | peak over the run (VmHWM) |",
          "|---|---:|---:|---:|"]
for system in ("raftwasm", "raftwasm-native", "etcd"):
    label = system + (" (h2load)" if system != "raftwasm-native" else "")
    table.append("| %s | %s | %s | %s |" % ((system,) + tuple(mbs(kbs) for kbs in memory(system, label))))
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
