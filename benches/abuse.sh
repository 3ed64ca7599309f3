#!/usr/bin/env bash
# Abuse benchmark (cold path and abuse): does legitimate, cached traffic keep its
# throughput while a second wrk floods Tollgate with credentials that cost it work?
#
#   bash benches/abuse.sh                # builds release, ~1.5 min of measurements
#   SKIP_BUILD=1 FLOOD_CONNECTIONS=300 bash benches/abuse.sh
#
# Phases, each measuring the same legitimate load (wrk -t2 -c32, valid token, 1 KiB file, warm
# cache) for LEGIT_DURATION:
#   alone         nothing else running
#   valid-flood   control: a second wrk sending the same valid token (what any second client costs)
#   wrong-secret  a second wrk sending well-formed tokens for the legitimate token's id, each with a
#                 new random secret and a correct CRC32 check (so each one reaches argon2)
#   unknown-id    a second wrk sending random well-formed tokens with unknown ids
# The floods are wrk -t1 -c$FLOOD_CONNECTIONS (default 300: more than verify.max_concurrent +
# verify.max_queue = 2 + 256, so the 503 `busy` bound is exercised), generated per request by a
# wrk Lua script that computes the check digits exactly as src/token/format.rs does.
# Reported: legitimate req/s and its ratio to `alone` (goal ≥ 0.8), the flood's own rate and
# statuses, argon2 runs (tollgate_verifications_total), 503 busy, and Tollgate's RSS (VmRSS, VmHWM).
# Then: 32 concurrent first uses of one fresh token must run argon2 exactly once.
# EXTRA_CONFIG adds YAML to Tollgate's configuration, e.g. EXTRA_CONFIG='verify: {max_concurrent: 1}'.

source "$(dirname "$0")/lib.sh"

LEGIT_DURATION=${LEGIT_DURATION:-5}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-300}
FLOOD_RATE=${FLOOD_RATE:-1000}
export FLOOD_CONNECTIONS FLOOD_RATE
LOG_LEVEL=${LOG_LEVEL:-warn}

tools
build_release
wait_quiet "${QUIET_WAIT:-240}"
watchdog "${BENCH_TIME_LIMIT:-300}"

mapfile -t P < <(free_ports 3)
UP=${P[0]} TGP=${P[1]} ADMIN=${P[2]}
start_nginx "$UP"

TOKENS="$WORK/tokens/tokens.yaml"   # a directory of its own: Tollgate watches it
CONFIG="$WORK/tollgate.yaml"
write_config "$CONFIG" "$TGP" "$ADMIN" "$UP" "$TOKENS" "$LOG_LEVEL" "${EXTRA_CONFIG:-}"
log "hashing the tokens (argon2id, default parameters)"
LEGIT=$(new_token "$CONFIG" "$TOKENS" legit --rate-limit unlimited)
COLD=$(new_token "$CONFIG" "$TOKENS" cold --rate-limit unlimited)
LEGIT_ID=$(echo "$LEGIT" | cut -c5-16)

start_tollgate "$CONFIG" "$WORK/tollgate.log"; TGPID=$TG_PID
wait_http "http://127.0.0.1:$ADMIN/readyz" 30
URL="http://127.0.0.1:$TGP/small.bin"
RSS_START=$(rss_mib "$TGPID")

# The flood: one wrk Lua script; ID empty = a random id per request.
cat > "$WORK/flood.lua" <<'EOF'
local bit = require("bit")
local ALPHA = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local ID = os.getenv("FLOOD_ID") or ""
local VALID = os.getenv("FLOOD_VALID") or ""
-- FLOOD_RATE caps the whole flood (all FLOOD_CONNECTIONS connections of one thread): each
-- connection waits CONNECTIONS/RATE seconds before its next request (0 = no cap).
local RATE = tonumber(os.getenv("FLOOD_RATE") or "0")
local CONNS = tonumber(os.getenv("FLOOD_CONNECTIONS") or "1")
local DELAY_MS = RATE > 0 and math.floor(CONNS * 1000 / RATE) or 0

local crc_table = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if bit.band(c, 1) == 1 then c = bit.bxor(bit.rshift(c, 1), 0xEDB88320) else c = bit.rshift(c, 1) end
    end
    crc_table[i] = c
end
local function crc32(s)
    local c = 0xFFFFFFFF
    for i = 1, #s do
        c = bit.bxor(bit.rshift(c, 8), crc_table[bit.band(bit.bxor(c, s:byte(i)), 0xFF)])
    end
    c = bit.bnot(c)
    if c < 0 then c = c + 4294967296 end
    return c
end
-- src/token/format.rs check_digits: CRC32 of tok_<id>_<secret> as 6 base62 digits, big-endian.
local function check(body)
    local n, out = crc32(body), {}
    for i = 6, 1, -1 do
        local d = n % 62
        out[i] = ALPHA:sub(d + 1, d + 1)
        n = (n - d) / 62
    end
    return table.concat(out)
end
local function rand(n)
    local t = {}
    for i = 1, n do
        local k = math.random(1, 62)
        t[i] = ALPHA:sub(k, k)
    end
    return table.concat(t)
end

local threads, counter = {}, 0
function setup(thread)
    counter = counter + 1
    thread:set("tid", counter)
    table.insert(threads, thread)
end
function init(args)
    math.randomseed(os.time() * 1000 + (tid or 0) * 7919 + math.floor(os.clock() * 1e6))
    ok, unauthorized, busy, other = 0, 0, 0, 0
end
if DELAY_MS > 0 then
    function delay() return DELAY_MS end
end
function request()
    local tok = VALID
    if tok == "" then
        local body = "tok_" .. (ID ~= "" and ID or rand(12)) .. "_" .. rand(32)
        tok = body .. check(body)
    end
    return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tok })
end
function response(status, headers, body)
    if status == 200 then ok = ok + 1
    elseif status == 401 then unauthorized = unauthorized + 1
    elseif status == 503 then busy = busy + 1
    else other = other + 1 end
end
function done(summary, latency, requests)
    local s = { ok = 0, unauthorized = 0, busy = 0, other = 0 }
    for _, t in ipairs(threads) do
        for k in pairs(s) do s[k] = s[k] + (t:get(k) or 0) end
    end
    io.write(string.format("FLOOD %d %.1f %d %d %d %d %d\n", summary.requests,
        summary.requests / (summary.duration / 1e6), s.ok, s.unauthorized, s.busy, s.other,
        summary.errors.timeout))
end
EOF

# Waits (up to 40 s) until no argon2 verification has finished for 1 s: a flood's queued
# verifications go on after its wrk has stopped.
settle() {
    local prev=-1 now i
    for ((i = 0; i < 40; i++)); do
        now=$(metric "$ADMIN" tollgate_verifications_total)
        [ "$now" = "$prev" ] && return 0
        prev=$now
        sleep 1
    done
    log "argon2 queue still busy after 40 s"
}

# Self-check of the Lua check digits: a generated token for the legit id must be well-formed
# (401 token_invalid after argon2, not credentials_malformed).
FLOOD_ID=$LEGIT_ID wrk -t1 -c1 -d1s --timeout 5s -s "$WORK/flood.lua" "$URL" > "$WORK/selfcheck.txt" 2>&1 || true
malformed=$(metric "$ADMIN" tollgate_requests_total 'outcome="credentials_malformed"')
invalid=$(metric "$ADMIN" tollgate_requests_total 'outcome="token_invalid"')
[ "$malformed" = 0 ] && [ "$invalid" -gt 0 ] ||
    die "the Lua token generator is wrong: $invalid token_invalid, $malformed credentials_malformed"
log "Lua token generator OK ($invalid well-formed wrong tokens refused, 0 malformed)"

# --- 32 concurrent first uses of one token ------------------------------------------------
argon_before=$(metric "$ADMIN" tollgate_verifications_total 'result="(ok|wrong_secret)"')
statuses=$(python3 - "$URL" "$COLD" <<'EOF'
import http.client, sys, threading, urllib.parse, collections
url, token = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2]
n, barrier, codes, lock = 32, threading.Barrier(32), collections.Counter(), threading.Lock()
def one():
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    c.connect()
    barrier.wait()
    c.request("GET", url.path, headers={"Authorization": "Bearer " + token})
    status = c.getresponse().status
    with lock:
        codes[status] += 1
ts = [threading.Thread(target=one) for _ in range(n)]
for t in ts: t.start()
for t in ts: t.join()
print(" ".join(f"{k}x{v}" for k, v in sorted(codes.items())))
EOF
)
argon_after=$(metric "$ADMIN" tollgate_verifications_total 'result="(ok|wrong_secret)"')
SINGLE_FLIGHT="32 concurrent first uses of one token: statuses $statuses, argon2 runs $((argon_after - argon_before))"
log "$SINGLE_FLIGHT"

# --- floods ---------------------------------------------------------------------------------
settle
wait_http "$URL" 10 -H "Authorization: Bearer $LEGIT"   # warm
RESULTS="$WORK/abuse.tsv"

legit_run() {   # legit_run PHASE: measures the legitimate load, appends a result line
    local out="$WORK/legit-$1.txt"
    wrk -t2 -c32 -d"${LEGIT_DURATION}s" --latency -H "Authorization: Bearer $LEGIT" "$URL" > "$out" 2>&1 || true
    read -r rps p50 p99 bad err _ < <(parse_wrk "$out")
    echo "$rps $p50 $p99 $bad $err"
}

phase() {   # phase NAME FLOOD_ENV...: flood (if any) around one legitimate measurement
    local name=$1; shift
    local a0 b0 r0 flood_pid="" legit flood="-"
    a0=$(metric "$ADMIN" tollgate_verifications_total 'result="(ok|wrong_secret)"')
    b0=$(metric "$ADMIN" tollgate_requests_total 'outcome="busy"')
    r0=$(rss_mib "$TGPID")
    cpu_mark
    if [ $# -gt 0 ]; then
        env "$@" wrk -t1 -c"$FLOOD_CONNECTIONS" -d"$((LEGIT_DURATION + 2))s" --timeout 10s \
            -s "$WORK/flood.lua" "$URL" > "$WORK/flood-$name.txt" 2>&1 &
        flood_pid=$!
        started $flood_pid
        sleep 1
    fi
    legit=$(legit_run "$name")
    if [ -n "$flood_pid" ]; then
        wait "$flood_pid" || true
        flood=$(grep '^FLOOD' "$WORK/flood-$name.txt" | cut -d' ' -f2- | tr ' ' ,)
    fi
    local a1 b1 r1 foreign
    foreign=$(cpu_foreign)
    a1=$(metric "$ADMIN" tollgate_verifications_total 'result="(ok|wrong_secret)"')
    b1=$(metric "$ADMIN" tollgate_requests_total 'outcome="busy"')
    r1=$(rss_mib "$TGPID")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$legit" "$flood" "$((a1 - a0))" "$((b1 - b0))" "$r0" "$r1" "$foreign" >> "$RESULTS"
    log "$name: legit $legit | flood $flood | argon2 $((a1 - a0)) | busy $((b1 - b0)) | RSS $r0 -> $r1 | other processes ${foreign}%"
    settle
}

phase alone
phase valid-flood FLOOD_VALID="$LEGIT"
phase wrong-secret FLOOD_ID="$LEGIT_ID"
phase unknown-id FLOOD_ID=
phase alone-again
phase wrong-secret-2 FLOOD_ID="$LEGIT_ID"

echo
echo "== Tollgate abuse benchmark =="
machine_info
echo "method:  legitimate wrk -t2 -c32 -d${LEGIT_DURATION}s (valid token, warm cache, 1 KiB); flood wrk -t1 -c$FLOOD_CONNECTIONS --timeout 10s capped at $FLOOD_RATE req/s, started 1 s before; log level $LOG_LEVEL"
echo "rss:     $(echo "$RSS_START" | cut -d' ' -f1) MiB after start-up; $(rss_mib "$TGPID" | awk '{print $1 " MiB at the end, peak " $2}')"
echo "config:  argon2id m=19456 KiB t=2 p=1; verify.max_concurrent = cores ($(nproc)), max_queue 256${EXTRA_CONFIG:+; extra: $EXTRA_CONFIG}"
echo "$SINGLE_FLIGHT"
echo
python3 - "$RESULTS" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
base = [float(r[1].split()[0]) for r in rows if r[0].startswith("alone")]
base = sum(base) / len(base)
print("| phase | legit req/s | × alone | legit p50 ms | legit p99 ms | legit non-2xx | flood req/s | flood 200/401/503/other | flood timeouts | argon2 runs | 503 busy | RSS MiB before → after (peak) | other processes |")
print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|")
for name, legit, flood, argon, busy, r0, r1, foreign in rows:
    rps, p50, p99, bad, err = legit.split()
    if flood != "-":
        n, frate, ok, unauth, b, other, tmo = flood.split(",")
        fcols = f"{float(frate):,.0f} | {ok}/{unauth}/{b}/{other} | {tmo}"
    else:
        fcols = "– | – | –"
    rb, _ = r0.split()
    ra, hwm = r1.split()
    print(f"| {name} | {float(rps):,.0f} | {float(rps) / base:.2f} | {float(p50):.2f} | {float(p99):.2f} | {int(bad) + int(err)} "
          f"| {fcols} | {argon} | {busy} | {rb} → {ra} ({hwm}) | {foreign} % |")
print()
print(f"× alone is relative to the mean of the two `alone` phases ({base:,.0f} req/s).")
EOF
