# shellcheck shell=bash
# Helpers shared by benches/load.sh, benches/abuse.sh and benches/scale.sh (sourced, not run).
#
# Every process a script starts is registered with `started PID` and stopped by the EXIT trap;
# a watchdog ends the script after BENCH_TIME_LIMIT seconds. Nothing outside $WORK (a fresh
# temporary directory, removed at the end unless KEEP=1) is written.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TG="$ROOT/target/release/tollgate"
PASSTHROUGH="$ROOT/target/release/examples/passthrough"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench.XXXXXX")
chmod 755 "$WORK"
mkdir -p "$WORK/tokens"   # token files live apart from the logs (Tollgate watches their directory)
PIDS=()
WATCHDOG=

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

started() { PIDS+=("$1"); }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$WATCHDOG" ]; then
        pkill -P "$WATCHDOG" 2>/dev/null || true   # its sleep
        kill "$WATCHDOG" 2>/dev/null || true
    fi
    local p
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.2
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Ends the whole script (through the EXIT trap) after $1 seconds.
watchdog() {
    local limit=$1 me=$$
    # the sleep must not hold the script's stdout open: a pipe reading it would wait for it
    ( sleep "$limit" > /dev/null 2>&1; echo "time limit of ${limit}s reached: stopping" >&2; kill -TERM "$me" ) &
    WATCHDOG=$!
}

need() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null && return 0
    log "installing $pkg (for $cmd)"
    if [ "$(id -u)" = 0 ]; then
        (apt-get install -y "$pkg" || { apt-get update && apt-get install -y "$pkg"; }) >/dev/null
    else
        die "$cmd is missing: apt-get install $pkg"
    fi
}

tools() {
    need nginx nginx-light
    need wrk wrk
    need curl curl
    need python3 python3
    need caddy caddy
}

source_state() {
    (cd "$ROOT" && echo "$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock examples 2>/dev/null || echo ' + uncommitted changes in src/, examples/ or Cargo.*')")
}
SOURCE_AT_START=$(source_state)

build_release() {
    if [ "${SKIP_BUILD:-0}" = 1 ]; then
        log "SKIP_BUILD=1: using the existing release binaries"
    else
        log "cargo build --release --bin tollgate --example passthrough"
        (cd "$ROOT" && cargo build --release --bin tollgate --example passthrough)
    fi
    [ -x "$TG" ] && [ -x "$PASSTHROUGH" ] || die "release binaries missing"
}

# N free TCP ports on 127.0.0.1, one per line (all bound at once, so they differ).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# Builds (and waits for) are the noise on this shared machine: how many compilers run now.
builds_running() {
    ps -eo comm= | grep -cE '^(rustc|cargo|cargo-clippy|clippy-driver|cc1|cc1plus|ld|rust-lld)$' || true
}

# Waits up to $1 seconds for the machine to be quiet: no compiler running and other processes
# using under 15 % of it over 2 s (best effort: measures anyway after that, and says so).
wait_quiet() {
    local limit=${1:-240} deadline=$((SECONDS + ${1:-240})) foreign=0 said=0
    while :; do
        cpu_mark; sleep 2; foreign=$(cpu_foreign)
        [ "$(builds_running)" = 0 ] && [ "$foreign" -lt 15 ] && return 0
        [ $SECONDS -lt $deadline ] || break
        [ $said = 1 ] || log "machine busy (other processes ${foreign}% of it, $(builds_running) compiler processes): waiting up to ${limit}s"
        said=1
        sleep 3
    done
    log "still busy (other processes ${foreign}%, $(builds_running) compiler processes): measuring anyway (noisy)"
}

# Other processes' share of the machine: `cpu_mark` before a measurement, `cpu_foreign` after it
# prints the percentage of all cores' time used by processes outside this script's process tree
# (user, system, irq, softirq and steal time from /proc/stat minus ours; wrk is counted as ours
# once it has exited). Our own loopback traffic's interrupt time is not charged to us, so an idle
# machine reads a few percent.
cpu_sample() {
    python3 - "$$" <<'PYEOF'
import os, sys, time
root = int(sys.argv[1])
f = open("/proc/stat").readline().split()
busy = sum(int(f[i]) for i in (1, 2, 3, 6, 7, 8))   # user nice system irq softirq steal
procs = {}
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        s = open(f"/proc/{p}/stat").read()
    except OSError:
        continue
    r = s[s.rindex(")") + 2:].split()
    procs[int(p)] = (int(r[1]), int(r[11]) + int(r[12]), int(r[13]) + int(r[14]))
children = {}
for pid, (ppid, _, _) in procs.items():
    children.setdefault(ppid, []).append(pid)
ours, todo = 0, [root]
while todo:
    pid = todo.pop()
    if pid in procs:
        ours += procs[pid][1]
        todo += children.get(pid, [])
ours += procs.get(root, (0, 0, 0))[2]
print(time.time(), busy, ours)
PYEOF
}
cpu_mark() { cpu_sample > "$WORK/cpu.mark"; }
cpu_foreign() {
    local t0 b0 o0 t1 b1 o1
    read -r t0 b0 o0 < "$WORK/cpu.mark"
    read -r t1 b1 o1 < <(cpu_sample)
    awk -v t="$(echo "$t1 - $t0" | bc)" -v b=$((b1 - b0)) -v o=$((o1 - o0)) -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" \
        'BEGIN { f = 100 * (b - o) / (t * hz * n); if (f < 0) f = 0; printf "%.0f\n", f }'
}

machine_info() {
    echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/^Mem:/{print $2}') GiB RAM, $(uname -sr)"
    echo "commit:  $SOURCE_AT_START (when the script started)"
    echo "tools:   $(wrk -v 2>&1 | head -1 | awk '{print "wrk", $2}'), $(nginx -v 2>&1 | sed 's/.*: //'), caddy $(caddy version 2>/dev/null | awk '{print $1}'), $(cd "$ROOT" && rustc --version | awk '{print "rustc", $2}')"
    echo "binary:  target/release/tollgate built $(date -u -r "$TG" '+%Y-%m-%d %H:%M UTC')"
    echo "build:   release profile $(sed -n '/^\[profile.release\]/,/^\[/p' "$ROOT/Cargo.toml" | grep '=' | tr '\n' ' ' | sed 's/ *$//'); allocator $(grep -h -A1 global_allocator "$ROOT"/src/main.rs "$ROOT"/src/lib.rs 2>/dev/null | sed -n 's/.*static [A-Z_]*: *\([^ =]*\).*/\1/p' | head -1 | grep . || echo 'system (glibc malloc)')"
    echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min), compiler processes now: $(builds_running)"
}

# nginx on 127.0.0.1: serves $WORK/www (small.bin = 1 KiB, large.bin = 1 MiB) on UP_PORT and,
# when PROXY_PORT is given, proxies to it without auth on PROXY_PORT (upstream keepalive 64).
start_nginx() {
    local up_port=$1 proxy_port=${2:-}
    mkdir -p "$WORK/www" "$WORK/nginx/logs" "$WORK/nginx/tmp"
    head -c 1024 /dev/urandom > "$WORK/www/small.bin"
    head -c 1048576 /dev/urandom > "$WORK/www/large.bin"
    chmod -R a+rX "$WORK/www"
    local proxy_block=""
    if [ -n "$proxy_port" ]; then
        proxy_block="
    upstream files { server 127.0.0.1:$up_port; keepalive 64; }
    server {
        listen 127.0.0.1:$proxy_port reuseport backlog=4096;
        location / {
            proxy_pass http://files;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            # stream large bodies through memory, never through temp files
            proxy_buffers 16 64k;
            proxy_busy_buffers_size 128k;
            proxy_max_temp_file_size 0;
        }
    }"
    fi
    cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes $(nproc);
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
$( [ "$(id -u)" = 0 ] && echo "user root;" )
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$up_port reuseport backlog=4096;
        root $WORK/www;
        location / { }
    }$proxy_block
}
EOF
    nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
    NGINX_PID=$!
    started $NGINX_PID
    wait_http "http://127.0.0.1:$up_port/small.bin" 10
    [ -z "$proxy_port" ] || wait_http "http://127.0.0.1:$proxy_port/small.bin" 10
}

# Caddy on 127.0.0.1:PORT: `basicauth` (bcrypt, Caddy's default cost; the Caddyfile form keeps
# a cache of verified passwords, so a warm client pays bcrypt once) in front of reverse_proxy to
# 127.0.0.1:UP_PORT; no access log (Caddy's default). start_caddy PORT UP_PORT USER PASSWORD
start_caddy() {
    local port=$1 up_port=$2 user=$3 password=$4 hash
    mkdir -p "$WORK/caddy"
    hash=$(caddy hash-password --plaintext "$password")
    cat > "$WORK/caddy/Caddyfile" <<EOF
{
    admin off
    auto_https off
}
http://127.0.0.1:$port {
    basicauth {
        $user $hash
    }
    reverse_proxy 127.0.0.1:$up_port
}
EOF
    XDG_DATA_HOME="$WORK/caddy" XDG_CONFIG_HOME="$WORK/caddy" HOME="$WORK/caddy" \
        caddy run --config "$WORK/caddy/Caddyfile" --adapter caddyfile > "$WORK/caddy/caddy.log" 2>&1 &
    CADDY_PID=$!
    started $CADDY_PID
}

# Waits until URL answers 200 (extra curl args after the timeout); fails after $2 seconds.
wait_http() {
    local url=$1 limit=$2; shift 2
    local deadline=$((SECONDS + limit))
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" 2>/dev/null)" = 200 ]; do
        [ $SECONDS -lt $deadline ] || die "$url did not answer 200 within ${limit}s"
        sleep 0.05
    done
}

# A Tollgate configuration: write_config FILE LISTEN_PORT ADMIN_PORT UPSTREAM_PORT TOKEN_FILE LOG_LEVEL [EXTRA YAML]
write_config() {
    cat > "$1" <<EOF
listen: 127.0.0.1:$2
admin_listen: 127.0.0.1:$3
upstream: {url: "http://127.0.0.1:$4"}
tokens: {files: ["$5"], database: none}
log: {format: json, level: $6}
threads: 2
${7:-}
EOF
}

# Appends a new token to TOKEN_FILE with `tollgate token hash` (argon2id, configured defaults)
# and prints the token: new_token CONFIG TOKEN_FILE NAME [token hash options].
new_token() {
    local config=$1 file=$2 name=$3; shift 3
    [ -s "$file" ] || echo "tokens:" > "$file"
    "$TG" -c "$config" token hash --name "$name" --permission read "$@" \
        >> "$file" 2> "$WORK/token.err" || { cat "$WORK/token.err" >&2; die "token hash failed"; }
    sed -n 's/^token: //p' "$WORK/token.err"
}

# Starts Tollgate with CONFIG, stdout+stderr appended to LOGFILE; sets TG_PID.
start_tollgate() {
    local config=$1 logfile=$2 bin=${3:-$TG}
    "$bin" -c "$config" serve >> "$logfile" 2>&1 &
    TG_PID=$!
    started $TG_PID
}

# Sum of a Prometheus metric (all label sets matching the optional grep -E filter).
metric() {
    local admin_port=$1 name=$2 filter=${3:-}
    curl -s "http://127.0.0.1:$admin_port/metrics" |
        { grep -E "^$name(\{|\s)" || true; } | { if [ -n "$filter" ]; then grep -E "$filter" || true; else cat; fi; } |
        awk '{s += $NF} END {printf "%.0f\n", s}'
}
metric_raw() {
    curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '!done && ($1 == n || index($1, n "{") == 1) {print $NF; done = 1}'
}

# CPU time (user + system, in clock ticks) of the given processes, all their threads together.
cpu_ticks() {
    local p t=0
    for p in "$@"; do
        t=$((t + $(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat")))
    done
    echo $t
}

# "VmRSS VmHWM" of a process, in MiB.
rss_mib() {
    awk '/^VmRSS:/{r=$2} /^VmHWM:/{h=$2} END {printf "%.1f %.1f\n", r/1024, h/1024}' "/proc/$1/status"
}

# Parses wrk --latency output: "req/s p50_ms p99_ms non2xx socket_errors requests".
parse_wrk() {
    awk '
    function ms(v) {
        if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
        if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
        if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
        return v + 0
    }
    /^Requests\/sec:/ { rps = $2 }
    / requests in / { n = $1 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    /Socket errors:/ { gsub(",", ""); err = $4 + $6 + $8 + $10 }
    END { printf "%s %.3f %.3f %d %d %d\n", rps, p50, p99, bad, err, n }' "$1"
}

# requests PORT COUNT TOKEN: COUNT GETs of /small.bin on one keep-alive connection; all 200.
requests() {
    python3 - "$@" <<'EOF'
import http.client, sys
port, count, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for i in range(count):
    c.request("GET", "/small.bin", headers={"Authorization": "Bearer " + token})
    r = c.getresponse()
    body = r.read()
    if r.status != 200 or len(body) != 1024:
        sys.exit(f"request {i}: status {r.status}, {len(body)} bytes")
EOF
}
