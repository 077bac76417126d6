#!/usr/bin/env bash
# Instructions per request under callgrind (steadier than CPU time on a noisy machine), for the
# load bench's three oauth-shim targets and for nginx as the pass-through proxy (the peer, one
# process: master_process off), all against the same nginx upstream:
#
#   benches/load/callgrind.sh [BIN]     # default: target/release/oauth-shim (build it first)
#   CONTINUITY=1 benches/load/callgrind.sh [BIN]
#
# With CONTINUITY=1 a fourth process runs with a token-continuity client, and four more figures
# follow: pass-bearer (continuity off) and pass-bearer-cont (continuity on), both API calls with
# an upstream-issued bearer token (the cost of the minted-token check on ordinary traffic), then
# swap (an API call with a minted token: session lookup, decryption and token swap) on the
# embedded store.
#
# Each target: 2 s of wrk -c8 warm-up, counters zeroed, D (6) seconds of wrk, counters dumped;
# prints total instructions / requests. Needs valgrind (callgrind_control), nginx and wrk.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../../target/release/oauth-shim}
LABEL=oauth-shim
W=$(mktemp -d /tmp/oauth-shim-callgrind.XXXXXX); mkdir -p $W/up
UP=19181; P=19180; C=19183; N=19182
API_JSON='{"webinarKey":"1235813213455","webinarID":"123-456-789","organizerKey":"1252383132521359990","accountKey":"3792314532151329654","subject":"Quarterly product update","description":"A fixed answer for the oauth-shim load bench.","times":[{"startTime":"2025-01-01T16:00:00Z","endTime":"2025-01-01T17:00:00Z"}],"timeZone":"Europe/Berlin","locale":"en_US"}'
TOKEN_JSON='{"access_token":"eyJraWQiOiJiZW5jaCIsImFsZyI6IlJTMjU2In0.bench-access-token","token_type":"Bearer","refresh_token":"bench-refresh-token","expires_in":3600,"account_key":"3792314532151329654","account_type":"","email":"jk@example.com","firstName":"Jon","lastName":"Karmak","organizer_key":"1252383132521359990","version":"3"}'
cat > $W/up.conf <<EOC
worker_processes 1; daemon off; error_log $W/up-error.log warn; pid $W/up.pid;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
  client_body_temp_path $W/up; proxy_temp_path $W/up; fastcgi_temp_path $W/up; uwsgi_temp_path $W/up; scgi_temp_path $W/up;
  server { listen 127.0.0.1:$UP reuseport backlog=4096; default_type application/json;
    location = /oauth/v2/token { return 200 '$TOKEN_JSON'; }
    location / { return 200 '$API_JSON'; } } }
EOC
cat > $W/ngx.conf <<EOC
worker_processes 1; master_process off; daemon off; error_log $W/ngx-error.log warn; pid $W/ngx.pid;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
  client_body_temp_path $W/up; proxy_temp_path $W/up; fastcgi_temp_path $W/up; uwsgi_temp_path $W/up; scgi_temp_path $W/up;
  upstream api { server 127.0.0.1:$UP; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$N reuseport backlog=4096;
    location / { proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$proxy_host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme; } } }
EOC
conf() { cat <<EOC
[server]
listen = "127.0.0.1:$1"
worker_threads = 1
[admin]
enabled = false
[upstream]
token_url = "http://127.0.0.1:$UP/oauth/v2/token"
authorize_url = "http://127.0.0.1:$UP/oauth/v2/authorize"
api_base = "http://127.0.0.1:$UP"
[refresh_cache]
ttl = "$2"
[migration]
dir = "$W/migration-$1"
[log]
level = "warn"
[[clients]]
id = "bench-client"
secret = "bench-secret"
EOC
}
conf $P 0s > $W/shim.toml; conf $C 30s > $W/cached.toml
K=19184
if [ "${CONTINUITY:-0}" = 1 ]; then
  echo 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f > $W/state.key
  { conf $K 0s | sed 's/^secret = "bench-secret"$/secret = "bench-secret"\nallow_password_grant = true\ncontinuity = true/'
    printf '[state]\nencryption_key_file = "%s"\n[continuity]\ndir = "%s"\n' $W/state.key $W/store; } > $W/cont.toml
fi
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null||true; done; wait 2>/dev/null||true; rm -rf $W' EXIT
/usr/sbin/nginx -p $W/up -e $W/up-error.log -c $W/up.conf & PIDS+=($!)
valgrind --tool=callgrind --callgrind-out-file=$W/cg.out.%p "$BIN" serve --config $W/shim.toml 2>$W/vg1.log & V1=$!; PIDS+=($V1)
valgrind --tool=callgrind --callgrind-out-file=$W/cgc.out.%p "$BIN" serve --config $W/cached.toml 2>$W/vg2.log & V2=$!; PIDS+=($V2)
valgrind --tool=callgrind --callgrind-out-file=$W/cgn.out.%p /usr/sbin/nginx -p $W/up -e $W/ngx-error.log -c $W/ngx.conf 2>$W/vg3.log & V3=$!; PIDS+=($V3)
if [ "${CONTINUITY:-0}" = 1 ]; then
  valgrind --tool=callgrind --callgrind-out-file=$W/cgk.out.%p "$BIN" serve --config $W/cont.toml 2>$W/vg4.log & V4=$!; PIDS+=($V4)
fi
for port in $P $C $N ${V4:+$K}; do for i in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done; done
API=/G2W/rest/v2/organizers/1252383132521359990/webinars/1235813213455
TOK='/oauth/access_token?grant_type=refresh_token&refresh_token=bench-refresh-token&client_id=bench-client'
L=$HERE/report.lua
measure() { # name pid url unique [wrk header args]
  UNIQUE_TOKENS=$4 wrk -t1 -c8 -d2s -s $L "${@:5}" "$3" >/dev/null
  callgrind_control -z $2 >/dev/null 2>&1
  out=$(UNIQUE_TOKENS=$4 wrk -t1 -c8 -d${D:-6}s -s $L "${@:5}" "$3" | grep ^RESULT)
  callgrind_control -d $1 $2 >/dev/null 2>&1
  sleep 0.5
  f=$(ls -t $W/*.out.$2.* 2>/dev/null | head -1)
  ir=$(grep -m1 '^summary:\|^totals:' "$f" | awk '{print $2}')
  reqs=$(sed 's/.*requests=\([0-9]*\).*/\1/' <<<"$out")
  errs=$(sed 's/.*connect=\([0-9]*\) read=\([0-9]*\) write=\([0-9]*\) status=\([0-9]*\).*/\1+\2+\3+\4/' <<<"$out")
  echo "$1: $((ir / reqs)) instr/req ($reqs reqs, errors $errs)"
}
measure nginx $V3 "http://127.0.0.1:$N$API" 0
measure pass $V1 "http://127.0.0.1:$P$API" 0
measure token $V1 "http://127.0.0.1:$P$TOK" 1
measure cached $V2 "http://127.0.0.1:$C$TOK" 0
if [ "${CONTINUITY:-0}" = 1 ]; then
  MINTED=$(curl -s "http://127.0.0.1:$K/oauth/access_token?grant_type=password&user_id=u&password=p&client_id=bench-client" \
    | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  case $MINTED in osh_at_*) ;; *) echo "continuity: no minted token" >&2; exit 1;; esac
  measure pass-bearer $V1 "http://127.0.0.1:$P$API" 0 -H "Authorization: Bearer upstream-issued-token"
  measure pass-bearer-cont $V4 "http://127.0.0.1:$K$API" 0 -H "Authorization: Bearer upstream-issued-token"
  measure swap $V4 "http://127.0.0.1:$K$API" 0 -H "Authorization: Bearer $MINTED"
fi
