#!/usr/bin/env bash
# bench/burst.sh — the burst scenario of bench/run.sh (scenario 1) alone, at several
# client counts, mimhost in several settings beside Node `ws` and Bun in one run, so
# the ratios are measured together (issue 11: p99 of a burst, CPU per delivery).
#
#   bench/burst.sh [CLIENTS:EVENTS ...]      default: 1000:200 10000:50
#
# Env: MIMHOST=path to a built host (default target/release/mimhost);
#      LOADGEN=path to loadgen (default target/release/loadgen);
#      VARIANTS="name=flags;name=ENV=V ENV2=V|flags" mimhost settings (default "mimhost=");
#      PEERS="node bun" the peers to run; ROUNDS=1 how often to repeat the whole set.
# Prints one line per run and writes bench/results/burst-<time>.json. Loopback only;
# every load bounded (loadgen's 60 s per phase).
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
MIMHOST=${MIMHOST:-target/release/mimhost}
LOADGEN=${LOADGEN:-target/release/loadgen}
VARIANTS=${VARIANTS:-mimhost=}
PEERS=${PEERS:-node bun}
ROUNDS=${ROUNDS:-1}
SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(1000:200 10000:50)
WORK=$(mktemp -d /tmp/mimhost-burst.XXXXXX)
mkdir -p bench/results
OUT=bench/results/burst-$(date -u +%Y%m%dT%H%M%S).json
SRV_PID=
cleanup() { [[ -n "$SRV_PID" ]] && kill "$SRV_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
[[ -d bench/peers/node_modules/ws ]] || (cd bench/peers && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
cp "$MIMHOST" "$WORK/mimhost"; cp "$LOADGEN" "$WORK/loadgen"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # kind flags -> SRV_PID PORT
  PORT=$(free_port)
  case "$1" in
    node) nice node bench/peers/server.js --port "$PORT" >"$WORK/srv.log" 2>&1 & ;;
    bun) nice bench/peers/node_modules/.bin/bun bench/peers/bun-server.js --port "$PORT" >"$WORK/srv.log" 2>&1 & ;;
    *) mkdir -p "$WORK/data-$PORT"
       local envs=
       [[ "$2" == *"|"* ]] && envs=${2%%|*}
       # shellcheck disable=SC2086
       env MIMHOST_LOG=warn $envs nice "$WORK/mimhost" serve --mims mims --data "$WORK/data-$PORT" \
         --listen "127.0.0.1:$PORT" --no-watch ${2#*|} >"$WORK/srv.log" 2>&1 & ;;
  esac
  SRV_PID=$!
  for _ in $(seq 300); do curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz" 2>/dev/null && break; sleep 0.1; done
  sleep 0.3
}
stop() { kill -TERM "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; SRV_PID=; }

echo "[" >"$OUT"; first=1
for round in $(seq "$ROUNDS"); do
  for size in "${SIZES[@]}"; do
    clients=${size%%:*}; events=${size##*:}
    IFS=';' read -r -a variants <<<"$VARIANTS"
    for entry in "${variants[@]}" $PEERS; do
      name=${entry%%=*}; flags=${entry#*=}; [[ "$entry" == *=* ]] || flags=
      kind=$name; [[ "$entry" == *=* ]] && kind=mimhost
      start "$kind" "$flags"
      nice "$WORK/loadgen" fanout --ws "ws://127.0.0.1:$PORT/ws/notify" --post "http://127.0.0.1:$PORT/notify/notify" \
        --clients "$clients" --events "$events" --singles 5 --cpu-pid "$SRV_PID" >"$WORK/r.json" 2>"$WORK/r.err" || true
      stop
      python3 - "$WORK/r.json" "$name" "$clients" "$events" "$round" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY' | tee -a "$WORK/lines"
import json, sys
path, name, clients, events, rnd, load = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception:
    print(json.dumps({"name": name, "clients": int(clients), "failed": True})); sys.exit()
b = r["burst"]; lat = b["latency"]
print(json.dumps({"round": int(rnd), "name": name, "clients": int(clients), "events": int(events),
  "load": float(load), "delivered": b["delivered"], "expected": b["expected"],
  "cpu_us": b["cpu_us_per_delivery"], "per_s": b["deliveries_per_s"], "post_ms": b["post_ms"],
  "p50": round(lat["p50_us"] / 1000, 1), "p99": round(lat["p99_us"] / 1000, 1),
  "max": round(lat["max_us"] / 1000, 1),
  "to_all_ms": r["dispatch_to_all_ms"]["median"], "single_p50": round(r["single_latency"]["p50_us"] / 1000, 1)}))
PY
    done
  done
done
python3 -c 'import json,sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1])], indent=1))' "$WORK/lines" >"$OUT"
echo "wrote $OUT" >&2
