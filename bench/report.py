#!/usr/bin/env python3
"""Turns the raw results of bench/run.sh into the side-by-side table.

    report.py RAW_DIR OUT.json [--machine-… --v-… --seconds N]

Prints the table (figure | mimhost | peer | peer value | ratio), writes OUT.json with
the machine, the versions, the rows and every raw result, and — for a full run —
rewrites the table between the markers in docs/benchmarks.md.
"""
import argparse
import json
import os
import re
import sys

ap = argparse.ArgumentParser()
ap.add_argument("raw")
ap.add_argument("out")
for name in ["machine-nproc", "machine-cpu", "machine-mem", "machine-nofile", "machine-load", "v-node", "v-ws",
             "v-mesa", "v-rustc", "v-redis", "v-mimhost", "seconds"]:
    ap.add_argument("--" + name, default="")
args = ap.parse_args()

raw = {}
for f in sorted(os.listdir(args.raw)):
    path = os.path.join(args.raw, f)
    name, ext = os.path.splitext(f)
    if ext == ".json":
        try:
            with open(path) as fh:
                raw[name] = json.load(fh)
        except (ValueError, OSError) as e:
            raw[name] = {"failed": True, "log": "unreadable result: %s" % e}
    elif ext == ".txt":
        with open(path) as fh:
            raw[name] = {"text": fh.read()}

params = raw.get("params", {})
quick = bool(params.get("quick"))


def get(name, *path):
    v = raw.get(name)
    if v is None or v.get("failed") is True:
        return None
    for p in path:
        if isinstance(v, dict) and p in v:
            v = v[p]
        else:
            return None
    return v


def parse_wrk(name):
    text = get(name, "text")
    if not text:
        return None, None
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    lat = None
    if p99:
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
        lat = float(p99.group(1)) * scale
    return (float(rps.group(1)) if rps else None), lat


rows = []
notes = []


def row(figure, mh, peer_name=None, peer=None, better="higher", unit=""):
    ratio = None
    if isinstance(mh, (int, float)) and isinstance(peer, (int, float)) and peer:
        ratio = mh / peer
    rows.append({"figure": figure, "unit": unit, "mimhost": mh, "peer": peer_name, "peer_value": peer,
                 "ratio": ratio, "better": better})


def ms(us):
    return None if us is None else us / 1000.0


def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        return "{:,.0f}".format(v)
    if abs(v) >= 10:
        return "{:.1f}".format(v)
    return "{:.2f}".format(v)


PEERS = [("node", "Node ws"), ("mesa", "Mesa (Dispatcher→Redis)")]
if get("fanout-small-bun"):
    PEERS.append(("bun", "Bun (Bun.serve)"))
mesa_in_mimhost = "fanout-mimmesa-unavailable" not in raw

for size, label in [("small", params.get("fan_small")), ("big", params.get("fan_big"))]:
    n = "{:,}".format(label) if label else size
    base = "fanout-%s-" % size
    for key, name in PEERS:
        incomplete = []
        for k in ("mimhost", key):
            if get(base + k) and not get(base + k, "burst", "complete"):
                incomplete.append(k)
        if incomplete:
            notes.append("fan-out %s: the burst did not reach every client for %s within the timeout"
                         % (n, ", ".join(incomplete)))
        row("fan-out %s: deliveries/s" % n, get(base + "mimhost", "burst", "deliveries_per_s"), name,
            get(base + key, "burst", "deliveries_per_s"))
        row("fan-out %s: p50 latency (ms)" % n, ms(get(base + "mimhost", "burst", "latency", "p50_us")), name,
            ms(get(base + key, "burst", "latency", "p50_us")), "lower")
        row("fan-out %s: p99 latency (ms)" % n, ms(get(base + "mimhost", "burst", "latency", "p99_us")), name,
            ms(get(base + key, "burst", "latency", "p99_us")), "lower")
        row("fan-out %s: one dispatch reaches all (ms)" % n,
            get(base + "mimhost", "dispatch_to_all_ms", "median"), name,
            get(base + key, "dispatch_to_all_ms", "median"), "lower")
        row("fan-out %s: server CPU per delivery (µs)" % n,
            get(base + "mimhost", "burst", "cpu_us_per_delivery"), name,
            get(base + key, "burst", "cpu_us_per_delivery"), "lower")
    if mesa_in_mimhost and get(base + "mimhost-bench"):
        row("fan-out %s via @cryb/mesa Dispatcher: deliveries/s" % n,
            get(base + "mimhost-bench", "burst", "deliveries_per_s"), "Mesa (Dispatcher→Redis)",
            get(base + "mesa", "burst", "deliveries_per_s"))
        row("fan-out %s via @cryb/mesa Dispatcher: p99 (ms)" % n,
            ms(get(base + "mimhost-bench", "burst", "latency", "p99_us")), "Mesa (Dispatcher→Redis)",
            ms(get(base + "mesa", "burst", "latency", "p99_us")), "lower")
if get("floor"):
    row("fan-out floor: one 64-byte write per frame, CPU (µs)",
        get("floor", "cpu_us_per_frame_one_write_each"))
    row("fan-out floor: one write per socket per burst, CPU per frame (µs)",
        get("floor", "cpu_us_per_frame_one_write_per_burst"))
if not mesa_in_mimhost:
    body = get("fanout-mimmesa-unavailable", "body") or ""
    notes.append("mimhost has no `@cryb/mesa` module yet (bench/mims/mesa answered %s: %s), so the "
                 "dispatch-to-client-ids rows compare Mesa with mimhost's dispatch channel (mims/notify)."
                 % (get("fanout-mimmesa-unavailable", "status"), body.strip()[:160]))

row("hello: req/s (64 conns)", get("hello-mimhost", "rps"), "Node http", get("hello-node", "rps"))
row("hello: p50 (ms)", ms(get("hello-mimhost", "latency", "p50_us")), "Node http",
    ms(get("hello-node", "latency", "p50_us")), "lower")
row("hello: p99 (ms)", ms(get("hello-mimhost", "latency", "p99_us")), "Node http",
    ms(get("hello-node", "latency", "p99_us")), "lower")
w_mh, w_mh99 = parse_wrk("wrk-mimhost")
w_nd, w_nd99 = parse_wrk("wrk-node")
if w_mh is not None:
    row("hello, wrk -t1 -c64: req/s", w_mh, "Node http", w_nd)
    row("hello, wrk -t1 -c64: p99 (ms)", w_mh99, "Node http", w_nd99, "lower")

row("chat 100: deliveries/s", get("chat-mimhost", "deliveries_per_s"), "Node ws", get("chat-node", "deliveries_per_s"))
row("chat 100: p99 (ms)", ms(get("chat-mimhost", "latency", "p99_us")), "Node ws",
    ms(get("chat-node", "latency", "p99_us")), "lower")

idle = params.get("idle")
idle_n = "{:,}".format(idle) if idle else "?"
mh_total = get("idle-mimhost", "bytes_per_session", "total")
for key, name in [("node", "Node ws"), ("mesa", "Mesa"), ("bun", "Bun (Bun.serve)")]:
    if not get("idle-" + key):
        continue
    row("idle %s: bytes/session, host+workers" % idle_n, mh_total, name,
        get("idle-" + key, "bytes_per_session", "server"), "lower")
row("idle %s: bytes/session, host process" % idle_n, get("idle-mimhost", "bytes_per_session", "server"))
row("idle %s: bytes/session, worker processes" % idle_n, get("idle-mimhost", "bytes_per_session", "workers"))
if params.get("max_try"):
    for key, name in [("node", "Node ws"), ("mesa", "Mesa")]:
        row("most sessions held (fd limit %s)" % args.machine_nofile,
            get("max-mimhost", "opened"), name, get("max-" + key, "opened"))
        row("… of them answering a broadcast (after closing 32 to free fds)",
            get("max-mimhost", "received_broadcast"), name, get("max-" + key, "received_broadcast"))
    mh_max = get("max-mimhost", "bytes_per_session", "total")
    row("bytes/session at the most held, host+workers", mh_max, "Node ws",
        get("max-node", "bytes_per_session", "server"), "lower")

row("storage set+get: req/s (64 conns)", get("storage-mimhost", "rps"), "Node http + Redis SET/GET",
    get("storage-node", "rps"))
row("storage set+get: p99 (ms)", ms(get("storage-mimhost", "latency", "p99_us")), "Node http + Redis SET/GET",
    ms(get("storage-node", "latency", "p99_us")), "lower")

ipc_in = get("ipc-cost", "in_process", "mean_us")
ipc_rt = get("ipc-cost", "worker_round_trip", "mean_us")
row("hello JS in-process (µs/req)", ipc_in, better="lower")
row("hello through the worker, no HTTP (µs/req)", ipc_rt, better="lower")
row("process boundary (µs/req)", get("ipc-cost", "boundary_us"), better="lower")
row("worker alone, 64 in flight (req/s)", get("ipc-cost", "worker_64_in_flight_rps"))
seq_hello = get("seq-hello", "latency", "mean_us")
seq_health = get("seq-healthz", "latency", "mean_us")
row("HTTP hello, 1 conn sequential (µs/req)", seq_hello, better="lower")
row("HTTP /healthz (no JS), 1 conn (µs/req)", seq_health, better="lower")
if seq_hello is not None and seq_health is not None:
    row("HTTP hello − /healthz (µs/req)", seq_hello - seq_health, better="lower")

proxied = get("proxy-mim-seq", "latency", "mean_us")
direct = get("proxy-direct-seq", "latency", "mean_us")
row("GET proxied through a mim (context.http.request), 1 conn (µs/req)", proxied,
    "the same upstream (Node http) called directly", direct, "lower")
if proxied is not None and direct is not None:
    row("added by the proxy hop (µs/req)", proxied - direct, better="lower")
row("GET proxied through a mim, 64 conns (req/s)", get("proxy-mim-64", "rps"),
    "the same upstream called directly", get("proxy-direct-64", "rps"))

for name, v in sorted(raw.items()):
    if isinstance(v, dict) and v.get("failed") is True:
        notes.append("%s failed: %s" % (name, (v.get("log") or "").strip().replace("\n", " ")[:200]))

machine = {"nproc": args.machine_nproc, "cpu": args.machine_cpu, "memory": args.machine_mem,
           "nofile": args.machine_nofile, "loadavg_start_end": args.machine_load}
versions = {"node": args.v_node, "ws": args.v_ws, "mesa": args.v_mesa, "rustc": args.v_rustc,
            "redis": args.v_redis, "mimhost": args.v_mimhost}


def ratio_text(r):
    if r["ratio"] is None:
        return ""
    return "{:.2f}×".format(r["ratio"])


lines = ["| figure | mimhost | peer | peer value | mimhost ÷ peer |", "|---|---:|---|---:|---:|"]
for r in rows:
    lines.append("| %s | %s | %s | %s | %s |" % (r["figure"], fmt(r["mimhost"]), r["peer"] or "",
                                                 fmt(r["peer_value"]) if r["peer"] else "", ratio_text(r)))
table = "\n".join(lines)
header = ("Machine: %s × %s, %s, open files %s, load average at start / end %s. Versions: mimhost %s, %s, node %s, ws %s, "
          "@cryb/mesa %s, redis %s.%s"
          % (machine["nproc"], machine["cpu"], machine["memory"], machine["nofile"], machine["loadavg_start_end"], versions["mimhost"],
             versions["rustc"], versions["node"], versions["ws"], versions["mesa"], versions["redis"],
             " QUICK RUN (harness check only)." if quick else ""))
legend = ("Ratio = mimhost ÷ peer: above 1 is better for rates and sessions held, "
          "below 1 is better for latency and memory.")

print()
print(header)
print()
print(table)
print()
print(legend)
for n in notes:
    print("- " + n)

result = {"quick": quick, "seconds": args.seconds, "machine": machine, "versions": versions,
          "params": params, "rows": rows, "notes": notes, "raw": raw}
out = args.out
if quick and os.path.basename(out) == "latest.json":
    out = os.path.join(os.path.dirname(out), "quick.json")
with open(out, "w") as fh:
    json.dump(result, fh, indent=1, ensure_ascii=False)
    fh.write("\n")
print("\nwrote %s" % out)

doc = "docs/benchmarks.md"
if not quick and os.path.exists(doc):
    with open(doc) as fh:
        text = fh.read()
    begin, end = "<!-- bench:table:begin -->", "<!-- bench:table:end -->"
    if begin in text and end in text:
        block = "%s\n%s\n\n%s\n\n%s\n%s\n%s" % (begin, header, table, legend,
                                                 "".join("\n- " + n for n in notes), end)
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
        with open(doc, "w") as fh:
            fh.write(text)
        print("updated the table in %s" % doc)
