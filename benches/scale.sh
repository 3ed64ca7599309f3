#!/usr/bin/env bash
# Token-set scale benchmark: 100,000 tokens in one token file.
#
#   bash benches/scale.sh                # builds release, ~1 min of measurements
#   N_TOKENS=200000 SKIP_BUILD=1 bash benches/scale.sh
#
# Hashing 100,000 real argon2id hashes would take an hour, so ONE token is hashed with
# `tollgate token hash` and its PHC string is reused by every other entry (distinct ids and
# names). Loading cost is the same — every entry's PHC string is parsed and validated — but the
# fillers' own tokens would not verify. Measured:
#   - start-up: process start → /readyz 200, and RSS (VmRSS, VmHWM) once loaded
#   - hot reload: the file replaced (write + mv, as an editor or a Kubernetes Secret does) with one
#     more token → `tollgate_last_reload_timestamp_seconds`, and → the new token answers 200
#     (that includes its first argon2 verification)
#   - wrk (stable token) running through RELOADS reloads: every non-200 answer counted
#     (wrk Lua response hook, and tollgate_requests_total outcomes other than ok)
# Goals: reload ≤ 2 s, RSS ≤ 150 MB, no failed request during reloads.

source "$(dirname "$0")/lib.sh"

N_TOKENS=${N_TOKENS:-100000}
RELOADS=${RELOADS:-5}

tools
build_release
wait_quiet "${QUIET_WAIT:-240}"
watchdog "${BENCH_TIME_LIMIT:-300}"

mapfile -t P < <(free_ports 3)
UP=${P[0]} TGP=${P[1]} ADMIN=${P[2]}
start_nginx "$UP"

TOKENS="$WORK/tokens/tokens.yaml"
mkdir -p "$WORK/tokens"
CONFIG="$WORK/tollgate.yaml"
write_config "$CONFIG" "$TGP" "$ADMIN" "$UP" "$TOKENS" warn
log "hashing 2 tokens (argon2id, default parameters)"
STABLE=$(new_token "$CONFIG" "$WORK/stable.yaml" stable --rate-limit unlimited)
LATE=$(new_token "$CONFIG" "$WORK/late.yaml" late --rate-limit unlimited)

log "writing $N_TOKENS token entries"
python3 - "$WORK/stable.yaml" "$WORK/late.yaml" "$WORK/base.yaml" "$WORK/plus.yaml" "$N_TOKENS" <<'EOF'
import re, sys
stable_file, late_file, base_out, plus_out, n = sys.argv[1:6]
n = int(n)
stable = open(stable_file).read()
late = open(late_file).read()
phc = re.search(r"^\s*hash: (\S+)", stable, re.M).group(1)
stable_entries = stable.split("tokens:\n", 1)[1]
late_entries = late.split("tokens:\n", 1)[1]
ALPHA = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
def b62(i, width):
    s = ""
    while i:
        i, d = divmod(i, 62)
        s = ALPHA[d] + s
    return s.rjust(width, "0")
parts = ["# benches/scale.sh: one real argon2id hash, reused by every filler entry\ntokens:\n", stable_entries]
for i in range(1, n):
    parts.append(
        f"  - id: fill{b62(i, 8)}\n"
        f"    name: filler-{i:06d}\n"
        f"    hash: {phc}\n"
        f"    permission: read\n"
        f"    routes: [{{path: /p2/team{i % 1000}/*, access: read}}]\n"
        f"    created_at: 2026-01-01T00:00:00Z\n"
    )
base = "".join(parts)
open(base_out, "w").write(base)
open(plus_out, "w").write(base + late_entries)
EOF
cp "$WORK/base.yaml" "$TOKENS"
SIZE_MB=$(du -m "$TOKENS" | cut -f1)

# Replaces the token file the way an editor or a Kubernetes Secret update does.
replace_tokens() { cp "$1" "$TOKENS.tmp" && mv "$TOKENS.tmp" "$TOKENS"; }
now() { date +%s.%N; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

# --- start-up -------------------------------------------------------------------------------
cpu_mark
t0=$(now)
start_tollgate "$CONFIG" "$WORK/tollgate.log"; TGPID=$TG_PID
wait_http "http://127.0.0.1:$ADMIN/readyz" 120
t1=$(now)
STARTUP=$(minus "$t1" "$t0")
FOREIGN_START=$(cpu_foreign)
LOADED=$(metric "$ADMIN" tollgate_tokens 'source="file"')
RSS_LOADED=$(rss_mib "$TGPID")
URL="http://127.0.0.1:$TGP/small.bin"
wait_http "$URL" 10 -H "Authorization: Bearer $STABLE"
log "start-up: ${STARTUP}s to /readyz with $LOADED tokens (${SIZE_MB} MB file); RSS $RSS_LOADED MiB"

# --- one hot reload, timed ------------------------------------------------------------------
reload_and_wait() {   # reload_and_wait FILE: prints "seconds-to-gauge" after replacing the file
    local before after t
    before=$(metric_raw "$ADMIN" tollgate_last_reload_timestamp_seconds)
    t=$(now)
    replace_tokens "$1"
    for ((i = 0; i < 1000; i++)); do
        after=$(metric_raw "$ADMIN" tollgate_last_reload_timestamp_seconds)
        [ "$after" != "$before" ] && break
        sleep 0.01
    done
    if [ "$after" = "$before" ]; then echo "none-within-10s"; return; fi
    minus "$after" "$t"
}

t=$(now)
replace_tokens "$WORK/plus.yaml"
code=000
for ((i = 0; i < 1000; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $LATE" "$URL")
    [ "$code" = 200 ] && break
    sleep 0.01
done
t_works=$(now)
[ "$code" = 200 ] || die "the new token did not work within 10 s"
gauge=$(metric_raw "$ADMIN" tollgate_last_reload_timestamp_seconds)
RELOAD_GAUGE=$(minus "$gauge" "$t")
RELOAD_WORKS=$(minus "$t_works" "$t")
RSS_RELOADED=$(rss_mib "$TGPID")
log "hot reload: reload done after ${RELOAD_GAUGE}s (gauge), new token answered 200 after ${RELOAD_WORKS}s; RSS $RSS_RELOADED MiB"

# --- reloads under load ---------------------------------------------------------------------
cat > "$WORK/count.lua" <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok, bad = 0, 0 end
function response(status, headers, body)
    if status == 200 then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
    local o, b = 0, 0
    for _, t in ipairs(threads) do o = o + t:get("ok"); b = b + t:get("bad") end
    io.write(string.format("COUNT %d %d %d %d %d %d\n", o, b, summary.errors.connect,
        summary.errors.read, summary.errors.write, summary.errors.timeout))
end
EOF
outcomes() {   # "outcome count" lines of tollgate_requests_total
    curl -s "http://127.0.0.1:$ADMIN/metrics" | sed -n 's/^tollgate_requests_total{.*outcome="\([a-z_]*\)".*} \([0-9]*\)$/\1 \2/p' |
        awk '{s[$1] += $2} END {for (k in s) print k, s[k]}' | sort
}
outcomes > "$WORK/outcomes0"
ok0=$(metric "$ADMIN" tollgate_requests_total 'outcome="ok"')
all0=$(metric "$ADMIN" tollgate_requests_total)
rel0=$(metric "$ADMIN" tollgate_reloads_total 'result="success"')
DUR=$((RELOADS * 2 + 4))
cpu_mark
wrk -t2 -c32 -d"${DUR}s" --latency -s "$WORK/count.lua" -H "Authorization: Bearer $STABLE" "$URL" > "$WORK/wrk-reloads.txt" 2>&1 &
WRK=$!
started $WRK
sleep 2
RELOAD_TIMES=()
RELOAD_RSS=()
for ((k = 0; k < RELOADS; k++)); do
    if ((k % 2 == 0)); then f="$WORK/base.yaml"; else f="$WORK/plus.yaml"; fi
    RELOAD_TIMES+=("$(reload_and_wait "$f")")
    RELOAD_RSS+=("$(rss_mib "$TGPID" | cut -d' ' -f1)")
    log "reload $((k + 1)) under load: ${RELOAD_TIMES[-1]}s, RSS ${RELOAD_RSS[-1]} MiB"
    sleep 1
done
wait "$WRK" || true
FOREIGN=$(cpu_foreign)
ok1=$(metric "$ADMIN" tollgate_requests_total 'outcome="ok"')
all1=$(metric "$ADMIN" tollgate_requests_total)
rel1=$(metric "$ADMIN" tollgate_reloads_total 'result="success"')
read -r c_ok c_bad e_conn e_read e_write e_tmo < <(grep '^COUNT' "$WORK/wrk-reloads.txt" | cut -d' ' -f2-)
read -r rps p50 p99 _ _ _ < <(parse_wrk "$WORK/wrk-reloads.txt")
RSS_END=$(rss_mib "$TGPID")
sleep 5
RSS_IDLE=$(rss_mib "$TGPID")
outcomes > "$WORK/outcomes1"
NOT_OK=$(join -a2 -e0 -o 2.1,1.2,2.2 "$WORK/outcomes0" "$WORK/outcomes1" |
    awk '$1 != "ok" && $3 - $2 > 0 {printf "%s%s %d", sep, $1, $3 - $2; sep = ", "}')

echo
echo "== Tollgate token-set scale benchmark =="
machine_info
echo "token file: $LOADED tokens, ${SIZE_MB} MB; one argon2id hash (m=19456 KiB, t=2, p=1) reused by every entry but one per real token, each filler with one route; file replaced by write + mv"
echo
echo "| measure | value | goal |"
echo "|---|---|---|"
echo "| start-up to /readyz | ${STARTUP} s (other processes used ${FOREIGN_START}% of the machine) | |"
echo "| RSS after start-up (peak) | $(echo "$RSS_LOADED" | awk '{print $1 " MiB (" $2 ")"}') | ≤ 150 MB |"
echo "| hot reload, file replaced → reload done (gauge) | ${RELOAD_GAUGE} s | ≤ 2 s |"
echo "| hot reload, file replaced → new token answers 200 | ${RELOAD_WORKS} s | |"
echo "| RSS after the reload (peak) | $(echo "$RSS_RELOADED" | awk '{print $1 " MiB (" $2 ")"}') | ≤ 150 MB |"
echo "| $RELOADS reloads under load: each → gauge | $(printf '%s s, ' "${RELOAD_TIMES[@]}" | sed 's/, $//') | ≤ 2 s |"
echo "| RSS after each of them | $(printf '%s, ' "${RELOAD_RSS[@]}" | sed 's/, $//') MiB | ≤ 150 MB |"
echo "| reloads counted (reloads_total success) | $((rel1 - rel0)) | $RELOADS |"
echo "| wrk -t2 -c32 -d${DUR}s during them | $(printf '%.0f' "$rps") req/s, p50 ${p50} ms, p99 ${p99} ms (other processes used ${FOREIGN}% of the machine) | |"
echo "| responses: 200 / other (wrk) | $c_ok / $c_bad | 0 other |"
echo "| socket errors connect/read/write/timeout | $e_conn/$e_read/$e_write/$e_tmo | 0 |"
echo "| tollgate_requests_total not ok | $(( (all1 - all0) - (ok1 - ok0) )) of $((all1 - all0))${NOT_OK:+ ($NOT_OK)} | 0 |"
echo "| RSS at the end (peak) | $(echo "$RSS_END" | awk '{print $1 " MiB (" $2 ")"}') | ≤ 150 MB |"
echo "| RSS after 5 s idle | $(echo "$RSS_IDLE" | awk '{print $1 " MiB"}') | ≤ 150 MB |"
echo
echo "client_error outcomes are the requests in flight when wrk stopped: it closes its 32 connections"
echo "mid-response, so Tollgate counts up to 32 requests wrk never reports."
