#!/usr/bin/env bash
# System calls per request (repeatable, unlike timings on a shared machine): each proxy gets
# WARMUP keep-alive GETs of a 1 KiB file, then `strace -c -f` is attached to all its threads
# while it serves REQUESTS more on one connection. The kernel side of a request (syscall entry,
# socket copies, epoll) is the part of its cost callgrind does not see, and the part where
# pingora and nginx differ most.
#
#   bash benches/syscalls.sh                  # builds release, then ~1 min
#   SKIP_BUILD=1 REQUESTS=2000 bash benches/syscalls.sh
#
# Targets: nginx-proxy (nginx proxy_pass with upstream keepalive; its workers serve both hops,
# so the counts of the same requests sent straight to the upstream server are subtracted),
# passthrough (examples/passthrough.rs), tollgate-default (log info, a rate-limited token).
# strace slows every call down but does not change which calls are made; one connection keeps
# the count per request free of accept/close.

source "$(dirname "$0")/lib.sh"

WARMUP=${WARMUP:-200}
REQUESTS=${REQUESTS:-2000}

tools
need strace strace
build_release
watchdog "${BENCH_TIME_LIMIT:-300}"

mapfile -t P < <(free_ports 6)
UP=${P[0]} NGPROXY=${P[1]} PT=${P[2]} TGP=${P[3]} ADMIN=${P[4]} PTW=${P[5]}
start_nginx "$UP" "$NGPROXY"
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')

TOKENS="$WORK/tokens/tokens.yaml"   # a directory of its own: Tollgate watches it
write_config "$WORK/tg-info.yaml" "$TGP" "$ADMIN" "$UP" "$TOKENS" info
TOKEN_RL=$(new_token "$WORK/tg-info.yaml" "$TOKENS" bench-limited --rate-limit 1000000000/1h)

# count NAME PORT PIDS...: per-syscall counts of PIDS (all their threads) over REQUESTS
# requests to PORT, as NAME<TAB>SYSCALL<TAB>CALLS lines.
count() {
    local name=$1 port=$2; shift 2
    local out="$WORK/strace.$name" args=() pid tid
    requests "$port" "$WARMUP" "$TOKEN_RL"
    for pid in "$@"; do
        for tid in /proc/"$pid"/task/*; do args+=(-p "${tid##*/}"); done
    done
    strace -c -U calls,name -o "$out" "${args[@]}" 2> "$WORK/strace.$name.err" &
    local spid=$!
    sleep 1   # attached to every thread before the first request
    requests "$port" "$REQUESTS" "$TOKEN_RL"
    kill -INT "$spid"
    wait "$spid" 2>/dev/null || true
    awk -v n="$name" '$1 ~ /^[0-9]+$/ && $2 != "total" {print n "\t" $2 "\t" $1}' "$out"
}

RESULTS="$WORK/results.tsv"
log "nginx direct (to subtract from nginx proxy_pass)"
# shellcheck disable=SC2086
count direct "$UP" $NGINX_WORKERS >> "$RESULTS"
log "nginx proxy_pass"
# shellcheck disable=SC2086
count nginx-proxy "$NGPROXY" $NGINX_WORKERS >> "$RESULTS"
log "pingora pass-through"
"$PASSTHROUGH" "127.0.0.1:$PT" "127.0.0.1:$UP" 2 > "$WORK/passthrough.log" 2>&1 &
PT_PID=$!
started $PT_PID
wait_http "http://127.0.0.1:$PT/small.bin" 20
count passthrough "$PT" "$PT_PID" >> "$RESULTS"
log "pingora pass-through as workers (one server per thread, as Tollgate runs)"
"$PASSTHROUGH" "127.0.0.1:$PTW" "127.0.0.1:$UP" 2 false true > "$WORK/passthrough-workers.log" 2>&1 &
PTW_PID=$!
started $PTW_PID
wait_http "http://127.0.0.1:$PTW/small.bin" 20
count passthrough-workers "$PTW" "$PTW_PID" >> "$RESULTS"
log "tollgate-default"
start_tollgate "$WORK/tg-info.yaml" "$WORK/tg-info.log"
wait_http "http://127.0.0.1:$TGP/small.bin" 60 -H "Authorization: Bearer $TOKEN_RL"
count tollgate-default "$TGP" "$TG_PID" >> "$RESULTS"

echo
echo "== System calls per request (strace -c) =="
machine_info
echo "method:  strace -c on every thread, $WARMUP warm-up then $REQUESTS keep-alive GETs of a 1 KiB file, one connection"
echo
python3 - "$RESULTS" "$REQUESTS" <<'EOF'
import sys, collections
n = int(sys.argv[2])
calls = collections.defaultdict(lambda: collections.Counter())
for line in open(sys.argv[1]):
    name, sc, c = line.rstrip("\n").split("\t")
    calls[name][sc] += int(c)
hop = calls["nginx-proxy"].copy()
hop.subtract(calls["direct"])
rows = {"nginx-proxy": hop, "passthrough": calls["passthrough"],
        "passthrough-workers": calls["passthrough-workers"], "tollgate-default": calls["tollgate-default"]}
names = sorted({s for r in rows.values() for s, c in r.items() if c / n >= 0.05},
               key=lambda s: -rows["tollgate-default"][s])
print("| syscall | " + " | ".join(rows) + " |")
print("|---|" + "---:|" * len(rows))
for s in names:
    print(f"| {s} | " + " | ".join(f"{max(r[s], 0) / n:.2f}" for r in rows.values()) + " |")
print("| **total** | " + " | ".join(f"**{sum(max(c, 0) for c in r.values()) / n:.2f}**" for r in rows.values()) + " |")
EOF
