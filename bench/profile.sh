#!/usr/bin/env bash
# bench/profile.sh — where mimhost spends its CPU under scenario 1 (10,000-client
# fan-out) and scenario 2 (hello at 64 connections).
#
# Samples the host and its worker processes with `perf record -e cpu-clock -g` (a
# software clock: these VMs expose no hardware counters, `perf stat -e instructions`
# says <not supported>) while bench's loadgen drives the load, then prints the top
# frames per process. Reports land in bench/results/profile-*.txt.
#
#   bench/profile.sh [fanout|hello|all]   (default all)
# Needs target/release/{mimhost,loadgen} (bench/run.sh builds them) and perf
# (Debian: linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
MIMHOST=${MIMHOST:-target/release/mimhost}
LOADGEN=target/release/loadgen
OUT=bench/results
WORK=$(mktemp -d /tmp/mimhost-profile.XXXXXX)
mkdir -p "$OUT"
HOST_PID=
cleanup() {
  [[ -n "$HOST_PID" ]] && { kill -TERM "$HOST_PID" 2>/dev/null || true; wait "$HOST_PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT
command -v perf >/dev/null || apt-get install -y -q linux-perf >/dev/null

start_host() {
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  MIMHOST_LOG=warn "$MIMHOST" serve --mims mims --data "$WORK/data-$PORT" --listen "127.0.0.1:$PORT" --no-watch \
    >"$WORK/host.log" 2>&1 &
  HOST_PID=$!
  for _ in $(seq 300); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
}

stop_host() {
  kill -TERM "$HOST_PID" 2>/dev/null || true
  wait "$HOST_PID" 2>/dev/null || true
  HOST_PID=
}

# profile NAME SECONDS LOADGEN-ARGS... : perf-records the host and its workers for
# SECONDS, starting once the load is running.
profile() {
  local name=$1 seconds=$2; shift 2
  local pids
  pids=$(echo "$HOST_PID" $(pgrep -P "$HOST_PID" || true) | tr ' ' ',')
  "$LOADGEN" "$@" >"$WORK/$name.json" 2>"$WORK/$name.err" &
  local lg=$!
  sleep "${PROFILE_DELAY:-1}"
  perf record -q -e cpu-clock -F "${PROFILE_HZ:-499}" --call-graph dwarf,32768 -p "$pids" -o "$WORK/$name.data" -- sleep "$seconds" 2>/dev/null || true
  wait "$lg" || true
  {
    echo "# $name: perf record -e cpu-clock --call-graph dwarf on mimhost (pid $HOST_PID) and its workers"
    echo "# load: loadgen $*"
    echo "# result: $(head -c 600 "$WORK/$name.json")"
    echo
    echo "## CPU by process (command)"
    perf report -i "$WORK/$name.data" --stdio --no-children --sort comm -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 12 || true
    echo
    echo "## top frames (self), host and workers together"
    perf report -i "$WORK/$name.data" --stdio --no-children --sort comm,dso,symbol -g none 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | head -n 45 || true
    echo
    echo "## inclusive time (self + callees) of the JS worker thread, frames over 3%"
    perf report -i "$WORK/$name.data" --stdio --children --comms js --sort symbol -g none --percent-limit 3 \
      2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 60 || true
    echo
    echo "## inclusive time of the host's runtime threads, frames over 3%"
    perf report -i "$WORK/$name.data" --stdio --children --comms tokio-rt-worker --sort symbol -g none --percent-limit 3 \
      2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 60 || true
    echo
    echo "## inclusive time of mimhost's own functions and the main syscalls, all threads, over 0.5%"
    perf report -i "$WORK/$name.data" --stdio --children --sort symbol -g none --percent-limit 0.5 2>/dev/null \
      | grep -E 'mimhost_|boa_engine::(context|vm::<impl)|from_json|to_json|Collector::collect|tcp_sendmsg|tcp_recvmsg|__x64_sys_(sendto|write|writev|read|recvfrom|epoll_wait|futex)|schedule$|try_to_wake_up' \
      | grep -v '(inlined)' | head -n 60 || true
    echo
    echo "## top frames with callers (self, caller graph, first 200 lines)"
    perf report -i "$WORK/$name.data" --stdio --no-children --sort symbol -g caller,0.5,callee,function,percent \
      --percent-limit 2 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 200 || true
  } >"$OUT/profile-$name.txt" 2>/dev/null
  echo "wrote $OUT/profile-$name.txt" >&2
}

if [[ "$WHAT" == all || "$WHAT" == fanout ]]; then
  start_host
  PROFILE_DELAY=${FANOUT_DELAY:-3} profile fanout 12 fanout --ws "ws://127.0.0.1:$PORT/ws/notify" \
    --post "http://127.0.0.1:$PORT/notify/notify" --clients 10000 --singles 10 --events 600 --timeout 120
  stop_host
fi
if [[ "$WHAT" == all || "$WHAT" == hello ]]; then
  start_host
  profile hello 8 http --url "http://127.0.0.1:$PORT/hello/" --conns 64 --duration 10 --warmup 1
  stop_host
fi
