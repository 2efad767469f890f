#!/usr/bin/env bash
# Client-credentials tokens per second from keycard's token endpoint (issue 5's benchmark):
# a confidential client (client_secret_basic) asks for ES256 access tokens over CONNS
# keep-alive connections with wrk, against a SQLite store and, when a PostgreSQL URL is
# given (argument 5, else $KEYCARD_TEST_POSTGRES_URL), against PostgreSQL too. Every token is
# signed, audited, and its answer checked to be 200 (non-2xx answers fail the run).
# One token is first verified at the gateway, so the figure is of real tokens. First a
# constant RATE (bench loadgen, latency from each request's intended send time): a rate a
# deployment can sustain without a single refusal, and its latency; then saturation (wrk,
# closed loop; only 200 answers count).
# Usage: bench/tokens.sh [DURATION] [CONNECTIONS] [ROUNDS] [ALGORITHM] [POSTGRES_URL] [RATE]
#        (defaults: 10s, 32, 3, ES256, $KEYCARD_TEST_POSTGRES_URL, 10000)
# Needs: wrk (Debian: apt-get install wrk). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-32}
ROUNDS=${3:-3}
ALG=${4:-ES256}
PG=${5:-${KEYCARD_TEST_POSTGRES_URL:-}}
RATE=${6:-10000}
. bench/lib.sh
need_wrk
cargo build --release -q -p keycard --bin keycard --example loadgen
KC=$PWD/target/release/keycard
LOADGEN=$PWD/target/release/examples/loadgen
WORK=$(mktemp -d)
PGDB=""
cleanup() {
  kill "${KC_PID:-}" "${UP_PID:-}" 2>/dev/null || true
  if [ -n "$PGDB" ]; then psql -q "$PG" -c "DROP DATABASE IF EXISTS $PGDB" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=orders:read"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = os.getenv("KC_BASIC")
response = function(status, headers, body)
  if status ~= 200 and not shown then shown = true; io.stderr:write("first refusal in this run: ", status, " ", body, "\n") end
end
LUA

run_engine() { # name store_url
  local name=$1 url=$2 port up dir
  port=$(free_port); up=$(free_port); dir="$WORK/$name"; mkdir -p "$dir"
  cat > "$dir/keycard.toml" <<CONF
[server]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$port"
[store]
url = "$url"
[secrets]
master_key_file = "master.key"
[audit]
file = "audit.jsonl"
[tokens]
algorithm = "$ALG"
[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:$up"
scopes = ["orders:read"]
CONF
  local secret
  secret=$($KC --config "$dir/keycard.toml" client create bench-worker --grant client_credentials --scope orders:read --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  "$KC" echo-upstream --listen "127.0.0.1:$up" >/dev/null 2>&1 & UP_PID=$!
  setsid "$KC" --config "$dir/keycard.toml" serve >"$dir/serve.log" 2>&1 & KC_PID=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/_keycard/health" >/dev/null && break; sleep 0.1; done
  export KC_BASIC="Basic $(printf 'bench-worker:%s' "$secret" | base64 -w0)"
  local token
  token=$(curl -sf -H "Authorization: $KC_BASIC" -d grant_type=client_credentials "http://127.0.0.1:$port/oauth2/token" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  local code
  code=$(curl -s -o "$dir/gateway.out" -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/x")
  [ "$code" = 200 ] || { echo "a minted token was refused at the gateway: $code $(cat "$dir/gateway.out")" >&2; tail -5 "$dir/serve.log" >&2; exit 1; }
  wrk -t2 -c"$CONNS" -d2s -s "$WORK/post.lua" "http://127.0.0.1:$port/oauth2/token" >/dev/null # warm-up
  local steady
  steady=$(LOADGEN_FORM="grant_type=client_credentials&scope=orders:read" "$LOADGEN" \
    "http://127.0.0.1:$port/oauth2/token" "$RATE" "$CONNS" "${DURATION%s}" "Authorization: $KC_BASIC")
  printf '%-10s %-6s at %s/s constant: %s\n' "$name" "$ALG" "$RATE" "$steady"
  local rates=() refused=0
  for _ in $(seq 1 "$ROUNDS"); do
    local out total bad secs
    out=$(wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/post.lua" "http://127.0.0.1:$port/oauth2/token")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    secs=$(awk '/requests in/ {sub(/s,$/, "", $4); print $4}' <<<"$out")
    bad=$(awk '/Non-2xx/ {print $5}' <<<"$out"); bad=${bad:-0}
    refused=$((refused + bad))
    # Only 200 answers count as tokens.
    rates+=("$(awk -v t="$total" -v b="$bad" -v s="$secs" 'BEGIN {printf "%.0f", (t - b) / s}')")
    p99=$(awk '/ 99%/ {print $2}' <<<"$out")
  done
  local median
  median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-10s %-6s tokens/s median %6s  (rounds: %s)  p99 %s  refused %s\n' "$name" "$ALG" "$median" "${rates[*]}" "$p99" "$refused"
  if [ "$refused" -gt 0 ]; then grep WARN "$dir/serve.log" | sed "s/.*WARN //" | cut -c1-90 | sort | uniq -c >&2; fi
  kill "$KC_PID" "$UP_PID"; wait "$KC_PID" "$UP_PID" 2>/dev/null || true
  KC_PID=""; UP_PID=""
}

echo "client_credentials tokens/s, $CONNS connections, $DURATION x $ROUNDS rounds, $(nproc) cores"
[ -n "${SKIP_SQLITE:-}" ] || run_engine sqlite "sqlite://$WORK/sqlite/keycard.db"
if [ -n "$PG" ]; then
  PGDB=kc_bench_$RANDOM$RANDOM
  psql -q "$PG" -c "CREATE DATABASE $PGDB" >/dev/null
  # Start from a quiet server: a checkpoint still flushing an earlier run's writes makes new
  # connections take seconds (keycard then fails closed, which is right but measures the disk).
  psql -q "$PG" -c "CHECKPOINT" >/dev/null 2>&1 || true
  sleep 2
  run_engine postgres "${PG%/*}/$PGDB"
fi
