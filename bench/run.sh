#!/usr/bin/env bash
# bench/run.sh [--quick] — mimhost side by side with Node `ws`/`http` and Mesa.
#
# Builds the release host and the load generator (once), installs the Node peers
# from bench/peers/package-lock.json, starts a local redis-server for Mesa, runs every
# scenario against every server that can do it, prints the table and writes
# bench/results/latest.json. Loopback only; every load is bounded in count and time.
#
#   --quick   small counts and short runs: proves the harness works (< 3 minutes)
#
# Env: MIMHOST=path to a built host (default target/release/mimhost);
#      SKIP_BUILD=1 to use the binaries as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option $a (try --help)" >&2; exit 2 ;;
  esac
done

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
STARTED=$(date +%s)
LOAD_AT_START=$(cut -d" " -f1-3 /proc/loadavg)
WORK=$(mktemp -d /tmp/mimhost-bench.XXXXXX)
mkdir -p "$WORK/r" "$WORK/logs" bench/results
PIDS=()

say() { printf '%s\n' "$*" >&2; }

stop_pid() { # pid: TERM, wait up to 15 s, then KILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # url [seconds]
  local url=$1 limit=${2:-30} i
  for i in $(seq $((limit * 10))); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  say "!! $url did not answer within ${limit}s"
  return 1
}

# ---------------------------------------------------------------- build & install
MIMHOST=${MIMHOST:-target/release/mimhost}
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  say "== building (release): mimhost, loadgen, ipc-cost"
  cargo build --release -q -p mimhost
  cargo build --release -q -p mimhost-bench
fi
LOADGEN=target/release/loadgen
IPCCOST=target/release/ipc-cost
for b in "$MIMHOST" "$LOADGEN" "$IPCCOST"; do
  [[ -x "$b" ]] || { say "missing $b (build it, or unset SKIP_BUILD)"; exit 1; }
done
# Private copies: a rebuild in the shared target/ during the run cannot swap them.
mkdir -p "$WORK/bin"
cp "$MIMHOST" "$LOADGEN" "$IPCCOST" "$WORK/bin/"
MIMHOST=$WORK/bin/$(basename "$MIMHOST"); LOADGEN=$WORK/bin/loadgen; IPCCOST=$WORK/bin/ipc-cost
REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- runtime host-bindings cli 2>/dev/null || REVISION="$REVISION+uncommitted"

if [[ ! -d bench/peers/node_modules/ws || bench/peers/package-lock.json -nt bench/peers/node_modules/.package-lock.json ]]; then
  say "== installing the Node peers (npm ci)"
  (cd bench/peers && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# Bun (npm package `bun`, pinned in the lockfile): its own WebSocket server, when it runs here.
BUN=bench/peers/node_modules/.bin/bun
BUN_KIND=bun
"$BUN" --version >/dev/null 2>&1 || { say "(bun from npm does not run here: the Bun rows are skipped)"; BUN_KIND=; }
command -v redis-server >/dev/null || { say "== installing redis-server"; apt-get install -y -q redis-server >/dev/null; }
command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null 2>&1 || say "(wrk not installable: the wrk note is skipped)"

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --loglevel warning >"$WORK/logs/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
for i in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# ---------------------------------------------------------------- servers
# start_server KIND -> sets SRV_PID, SRV_PORT. KIND: mimhost | mimhost-bench | node | mesa | bun
start_server() {
  local kind=$1 port data log
  port=$(free_port)
  log="$WORK/logs/$kind-$port.log"
  case "$kind" in
    mimhost|mimhost-bench)
      local mims=mims
      [[ "$kind" == mimhost-bench ]] && mims=bench/mims
      data=$(mktemp -d "$WORK/data.XXXXXX")
      MIMHOST_LOG=warn "$MIMHOST" serve --mims "$mims" --data "$data" --listen "127.0.0.1:$port" --no-watch >"$log" 2>&1 &
      ;;
    node) node bench/peers/server.js --port "$port" --redis "$REDIS_URL" >"$log" 2>&1 & ;;
    bun) "$BUN" bench/peers/bun-server.js --port "$port" >"$log" 2>&1 & ;;
    mesa) node bench/peers/server.js --port "$port" --mesa --redis "$REDIS_URL" >"$log" 2>&1 & ;;
  esac
  SRV_PID=$!
  SRV_PORT=$port
  PIDS+=("$SRV_PID")
  if [[ "$kind" == mimhost* ]]; then wait_http "http://127.0.0.1:$port/healthz" 60; else wait_http "http://127.0.0.1:$port/healthz" 30; fi
  sleep 0.3
}

stop_server() {
  stop_pid "$SRV_PID"
  local keep=() p
  for p in "${PIDS[@]}"; do [[ "$p" != "$SRV_PID" ]] && keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# record NAME CMD... : the command's JSON stdout goes to $WORK/r/NAME.json
record() {
  local name=$1; shift
  say "-- $name"
  if ! timeout 900 "$@" >"$WORK/r/$name.json" 2>"$WORK/logs/$name.err"; then
    say "   failed (exit $?): $(tail -n 3 "$WORK/logs/$name.err" | tr '\n' ' ')"
    printf '{"failed": true, "log": %s}\n' "$(tail -n 5 "$WORK/logs/$name.err" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" >"$WORK/r/$name.json"
  fi
  sed 's/^/   /' "$WORK/logs/$name.err" | tail -n 4 >&2 || true
}

# ---------------------------------------------------------------- parameters
if [[ $QUICK == 1 ]]; then
  FAN_SMALL=200;  FAN_SMALL_EVENTS=20; FAN_BIG=1000; FAN_BIG_EVENTS=10; SINGLES=2
  HTTP_S=2; CHAT_S=2; IDLE=1000; MAX_TRY=0; IPC_ITER=2000; SEQ_S=1; WRK_S=2
else
  FAN_SMALL=1000; FAN_SMALL_EVENTS=200; FAN_BIG=10000; FAN_BIG_EVENTS=50; SINGLES=5
  HTTP_S=10; CHAT_S=10; IDLE=10000; MAX_TRY=20000; IPC_ITER=20000; SEQ_S=5; WRK_S=10
fi
echo "{\"quick\": $QUICK, \"fan_small\": $FAN_SMALL, \"fan_big\": $FAN_BIG, \"idle\": $IDLE, \"max_try\": $MAX_TRY}" >"$WORK/r/params.json"

# ws/post endpoints of each server for the broadcast channel
fan_urls() { # kind port -> WS_URL POST_URL
  case "$1" in
    mimhost|node|mesa|bun) WS_URL="ws://127.0.0.1:$2/ws/notify"; POST_URL="http://127.0.0.1:$2/notify/notify" ;;
    mimhost-bench) WS_URL="ws://127.0.0.1:$2/ws/mesa"; POST_URL="http://127.0.0.1:$2/mesa/notify" ;;
  esac
}

# ---------------------------------------------------------------- 1. fan-out
say "== 1. broadcast fan-out"
for kind in mimhost node mesa $BUN_KIND mimhost-bench; do
  start_server "$kind"
  if [[ "$kind" == mimhost-bench ]]; then
    # mimhost's own @cryb/mesa Dispatcher: only when the host offers it
    code=$(curl -s -o "$WORK/logs/mesa-probe.txt" -w '%{http_code}' -X POST "http://127.0.0.1:$SRV_PORT/mesa/notify" || true)
    if [[ "$code" != 200 ]]; then
      say "-- mimhost @cryb/mesa dispatch: not available ($code: $(head -c 200 "$WORK/logs/mesa-probe.txt"))"
      printf '{"unavailable": true, "status": "%s", "body": %s}\n' "$code" \
        "$(head -c 300 "$WORK/logs/mesa-probe.txt" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" >"$WORK/r/fanout-mimmesa-unavailable.json"
      stop_server; continue
    fi
  fi
  fan_urls "$kind" "$SRV_PORT"
  record "fanout-small-$kind" "$LOADGEN" fanout --ws "$WS_URL" --post "$POST_URL" \
    --clients "$FAN_SMALL" --singles "$SINGLES" --events "$FAN_SMALL_EVENTS" --cpu-pid "$SRV_PID"
  stop_server
  start_server "$kind"
  fan_urls "$kind" "$SRV_PORT"
  record "fanout-big-$kind" "$LOADGEN" fanout --ws "$WS_URL" --post "$POST_URL" \
    --clients "$FAN_BIG" --singles "$SINGLES" --events "$FAN_BIG_EVENTS" --cpu-pid "$SRV_PID"
  stop_server
done
# The floor: a plain loop writing 64-byte frames to loopback sockets.
record "floor" "$LOADGEN" floor --clients "$FAN_SMALL" --events "$FAN_SMALL_EVENTS"

# ---------------------------------------------------------------- 2. hello
say "== 2. JS hello handler, 64 connections"
for kind in mimhost node; do
  start_server "$kind"
  record "hello-$kind" "$LOADGEN" http --url "http://127.0.0.1:$SRV_PORT/hello/" --conns 64 --duration "$HTTP_S"
  if command -v wrk >/dev/null; then
    say "-- wrk-$kind"
    wrk -t1 -c64 -d"${WRK_S}s" --latency "http://127.0.0.1:$SRV_PORT/hello/" >"$WORK/r/wrk-$kind.txt" 2>&1 || true
  fi
  stop_server
done

# ---------------------------------------------------------------- 3. chat
say "== 3. chat group of 100"
for kind in mimhost node; do
  start_server "$kind"
  record "chat-$kind" "$LOADGEN" chat --ws "ws://127.0.0.1:$SRV_PORT/chat/" --protocol text \
    --clients 100 --duration "$CHAT_S"
  stop_server
done

# ---------------------------------------------------------------- 4. idle sessions
say "== 4. idle sessions"
for kind in mimhost node mesa $BUN_KIND; do
  start_server "$kind"
  fan_urls "$kind" "$SRV_PORT"
  record "idle-$kind" "$LOADGEN" hold --ws "$WS_URL" --post "$POST_URL" --clients "$IDLE" --procs 1 --rss-pid "$SRV_PID"
  stop_server
  if [[ $MAX_TRY -gt 0 ]]; then
    start_server "$kind"
    fan_urls "$kind" "$SRV_PORT"
    record "max-$kind" "$LOADGEN" hold --ws "$WS_URL" --post "$POST_URL" --clients "$MAX_TRY" --procs 2 \
      --rss-pid "$SRV_PID" --connect-timeout 3 --max-failures 200
    stop_server
  fi
done

# ---------------------------------------------------------------- 5. storage
say "== 5. storage: setItem + getItem per request"
start_server mimhost-bench
record "storage-mimhost" "$LOADGEN" http --url "http://127.0.0.1:$SRV_PORT/kv/?k={n}" --method POST \
  --body "value-of-a-bench-key" --conns 64 --duration "$HTTP_S"
stop_server
start_server node
record "storage-node" "$LOADGEN" http --url "http://127.0.0.1:$SRV_PORT/kv/?k={n}" --method POST \
  --body "value-of-a-bench-key" --conns 64 --duration "$HTTP_S"
stop_server

# ---------------------------------------------------------------- 6. process boundary
say "== 6. process-boundary cost"
record "ipc-cost" "$IPCCOST" --mim mims/hello --iterations "$IPC_ITER"
start_server mimhost
record "seq-hello" "$LOADGEN" http --url "http://127.0.0.1:$SRV_PORT/hello/" --conns 1 --duration "$SEQ_S" --warmup 0.5
record "seq-healthz" "$LOADGEN" http --url "http://127.0.0.1:$SRV_PORT/healthz" --conns 1 --duration "$SEQ_S" --warmup 0.5
stop_server

# ---------------------------------------------------------------- 7. outbound HTTP
say "== 7. outbound HTTP: a proxied request against the upstream called directly"
start_server node                       # the upstream: Node http's /hello/
UP_PID=$SRV_PID; UP_PORT=$SRV_PORT
UP_URL="http://127.0.0.1:$UP_PORT/hello/"
UP_ENC=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$UP_URL")
start_server mimhost-bench              # bench/mims/proxy: client -> mim -> upstream -> mim -> client
PROXY_URL="http://127.0.0.1:$SRV_PORT/proxy/?u=$UP_ENC"
record "proxy-direct-seq" "$LOADGEN" http --url "$UP_URL" --conns 1 --duration "$SEQ_S" --warmup 0.5
record "proxy-mim-seq" "$LOADGEN" http --url "$PROXY_URL" --conns 1 --duration "$SEQ_S" --warmup 0.5
record "proxy-direct-64" "$LOADGEN" http --url "$UP_URL" --conns 64 --duration "$HTTP_S"
record "proxy-mim-64" "$LOADGEN" http --url "$PROXY_URL" --conns 64 --duration "$HTTP_S"
stop_server
SRV_PID=$UP_PID; stop_server

# ---------------------------------------------------------------- report
ws_version=$(node -p "require('./bench/peers/node_modules/ws/package.json').version")
mesa_version=$(node -p "require('./bench/peers/node_modules/@cryb/mesa/package.json').version")
mesa_ws_version=$(node -p "require('./bench/peers/node_modules/@cryb/mesa/node_modules/ws/package.json').version" 2>/dev/null || echo "$ws_version")
python3 bench/report.py "$WORK/r" bench/results/latest.json \
  --machine-nproc "$(nproc)" \
  --machine-cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  --machine-mem "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)" \
  --machine-nofile "$(ulimit -n)" --machine-load "$LOAD_AT_START / $(cut -d" " -f1-3 /proc/loadavg)" \
  --v-node "$(node --version)" --v-ws "$ws_version" --v-mesa "$mesa_version (its ws $mesa_ws_version)" \
  --v-rustc "$(rustc --version)" --v-redis "$(redis-server --version | awk '{print $3}' | cut -d= -f2)" \
  --v-mimhost "$REVISION" \
  --seconds "$(( $(date +%s) - STARTED ))"
