#!/usr/bin/env bash
# Load benchmark: Tollgate vs a bare pingora pass-through vs nginx proxy_pass vs the
# upstream nginx itself, all on 127.0.0.1, measured with wrk in interleaved rounds.
#
#   bash benches/load.sh                 # builds release, then ~5.5 min of measurements
#   ROUNDS=5 DURATION=5s bash benches/load.sh
#   SKIP_BUILD=1 bash benches/load.sh    # use the binaries already in target/release
#
# Targets (the same wrk command for all of them):
#   direct        nginx serving the files (1 KiB and 1 MiB, access_log off, keepalive)
#   nginx-proxy   nginx proxy_pass to it, no auth, upstream keepalive 64
#   caddy         Caddy reverse_proxy with basicauth (bcrypt, cached), Basic token:TOKEN
#   passthrough   examples/passthrough.rs: pingora with only upstream_peer, same build
#   tollgate-warn Tollgate, argon2id token (warm verification cache), log level warn
#   tollgate-info the same with the default log level info (one JSON audit line per request)
#   tollgate-rl   tollgate-warn with a rate-limited token (GCRA + 6 rate-limit response headers)
#   tollgate-default  the configuration users run: log info (audit line) and a rate-limited token
#   tollgate-redis  tollgate-rl with the limit shared on Redis (`rate_limit.backend`, a
#                 redis-server this script starts): requests served from leases, refills in
#                 the background; compare its ratio with tollgate-rl's (REDIS_LEASE=N sets
#                 rate_limit.lease; unset, the shipped default)
#   tollgate-scoped   log warn, a token with packages: [acme/*] under a Composer layout, fetching
#                     the same files as Composer dists (the cost of package scopes per request)
#   tollgate-ledger   tollgate-warn with the usage ledger on (`usage.database`: a SQLite file of
#                     its own): every request counted per token, path and day, flushed in batches
#   passthrough-workers  only with PT_WORKERS=1: the pass-through run the way Tollgate runs its
#                 proxy (one pingora server per thread, SO_REUSEPORT; `conn::Guarded`, "Workers")
#   baseline-warn, baseline-rl   only with BASELINE_TG=/path/to/another/tollgate: the same two
#                 rows for another build (e.g. the commit before a change), in the same run
# Every target gets `Authorization: Bearer TOKEN` but Caddy, which takes Basic `token:TOKEN`.
# Each round runs every target on each file in a rotated order; the table shows medians over
# rounds, and the ratio is the median of each round's req/s over direct nginx's in that round.
# Everything started is stopped on exit; after the build and the wait for a quiet machine
# (QUIET_WAIT, 240 s at most), the measurements end within BENCH_TIME_LIMIT (480 s).

source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-4s}
THREADS=${WRK_THREADS:-2}
CONNS=${WRK_CONNECTIONS:-32}

tools
need redis-server redis-server
build_release
wait_quiet "${QUIET_WAIT:-240}"
watchdog "${BENCH_TIME_LIMIT:-900}"

mapfile -t P < <(free_ports 16)
UP=${P[0]} NGPROXY=${P[1]} PT=${P[2]} TGW=${P[3]} TGW_ADMIN=${P[4]} TGI=${P[5]} TGI_ADMIN=${P[6]} CADDY=${P[7]}
BLW=${P[8]} BLW_ADMIN=${P[9]}
REDIS=${P[10]} TGR=${P[11]} TGR_ADMIN=${P[12]} TGL=${P[13]} TGL_ADMIN=${P[14]} PTW=${P[15]}

log "starting nginx (upstream :$UP, proxy_pass :$NGPROXY)"
start_nginx "$UP" "$NGPROXY"

log "starting the bare pingora pass-through (:$PT)"
"$PASSTHROUGH" "127.0.0.1:$PT" "127.0.0.1:$UP" 2 > "$WORK/passthrough.log" 2>&1 &
PT_PID=$!
started $PT_PID
wait_http "http://127.0.0.1:$PT/small.bin" 20
if [ "${PT_WORKERS:-0}" = 1 ]; then
    log "starting the pass-through as workers (:$PTW)"
    "$PASSTHROUGH" "127.0.0.1:$PTW" "127.0.0.1:$UP" 2 false true > "$WORK/passthrough-workers.log" 2>&1 &
    PTW_PID=$!
    started $PTW_PID
    wait_http "http://127.0.0.1:$PTW/small.bin" 20
fi

log "starting redis-server (:$REDIS, no persistence)"
mkdir -p "$WORK/redis"
redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK/redis" \
    > "$WORK/redis.log" 2>&1 &
REDIS_PID=$!
started $REDIS_PID

TOKENS="$WORK/tokens/tokens.yaml"   # a directory of its own: Tollgate watches it
write_config "$WORK/tg-warn.yaml" "$TGW" "$TGW_ADMIN" "$UP" "$TOKENS" warn
write_config "$WORK/tg-info.yaml" "$TGI" "$TGI_ADMIN" "$UP" "$TOKENS" info
write_config "$WORK/tg-redis.yaml" "$TGR" "$TGR_ADMIN" "$UP" "$TOKENS" warn \
    "rate_limit: {requests: 1000, period: 1h, backend: \"redis://127.0.0.1:$REDIS/0\"${REDIS_LEASE:+, lease: $REDIS_LEASE}}"
# The usage ledger needs a database: tollgate-ledger is tollgate-warn with one of its own.
mkdir -p "$WORK/usage"
write_config "$WORK/tg-ledger.yaml" "$TGL" "$TGL_ADMIN" "$UP" "$TOKENS" warn \
    "usage: {database: \"sqlite://$WORK/usage/usage.db\"}"
# Package scopes: both instances know a Composer layout (unscoped tokens pay nothing for it), and
# tollgate-scoped is a token limited to acme/* fetching the same files as Composer dists.
# The scoped token has a file of its own, which a BASELINE_TG from before scopes never reads.
TOKENS_SC="$WORK/tokens/scoped.yaml"
for c in tg-warn tg-info tg-ledger; do
    sed -i -e 's|^upstream: {url: \(.*\)}$|upstream: {url: \1, layouts: [{kind: composer, prefix: /}]}|' \
        -e "s|files: \[\"$TOKENS\"\]|files: [\"$TOKENS\", \"$TOKENS_SC\"]|" "$WORK/$c.yaml"
done
mkdir -p "$WORK/www/dist/acme/widget"
cp "$WORK/www/small.bin" "$WORK/www/large.bin" "$WORK/www/dist/acme/widget/"
chmod -R a+rX "$WORK/www"
log "hashing the tokens (argon2id, default parameters)"
TOKEN=$(new_token "$WORK/tg-warn.yaml" "$TOKENS" bench-throughput --rate-limit unlimited)
TOKEN_RL=$(new_token "$WORK/tg-warn.yaml" "$TOKENS" bench-limited --rate-limit 1000000000/1h)
TOKEN_SC=$(new_token "$WORK/tg-warn.yaml" "$TOKENS_SC" bench-scoped --rate-limit unlimited --package 'acme/*')

log "starting Tollgate log=warn (:$TGW) and log=info (:$TGI)"
start_tollgate "$WORK/tg-warn.yaml" "$WORK/tg-warn.log"; TGW_PID=$TG_PID
start_tollgate "$WORK/tg-info.yaml" "$WORK/tg-info.log"; TGI_PID=$TG_PID
wait_http "http://127.0.0.1:$TGW_ADMIN/readyz" 30
wait_http "http://127.0.0.1:$TGI_ADMIN/readyz" 30
log "starting Tollgate with the usage ledger (:$TGL)"
start_tollgate "$WORK/tg-ledger.yaml" "$WORK/tg-ledger.log"; TGL_PID=$TG_PID
wait_http "http://127.0.0.1:$TGL_ADMIN/readyz" 30
wait_http "http://127.0.0.1:$TGL/small.bin" 10 -H "Authorization: Bearer $TOKEN"
log "starting Tollgate on Redis (:$TGR)"
start_tollgate "$WORK/tg-redis.yaml" "$WORK/tg-redis.log"; TGR_PID=$TG_PID
wait_http "http://127.0.0.1:$TGR_ADMIN/readyz" 30
for _ in $(seq 100); do
    [ "$(metric_raw "$TGR_ADMIN" tollgate_ratelimit_backend_up)" = 1 ] && break
    sleep 0.1
done
[ "$(metric_raw "$TGR_ADMIN" tollgate_ratelimit_backend_up)" = 1 ] || die "tollgate-redis never reached Redis"
if [ -n "${BASELINE_TG:-}" ]; then
    [ -x "$BASELINE_TG" ] || die "BASELINE_TG=$BASELINE_TG is not an executable"
    write_config "$WORK/bl-warn.yaml" "$BLW" "$BLW_ADMIN" "$UP" "$TOKENS" warn
    log "starting the baseline Tollgate $BASELINE_TG log=warn (:$BLW)"
    start_tollgate "$WORK/bl-warn.yaml" "$WORK/bl-warn.log" "$BASELINE_TG"; BLW_PID=$TG_PID
    wait_http "http://127.0.0.1:$BLW_ADMIN/readyz" 30
    wait_http "http://127.0.0.1:$BLW/small.bin" 10 -H "Authorization: Bearer $TOKEN"
    wait_http "http://127.0.0.1:$BLW/small.bin" 10 -H "Authorization: Bearer $TOKEN_RL"
fi

# Warm the verification caches (the first use of a token runs argon2 once).
for port in $TGW $TGI; do
    wait_http "http://127.0.0.1:$port/small.bin" 10 -H "Authorization: Bearer $TOKEN"
done
wait_http "http://127.0.0.1:$TGW/small.bin" 10 -H "Authorization: Bearer $TOKEN_RL"
wait_http "http://127.0.0.1:$TGI/small.bin" 10 -H "Authorization: Bearer $TOKEN_RL"
wait_http "http://127.0.0.1:$TGR/small.bin" 10 -H "Authorization: Bearer $TOKEN_RL"
wait_http "http://127.0.0.1:$TGW/dist/acme/widget/small.bin" 10 -H "Authorization: Bearer $TOKEN_SC"

log "starting Caddy (:$CADDY)"
start_caddy "$CADDY" "$UP" token "$TOKEN"
CADDY_AUTH="Basic $(printf 'token:%s' "$TOKEN" | base64 -w0)"
wait_http "http://127.0.0.1:$CADDY/small.bin" 20 -H "Authorization: $CADDY_AUTH"

declare -A URL AUTH
URL[direct]=http://127.0.0.1:$UP
URL[nginx-proxy]=http://127.0.0.1:$NGPROXY
URL[caddy]=http://127.0.0.1:$CADDY
URL[passthrough]=http://127.0.0.1:$PT
URL[tollgate-warn]=http://127.0.0.1:$TGW
URL[tollgate-info]=http://127.0.0.1:$TGI
URL[tollgate-rl]=http://127.0.0.1:$TGW
URL[tollgate-default]=http://127.0.0.1:$TGI
URL[tollgate-redis]=http://127.0.0.1:$TGR
URL[tollgate-ledger]=http://127.0.0.1:$TGL
for t in direct nginx-proxy passthrough tollgate-warn tollgate-info tollgate-ledger; do AUTH[$t]="Bearer $TOKEN"; done
AUTH[tollgate-rl]="Bearer $TOKEN_RL"
AUTH[tollgate-default]="Bearer $TOKEN_RL"
AUTH[tollgate-redis]="Bearer $TOKEN_RL"
AUTH[caddy]=$CADDY_AUTH
URL[tollgate-scoped]=http://127.0.0.1:$TGW/dist/acme/widget
AUTH[tollgate-scoped]="Bearer $TOKEN_SC"
# Whose CPU time is charged to each target (nginx: its workers, which serve both hops).
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
declare -A PROCS=([direct]=$NGINX_WORKERS [nginx-proxy]=$NGINX_WORKERS [caddy]=$CADDY_PID [passthrough]=$PT_PID
    [tollgate-warn]=$TGW_PID [tollgate-info]=$TGI_PID [tollgate-rl]=$TGW_PID [tollgate-default]=$TGI_PID [tollgate-scoped]=$TGW_PID [tollgate-redis]=$TGR_PID [tollgate-ledger]=$TGL_PID)
TARGETS=(direct nginx-proxy caddy passthrough tollgate-warn tollgate-info tollgate-rl tollgate-default tollgate-scoped tollgate-redis tollgate-ledger)
if [ "${PT_WORKERS:-0}" = 1 ]; then
    URL[passthrough-workers]=http://127.0.0.1:$PTW
    AUTH[passthrough-workers]="Bearer $TOKEN"
    PROCS[passthrough-workers]=$PTW_PID
    TARGETS+=(passthrough-workers)
fi
if [ -n "${BASELINE_TG:-}" ]; then
    URL[baseline-warn]=http://127.0.0.1:$BLW
    URL[baseline-rl]=http://127.0.0.1:$BLW
    AUTH[baseline-warn]="Bearer $TOKEN"
    AUTH[baseline-rl]="Bearer $TOKEN_RL"
    PROCS[baseline-warn]=$BLW_PID
    PROCS[baseline-rl]=$BLW_PID
    TARGETS+=(baseline-warn baseline-rl)
fi
FILES=(small.bin large.bin)

# Every target answers 200 with the right size before anything is measured.
for t in "${TARGETS[@]}"; do
    for f in "${FILES[@]}"; do
        got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' \
            -H "Authorization: ${AUTH[$t]}" "${URL[$t]}/$f")
        want="200 $(stat -c %s "$WORK/www/$f")"
        [ "$got" = "$want" ] || die "$t /$f answered '$got', expected '$want'"
    done
done

RESULTS="$WORK/results.tsv"
n=${#TARGETS[@]}
log "measuring: $ROUNDS rounds x ${#TARGETS[@]} targets x ${#FILES[@]} files, wrk -t$THREADS -c$CONNS -d$DURATION --latency"
for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
        t=${TARGETS[$(((i + r) % n))]}
        for f in "${FILES[@]}"; do
            out="$WORK/wrk-$r-$t-$f.txt"
            cpu_mark
            # shellcheck disable=SC2086
            c0=$(cpu_ticks ${PROCS[$t]})
            wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency \
                -H "Authorization: ${AUTH[$t]}" "${URL[$t]}/$f" > "$out" 2>&1 || true
            # shellcheck disable=SC2086
            c1=$(cpu_ticks ${PROCS[$t]})
            foreign=$(cpu_foreign)
            read -r rps p50 p99 bad err reqs < <(parse_wrk "$out")
            cpu_us=$(awk -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN { printf "%.1f", n ? c * 1e6 / hz / n : 0 }')
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$f" "$rps" "$p50" "$p99" "$bad" "$err" "$foreign" "$cpu_us" >> "$RESULTS"
            log "round $((r + 1)) $t $f: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, non-2xx $bad, socket errors $err; proxy CPU ${cpu_us} µs/request; other processes ${foreign}% of the machine"
        done
        # keep the info log from filling the disk (appended, so truncation is safe)
        : > "$WORK/tg-info.log"
    done
done

echo
echo "== Tollgate load benchmark =="
machine_info
echo "method:  wrk -t$THREADS -c$CONNS -d$DURATION --latency, $ROUNDS interleaved rounds (rotated order), medians; all on 127.0.0.1"
echo "noise:   other processes' share of the machine during the wrk runs: $(cut -f9 "$RESULTS" | sort -n | awk '{a[NR] = $1} END {printf "median %d %%, max %d %%", a[int((NR + 1) / 2)], a[NR]}')"
echo "rss:     tollgate-warn $(rss_mib "$TGW_PID" | awk '{print $1 " MiB (peak " $2 ")"}'), tollgate-info $(rss_mib "$TGI_PID" | awk '{print $1 " MiB (peak " $2 ")"}')"
echo
python3 - "$RESULTS" <<'EOF'
import collections, statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
data = collections.defaultdict(list)   # (target, file) -> [(round, rps, p50, p99, bad, err, foreign, cpu_us)]
for r, t, f, rps, p50, p99, bad, err, foreign, cpu in rows:
    data[(t, f)].append((int(r), float(rps or 0), float(p50), float(p99), int(bad), int(err),
                         int(foreign or 0), float(cpu or 0)))
names = {
    "direct": "nginx direct (upstream)",
    "nginx-proxy": "nginx proxy_pass, no auth",
    "caddy": "Caddy basicauth (bcrypt, cached)",
    "passthrough": "bare pingora pass-through",
    "passthrough-workers": "bare pingora pass-through as workers (PT_WORKERS=1)",
    "tollgate-warn": "Tollgate, log warn",
    "tollgate-info": "Tollgate, log info (audit)",
    "tollgate-rl": "Tollgate, log warn, rate-limited token",
    "tollgate-default": "Tollgate default: log info, rate-limited token",
    "tollgate-scoped": "Tollgate, log warn, token scoped to acme/* (Composer dist)",
    "tollgate-redis": "Tollgate, log warn, rate-limited token shared on Redis (leases)",
    "tollgate-ledger": "Tollgate, log warn, usage ledger on (its own SQLite database)",
    "baseline-warn": "baseline Tollgate (BASELINE_TG), log warn",
    "baseline-rl": "baseline Tollgate, log warn, rate-limited token",
}
order = [t for t in names if any(k[0] == t for k in data)]
files = [("small.bin", "1 KiB"), ("large.bin", "1 MiB")]
def per_round(t, f, i=1):
    return {x[0]: x[i] for x in data[(t, f)]}
def hop_cpu(t, f):
    """CPU µs per request of the proxy hop alone, per round (nginx proxy_pass: its workers'
    total minus what the direct requests cost them in the same round)."""
    c = per_round(t, f, 7)
    if t == "nginx-proxy":
        d = per_round("direct", f, 7)
        return {r: c[r] - d[r] for r in c if r in d}
    return c
def ratio(a, b):
    return statistics.median(a[r] / b[r] for r in a if r in b and b[r] > 0)
print("| proxy | file | req/s | p50 ms | p99 ms | × direct | × pass-through | × nginx proxy_pass "
      "| proxy-hop CPU µs/req | CPU ÷ pass-through's | non-2xx |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for fname, label in files:
    for t in order:
        v = data[(t, fname)]
        med = lambda i: statistics.median(x[i] for x in v)
        bad = sum(x[4] + x[5] for x in v)
        rps = lambda u: per_round(u, fname)
        if t == "direct":
            cpu, cpu_ratio = f"({med(7):.1f})", "–"
        else:
            h = hop_cpu(t, fname)
            cpu = f"{statistics.median(h.values()):.1f}"
            cpu_ratio = f"{ratio(h, hop_cpu('passthrough', fname)):.2f}"
        print(f"| {names[t]} | {label} | {med(1):,.0f} | {med(2):.2f} | {med(3):.2f} "
              f"| {ratio(rps(t), rps('direct')):.2f} | {ratio(rps(t), rps('passthrough')):.2f} "
              f"| {ratio(rps(t), rps('nginx-proxy')):.2f} | {cpu} | {cpu_ratio} | {bad} |")
print()
print("Ratios are medians of the per-round ratios; req/s, p50 and p99 are medians over rounds.")
print("proxy-hop CPU: CPU time of the proxy process per request (user + system, all threads);")
print("for nginx proxy_pass its workers' time minus that of the direct run in the same round")
print("(the workers serve both hops); in parentheses for direct: nginx serving the file alone.")
print()
print("per-round req/s (other processes' % of the machine during that run):")
for fname, label in files:
    for t in order:
        print(f"  {label:5} {t:14} " + "  ".join(f"{x[1]:>9,.0f} ({x[6]:>2}%)" for x in sorted(data[(t, fname)])))
EOF
