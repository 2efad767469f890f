#!/usr/bin/env bash
# keycard's resident memory under a constant load: the gateway (API key) and forward-auth
# (nginx `auth_request` -> /_keycard/verify, API key) at once, each at RATE req/s, for
# MINUTES. Samples VmRSS every 5 s and reports it by minute, the peak (VmHWM) and whether the
# last minute stays within ±10% of the first (memory that stays put).
# Usage: bench/memory.sh [MINUTES] [RATE] [CONNECTIONS]   (defaults: 10, 3000, 64)
# Needs: nginx (Debian: apt-get install nginx-light). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}
RATE=${2:-3000}
CONNS=${3:-64}
. bench/lib.sh
need_nginx

cargo build --release -q -p keycard --bin keycard --example loadgen
KC=${KEYCARD_BIN:-target/release/keycard}
LOADGEN=target/release/examples/loadgen
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; kill "${KC_PID:-}" ${LOAD_PIDS:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT
UP=$(free_port); KP=$(free_port); FA=$(free_port)

nginx_upstream "$UP"
cat > "$WORK/keycard.toml" <<CONF
[server]
listen = "127.0.0.1:$KP"
trusted_proxies = ["127.0.0.1/32"]
[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:$UP"
methods = ["api_key"]
CONF
nginx_conf forward auto "upstream app { server 127.0.0.1:$UP; keepalive 64; }
  upstream keycard { server 127.0.0.1:$KP; keepalive 64; }
  server { listen 127.0.0.1:$FA;
    location / { auth_request /_kc; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://app; }
    location = /_kc { internal; proxy_pass http://keycard/_keycard/verify; proxy_pass_request_body off;
      proxy_set_header Content-Length \"\"; proxy_set_header X-Forwarded-Uri \$request_uri;
      proxy_set_header X-Forwarded-Method \$request_method; proxy_http_version 1.1;
      proxy_set_header Connection \"\"; } }"
KEY=$($KC --config "$WORK/keycard.toml" key create --subject bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
KEYCARD_LOG=warn setsid $KC --config "$WORK/keycard.toml" serve 2>"$WORK/keycard.log" &
KC_PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$KP/_keycard/health" >/dev/null && break; sleep 0.1; done
curl -sf -H "X-API-Key: $KEY" "http://127.0.0.1:$FA/api/x" >/dev/null || { echo "forward-auth failed"; cat "$WORK/keycard.log"; exit 1; }
START_RSS=$(awk '/VmRSS/ {print $2}' "/proc/$KC_PID/status")

SECS=$((MINUTES * 60))
$LOADGEN "http://127.0.0.1:$KP/api/x" "$RATE" "$CONNS" "$SECS" "X-API-Key: $KEY" > "$WORK/gateway.json" &
LOAD_PIDS="$!"
$LOADGEN "http://127.0.0.1:$FA/api/x" "$RATE" "$CONNS" "$SECS" "X-API-Key: $KEY" > "$WORK/forward.json" &
LOAD_PIDS="$LOAD_PIDS $!"
: > "$WORK/rss"
for t in $(seq 5 5 "$SECS"); do
  sleep 5
  echo "$t $(awk '/VmRSS/ {print $2}' "/proc/$KC_PID/status")" >> "$WORK/rss"
done
wait $LOAD_PIDS
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$KC_PID/status")
python3 - "$WORK/rss" "$START_RSS" "$HWM" "$RATE" "$CONNS" "$WORK/gateway.json" "$WORK/forward.json" <<'PY'
import json, sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
start, hwm, rate, conns = (int(x) for x in sys.argv[2:6])
gw, fa = (json.load(open(p)) for p in sys.argv[6:8])
print(f"constant load: gateway (API key) and nginx auth_request -> keycard, {rate} req/s each over {conns} connections")
print(f"gateway: {gw['ok']} ok, {gw['errors']} errors, p99 {gw['p99_ms']:.2f} ms; forward-auth: {fa['ok']} ok, {fa['errors']} errors, p99 {fa['p99_ms']:.2f} ms\n")
print("| minute | VmRSS (mean) |")
print("|---:|---:|")
by = {}
for t, kb in rows:
    by.setdefault((t - 1) // 60 + 1, []).append(kb)
means = {m: sum(v) / len(v) for m, v in sorted(by.items())}
for m, kb in means.items():
    print(f"| {m} | {kb/1024:.1f} MB |")
first, last = means[min(means)], means[max(means)]
print(f"\nat start: {start/1024:.1f} MB; peak (VmHWM): {hwm/1024:.1f} MB (target <= 150 MB)")
print(f"last minute / first minute: {last/first:.2f} (target within 0.90-1.10)")
PY
