#!/usr/bin/env bash
# Throughput and latency of keycard beside its peers, measured in one run on this machine:
#   1. the upstream directly (nginx answering a fixed 200),
#   2. nginx `proxy_pass` to it with no authentication at all (the bar to meet),
#   3. keycard, a route that needs no credential (its own pass-through cost),
#   4. keycard, a route that needs an API key,
#   5. keycard, a route that needs HTTP Basic (argon2id hashes; verified pairs cached),
#      and one that needs an OAuth 2.0 access token keycard issued (ES256, `oauth2`),
#   6. keycard, a route that needs HTTP Digest (SHA-256, replay-checked), one that needs an
#      RFC 9421 signature (hmac-sha256, a fresh signature per request, replay-checked), and the
#      API-key route again, all driven by the bench loadgen in closed loop (wrk can neither
#      answer challenges nor sign each request),
#   7. forward-auth: nginx `auth_request` asking keycard's `/_keycard/verify` (API key)
#      beside the same nginx asking a trivial nginx verifier (an empty 200: the bar to meet),
#      and Caddy `forward_auth` asking keycard beside the same Caddy asking the trivial
#      verifier (when Caddy is installed).
# At the end, keycard's peak resident memory over the whole run (VmHWM).
# Then latency at a constant rate below saturation (RATE req/s over the same connections,
# measured from each request's intended send time: no coordinated omission).
# Each saturated measurement is repeated ROUNDS times, interleaved, and the median kept:
# on a shared 2-core machine single runs vary by ±20%.
# Usage: bench/run.sh [DURATION] [CONNECTIONS] [RATE] [ROUNDS]   (defaults: 10s, 64, 2000, 3)
# KEYCARD_BIN=path measures that keycard binary instead of this checkout's release build.
# Needs: wrk and nginx (Debian: apt-get install wrk nginx-light). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-64}
RATE=${3:-2000}
ROUNDS=${4:-3}
THREADS=2
. bench/lib.sh
need_wrk
need_nginx

cargo build --release -q -p keycard --bin keycard --example loadgen
# KEYCARD_BIN: another build to measure (an earlier commit's, to compare in one sitting).
KC=${KEYCARD_BIN:-target/release/keycard}
LOADGEN=target/release/examples/loadgen
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; kill "${KC_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

UP=$(free_port); PX=$(free_port); KP=$(free_port)
FA=$(free_port); NV=$(free_port); VF=$(free_port); CF=$(free_port); CV=$(free_port)

nginx_upstream "$UP"
nginx_conf proxy auto "upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$PX; location / { proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://app; } }"

# nginx `auth_request`, as examples/nginx has it: to keycard, and to a trivial verifier.
auth_location() { # NAME UPSTREAM-URL
  echo "location = /$1 { internal; proxy_pass $2; proxy_pass_request_body off;
    proxy_set_header Content-Length \"\"; proxy_set_header X-Forwarded-Uri \$request_uri;
    proxy_set_header X-Forwarded-Method \$request_method; proxy_http_version 1.1;
    proxy_set_header Connection \"\"; }"
}
nginx_conf verifier 1 "server { listen 127.0.0.1:$VF; location / { add_header X-Keycard-Subject bench; return 200; } }"
nginx_conf forward auto "upstream app { server 127.0.0.1:$UP; keepalive 64; }
  upstream keycard { server 127.0.0.1:$KP; keepalive 64; }
  upstream verifier { server 127.0.0.1:$VF; keepalive 64; }
  server { listen 127.0.0.1:$FA;
    location / { auth_request /_kc; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://app; }
    $(auth_location _kc http://keycard/_keycard/verify) }
  server { listen 127.0.0.1:$NV;
    location / { auth_request /_v; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://app; }
    $(auth_location _v http://verifier/) }"
CADDY=$(command -v caddy || true)
if [ -n "$CADDY" ]; then
  mkdir -p "$WORK/caddy"
  cat > "$WORK/caddy/Caddyfile" <<CONF
{
	admin off
	auto_https off
}
http://127.0.0.1:$CF {
	forward_auth 127.0.0.1:$KP {
		uri /_keycard/verify
		copy_headers X-Keycard-Subject X-Keycard-Method
	}
	reverse_proxy 127.0.0.1:$UP
}
http://127.0.0.1:$CV {
	forward_auth 127.0.0.1:$VF {
		uri /
		copy_headers X-Keycard-Subject
	}
	reverse_proxy 127.0.0.1:$UP
}
CONF
  HOME="$WORK/caddy" XDG_DATA_HOME="$WORK/caddy" XDG_CONFIG_HOME="$WORK/caddy" \
    setsid "$CADDY" run --adapter caddyfile --config "$WORK/caddy/Caddyfile" >"$WORK/caddy/log" 2>&1 &
  echo $! > "$WORK/caddy.pid"
fi

cat > "$WORK/keycard.toml" <<CONF
[server]
listen = "127.0.0.1:$KP"
# The forward-auth rows' nginx and Caddy, on this machine.
trusted_proxies = ["127.0.0.1/32"]
[[routes]]
prefix = "/public/"
upstream = "http://127.0.0.1:$UP"
public = true
[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:$UP"
methods = ["api_key"]
[[routes]]
prefix = "/basic/"
upstream = "http://127.0.0.1:$UP"
methods = ["basic"]
[[routes]]
prefix = "/digest/"
upstream = "http://127.0.0.1:$UP"
methods = ["digest"]
[[routes]]
prefix = "/hmac/"
upstream = "http://127.0.0.1:$UP"
methods = ["hmac"]
[[routes]]
prefix = "/oauth/"
upstream = "http://127.0.0.1:$UP"
methods = ["oauth2"]
[tokens]
access_token_ttl = "1h"
CONF
KEY=$($KC --config "$WORK/keycard.toml" key create --subject bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
PASSWORD=bench-password-$RANDOM-$RANDOM
printf '%s\n' "$PASSWORD" | $KC --config "$WORK/keycard.toml" user add benchuser --password-stdin --digest >/dev/null
BASIC="Authorization: Basic $(printf 'benchuser:%s' "$PASSWORD" | base64 -w0)"
HMAC_JSON=$($KC --config "$WORK/keycard.toml" hmac create --subject bench --json)
HMAC_ARG="hmac:$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["key_id"] + ":" + d["secret"])' "$HMAC_JSON")"
CLIENT_SECRET=$($KC --config "$WORK/keycard.toml" client create bench-client --grant client_credentials --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
KEYCARD_LOG=warn setsid $KC --config "$WORK/keycard.toml" serve 2>"$WORK/keycard.log" &
KC_PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$KP/_keycard/health" >/dev/null && break; sleep 0.1; done
curl -sf -H "X-API-Key: $KEY" "http://127.0.0.1:$KP/api/x" >/dev/null || { echo "keycard did not answer"; cat "$WORK/keycard.log"; exit 1; }
curl -sf -H "$BASIC" "http://127.0.0.1:$KP/basic/x" >/dev/null || { echo "Basic failed"; exit 1; }
curl -sf --digest -u "benchuser:$PASSWORD" "http://127.0.0.1:$KP/digest/x" >/dev/null || { echo "Digest failed"; exit 1; }
TOKEN=$(curl -sf -u "bench-client:$CLIENT_SECRET" -d grant_type=client_credentials "http://127.0.0.1:$KP/oauth2/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
BEARER="Authorization: Bearer $TOKEN"
curl -sf -H "$BEARER" "http://127.0.0.1:$KP/oauth/x" >/dev/null || { echo "oauth2 failed"; exit 1; }
curl -sf -H "X-API-Key: $KEY" "http://127.0.0.1:$FA/api/x" >/dev/null || { echo "nginx auth_request to keycard failed"; exit 1; }
curl -sf "http://127.0.0.1:$NV/api/x" >/dev/null || { echo "nginx auth_request to nginx failed"; exit 1; }
if [ -n "$CADDY" ]; then
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$CF/" && break; sleep 0.1; done
  curl -sf -H "X-API-Key: $KEY" "http://127.0.0.1:$CF/api/x" >/dev/null || { echo "Caddy forward_auth to keycard failed"; cat "$WORK/caddy/log"; exit 1; }
fi

run() { # label url [header]
  local out
  if [ -n "${3:-}" ]; then out=$(wrk -t$THREADS -c$CONNS -d"$DURATION" --latency -H "$3" "$2"); else out=$(wrk -t$THREADS -c$CONNS -d"$DURATION" --latency "$2"); fi
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  printf '%s|%s|%s|%s|%s\n' "$1" "$rps" "$p50" "$p99" "${errs:-0}"
}
wrk -t1 -c8 -d2s -H "X-API-Key: $KEY" "http://127.0.0.1:$KP/api/warm" >/dev/null

SECS=${DURATION%s}
closed() { # label url header -> label|rps|p50|p99|errors, from the loadgen in closed loop
  local d
  d=$($LOADGEN "$2" 0 "$CONNS" "$SECS" "$3")
  python3 -c 'import json,sys; d=json.loads(sys.argv[2]); print("%s|%s|%sms|%sms|%s" % (sys.argv[1], d["rps"], d["p50_ms"], d["p99_ms"], d["errors"]))' "$1" "$d"
}
RESULTS=$(
  for _ in $(seq 1 "$ROUNDS"); do
    run "upstream directly"              "http://127.0.0.1:$UP/x"
    run "nginx proxy_pass, no auth"      "http://127.0.0.1:$PX/x"
    run "keycard, public route"          "http://127.0.0.1:$KP/public/x"
    run "keycard, API key"               "http://127.0.0.1:$KP/api/x" "X-API-Key: $KEY"
    run "keycard, Basic"                 "http://127.0.0.1:$KP/basic/x" "$BASIC"
    run "keycard, oauth2 (ES256 token)"  "http://127.0.0.1:$KP/oauth/x" "$BEARER"
    closed "keycard, API key (loadgen)"  "http://127.0.0.1:$KP/api/x" "X-API-Key: $KEY"
    closed "keycard, Digest (loadgen)"   "http://127.0.0.1:$KP/digest/x" "digest:benchuser:$PASSWORD"
    closed "keycard, hmac (loadgen)"     "http://127.0.0.1:$KP/hmac/x" "$HMAC_ARG"
    run "nginx auth_request -> keycard"  "http://127.0.0.1:$FA/api/x" "X-API-Key: $KEY"
    run "nginx auth_request -> nginx"    "http://127.0.0.1:$NV/api/x" "X-API-Key: $KEY"
    if [ -n "$CADDY" ]; then
      run "Caddy forward_auth -> keycard" "http://127.0.0.1:$CF/api/x" "X-API-Key: $KEY"
      run "Caddy forward_auth -> nginx"   "http://127.0.0.1:$CV/api/x" "X-API-Key: $KEY"
    fi
  done
)
LATENCY=$(
  printf 'upstream directly|'; $LOADGEN "http://127.0.0.1:$UP/x" "$RATE" "$CONNS" "$SECS"
  printf 'keycard, public route|'; $LOADGEN "http://127.0.0.1:$KP/public/x" "$RATE" "$CONNS" "$SECS"
  printf 'keycard, API key|'; $LOADGEN "http://127.0.0.1:$KP/api/x" "$RATE" "$CONNS" "$SECS" "X-API-Key: $KEY"
)
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$KC_PID/status")
RSS=$(awk '/VmRSS/ {print $2}' "/proc/$KC_PID/status")
python3 - "$RESULTS" "$CONNS" "$DURATION" "$LATENCY" "$RATE" "$HWM" "$RSS" <<'PY'
import sys
rows=[l.split('|') for l in sys.argv[1].strip().splitlines()]
conns, dur = sys.argv[2], sys.argv[3]
def ms(s):
    s=s.strip()
    for suf,f in (('us',0.001),('ms',1.0),('s',1000.0)):
        if s.endswith(suf): return float(s[:-len(suf)])*f
    return float('nan')
import statistics
groups={}
for label,rps,p50,p99,errs in rows:
    groups.setdefault(label,[]).append((float(rps),ms(p50),ms(p99),int(errs or 0)))
print(f"wrk -t2 -c{conns} -d{dur}, HTTP/1.1 keep-alive, loopback, 2 cores shared by all processes;")
print(f"median of {len(next(iter(groups.values())))} interleaved rounds (every round's requests/s in brackets)\n")
print("| target | requests/s | p50 | p99 | non-2xx |")
print("|---|---:|---:|---:|---:|")
r={}
for label,g in groups.items():
    rps=statistics.median(x[0] for x in g); p50=statistics.median(x[1] for x in g); p99=statistics.median(x[2] for x in g)
    r[label]=(rps,p99)
    each=", ".join(f"{x[0]:,.0f}" for x in g)
    print(f"| {label} | {rps:,.0f} [{each}] | {p50:.2f} ms | {p99:.2f} ms | {sum(x[3] for x in g)} |")
kpub, kkey = r["keycard, public route"], r["keycard, API key"]
ngx, up = r["nginx proxy_pass, no auth"], r["upstream directly"]
print()
print(f"API key / keycard pass-through throughput: {kkey[0]/kpub[0]:.2f}x (target >= 0.9x)")
# The two rows of a round are measured seconds apart: their ratio drifts less with the
# machine's speed than the ratio of the medians does.
pairs = [k[0]/p[0] for p, k in zip(groups["keycard, public route"], groups["keycard, API key"])]
print(f"  same, each round's own ratio:            {statistics.median(pairs):.2f}x median ({', '.join(f'{x:.2f}' for x in pairs)})")
print(f"API key / nginx proxy_pass throughput:     {kkey[0]/ngx[0]:.2f}x (goal >= 1.0x)")
print(f"p99 added under saturation (queueing):     {kkey[1]-up[1]:.2f} ms")
kb = r["keycard, Basic"]
print(f"Basic (argon2id) / API key throughput:      {kb[0]/kkey[0]:.2f}x (target >= 0.9x)")
ko = r["keycard, oauth2 (ES256 token)"]
print(f"oauth2 (keycard's ES256 token) / API key:   {ko[0]/kkey[0]:.2f}x")
kd, kl = r["keycard, Digest (loadgen)"], r["keycard, API key (loadgen)"]
print(f"Digest (replay-checked) / API key, loadgen: {kd[0]/kl[0]:.2f}x")
kh = r["keycard, hmac (loadgen)"]
print(f"hmac (RFC 9421) / API key, loadgen:         {kh[0]/kl[0]:.2f}x (target >= 0.85x)")
fk, fn = r["nginx auth_request -> keycard"], r["nginx auth_request -> nginx"]
print(f"forward-auth: nginx->keycard / nginx->nginx: {fk[0]/fn[0]:.2f}x (target >= 0.9x)")
if "Caddy forward_auth -> keycard" in r:
    print(f"forward-auth: Caddy->keycard / Caddy->nginx: {r['Caddy forward_auth -> keycard'][0]/r['Caddy forward_auth -> nginx'][0]:.2f}x")
import json
lat={}
for line in sys.argv[4].strip().splitlines():
    label, doc = line.split('|', 1)
    lat[label]=json.loads(doc)
print(f"\nConstant rate: {sys.argv[5]} req/s over {conns} connections (bench loadgen, latency from intended send time)\n")
print("| target | ok | errors | p50 | p90 | p99 | p99.9 |")
print("|---|---:|---:|---:|---:|---:|---:|")
for label,d in lat.items():
    print(f"| {label} | {d['ok']} | {d['errors']} | {d['p50_ms']:.2f} ms | {d['p90_ms']:.2f} ms | {d['p99_ms']:.2f} ms | {d['p999_ms']:.2f} ms |")
print()
print(f"p50 added by keycard with an API key: {lat['keycard, API key']['p50_ms']-lat['upstream directly']['p50_ms']:.2f} ms")
print(f"p99 added by keycard with an API key: {lat['keycard, API key']['p99_ms']-lat['upstream directly']['p99_ms']:.2f} ms (target < 1 ms)")
print(f"\nkeycard's peak resident memory over the run (VmHWM): {int(sys.argv[6])/1024:.0f} MB; now (VmRSS): {int(sys.argv[7])/1024:.0f} MB (target: peak <= 150 MB)")
PY
