#!/usr/bin/env bash
# A keycard cluster on one machine: two keycard instances sharing PostgreSQL (credentials,
# tokens, the change feed) and Redis (rate limits, replay caches, the failed-attempt
# throttle), nginx in front balancing between them, and keycard's echo server as the API.
#
#   examples/cluster/run.sh            start it, print commands to try, stop on Ctrl-C
#   examples/cluster/run.sh --check    start it, check it behaves as one, stop (exit 0 if so)
#
# Environment: KEYCARD_CLUSTER_PG (default postgres://postgres@127.0.0.1:5432/postgres: a
# database keycard_cluster is created there, dropped first), KEYCARD_CLUSTER_REDIS (default
# redis://127.0.0.1:6379/0), KEYCARD_CLUSTER_PORT (nginx's port, default 8080),
# KEYCARD_BIN (a keycard binary to use instead of building the release one).
# Needs: PostgreSQL, Redis, nginx (Debian: nginx-light), psql, curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
CHECK=${1:-}
PG_ADMIN=${KEYCARD_CLUSTER_PG:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS=${KEYCARD_CLUSTER_REDIS:-redis://127.0.0.1:6379/0}
PORT=${KEYCARD_CLUSTER_PORT:-8080}
NGINX=${NGINX:-/usr/sbin/nginx}
[ -x "$NGINX" ] || { echo "nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }

if [ -n "${KEYCARD_BIN:-}" ]; then
  KC=$KEYCARD_BIN
else
  cargo build --release -q -p keycard --bin keycard
  KC=$PWD/target/release/keycard
fi
WORK=$(mktemp -d)
PIDS=""
cleanup() {
  kill $PIDS 2>/dev/null || true
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); A=$(free_port); B=$(free_port)

# A fresh database on the PostgreSQL server.
psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS keycard_cluster" -c "CREATE DATABASE keycard_cluster" >/dev/null
PG=${PG_ADMIN%/*}/keycard_cluster

# One master key for the whole cluster (every instance must derive the same keys).
export KEYCARD_MASTER_KEY
KEYCARD_MASTER_KEY=$(head -c 32 /dev/urandom | base64 -w0)

for i in a b; do
  port=$([ $i = a ] && echo "$A" || echo "$B")
  cat > "$WORK/keycard-$i.toml" <<CONF
[server]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$PORT"    # the address clients use: nginx's
trusted_proxies = ["127.0.0.1/32"]       # nginx: its X-Forwarded-* are believed

[store]
url = "$PG"

[limits]
redis_url = "$REDIS"
redis_prefix = "keycard-cluster-$$:"   # this run's keys only
failed_auth = "10/min"

[audit]
file = "$WORK/audit-$i.jsonl"

[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:$UP"
methods = ["api_key", "oauth2", "basic", "digest", "hmac"]
rate_limit = "20/min"
CONF
done

"$KC" echo-upstream --listen "127.0.0.1:$UP" >/dev/null 2>&1 &
PIDS="$PIDS $!"
for i in a b; do
  KEYCARD_LOG=warn "$KC" --config "$WORK/keycard-$i.toml" serve 2>"$WORK/keycard-$i.log" &
  PIDS="$PIDS $!"
done

cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/b; proxy_temp_path $WORK/p; fastcgi_temp_path $WORK/f;
  uwsgi_temp_path $WORK/u; scgi_temp_path $WORK/s;
  upstream keycard { server 127.0.0.1:$A; server 127.0.0.1:$B; keepalive 32; }
  server {
    listen 127.0.0.1:$PORT;
    location / {
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$http_host;
      proxy_pass http://keycard;
    }
  }
}
CONF
for p in "$A" "$B"; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$p/_keycard/ready" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$p/_keycard/ready" >/dev/null || { echo "keycard on $p is not ready"; cat "$WORK"/keycard-*.log; exit 1; }
done
"$NGINX" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf"

KEY=$("$KC" --config "$WORK/keycard-a.toml" key create --subject demo-service --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
URL="http://127.0.0.1:$PORT/api/hello"

if [ "$CHECK" = "--check" ]; then
  # One count across both instances: 20 a minute in all, whichever instance answers.
  ok=0
  for _ in $(seq 1 30); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $KEY" "$URL")
    [ "$code" = 200 ] && ok=$((ok + 1))
  done
  [ "$ok" = 20 ] || { echo "FAIL: $ok successes for a limit of 20/min across two instances"; exit 1; }
  # Both instances answered.
  a=$(grep -c '"success"' "$WORK/audit-a.jsonl" || true); b=$(grep -c '"success"' "$WORK/audit-b.jsonl" || true)
  [ "$a" -gt 0 ] && [ "$b" -gt 0 ] || { echo "FAIL: nginx did not use both instances ($a, $b)"; exit 1; }
  # A key revoked through instance A is refused through nginx (either instance) within a second.
  KEY2=$("$KC" --config "$WORK/keycard-a.toml" key create --subject other-service --json)
  ID2=$(printf '%s' "$KEY2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  K2=$(printf '%s' "$KEY2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $K2" "$URL")" = 200 ] || { echo "FAIL: new key refused"; exit 1; }
  "$KC" --config "$WORK/keycard-a.toml" key revoke "$ID2" >/dev/null
  sleep 1
  for _ in 1 2 3 4; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $K2" "$URL")" = 401 ] || { echo "FAIL: revoked key accepted"; exit 1; }
  done
  echo "cluster OK: 20 of 30 requests across ${a}+${b} answers from two instances; revocation seen by both"
  exit 0
fi

cat <<TEXT
keycard cluster: nginx on http://127.0.0.1:$PORT -> keycard on :$A and :$B
  store: $PG   redis: $REDIS   config: $WORK/keycard-{a,b}.toml

Try (the route allows 20 requests a minute per subject, counted across both instances):
  for i in \$(seq 1 25); do curl -s -o /dev/null -w '%{http_code} ' -H "X-API-Key: $KEY" $URL; done; echo

Revoke through one instance; both refuse within a second:
  $KC --config $WORK/keycard-a.toml key list
  $KC --config $WORK/keycard-a.toml key revoke ID

Ctrl-C stops everything.
TEXT
wait
