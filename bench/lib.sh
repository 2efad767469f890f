# Shared by the bench scripts, sourced from the repository root: tool checks, free ports, and
# nginx instances whose files live under `WORK` (the run's scratch folder, set by the script
# before it starts one).

NGINX=${NGINX:-/usr/sbin/nginx}

need_nginx() {
  [ -x "$NGINX" ] || { echo "nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }
}

need_wrk() {
  command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
}

# A TCP port free on the loopback now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# nginx_conf NAME WORKERS HTTP_BODY: starts an nginx whose files live in $WORK/NAME (pid file
# $WORK/NAME.pid, so a trap killing $WORK/*.pid stops it), with HTTP_BODY inside `http {}`.
nginx_conf() {
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/nginx.conf" <<CONF
worker_processes $2;
pid $WORK/$1.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1/body; proxy_temp_path $WORK/$1/proxy;
  fastcgi_temp_path $WORK/$1/fcgi; uwsgi_temp_path $WORK/$1/uwsgi; scgi_temp_path $WORK/$1/scgi;
  keepalive_requests 1000000;
  $3
}
CONF
  "$NGINX" -e "$WORK/$1/error.log" -c "$WORK/$1/nginx.conf"
}

# nginx_upstream PORT: the upstream every bench proxies to, one worker answering a fixed 200.
nginx_upstream() {
  nginx_conf upstream 1 "server { listen 127.0.0.1:$1; location / { return 200 '{\"ok\":true}'; } }"
}

# Servers under test start in a session of their own (`setsid`), as under a service manager
# and as nginx puts itself when it daemonises. With the kernel's autogroup scheduling (on in
# Debian: /proc/sys/kernel/sched_autogroup_enabled) each session gets one share of the CPU
# when it is contended: a keycard left in the script's session would share one with wrk and
# the load generator, while the nginx it is compared with has its own. (Seen here: keycard's
# public route at 0.8× nginx proxy_pass in wrk's session, 0.95× in its own.)
