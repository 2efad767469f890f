#!/usr/bin/env bash
# keycard over TLS, measured in one run on this machine:
#   1. requests/s over kept-alive TLS connections: a route that needs an API key, and one
#      that needs a client certificate (the mtls method, a `keycard cert add` binding);
#   2. new TLS handshakes per second (a new connection, full handshake, no resumption, per
#      request): with an API key, and with a client certificate (mTLS: one more signature
#      verified and the chain checked against client_ca).
# All through the bench loadgen (rustls client, HTTP/1.1), closed loop; the median of ROUNDS
# interleaved rounds is kept. Certificates (ECDSA P-256) are made by openssl for the run.
# Usage: bench/tls.sh [DURATION] [CONNECTIONS] [ROUNDS]   (defaults: 8s, 64, 3)
# Needs: nginx and openssl (Debian: apt-get install nginx-light openssl). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8s}
CONNS=${2:-64}
ROUNDS=${3:-3}
SECS=${DURATION%s}
. bench/lib.sh
need_nginx
command -v openssl >/dev/null || { echo "openssl is not installed" >&2; exit 1; }

cargo build --release -q -p keycard --bin keycard --example loadgen
KC=target/release/keycard
LOADGEN=target/release/examples/loadgen
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; kill "${KC_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
UP=$(free_port); KP=$(free_port)

# The PKI: a CA, a server certificate for 127.0.0.1, a client certificate.
cd "$WORK"
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout ca-key.pem -out ca.pem \
  -days 2 -subj "/CN=bench CA" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
issue() { # name subject ext
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$1-key.pem" -out "$1.csr" -subj "$2" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -out "$1.pem" -extfile "$1.ext" 2>/dev/null
}
issue server "/CN=127.0.0.1" "subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth"
issue client "/CN=bench-client" "extendedKeyUsage=clientAuth"
cd - >/dev/null

nginx_upstream "$UP"

cat > "$WORK/keycard.toml" <<CONF
[server]
listen = "127.0.0.1:$KP"
[server.tls]
cert = "server.pem"
key = "server-key.pem"
client_ca = "ca.pem"
client_auth = "optional"
[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:$UP"
methods = ["api_key"]
[[routes]]
prefix = "/mtls/"
upstream = "http://127.0.0.1:$UP"
methods = ["mtls"]
CONF
KEY=$($KC --config "$WORK/keycard.toml" key create --subject bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
$KC --config "$WORK/keycard.toml" cert add --subject bench-client --cert "$WORK/client.pem" >/dev/null
KEYCARD_LOG=warn setsid $KC --config "$WORK/keycard.toml" serve 2>"$WORK/keycard.log" &
KC_PID=$!
for _ in $(seq 1 100); do curl -sfk "https://127.0.0.1:$KP/_keycard/health" >/dev/null && break; sleep 0.1; done
curl -sf --cacert "$WORK/ca.pem" --cert "$WORK/client.pem" --key "$WORK/client-key.pem" "https://127.0.0.1:$KP/mtls/x" >/dev/null \
  || { echo "mtls through keycard failed"; cat "$WORK/keycard.log"; exit 1; }

export LOADGEN_CA="$WORK/ca.pem"
run() { # label new_conn cert(0/1) path header
  local d
  d=$(LOADGEN_NEW_CONN=$2 LOADGEN_CERT=$([ "$3" = 1 ] && echo "$WORK/client.pem") LOADGEN_KEY=$([ "$3" = 1 ] && echo "$WORK/client-key.pem") \
      $LOADGEN "https://127.0.0.1:$KP$4" 0 "$CONNS" "$SECS" ${5:+"$5"})
  python3 -c 'import json,sys; d=json.loads(sys.argv[2]); print("%s|%s|%s|%s|%s" % (sys.argv[1], d["rps"], d["p50_ms"], d["p99_ms"], d["errors"]))' "$1" "$d"
}
RESULTS=$(
  for _ in $(seq 1 "$ROUNDS"); do
    run "kept-alive TLS, API key"              0 0 /api/x "X-API-Key: $KEY"
    run "kept-alive TLS, mtls (client cert)"   0 1 /mtls/x
    run "new handshake per request, API key"   1 0 /api/x "X-API-Key: $KEY"
    run "new handshake per request, mtls"      1 1 /mtls/x
  done
)
python3 - "$RESULTS" "$CONNS" "$DURATION" <<'PY'
import sys, statistics
rows=[l.split('|') for l in sys.argv[1].strip().splitlines()]
groups={}
for label,rps,p50,p99,errs in rows:
    groups.setdefault(label,[]).append((float(rps),float(p50),float(p99),int(errs)))
print(f"bench loadgen (rustls, HTTP/1.1) closed loop, {sys.argv[2]} connections, {sys.argv[3]} per round, loopback, 2 cores shared by all processes;")
print(f"median of {len(next(iter(groups.values())))} interleaved rounds (every round in brackets); ECDSA P-256 certificates, TLS 1.3\n")
print("| target | requests/s | p50 | p99 | errors |")
print("|---|---:|---:|---:|---:|")
r={}
for label,g in groups.items():
    rps=statistics.median(x[0] for x in g)
    r[label]=rps
    print(f"| {label} | {rps:,.0f} [{', '.join(f'{x[0]:,.0f}' for x in g)}] | {statistics.median(x[1] for x in g):.2f} ms | {statistics.median(x[2] for x in g):.2f} ms | {sum(x[3] for x in g)} |")
print()
print(f"mtls / API key over kept-alive TLS:        {r['kept-alive TLS, mtls (client cert)']/r['kept-alive TLS, API key']:.2f}x")
print(f"new TLS handshakes/s with a client cert:   {r['new handshake per request, mtls']:,.0f} ({r['new handshake per request, mtls']/r['new handshake per request, API key']:.2f}x of without)")
PY
