#!/usr/bin/env bash
# Instructions keycard executes per request, counted by valgrind (callgrind) on the release
# binary: unlike requests/s on a shared 2-core machine (±20% between identical runs), the
# count repeats to within a fraction of a percent, so it shows what a change costs or saves.
#
# For each target, keycard starts under callgrind (counting from when it serves), answers N requests from the bench loadgen
# at a constant low rate (4 keep-alive connections) and stops; a run answering no requests for
# the same wall time is subtracted (background tasks, shutdown). All keycard threads count:
# the audit writer's work for the events is included.
# Usage: bench/instructions.sh [REQUESTS]   (default 2000)
# Needs: valgrind and nginx (Debian: apt-get install valgrind nginx-light).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
RATE=200
SECS=$(( (N + RATE - 1) / RATE ))
. bench/lib.sh
need_nginx
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }

cargo build --release -q -p keycard --bin keycard --example loadgen
# KEYCARD_BIN: another build to measure (an earlier commit's, to compare in one sitting).
KC=${KEYCARD_BIN:-target/release/keycard}
LOADGEN=target/release/examples/loadgen
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT
UP=$(free_port); KP=$(free_port)

nginx_upstream "$UP"

cat > "$WORK/keycard.toml" <<CONF
[server]
listen = "127.0.0.1:$KP"
[[routes]]
prefix = "/public/"
upstream = "http://127.0.0.1:$UP"
public = true
[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:$UP"
methods = ["api_key"]
CONF
KEY=$($KC --config "$WORK/keycard.toml" key create --subject bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

# count LABEL PATH [HEADER] -> total instructions of a keycard run that answered the requests
count() {
  local out="$WORK/cg.$1" pid
  rm -f "$out"
  # Counting starts once keycard serves: start-up (key derivation, the entropy source's
  # jitter sampling) varies from run to run and is not per request.
  KEYCARD_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" -q "$KC" \
    --config "$WORK/keycard.toml" serve 2>"$WORK/kc.$1.log" &
  pid=$!
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$KP/_keycard/health" >/dev/null && break; sleep 0.2; done
  callgrind_control -i on "$pid" >/dev/null 2>&1
  if [ -n "$2" ]; then
    local got
    got=$($LOADGEN "http://127.0.0.1:$KP$2" "$RATE" 4 "$SECS" ${3:+"$3"})
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["errors"]==0 and d["ok"]>0, d; print(d["ok"])' "$got" > "$WORK/ok.$1"
  else
    sleep "$SECS"
    echo 0 > "$WORK/ok.$1"
  fi
  kill -TERM "$pid"; wait "$pid" || true
  awk '/^summary:|^totals:/ {print $2; exit}' "$out"
}
IDLE=$(count idle "")
PUB=$(count public /public/x)
API=$(count api /api/x "X-API-Key: $KEY")
python3 - "$IDLE" "$PUB" "$(cat "$WORK/ok.public")" "$API" "$(cat "$WORK/ok.api")" <<'PY'
import sys
idle, pub, npub, api, napi = (int(x) for x in sys.argv[1:])
p = (pub - idle) / npub
a = (api - idle) / napi
print(f"instructions per request (valgrind callgrind, all keycard threads, idle run subtracted):")
print(f"  public route: {p/1000:.1f}k   ({npub} requests)")
print(f"  API key:      {a/1000:.1f}k   ({napi} requests)")
print(f"  API key - public: {(a-p)/1000:.1f}k")
PY
