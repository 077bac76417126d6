#!/usr/bin/env bash
# Load bench for oauth-shim against nginx and HAProxy as the peers. Loopback only, bounded in time:
# about (WARMUP + REPS * DURATION) * 9 targets + ~15 s for the memory probe + ~2 min for the churn
# probe, plus the release build.
#
#   benches/load/run.sh                       # defaults: 10 s per run, 64 connections, 3 reps
#   DURATION=5 REPS=1 benches/load/run.sh     # a quick look
#   SHIM_BIN=/path/to/oauth-shim benches/load/run.sh   # measure another build (e.g. a baseline)
#   TARGETS=shim-token-redis benches/load/run.sh       # only the Redis backend beside memory
#   HOLDS="5000" benches/load/run.sh                   # the memory probe's connection counts
#   CHURN=20000 benches/load/run.sh                    # the churn probe's connections (0: skip)
#
# Targets, interleaved within each repetition:
#   direct      wrk -> upstream nginx                       (the physical limit)
#   nginx       wrk -> nginx proxy_pass (keepalive pool) -> upstream   (a peer)
#   haproxy     wrk -> HAProxy, one thread, http-reuse always -> upstream (the other peer)
#   shim-pass   wrk -> oauth-shim pass-through -> upstream
#   shim-token  wrk -> oauth-shim legacy GET /oauth/access_token, refresh cache off and a new
#               refresh token per request (so nothing coalesces) -> upstream
#   shim-cached the same with the refresh cache on (30 s TTL)
# and the group shim-token-redis: the refresh state on Redis ([state] backend = "redis", one
# redis-server on the server CPU, whose CPU counts as the proxy's), each beside its memory twin:
#   shim-redis-cached     one refresh token, cache on: every request answered from Redis
#                         (memory twin: shim-cached)
#   shim-coalesced        one refresh token, cache off: concurrent requests join the running
#                         refresh, the others start the next one (memory backend)
#   shim-redis-coalesced  the same with the Redis backend (lock, upstream call, publish)
#   shim-redis-coalesced-ack  the same with the lock and the answer acknowledged by a replica
#                         ([state] replicas_ack = 1: WAIT; a second redis-server, replicaof
#                         the first, also on the server CPU and counted as the proxy's)
# and the group tls: the proxy port on TLS (the same ECDSA P-256 certificate, made here with
# openssl, for both; TLS 1.2 and 1.3; wrk speaks HTTP/1.1), each beside nginx with `ssl`:
#   nginx-tls       wrk -> nginx ssl proxy_pass -> upstream, keep-alive
#   shim-tls        wrk -> oauth-shim [server.tls] pass-through -> upstream, keep-alive
#   nginx-tls-new   nginx-tls with `Connection: close`: a new connection and a full handshake per
#                   request (session caches and tickets off), so req/s is handshakes per second
#   shim-tls-new    the same against oauth-shim
# and the memory probe holds idle TLS keep-alive connections against both for RSS per connection.
# Pass-through ratios are against the better of nginx and haproxy in the same run (lower CPU per
# request, higher req/s, lower p99), and the report names which one that was. The memory probe
# holds each HOLDS count of idle keep-alive connections against oauth-shim, nginx and HAProxy.
# The churn probe (churn_conns.py) then opens and closes CHURN connections (default 100000, one
# request each, at most 500 open at once) against a freshly started oauth-shim and nginx and
# reports RSS idle before, at the peak and ~3 s after; CHURN=0 skips it.
# TARGETS picks targets or groups (default: all). The load tool runs on LOAD_CPU, every server on SERVER_CPU (taskset). Prints a markdown table.
# start() sets each PID_<name> with eval, which shellcheck cannot follow.
# shellcheck disable=SC2154
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REPS=${REPS:-3}
CONNS=${CONNS:-64}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
# 19,500 rather than 20,000 where a process may open at most 20,000 files (the hard limit on
# the machine BENCHMARKS.md was measured on, which not even root may raise there).
HOLDS=${HOLDS:-5000 $( [ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -gt 20100 ] && echo 20000 || echo 19500)}
# The TLS memory probe's connections.
HOLD=${HOLD:-5000}
# Connections opened and closed one after another by the churn probe (0 skips it).
CHURN=${CHURN:-100000}
BASE_PORT=${BASE_PORT:-18080}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHIM_PORT=$BASE_PORT
UP_PORT=$((BASE_PORT + 1))
NGX_PORT=$((BASE_PORT + 2))
CACHED_PORT=$((BASE_PORT + 3))
MEM_PORT=$((BASE_PORT + 4))
REDIS_PORT=$((BASE_PORT + 5))
REDIS_CACHED_PORT=$((BASE_PORT + 6))
REDIS_COAL_PORT=$((BASE_PORT + 7))
COAL_PORT=$((BASE_PORT + 8))
NGX_TLS_PORT=$((BASE_PORT + 9))
SHIM_TLS_PORT=$((BASE_PORT + 10))
SHIM_TLS_MEM_PORT=$((BASE_PORT + 11))
HAP_PORT=$((BASE_PORT + 12))
REDIS_REPLICA_PORT=$((BASE_PORT + 13))
REDIS_ACK_PORT=$((BASE_PORT + 14))
read -r -a TARGETS <<<"${TARGETS:-direct nginx haproxy shim-pass shim-token shim-cached shim-token-redis tls}"
read -r -a TARGETS <<<"$(for t in "${TARGETS[@]}"; do
  case $t in
    shim-token-redis) echo shim-cached shim-redis-cached shim-coalesced shim-redis-coalesced shim-redis-coalesced-ack ;;
    tls) echo nginx-tls shim-tls nginx-tls-new shim-tls-new ;;
    *) echo "$t" ;;
  esac
done | tr '\n' ' ')"
wants() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
API_PATH=/G2W/rest/v2/organizers/1252383132521359990/webinars/1235813213455
TOKEN_PATH='/oauth/access_token?grant_type=refresh_token&refresh_token=bench-refresh-token&client_id=bench-client'

log() { echo "load: $*" >&2; }

# --- tools -------------------------------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} from Debian's packages"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
CLK_TCK=$(getconf CLK_TCK)
ncpu=$(nproc --all)
if [ "$ncpu" -le "$SERVER_CPU" ] || [ "$ncpu" -le "$LOAD_CPU" ]; then
  log "need CPUs $LOAD_CPU and $SERVER_CPU; this machine has $ncpu"; exit 1
fi

if [ -z "${SHIM_BIN:-}" ]; then
  log "building oauth-shim (release)"
  (cd "$ROOT" && cargo build --release --quiet)
  SHIM_BIN="$ROOT/target/release/oauth-shim"
  SHIM_LABEL="oauth-shim $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '(no git)')"
else
  SHIM_LABEL="oauth-shim from SHIM_BIN=$SHIM_BIN"
fi

# --- processes ---------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/oauth-shim-load.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The memory probe holds up to 20,000 connections in one client and one server process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# A fixed ~300-byte API answer and a fixed v2 token answer.
API_JSON='{"webinarKey":"1235813213455","webinarID":"123-456-789","organizerKey":"1252383132521359990","accountKey":"3792314532151329654","subject":"Quarterly product update","description":"A fixed answer for the oauth-shim load bench.","times":[{"startTime":"2025-01-01T16:00:00Z","endTime":"2025-01-01T17:00:00Z"}],"timeZone":"Europe/Berlin","locale":"en_US"}'
TOKEN_JSON='{"access_token":"eyJraWQiOiJiZW5jaCIsImFsZyI6IlJTMjU2In0.bench-access-token","token_type":"Bearer","refresh_token":"bench-refresh-token","expires_in":3600,"account_key":"3792314532151329654","account_type":"","email":"jk@example.com","firstName":"Jon","lastName":"Karmak","organizer_key":"1252383132521359990","version":"3"}'

# Both nginx instances: one worker on the server core, no access log, keep-alive without a
# per-connection request cap (wrk holds its connections for the whole run).
nginx_common="worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
error_log $WORK/NAME-error.log warn;
pid $WORK/NAME.pid;
events { worker_connections 65536; }"

mkdir -p "$WORK/up" "$WORK/ngx"
cat >"$WORK/up.conf" <<EOF
${nginx_common//NAME/up}
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path $WORK/up; proxy_temp_path $WORK/up; fastcgi_temp_path $WORK/up;
  uwsgi_temp_path $WORK/up; scgi_temp_path $WORK/up;
  server {
    listen 127.0.0.1:$UP_PORT reuseport backlog=4096;
    default_type application/json;
    location = /oauth/v2/token { return 200 '$TOKEN_JSON'; }
    location / { return 200 '$API_JSON'; }
  }
}
EOF
cat >"$WORK/ngx.conf" <<EOF
${nginx_common//NAME/ngx}
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path $WORK/ngx; proxy_temp_path $WORK/ngx; fastcgi_temp_path $WORK/ngx;
  uwsgi_temp_path $WORK/ngx; scgi_temp_path $WORK/ngx;
  upstream api {
    server 127.0.0.1:$UP_PORT;
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGX_PORT reuseport backlog=4096;
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$proxy_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
EOF

# HAProxy, the second pass-through peer: one thread on the server core, no logging, keep-alive on
# both sides, idle upstream connections shared between client connections (`http-reuse always`)
# and no per-connection request cap. maxconn 50000 as the memory probe's oauth-shim; HAProxy wants
# two descriptors per connection and, with `no strict-limits`, only warns where the hard limit
# is lower (idle client connections need one each, so the probe's counts still fit).
cat >"$WORK/hap.cfg" <<EOF
global
  nbthread 1
  maxconn 50000
  no strict-limits
defaults
  mode http
  maxconn 50000
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 75s
  timeout server 75s
  timeout http-keep-alive 75s
frontend api
  bind 127.0.0.1:$HAP_PORT
  default_backend up
backend up
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  server up 127.0.0.1:$UP_PORT
EOF
"$HAPROXY" -c -q -f "$WORK/hap.cfg"

# One certificate for both TLS servers: ECDSA P-256, self-signed for 127.0.0.1 (wrk does not
# verify it).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
  -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
mkdir -p "$WORK/ngx-tls"
cat >"$WORK/ngx-tls.conf" <<EOF
${nginx_common//NAME/ngx-tls}
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path $WORK/ngx-tls; proxy_temp_path $WORK/ngx-tls; fastcgi_temp_path $WORK/ngx-tls;
  uwsgi_temp_path $WORK/ngx-tls; scgi_temp_path $WORK/ngx-tls;
  upstream api {
    server 127.0.0.1:$UP_PORT;
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGX_TLS_PORT ssl reuseport backlog=4096;
    ssl_certificate $WORK/tls.crt;
    ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    # A full handshake per new connection, as oauth-shim's *-new runs get from wrk.
    ssl_session_cache off;
    ssl_session_tickets off;
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$proxy_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
EOF

STATE_KEY_FILE=$WORK/state.key
echo 5f0c2b9a8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170f1e2d3c >"$STATE_KEY_FILE"
shim_conf() { # port ttl header_read_timeout [redis|tls]
  cat <<EOF
[server]
listen = "127.0.0.1:$1"
header_read_timeout = "$3"
[admin]
enabled = false
[upstream]
token_url = "http://127.0.0.1:$UP_PORT/oauth/v2/token"
authorize_url = "http://127.0.0.1:$UP_PORT/oauth/v2/authorize"
api_base = "http://127.0.0.1:$UP_PORT"
[refresh_cache]
ttl = "$2"
[migration]
dir = "$WORK/migration-$1"
[log]
level = "warn"
[[clients]]
id = "bench-client"
secret = "bench-secret"
EOF
  if [ "${4:-}" = redis ] || [ "${4:-}" = redis-ack ]; then
    printf '[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:%s"\nencryption_key_file = "%s"\n' \
      "$REDIS_PORT" "$STATE_KEY_FILE"
  fi
  if [ "${4:-}" = redis-ack ]; then
    printf 'replicas_ack = 1\n'
  fi
  if [ "${4:-}" = tls ]; then
    printf '[server.tls]\ncert_file = "%s"\nkey_file = "%s"\nmax_handshakes = 1024\n' \
      "$WORK/tls.crt" "$WORK/tls.key"
  fi
}
shim_conf "$SHIM_PORT" 0s 10s >"$WORK/shim.toml"
shim_conf "$CACHED_PORT" 30s 10s >"$WORK/shim-cached.toml"
# The memory probe holds idle keep-alive connections for a few seconds; the header read timeout
# (10 s by default) also closes idle HTTP/1 keep-alive connections, so raise it there, and the
# connection limit (10,000 by default) above the probe's counts.
{ shim_conf "$MEM_PORT" 0s 60s; } | sed 's/^\[admin\]$/max_connections = 50000\n[admin]/' >"$WORK/shim-mem.toml"
shim_conf "$COAL_PORT" 0s 10s >"$WORK/shim-coalesced.toml"
shim_conf "$REDIS_CACHED_PORT" 30s 10s redis >"$WORK/shim-redis-cached.toml"
shim_conf "$REDIS_COAL_PORT" 0s 10s redis >"$WORK/shim-redis-coalesced.toml"
shim_conf "$REDIS_ACK_PORT" 0s 10s redis-ack >"$WORK/shim-redis-coalesced-ack.toml"
shim_conf "$SHIM_TLS_PORT" 0s 10s tls >"$WORK/shim-tls.toml"
shim_conf "$SHIM_TLS_MEM_PORT" 0s 60s tls >"$WORK/shim-tls-mem.toml"

start() { # name, command...
  local name=$1; shift
  taskset -c "$SERVER_CPU" "$@" >"$WORK/$name.out" 2>&1 &
  PIDS+=($!)
  eval "PID_${name//-/_}=$!"
}
children() { # pids of the children of $1
  local stat
  for stat in /proc/[0-9]*/stat; do
    awk -v p="$1" '{ sub(/^.*\) /, ""); if ($2 == p) { split(FILENAME, a, "/"); print a[3] } }' \
      "$stat" 2>/dev/null || true
  done
}
ticks() { # utime+stime of the given pids, in clock ticks
  local total=0 pid t
  for pid in "$@"; do
    t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat")
    total=$((total + t))
  done
  echo "$total"
}
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "nothing listens on port $1"; cat "$WORK"/*.out "$WORK"/*-error.log >&2 2>/dev/null || true
  exit 1
}

start up "$NGINX" -p "$WORK/up" -e "$WORK/up-error.log" -c "$WORK/up.conf"
start ngx "$NGINX" -p "$WORK/ngx" -e "$WORK/ngx-error.log" -c "$WORK/ngx.conf"
start hap "$HAPROXY" -db -f "$WORK/hap.cfg"
start shim "$SHIM_BIN" serve --config "$WORK/shim.toml"
start shim-cached "$SHIM_BIN" serve --config "$WORK/shim-cached.toml"
start shim-coalesced "$SHIM_BIN" serve --config "$WORK/shim-coalesced.toml"
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no
wait_port "$REDIS_PORT"
start redis-replica redis-server --port "$REDIS_REPLICA_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --replicaof 127.0.0.1 "$REDIS_PORT"
wait_port "$REDIS_REPLICA_PORT"
# The acknowledged lock needs the replica in sync: until then WAIT counts no replica.
for _ in $(seq 1 100); do
  redis-cli -p "$REDIS_REPLICA_PORT" INFO replication | grep -q '^master_link_status:up' && break
  sleep 0.1
done
start shim-redis-cached "$SHIM_BIN" serve --config "$WORK/shim-redis-cached.toml"
start shim-redis-coalesced "$SHIM_BIN" serve --config "$WORK/shim-redis-coalesced.toml"
start shim-redis-coalesced-ack "$SHIM_BIN" serve --config "$WORK/shim-redis-coalesced-ack.toml"
start ngx-tls "$NGINX" -p "$WORK/ngx-tls" -e "$WORK/ngx-tls-error.log" -c "$WORK/ngx-tls.conf"
start shim-tls "$SHIM_BIN" serve --config "$WORK/shim-tls.toml"
for p in "$UP_PORT" "$NGX_PORT" "$HAP_PORT" "$SHIM_PORT" "$CACHED_PORT" "$COAL_PORT" "$REDIS_CACHED_PORT" \
  "$REDIS_COAL_PORT" "$REDIS_ACK_PORT" "$NGX_TLS_PORT" "$SHIM_TLS_PORT"; do
  wait_port "$p"
done
# A Redis-backed replica serves from memory until its first PING to Redis has answered.
sleep 1
UP_WORKERS=$(children "$PID_up")
NGX_WORKERS=$(children "$PID_ngx")
NGX_TLS_WORKERS=$(children "$PID_ngx_tls")

declare -A URL PROXY
URL[direct]="http://127.0.0.1:$UP_PORT$API_PATH";         PROXY[direct]=""
URL[nginx]="http://127.0.0.1:$NGX_PORT$API_PATH";         PROXY[nginx]="$NGX_WORKERS"
URL[haproxy]="http://127.0.0.1:$HAP_PORT$API_PATH";         PROXY[haproxy]="$PID_hap"
URL[shim-pass]="http://127.0.0.1:$SHIM_PORT$API_PATH";    PROXY[shim-pass]="$PID_shim"
URL[shim-token]="http://127.0.0.1:$SHIM_PORT$TOKEN_PATH"; PROXY[shim-token]="$PID_shim"
URL[shim-cached]="http://127.0.0.1:$CACHED_PORT$TOKEN_PATH"; PROXY[shim-cached]="$PID_shim_cached"
URL[shim-coalesced]="http://127.0.0.1:$COAL_PORT$TOKEN_PATH"; PROXY[shim-coalesced]="$PID_shim_coalesced"
URL[shim-redis-cached]="http://127.0.0.1:$REDIS_CACHED_PORT$TOKEN_PATH"
PROXY[shim-redis-cached]="$PID_shim_redis_cached $PID_redis"
URL[shim-redis-coalesced]="http://127.0.0.1:$REDIS_COAL_PORT$TOKEN_PATH"
PROXY[shim-redis-coalesced]="$PID_shim_redis_coalesced $PID_redis"
URL[shim-redis-coalesced-ack]="http://127.0.0.1:$REDIS_ACK_PORT$TOKEN_PATH"
PROXY[shim-redis-coalesced-ack]="$PID_shim_redis_coalesced_ack $PID_redis $PID_redis_replica"
URL[nginx-tls]="https://127.0.0.1:$NGX_TLS_PORT$API_PATH";     PROXY[nginx-tls]="$NGX_TLS_WORKERS"
URL[shim-tls]="https://127.0.0.1:$SHIM_TLS_PORT$API_PATH";     PROXY[shim-tls]="$PID_shim_tls"
URL[nginx-tls-new]=${URL[nginx-tls]};                          PROXY[nginx-tls-new]="$NGX_TLS_WORKERS"
URL[shim-tls-new]=${URL[shim-tls]};                            PROXY[shim-tls-new]="$PID_shim_tls"
redis_commands() { # commands Redis has processed so far
  redis-cli -p "$REDIS_PORT" INFO stats | awk -F: '/^total_commands_processed/ { print $2 + 0 }'
}

# Every target must answer 200 with the expected body before it is measured.
# shellcheck disable=SC2046
python3 - $(for t in "${TARGETS[@]}"; do echo "${URL[$t]}"; done) <<'EOF'
import json, ssl, sys, urllib.request
unverified = ssl.create_default_context()
unverified.check_hostname = False
unverified.verify_mode = ssl.CERT_NONE
for url in sys.argv[1:]:
    with urllib.request.urlopen(url, timeout=5, context=unverified) as r:
        body = json.loads(r.read())
        assert r.status == 200 and ("webinarKey" in body or body.get("expires_in") == "3600"), (url, body)
EOF

machine() {
  echo "- CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $ncpu cores;" \
    "kernel $(uname -r)"
  echo "- nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), $SHIM_LABEL"
  echo "- load: wrk -t1 -c$CONNS -d${DURATION}s on CPU $LOAD_CPU; servers on CPU $SERVER_CPU;" \
    "$REPS repetitions, interleaved; ${WARMUP}s warm-up per target"
}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

run_one() { # target duration -> one TSV line
  local t=$1 d=$2 p0 p1 u0 u1 out line unique r0=
  [[ $t == shim-redis-* ]] && r0=$(redis_commands)
  # PROXY and UP_WORKERS are lists of pids, split on purpose.
  p0=-
  # shellcheck disable=SC2086
  if [ -n "${PROXY[$t]}" ]; then p0=$(ticks ${PROXY[$t]}); fi
  # shellcheck disable=SC2086
  u0=$(ticks $UP_WORKERS)
  unique=0; [ "$t" = shim-token ] && unique=1
  local close=()
  [[ $t == *-tls-new ]] && close=(-H "Connection: close")
  out=$(UNIQUE_TOKENS=$unique taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${d}s" --timeout 2s "${close[@]}" \
    -s "$HERE/report.lua" "${URL[$t]}")
  # shellcheck disable=SC2086
  u1=$(ticks $UP_WORKERS)
  p1=-
  # shellcheck disable=SC2086
  if [ -n "${PROXY[$t]}" ]; then p1=$(ticks ${PROXY[$t]}); fi
  line=$(grep '^RESULT' <<<"$out")
  # shellcheck disable=SC2046,SC2001
  set -- $(sed 's/[a-z_0-9]*=//g' <<<"${line#RESULT }")
  local errors=$(($6 + $7 + $8 + $9 + ${10}))
  # Redis commands per request (a pipeline of three is one round trip), printed under the table.
  if [ -n "$r0" ]; then
    printf '%s\t%s\t%s\n' "$t" "$1" "$(($(redis_commands) - r0))" >>"$WORK/redis.tsv"
  fi
  local pt=-; [ "$p0" != - ] && pt=$((p1 - p0))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$1" "$2" "$3" "$4" "$5" "$errors" "$pt" \
    "$((u1 - u0))"
}

log "warm-up: ${WARMUP}s per target"
for t in "${TARGETS[@]}"; do run_one "$t" "$WARMUP" >/dev/null; done
rm -f "$WORK/redis.tsv"
RESULTS=$WORK/results.tsv
for rep in $(seq 1 "$REPS"); do
  for t in "${TARGETS[@]}"; do
    log "rep $rep/$REPS: $t (${DURATION}s)"
    printf '%s\t%s\n' "$rep" "$(run_one "$t" "$DURATION")" >>"$RESULTS"
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- memory ------------------------------------------------------------------------------------
kill "$PID_shim" "$PID_shim_cached" "$PID_ngx" "$PID_hap" "$PID_shim_coalesced" "$PID_shim_redis_cached" \
  "$PID_shim_redis_coalesced" "$PID_shim_redis_coalesced_ack" "$PID_redis" "$PID_redis_replica" "$PID_shim_tls" \
  2>/dev/null || true
MEM=$WORK/memory.txt
: >"$MEM"
if wants shim-pass; then
  # Each proxy freshly started, alone on the server CPU, idle and then holding N idle
  # keep-alive connections (each made one pass-through request); nginx's figure is its master's
  # and worker's RSS together, HAProxy's its one process's.
  for n in $HOLDS; do
    start shim-mem "$SHIM_BIN" serve --config "$WORK/shim-mem.toml"
    wait_port "$MEM_PORT"
    sleep 1
    log "memory: oauth-shim idle, then $n idle keep-alive connections"
    echo "oauth-shim $n $(python3 "$HERE/hold_conns.py" "$MEM_PORT" "$API_PATH" "$n" "$PID_shim_mem" | grep '^RSS')" >>"$MEM"
    kill "$PID_shim_mem"; wait "$PID_shim_mem" 2>/dev/null || true
    start ngx-mem "$NGINX" -p "$WORK/ngx" -e "$WORK/ngx-error.log" -c "$WORK/ngx.conf"
    wait_port "$NGX_PORT"
    sleep 1
    log "memory: nginx idle, then $n idle keep-alive connections"
    # shellcheck disable=SC2046
    echo "nginx $n $(python3 "$HERE/hold_conns.py" "$NGX_PORT" "$API_PATH" "$n" "$PID_ngx_mem" $(children "$PID_ngx_mem") | grep '^RSS')" >>"$MEM"
    kill "$PID_ngx_mem"; wait "$PID_ngx_mem" 2>/dev/null || true
    start hap-mem "$HAPROXY" -db -f "$WORK/hap.cfg"
    wait_port "$HAP_PORT"
    sleep 1
    log "memory: haproxy idle, then $n idle keep-alive connections"
    echo "haproxy $n $(python3 "$HERE/hold_conns.py" "$HAP_PORT" "$API_PATH" "$n" "$PID_hap_mem" | grep '^RSS')" >>"$MEM"
    kill "$PID_hap_mem"; wait "$PID_hap_mem" 2>/dev/null || true
  done
fi
# Memory under churn: oauth-shim and nginx, each freshly started, idle (after a warm-up), at the
# peak and ~3 s after CHURN short connections (one request each, at most 500 open at once).
CHURN_FILE=$WORK/churn.txt
: >"$CHURN_FILE"
if wants shim-pass && [ "$CHURN" -gt 0 ]; then
  start shim-mem "$SHIM_BIN" serve --config "$WORK/shim-mem.toml"
  wait_port "$MEM_PORT"
  sleep 1
  log "churn: oauth-shim, $CHURN connections opened and closed"
  echo "oauth-shim $(python3 "$HERE/churn_conns.py" "$MEM_PORT" "$API_PATH" "$CHURN" "$PID_shim_mem" | grep '^CHURN')" >>"$CHURN_FILE"
  kill "$PID_shim_mem"; wait "$PID_shim_mem" 2>/dev/null || true
  start ngx-mem "$NGINX" -p "$WORK/ngx" -e "$WORK/ngx-error.log" -c "$WORK/ngx.conf"
  wait_port "$NGX_PORT"
  sleep 1
  log "churn: nginx, $CHURN connections opened and closed"
  # shellcheck disable=SC2046
  echo "nginx $(python3 "$HERE/churn_conns.py" "$NGX_PORT" "$API_PATH" "$CHURN" "$PID_ngx_mem" $(children "$PID_ngx_mem") | grep '^CHURN')" >>"$CHURN_FILE"
  kill "$PID_ngx_mem"; wait "$PID_ngx_mem" 2>/dev/null || true
fi
# RSS per idle TLS keep-alive connection: nginx (master and worker) and oauth-shim, each holding
# HOLD connections that completed one request over TLS.
MEM_TLS_SHIM=
MEM_TLS_NGINX=
if wants shim-tls; then
  if [ -n "${PID_shim_mem:-}" ]; then kill "$PID_shim_mem" 2>/dev/null || true; fi
  log "memory: $HOLD idle TLS keep-alive connections, nginx then oauth-shim"
  # shellcheck disable=SC2086
  MEM_TLS_NGINX=$(HOLD_TLS=1 python3 "$HERE/hold_conns.py" "$NGX_TLS_PORT" "$API_PATH" "$HOLD" \
    "$PID_ngx_tls" $NGX_TLS_WORKERS | grep '^RSS')
  kill "$PID_ngx_tls" 2>/dev/null || true
  start shim-tls-mem "$SHIM_BIN" serve --config "$WORK/shim-tls-mem.toml"
  wait_port "$SHIM_TLS_MEM_PORT"
  sleep 1
  MEM_TLS_SHIM=$(HOLD_TLS=1 python3 "$HERE/hold_conns.py" "$SHIM_TLS_MEM_PORT" "$API_PATH" "$HOLD" \
    "$PID_shim_tls_mem" | grep '^RSS')
fi

echo
echo "## oauth-shim load bench ($(date -u +%Y-%m-%dT%H:%MZ))"
echo
machine
echo "- load average before / after the runs: $LOAD_BEFORE / $LOAD_AFTER"
echo
python3 "$HERE/report.py" "$RESULTS" "$CLK_TCK" "$MEM" "$MEM_TLS_SHIM" "$MEM_TLS_NGINX" "$CHURN_FILE"
if [ -s "$WORK/redis.tsv" ]; then
  echo
  awk -F'\t' '{ req[$1] += $2; cmd[$1] += $3 }
    END { printf "Redis commands per request:"; for (t in req) printf " %s %.2f;", t, cmd[t] / req[t]; print "" }' \
    "$WORK/redis.tsv"
fi
if [ -s "$MEM" ]; then
  echo "The memory probe's oauth-shim has header_read_timeout 60s and max_connections 50000."
  echo "Raw probe lines:"
  sed 's/^/    /' "$MEM"
fi
if [ -s "$CHURN_FILE" ]; then
  echo "Raw churn lines:"
  sed 's/^/    /' "$CHURN_FILE"
fi
