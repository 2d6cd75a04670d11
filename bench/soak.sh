#!/usr/bin/env bash
# bench/soak.sh [--minutes N] [--sessions N] — mixed traffic against one `mimhost serve`.
#
# For N minutes (default 30): churning WebSocket sessions (default 5,000 slots), a
# broadcast every 2 s, paced HTTP GETs, storage writes (each acknowledged one logged by
# the driver), one client that never reads, a mim hot-swapped every minute (its file
# rewritten in the --mims folder) and a runaway mim (`while(true){}`) hit every 3 minutes.
# Host RSS, host fds and each worker's RSS are sampled from /proc every minute (every
# 15 s when N < 10) into a CSV, plotted to docs/img/soak.png; at the end every
# acknowledged write is read back and a verdict printed (flat = the last samples within
# a tolerance of the early plateau). Loopback only; the load stops by itself.
#
#   --minutes N    run length (default 30)
#   --sessions N   WebSocket session slots (default 5000)
#   --out DIR      where the CSVs and summary go (default bench/results/soak)
#
# Env: MIMHOST / LOADGEN = built binaries (default: target/release if built, else the
#      dev profile, built here when missing); SKIP_BUILD=1 to use them as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MINUTES=30; SESSIONS=5000; OUT=bench/results/soak
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --sessions) SESSIONS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
[[ "$MINUTES" =~ ^[0-9]+$ && "$MINUTES" -ge 1 ]] || { echo "--minutes takes a whole number >= 1" >&2; exit 2; }
[[ "$SESSIONS" =~ ^[0-9]+$ ]] || { echo "--sessions takes a whole number" >&2; exit 2; }

say() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d /tmp/mimhost-soak.XXXXXX)
mkdir -p "$OUT" docs/img
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- binaries
if [[ -z "${MIMHOST:-}" ]]; then
  if [[ -x target/release/mimhost && -x target/release/loadgen ]]; then PROFILE=release; else PROFILE=debug; fi
  MIMHOST=target/$PROFILE/mimhost; LOADGEN=${LOADGEN:-target/$PROFILE/loadgen}
  if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    say "building ($PROFILE): mimhost, loadgen"
    if [[ $PROFILE == release ]]; then cargo build --release -q -p mimhost -p mimhost-bench
    else cargo build -q -p mimhost -p mimhost-bench; fi
  fi
fi
LOADGEN=${LOADGEN:-$(dirname "$MIMHOST")/loadgen}
for b in "$MIMHOST" "$LOADGEN"; do [[ -x "$b" ]] || { say "missing $b"; exit 1; }; done
mkdir -p "$WORK/bin"; cp "$MIMHOST" "$LOADGEN" "$WORK/bin/"
MIMHOST=$WORK/bin/$(basename "$MIMHOST"); LOADGEN=$WORK/bin/loadgen

# ---------------------------------------------------------------- plotting tool
if ! python3 -c 'import matplotlib' 2>/dev/null; then
  say "installing matplotlib (PyPI)"
  python3 -m pip install -q matplotlib 2>/dev/null || python3 -m pip install -q --break-system-packages matplotlib \
    || say "matplotlib not installable: the PNG is skipped"
fi

# ---------------------------------------------------------------- the host
MIMS=$WORK/mims; DATA=$WORK/data
mkdir -p "$MIMS" "$DATA"
cp -r mims/hello mims/notify bench/soak/mims/soak-store bench/soak/mims/runaway "$MIMS/"
write_swap() { # generation
  mkdir -p "$MIMS/swap"
  printf '%s\n' "// the soak's hot-swapped mim, generation $1" \
    "app.get('/', (request, response) => { response.end('generation $1'); });" >"$MIMS/swap/index.js.tmp"
  mv "$MIMS/swap/index.js.tmp" "$MIMS/swap/index.js"
}
write_swap 0
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
MIMHOST_LOG=warn "$MIMHOST" serve --mims "$MIMS" --data "$DATA" --listen "127.0.0.1:$PORT" \
  --handler-timeout 5s >"$WORK/host.log" 2>&1 &
HOST=$!; PIDS+=("$HOST")
for i in $(seq 600); do curl -fsS -o /dev/null --max-time 1 "$BASE/healthz" 2>/dev/null && break; sleep 0.1; done
curl -fsS -o /dev/null "$BASE/healthz" || { say "host did not start"; tail "$WORK/host.log" >&2; exit 1; }
for m in hello swap soak-store; do curl -sS -o /dev/null --max-time 30 "$BASE/$m/" || true; done
say "host pid $HOST on $BASE; $MINUTES min, $SESSIONS session slots"

# ---------------------------------------------------------------- sampler
if [[ $MINUTES -lt 10 ]]; then EVERY=15; else EVERY=60; fi
CSV=$OUT/soak.csv; WCSV=$OUT/soak-workers.csv
echo "t_s,host_rss_kib,host_fds,workers,worker_rss_sum_kib,worker_rss_max_kib" >"$CSV"
echo "t_s,pid,rss_kib" >"$WCSV"
sample() { # t
  local t=$1 rss fds kids=() p r sum=0 max=0 n=0
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$HOST/status" 2>/dev/null || echo 0)
  fds=$(ls "/proc/$HOST/fd" 2>/dev/null | wc -l)
  for p in $(cat /proc/$HOST/task/*/children 2>/dev/null); do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    [[ -n "$r" ]] || continue
    n=$((n + 1)); sum=$((sum + r)); (( r > max )) && max=$r
    echo "$t,$p,$r" >>"$WCSV"
  done
  echo "$t,$rss,$fds,$n,$sum,$max" >>"$CSV"
}
START=$(date +%s)
(
  while kill -0 "$HOST" 2>/dev/null; do
    sample $(( $(date +%s) - START ))
    sleep "$EVERY"
  done
) &
SAMPLER=$!; PIDS+=("$SAMPLER")

# ---------------------------------------------------------------- hot swap, every minute
(
  g=0
  while sleep 60; do
    g=$((g + 1)); write_swap "$g"
    ok=no
    for i in $(seq 100); do
      [[ "$(curl -s --max-time 2 "$BASE/swap/" 2>/dev/null)" == "generation $g" ]] && { ok=yes; break; }
      sleep 0.1
    done
    echo "$g,$ok" >>"$WORK/swaps.csv"
  done
) &
SWAPPER=$!; PIDS+=("$SWAPPER")

# ---------------------------------------------------------------- traffic
SECONDS_TOTAL=$((MINUTES * 60))
RUNAWAY_EVERY=180; [[ $MINUTES -lt 10 ]] && RUNAWAY_EVERY=60
: >"$OUT/writes.log"
"$LOADGEN" soak --base "$BASE" --duration "$SECONDS_TOTAL" --sessions "$SESSIONS" \
  --runaway-every "$RUNAWAY_EVERY" --writes "$WORK/writes.log" >"$OUT/soak-driver.json" 2>"$WORK/driver.err" \
  || say "driver failed: $(tail -n 3 "$WORK/driver.err")"
kill "$SWAPPER" "$SAMPLER" 2>/dev/null || true
sleep "$EVERY"; sample $(( $(date +%s) - START ))   # one quiet sample after the load

# ---------------------------------------------------------------- verify writes
"$LOADGEN" soak-verify --base "$BASE" --writes "$WORK/writes.log" >"$OUT/soak-verify.json" 2>>"$WORK/driver.err" \
  || say "verify failed"
cp "$WORK/swaps.csv" "$OUT/soak-swaps.csv" 2>/dev/null || echo "generation,seen" >"$OUT/soak-swaps.csv"
grep -c "worker restarted" "$WORK/host.log" >"$OUT/soak-restarts.txt" || true
rm -f "$OUT/writes.log"

# ---------------------------------------------------------------- plot + verdict
python3 bench/soak_report.py "$OUT" docs/img/soak.png
