#!/usr/bin/env bash
# Instructions per request (repeatable, unlike timings on a shared machine): each proxy runs under
# `valgrind --tool=callgrind`, gets WARMUP keep-alive requests for a 1 KiB file, has its counters
# zeroed, then gets REQUESTS more on one connection; the dump's total over REQUESTS is its cost per
# request, all threads together (the audit writer thread included). Instruction counts do not
# depend on what else the machine is doing, so one run is enough to judge a change on a noisy
# machine; they do not count the kernel (TCP on loopback), and SHA-256 runs in software under
# valgrind (which hides SHA-NI), so they are a guide to Tollgate's own work, not a throughput.
#
#   bash benches/callgrind.sh                 # builds release, then ~2 min
#   SKIP_BUILD=1 REQUESTS=3000 bash benches/callgrind.sh
#   KEEP=1 SKIP_BUILD=1 bash benches/callgrind.sh   # keeps the dumps: callgrind_annotate them
#
# Targets: passthrough (examples/passthrough.rs, pingora's usual set-up), passthrough-workers
# (the same run the way Tollgate runs its proxy: one server per thread), tollgate-warn (log warn, unlimited token),
# tollgate-info (the default log level: one JSON audit line per request), tollgate-rl (log warn,
# a rate-limited token: GCRA and six rate-limit headers per response), tollgate-default (what
# users run: log info and a rate-limited token, so the audit line, GCRA and every header).

source "$(dirname "$0")/lib.sh"

WARMUP=${WARMUP:-300}
REQUESTS=${REQUESTS:-3000}

tools
need valgrind valgrind
build_release
watchdog "${BENCH_TIME_LIMIT:-600}"

mapfile -t P < <(free_ports 5)
UP=${P[0]} PT=${P[1]} TGP=${P[2]} ADMIN=${P[3]} PTW=${P[4]}
start_nginx "$UP"

TOKENS="$WORK/tokens/tokens.yaml"   # a directory of its own: Tollgate watches it
write_config "$WORK/tg-warn.yaml" "$TGP" "$ADMIN" "$UP" "$TOKENS" warn
write_config "$WORK/tg-info.yaml" "$TGP" "$ADMIN" "$UP" "$TOKENS" info
TOKEN=$(new_token "$WORK/tg-warn.yaml" "$TOKENS" bench-throughput --rate-limit unlimited)
TOKEN_RL=$(new_token "$WORK/tg-warn.yaml" "$TOKENS" bench-limited --rate-limit 1000000000/1h)

# measure NAME PORT TOKEN CMD...: runs CMD under callgrind, prints instructions per request.
measure() {
    local name=$1 port=$2 token=$3; shift 3
    local out="$WORK/callgrind.$name.out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" > "$WORK/$name.log" 2>&1 &
    local pid=$!
    started $pid
    wait_http "http://127.0.0.1:$port/small.bin" 120 -H "Authorization: Bearer $token"
    requests "$port" "$WARMUP" "$token"
    callgrind_control -z "$pid" > /dev/null
    requests "$port" "$REQUESTS" "$token"
    callgrind_control -d "$pid" > /dev/null
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    # The dump made by -d is the output file with a .1 suffix.
    local dump="$out.1"
    [ -s "$dump" ] || die "no callgrind dump for $name"
    awk -v n="$REQUESTS" -v name="$name" '/^(summary|totals):/ {printf "%s\t%.0f\n", name, $2 / n; exit}' "$dump"
}

RESULTS="$WORK/results.tsv"
log "passthrough"
measure passthrough "$PT" "$TOKEN" "$PASSTHROUGH" "127.0.0.1:$PT" "127.0.0.1:$UP" 2 >> "$RESULTS"
log "passthrough-workers"
measure passthrough-workers "$PTW" "$TOKEN" "$PASSTHROUGH" "127.0.0.1:$PTW" "127.0.0.1:$UP" 2 false true >> "$RESULTS"
log "tollgate-warn"
measure tollgate-warn "$TGP" "$TOKEN" "$TG" -c "$WORK/tg-warn.yaml" serve >> "$RESULTS"
log "tollgate-info"
measure tollgate-info "$TGP" "$TOKEN" "$TG" -c "$WORK/tg-info.yaml" serve >> "$RESULTS"
log "tollgate-rl"
measure tollgate-rl "$TGP" "$TOKEN_RL" "$TG" -c "$WORK/tg-warn.yaml" serve >> "$RESULTS"
log "tollgate-default"
measure tollgate-default "$TGP" "$TOKEN_RL" "$TG" -c "$WORK/tg-info.yaml" serve >> "$RESULTS"

echo
echo "== Tollgate instructions per request (callgrind) =="
machine_info
echo "method:  valgrind --tool=callgrind, $WARMUP warm-up then $REQUESTS keep-alive GETs of a 1 KiB file, one connection"
echo
python3 - "$RESULTS" <<'EOF'
import sys
rows = dict(l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l)
base = float(rows["passthrough"])
print("| proxy | instructions/request | minus pass-through | × pass-through |")
print("|---|---:|---:|---:|")
for name, v in rows.items():
    v = float(v)
    print(f"| {name} | {v:,.0f} | {v - base:,.0f} | {v / base:.2f} |")
EOF
