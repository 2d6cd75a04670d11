#!/usr/bin/env bash
# bench/cluster.sh [--quick] — fan-out across 2 mimhost nodes on one Redis vs Mesa
# with 2 servers on the same Redis (same clients, same events), plus one mimhost node
# alone for the cost of the Redis hop.
#
# Clients are split evenly over the two servers; every dispatch is posted to the
# first, so half the deliveries cross Redis. Loopback only, bounded counts.
#
#   --quick   200 clients, 20 events (proves the harness); default 2,000 and 100
#
# Env: MIMHOST=path to a built host (default target/release/mimhost);
#      SKIP_BUILD=1 to use the binaries as they are. Prints one JSON line per run and
#      a table; writes bench/results/cluster-latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=2000; EVENTS=100; SINGLES=5
case "${1:-}" in
  --quick) CLIENTS=200; EVENTS=20; SINGLES=3 ;;
  -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
  "") ;;
  *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
esac

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d /tmp/mimhost-cluster-bench.XXXXXX)
mkdir -p "$WORK/r" "$WORK/logs" bench/results
PIDS=()
say() { printf '%s\n' "$*" >&2; }
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  local i
  for i in $(seq 300); do curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0; sleep 0.1; done
  say "!! $1 did not answer"; return 1
}

MIMHOST=${MIMHOST:-target/release/mimhost}
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  say "== building (release): mimhost, loadgen"
  cargo build --release -q -p mimhost -p mimhost-bench
fi
cp "$MIMHOST" target/release/loadgen "$WORK/"
MIMHOST=$WORK/mimhost; LOADGEN=$WORK/loadgen
[[ -d bench/peers/node_modules/@cryb/mesa ]] || (cd bench/peers && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
  >"$WORK/logs/redis.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

# start KIND NAME -> sets PORT and SRV (its pid). KIND: mimhost | mimhost-cluster | mesa
start() {
  local kind=$1 name=$2 port data
  port=$(free_port)
  data=$(mktemp -d "$WORK/data.XXXXXX")
  case "$kind" in
    mimhost) MIMHOST_LOG=warn "$MIMHOST" serve --mims mims --data "$data" --listen "127.0.0.1:$port" --no-watch \
      >"$WORK/logs/$name.log" 2>&1 & ;;
    mimhost-cluster) MIMHOST_LOG=warn "$MIMHOST" serve --mims mims --data "$data" --listen "127.0.0.1:$port" --no-watch \
      --cluster "$REDIS_URL" --node-id "$name" >"$WORK/logs/$name.log" 2>&1 & ;;
    mesa) node bench/peers/server.js --port "$port" --mesa --redis "$REDIS_URL" >"$WORK/logs/$name.log" 2>&1 & ;;
  esac
  SRV=$!
  PIDS+=("$SRV")
  PORT=$port
  wait_http "http://127.0.0.1:$port/healthz"
}

# run NAME PORT... : fan-out with clients split over the ports, posts to the first
run() {
  local name=$1; shift
  local urls="" p
  for p in "$@"; do urls="${urls:+$urls,}ws://127.0.0.1:$p/ws/notify"; done
  sleep 1.5 # nodes subscribed, presence written
  say "-- $name ($CLIENTS clients over $# server(s), $EVENTS events)"
  nice "$LOADGEN" fanout --ws "$urls" --post "http://127.0.0.1:$1/notify/notify" \
    --clients "$CLIENTS" --singles "$SINGLES" --events "$EVENTS" >"$WORK/r/$name.json" 2>"$WORK/logs/$name.err" \
    || say "   failed: $(tail -n 3 "$WORK/logs/$name.err")"
}

# hop NAME POST_PORT WS_PORT: 10 clients on one node, 20 single dispatches posted to
# another (or the same) node, each waited for: the latency one Redis hop adds.
hop() {
  sleep 1
  say "-- $1 (10 clients on :$3, dispatches posted to :$2)"
  nice "$LOADGEN" fanout --ws "ws://127.0.0.1:$3/ws/notify" --post "http://127.0.0.1:$2/notify/notify" \
    --clients 10 --singles 20 --events 10 >"$WORK/r/$1.json" 2>"$WORK/logs/$1.err" || say "   failed"
}

start mimhost-cluster n1; a=$PORT; pa=$SRV
start mimhost-cluster n2; b=$PORT; pb=$SRV
hop hop-same-node "$a" "$a"
hop hop-other-node "$a" "$b"
run mimhost-2-nodes "$a" "$b"
kill -TERM "$pa" "$pb" 2>/dev/null || true; sleep 1
start mesa m1; a=$PORT; pa=$SRV
start mesa m2; b=$PORT; pb=$SRV
run mesa-2-servers "$a" "$b"
kill -TERM "$pa" "$pb" 2>/dev/null || true; sleep 1
start mimhost solo
run mimhost-1-node "$PORT"

python3 - "$WORK/r" "bench/results/cluster-latest.json" "$(git rev-parse --short HEAD)" <<'EOF'
import json, os, sys
r, out, rev = sys.argv[1], sys.argv[2], sys.argv[3]
runs = {n[:-5]: json.load(open(os.path.join(r, n))) for n in sorted(os.listdir(r)) if n.endswith('.json')}
json.dump({"revision": rev, "runs": runs}, open(out, 'w'), indent=1)
def row(name):
    x = runs.get(name) or {}
    b = x.get("burst", {})
    lat = b.get("latency", {}) or {}
    single = x.get("single_latency", {}) or {}
    to_all = (x.get("dispatch_to_all_ms") or {}).get("median")
    ms = lambda v: None if v is None else round(v / 1000.0, 2)
    return (b.get("deliveries_per_s"), ms(lat.get("p99_us")), to_all,
            ms(single.get("p50_us")), b.get("delivered"), b.get("expected"))
print("| run | deliveries/s | burst p99 (ms) | one dispatch reaches all (ms) | single p50 (ms) | delivered/expected |")
print("|---|---|---|---|---|---|")
for name in ("mimhost-2-nodes", "mesa-2-servers", "mimhost-1-node"):
    d, p99, to_all, p50, got, want = row(name)
    print(f"| {name} | {d} | {p99} | {to_all} | {p50} | {got}/{want} |")
m, s = row("mimhost-2-nodes"), row("mesa-2-servers")
if m[0] and s[0]:
    print(f"\nratio deliveries/s mimhost 2 nodes / Mesa 2 servers: {m[0] / s[0]:.2f}x")
same, other = row("hop-same-node"), row("hop-other-node")
if same[3] is not None and other[3] is not None:
    print(f"one Redis hop: single-dispatch p50 {other[3]} ms on the other node vs {same[3]} ms on the same node"
          f" (+{other[3] - same[3]:.2f} ms)")
EOF
