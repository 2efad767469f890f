#!/usr/bin/env bash
# A rate-limited route with the in-process backend and with the Redis backend, measured in
# one run on this machine: two keycard instances on one store, the same route
# (`rate_limit` high enough never to refuse, so every request costs one decision), an
# API key, the bench loadgen in closed loop; ROUNDS interleaved rounds, median kept.
# Usage: bench/limits.sh [DURATION] [CONNECTIONS] [ROUNDS] [REDIS_URL]
#        (defaults: 8s, 64, 3, redis://127.0.0.1:6379/0)
# Needs: nginx (the upstream) and a running Redis. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8s}
CONNS=${2:-64}
ROUNDS=${3:-3}
REDIS=${4:-redis://127.0.0.1:6379/0}
SECS=${DURATION%s}
. bench/lib.sh
need_nginx

cargo build --release -q -p keycard --bin keycard --example loadgen
KC=target/release/keycard
LOADGEN=target/release/examples/loadgen
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; kill ${PIDS:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT
UP=$(free_port); PL=$(free_port); PR=$(free_port)

nginx_upstream "$UP"

config() { # file port redis-section
  cat > "$1" <<CONF
[server]
listen = "127.0.0.1:$2"
[store]
url = "sqlite://$WORK/keycard.db"
[secrets]
master_key_file = "$WORK/master.key"
[audit]
file = "$WORK/audit-$2.jsonl"
$3
[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:$UP"
methods = ["api_key"]
rate_limit = "10000000/s"
CONF
}
config "$WORK/local.toml" "$PL" ""
config "$WORK/redis.toml" "$PR" "[limits]
redis_url = \"$REDIS\"
redis_prefix = \"kcbench-$$:\""
KEY=$($KC --config "$WORK/local.toml" key create --subject bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
PIDS=""
for c in local redis; do
  KEYCARD_LOG=warn setsid $KC --config "$WORK/$c.toml" serve 2>"$WORK/$c.log" &
  PIDS="$PIDS $!"
done
for p in "$PL" "$PR"; do
  for _ in $(seq 1 100); do curl -sf -H "X-API-Key: $KEY" "http://127.0.0.1:$p/api/x" >/dev/null && break; sleep 0.1; done
  curl -sf -o /dev/null -D - -H "X-API-Key: $KEY" "http://127.0.0.1:$p/api/x" | grep -qi '^ratelimit-limit' \
    || { echo "keycard on $p answered without RateLimit headers"; cat "$WORK"/*.log; exit 1; }
done

closed() { # label port
  local d
  d=$($LOADGEN "http://127.0.0.1:$2/api/x" 0 "$CONNS" "$SECS" "X-API-Key: $KEY")
  python3 -c 'import json,sys; d=json.loads(sys.argv[2]); print("%s|%s|%s|%s|%s" % (sys.argv[1], d["rps"], d["p50_ms"], d["p99_ms"], d["errors"]))' "$1" "$d"
}
RESULTS=$(
  for _ in $(seq 1 "$ROUNDS"); do
    closed "rate-limited route, in-process backend" "$PL"
    closed "rate-limited route, Redis backend" "$PR"
  done
)
python3 - "$RESULTS" "$CONNS" "$DURATION" <<'PY'
import sys, statistics
groups={}
for l in sys.argv[1].strip().splitlines():
    label,rps,p50,p99,errs=l.split('|')
    groups.setdefault(label,[]).append((float(rps),float(p50),float(p99),int(errs)))
print(f"bench loadgen closed loop, {sys.argv[2]} connections, {sys.argv[3]} per round, loopback, 2 cores shared by all processes (Redis too)")
print(f"median of {len(next(iter(groups.values())))} interleaved rounds\n")
print("| target | requests/s | p50 | p99 | errors |")
print("|---|---:|---:|---:|---:|")
r={}
for label,g in groups.items():
    r[label]=statistics.median(x[0] for x in g)
    print(f"| {label} | {r[label]:,.0f} [{', '.join(f'{x[0]:,.0f}' for x in g)}] | {statistics.median(x[1] for x in g):.2f} ms | {statistics.median(x[2] for x in g):.2f} ms | {sum(x[3] for x in g)} |")
print(f"\nRedis / in-process: {r['rate-limited route, Redis backend']/r['rate-limited route, in-process backend']:.2f}x (target >= 0.7x)")
PY
